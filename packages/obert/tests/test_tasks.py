"""The pipeline on its other tasks, on the tiny BERT: SQuAD, and GLUE TSV with string labels.

SQuAD runs the shipped recipes (their distillation of ``start_logits``/``end_logits`` for a
question-answering head) and reports F1 as a fraction like every other metric; a GLUE TSV with
string labels in a column of another name is scored by the ONNX stage with the label ids
training gave them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from obert.cli import app
from obert.defaults import shipped_data_dir
from obert.deploy import glue_dev_tsv
from obert.errors import PipelineInputError
from obert.pipeline import fingerprint_dev
from obert_train import load_recipe

from .conftest import DEV, SQUAD_ARGS, TRAIN, quick_args

runner = CliRunner()


def _common(out: Path, model_dir: Path) -> list[str]:
    return [
        "quickstart", "--model", str(model_dir), "--batch-size", "16",
        "--bench-batch-size", "1", "--bench-iterations", "3", "--no-progress",
        "--deepsparse", str(out.parent / "no-deepsparse" / "obert-deploy"),
        "--output-dir", str(out),
    ]  # fmt: skip


def _fp32_matches_pytorch(entry: dict[str, Any], label: str, metric: str) -> None:
    evaluation = entry["onnx_eval"]
    fp32 = evaluation["models"][label]
    assert fp32["agreement"] >= 0.95, (label, fp32)
    assert abs(fp32["metrics"][metric] - evaluation["pytorch"][metric]) <= 0.02, (label, fp32)


def test_glue_dev_tsv_gives_training_label_ids(tmp_path: Path) -> None:
    dev = tmp_path / "dev.tsv"
    dev.write_text("idx\tfirst\tsecond\tgold\n0\ta b\tc\t2\n1\td\te f\t1\n")
    text = glue_dev_tsv(
        dev, text_columns=("first", "second"), label_column="gold", label_to_id={"1": 0, "2": 1}
    )
    assert text == "sentence1\tsentence2\tlabel\na b\tc\t1\nd\te f\t0\n"
    with pytest.raises(PipelineInputError, match=r"example 1 has label '2', which is not among"):
        glue_dev_tsv(dev, text_columns=("first",), label_column="gold", label_to_id={"1": 0})
    assert fingerprint_dev(dev, text) != fingerprint_dev(dev)  # another file is read
    shipped = shipped_data_dir() / "dev.tsv"  # already in normal form: the eval keys stay
    same = glue_dev_tsv(shipped, text_columns=None, label_column=None, label_to_id={"0": 0, "1": 1})
    assert same.encode() == shipped.read_bytes()
    assert fingerprint_dev(shipped, same) == fingerprint_dev(shipped)


@pytest.mark.slow  # 4 training stages, 8 ONNX files and their SQuAD evaluation: about 40 s
def test_quickstart_on_squad_distils_start_and_end_logits(
    tmp_path: Path, model_dir: Path, squad_dir: Path
) -> None:
    out = tmp_path / "out"
    args = [*_common(out, model_dir), *SQUAD_ARGS, "--data-dir", str(squad_dir)]
    result = runner.invoke(app, args)  # the shipped recipes
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    models = {"dense", "obert", "gmp", "structured"}
    assert report["metric"] == "f1" and set(report["models"]) == models
    for label in ("obert", "gmp", "structured"):
        recipe = load_recipe(out / "stages" / label / "model" / "recipe.yaml")
        assert recipe.distillation is not None
        assert recipe.distillation.distill_output_keys == ("start_logits", "end_logits")
        if label == "structured":  # its shrunk checkpoint: a question-answering head
            shrunk = report["models"][label]["shrunk"]
            assert shrunk["loads_with"] == "transformers.AutoModelForQuestionAnswering"
            continue
        curve = report["models"][label]["curve"]
        assert [round(p["sparsity"], 2) for p in curve] == [0.5, 0.63, 0.77, 0.9]
        assert all(0 <= p["metric"] <= 1 for p in curve), curve
    for label, entry in report["models"].items():
        trained = entry["pytorch"]
        assert 0 < trained["f1"] <= 1 and 0 <= trained["exact_match"] <= trained["f1"], trained
        # obert-deploy's F1 (a fraction) of the same model on the same questions
        evaluation = entry["onnx_eval"]
        assert evaluation["examples"] == 16
        assert trained["f1"] == pytest.approx(evaluation["pytorch"]["f1"], abs=0.02), label
        _fp32_matches_pytorch(entry, label, "f1")
    for row in report["stages"]:
        assert not list((out / "stages" / row["name"]).rglob("checkpoint-*")), row["name"]
    table = (out / "report.md").read_text().split("## Summary")[1].split("##")[0]
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| dense |")]
    assert 0 < float(rows[0][2]) <= 100, rows  # dev f1 % (PyTorch)


@pytest.mark.slow
def test_quickstart_on_glue_tsv_with_string_labels_in_another_column(
    tmp_path: Path, model_dir: Path, recipes: dict[str, Path]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    names = {0: "z-negative", 1: "a-positive"}  # sorted: a-positive is id 0, z-negative id 1
    for file, examples in (("train.tsv", TRAIN), ("dev.tsv", DEV)):
        rows = [f"{i}\t{e.sentence}\t{names[e.label]}" for i, e in enumerate(examples)]
        (data / file).write_text("\n".join(["id\treview\tsentiment", *rows]) + "\n")
    out = tmp_path / "out"
    args = [
        *quick_args(model_dir, data, recipes, out), "--task", "glue-tsv", "--data-dir", str(data),
        "--text-column", "review", "--label-column", "sentiment", "--baseline", "none",
        "--no-structured",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    ids = {"a-positive": 0, "z-negative": 1}
    for label, entry in report["models"].items():
        dev = (out / "stages" / f"eval-{label}" / "dev.tsv").read_text().splitlines()
        assert dev[0] == "sentence\tlabel"
        assert dev[1:] == [f"{e.sentence}\t{ids[names[e.label]]}" for e in DEV]
        evaluation = entry["onnx_eval"]
        assert evaluation["examples"] == len(DEV)
        # obert-deploy's PyTorch accuracy on the normalised file = obert-train's on the original
        assert evaluation["pytorch"]["accuracy"] == pytest.approx(entry["pytorch"]["accuracy"])
        _fp32_matches_pytorch(entry, label, "accuracy")
        assert not list((out / "stages" / label).rglob("checkpoint-*"))
    assert "stages/eval-dense/dev.tsv" in "\n".join(report["stage_commands"])
