from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from typer.testing import CliRunner

from obert_train import load_recipe, sparsity_report
from obert_train.cli.app import app

runner = CliRunner()


def _saved(ckpt: Path) -> dict[str, Any]:
    """Method, target and settings of the recipe.yaml a one-shot checkpoint holds."""
    (modifier,) = load_recipe(str(ckpt / "recipe.yaml")).pruning
    assert modifier.init_sparsity == modifier.final_sparsity  # one step at epoch 0
    assert modifier.start_epoch == modifier.end_epoch == 0.0
    return {
        "method": modifier.method_name,
        "sparsity": modifier.final_sparsity,
        **modifier.settings.model_dump(),
    }


def _oneshot(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "oneshot", "--model", str(model), "--task", "sst2", "--data-dir", str(data),
        "--output-dir", str(out), "--no-progress", *extra,
    ]  # fmt: skip


def test_oneshot_writes_checkpoints_metrics_and_a_table(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = _oneshot(
        tiny_model_dir, sst2_dir, out,
        "--sparsity", "0.7", "--sparsity", "0.5", "--num-grads", "4", "--grad-batch-size", "4",
        "--block-size", "16", "--eval",
    )  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "oBERT memory plan" in result.output
    assert "reusing the cached inverse Fisher" in result.output  # 0.7 reuses the 0.5 Fisher
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["model"], metrics["task"]) == (str(tiny_model_dir), "sst2")
    runs = metrics["runs"]
    assert [r["target_sparsity"] for r in runs] == [0.0, 0.5, 0.7]
    assert runs[0]["output_dir"] == "(input model)"
    for run in runs[1:]:
        assert run["method"] == "obert"
        assert run["achieved_sparsity"] == pytest.approx(run["target_sparsity"], abs=1e-3)
        assert 0.0 <= run["metrics"]["accuracy"] <= 1.0
        assert ("gradients_s" in run["timings"]) == (run["target_sparsity"] == 0.5)
        model = AutoModelForSequenceClassification.from_pretrained(run["output_dir"])
        report = sparsity_report(model)["global"]["sparsity"]
        assert report == pytest.approx(run["achieved_sparsity"])
        recipe = _saved(Path(run["output_dir"]))
        assert recipe["method"] == "obert"
        assert recipe["sparsity"] == run["target_sparsity"]
        assert (recipe["num_grads"], recipe["grad_batch_size"]) == (4, 4)
        assert (recipe["fisher_block_size"], recipe["damp"]) == (16, 1e-7)  # damp: the default
        assert recipe["global_sparsity"] is True
        assert recipe["mode"] == "superpose"  # the update the step ran (m = 4 < B = 16)
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if "sparsity" in line and "accuracy" in line)
    assert [line.split()[0] for line in lines[header + 1 : header + 4]] == ["0.00", "0.50", "0.70"]


@pytest.mark.parametrize(("num_grads", "mode"), [(64, "joint"), (16, "superpose")])
def test_oneshot_recipe_names_the_update_the_step_ran(num_grads: int, mode: str) -> None:
    """A one-shot recipe without ``mode`` writes the update its one-shot step ran, so a training
    run of it (whose gradual steps default to ``superpose``) runs the same update."""
    from obert_train import ObertSettings, PruneResult
    from obert_train.cli.oneshot import oneshot_recipe_yaml

    settings = ObertSettings(num_grads=num_grads, fisher_block_size=50)
    result = PruneResult(
        method="obert", settings=settings, target_sparsity=0.5, sparsity=0.5,
        tensor_sparsity={}, masks={}, timings={}, log=[],
    )  # fmt: skip
    (modifier,) = load_recipe(oneshot_recipe_yaml(result, "tiny", "sst2")).pruning
    assert modifier.settings.mode == mode
    assert settings.update_mode(gradual=False) == mode


def test_magnitude_without_eval(tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = _oneshot(tiny_model_dir, sst2_dir, out, "--sparsity", "0.9", "--method", "magnitude")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "sparsity-0.90" / "sparsity.json").is_file()
    assert "metrics" not in json.loads((out / "metrics.json").read_text())["runs"][0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sparsity", "1.5"], r"--sparsity 1\.5 is outside \[0, 1\)"),
        ([], "give --sparsity"),
        (["--sparsity", "0.5", "--mask-type", "block3"], "mask_type 'block3' unknown"),
        (["--sparsity", "0.5", "--target", "nothing\\.weight"], "matched no parameter"),
        (["--sparsity", "0.5", "--max-memory", "1KB"], "--block-size|free memory"),
        (["--sparsity", "0.5", "--max-memory", "lots"], "cannot parse memory size"),
        (["--sparsity", "0.5", "--sparsity", "0.501"], "would both write sparsity-0.50"),
        (["--sparsity", "0.5", "--set", "typo=1"], "method 'obert': unknown setting 'typo'"),
        (["--sparsity", "0.5", "--set", "damp"], "expected KEY=VALUE"),
        (["--sparsity", "0.5", "--set", "damp=0"], r"damp = 0: .*greater than 0"),
        (
            ["--sparsity", "0.5", "--method", "magnitude", "--set", "damp=1e-4"],
            "method 'magnitude': unknown setting 'damp'",
        ),
        (["--recipe", "minilm-sst2-movement90"], "method 'movement' needs training"),
        (["--sparsity", "0.5", "--recipe", "minilm-sst2-dense"], "no pruning modifier"),
    ],
)
def test_bad_input_exits_with_a_message_and_writes_nothing(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, _oneshot(tiny_model_dir, sst2_dir, out, *extra))
    assert result.exit_code == 2
    assert "error:" in result.output
    assert re.search(message, result.output.replace("\n", " "))
    assert not out.exists()


def test_missing_data_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, _oneshot(tiny_model_dir, tmp_path, tmp_path / "out", "--sparsity", "0.5")
    )
    assert result.exit_code == 2
    assert "no train file for task 'sst2'" in result.output


def test_unknown_task_is_rejected_by_the_parser(tiny_model_dir: Path, tmp_path: Path) -> None:
    args = ["oneshot", "--model", str(tiny_model_dir), "--task", "cola", "--sparsity", "0.5"]
    result = runner.invoke(app, [*args, "--output-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "cola" in result.output


def test_existing_outputs_are_refused_without_overwrite_and_rows_are_merged(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    magnitude = ("--method", "magnitude")
    first = runner.invoke(
        app, _oneshot(tiny_model_dir, sst2_dir, out, "--sparsity", "0.5", *magnitude)
    )
    assert first.exit_code == 0, first.output
    stamp = (out / "sparsity-0.50" / "model.safetensors").stat().st_mtime_ns

    # A second run with the same target is refused before anything is loaded or written.
    again = runner.invoke(
        app,
        _oneshot(
            tiny_model_dir, sst2_dir, out, "--sparsity", "0.3", "--sparsity", "0.5", *magnitude
        ),
    )
    assert again.exit_code == 2
    assert "already holds sparsity-0.50" in again.output and "--overwrite" in again.output
    assert not (out / "sparsity-0.30").exists()
    assert (out / "sparsity-0.50" / "model.safetensors").stat().st_mtime_ns == stamp

    # Another target adds its row next to the earlier one.
    other = runner.invoke(
        app, _oneshot(tiny_model_dir, sst2_dir, out, "--sparsity", "0.7", *magnitude)
    )
    assert other.exit_code == 0, other.output
    runs = json.loads((out / "metrics.json").read_text())["runs"]
    assert [r["target_sparsity"] for r in runs] == [0.5, 0.7]

    # --overwrite replaces the folder and its row (no duplicate), the other row stays.
    replaced = runner.invoke(
        app,
        _oneshot(
            tiny_model_dir, sst2_dir, out, "--sparsity", "0.5", "--layer", "--overwrite", *magnitude
        ),
    )
    assert replaced.exit_code == 0, replaced.output
    runs = json.loads((out / "metrics.json").read_text())["runs"]
    assert sorted(r["target_sparsity"] for r in runs) == [0.5, 0.7]
    assert [r["output_dir"] for r in runs].count(str(out / "sparsity-0.50")) == 1
    recipe = _saved(out / "sparsity-0.50")
    assert recipe["global_sparsity"] is False  # the replaced checkpoint is the new one
    assert sorted(p.name for p in out.iterdir()) == [
        "metrics.json",
        "sparsity-0.50",
        "sparsity-0.70",
    ]


def test_layer_scope_set_and_block_size_alias(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = _oneshot(
        tiny_model_dir, sst2_dir, out, "--sparsity", "0.6", "--layer", "--num-grads", "4",
        "--grad-batch-size", "4", "--fisher-block-size", "32", "--mask-type", "block4",
        "--set", "damp=1e-4", "--set", "mode=superpose", "--num-recomputations", "2",
    )  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "recomputation 2/2" in result.output
    ckpt = out / "sparsity-0.60"
    recipe = _saved(ckpt)
    assert recipe["global_sparsity"] is False
    assert (recipe["fisher_block_size"], recipe["mask_type"]) == (32, "block4")
    assert (recipe["damp"], recipe["mode"], recipe["num_recomputations"]) == (1e-4, "superpose", 2)
    report = json.loads((ckpt / "sparsity.json").read_text())
    for name, tensor in report["tensors"].items():
        assert tensor["sparsity"] == pytest.approx(0.6, abs=4 / tensor["numel"]), name
    model = AutoModelForSequenceClassification.from_pretrained(ckpt)
    weight = model.bert.encoder.layer[0].intermediate.dense.weight.detach().reshape(-1, 4)
    assert torch.all((weight == 0).all(1) | (weight != 0).all(1))  # whole groups of 4

    # --block-size is the same option as --fisher-block-size.
    alias = runner.invoke(
        app,
        _oneshot(
            tiny_model_dir, sst2_dir, tmp_path / "alias", "--sparsity", "0.5", "--num-grads", "4",
            "--grad-batch-size", "4", "--block-size", "8",
        ),
    )  # fmt: skip
    assert alias.exit_code == 0, alias.output
    recipe = _saved(tmp_path / "alias" / "sparsity-0.50")
    assert recipe["fisher_block_size"] == 8


def test_recipe_gives_the_method_settings_and_target(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    """The first pruning modifier of a recipe: its method, settings and final sparsity;
    explicit options win over the recipe's values."""
    out = tmp_path / "out"
    args = _oneshot(
        tiny_model_dir, sst2_dir, out, "--recipe", "minilm-sst2-obert80", "--num-grads", "4",
        "--grad-batch-size", "4", "--set", "fisher_block_size=16",
    )  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    ckpt = out / "sparsity-0.80"
    recipe = _saved(ckpt)
    assert (recipe["method"], recipe["sparsity"]) == ("obert", 0.8)
    assert (recipe["num_grads"], recipe["grad_batch_size"], recipe["fisher_block_size"]) == (
        4,
        4,
        16,
    )
    assert recipe["damp"] == 1e-7
    assert len(recipe["targets"]) == 6  # the recipe's six encoder patterns
    report = json.loads((ckpt / "sparsity.json").read_text())
    assert report["global"]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert len(report["tensors"]) == 12
    gmp = runner.invoke(
        app,
        _oneshot(
            tiny_model_dir, sst2_dir, tmp_path / "gmp", "--recipe", "minilm-sst2-gmp90",
            "--sparsity", "0.4",
        ),
    )  # fmt: skip
    assert gmp.exit_code == 0, gmp.output
    assert _saved(tmp_path / "gmp" / "sparsity-0.40")["method"] == "magnitude"


def test_methods_lists_the_registry_and_the_settings() -> None:
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0, result.output
    for name in ("obert", "magnitude", "movement", "constant"):
        assert any(line.startswith(f"{name}  ") for line in result.output.splitlines()), name
    assert "!OBSPruningModifier" in result.output
    assert "fisher_block_size = 50" in result.output
    assert "global_sparsity = True" in result.output


def test_a_new_head_is_seeded_and_announced(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    """A checkpoint without the task head: every sparsity gets the same seeded head, and a
    warning names the newly initialised weights."""
    from transformers import BertModel

    base = tmp_path / "base"
    BertModel.from_pretrained(tiny_model_dir).save_pretrained(base)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(base)
    out = tmp_path / "out"
    args = _oneshot(
        base, sst2_dir, out, "--sparsity", "0.3", "--sparsity", "0.6", "--method", "magnitude"
    )
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "classifier.weight" in result.output and "newly initialised" in result.output
    heads = [
        AutoModelForSequenceClassification.from_pretrained(out / name).classifier.weight
        for name in ("sparsity-0.30", "sparsity-0.60")
    ]
    assert torch.equal(heads[0], heads[1])


def test_missing_datasets_package_is_a_clean_error(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    args = [
        "oneshot", "--model", str(tiny_model_dir), "--task", "sst2", "--dataset", "glue:sst2",
        "--sparsity", "0.5", "--output-dir", str(tmp_path / "out"), "--no-progress",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "pip install datasets" in result.output.replace("\n", " ")


def test_oneshot_on_a_squad_file_split_by_article(tiny_model_dir: Path, tmp_path: Path) -> None:
    """--split-articles reaches load_task: the dev set is the held-out articles' questions."""
    from obert_train.tasks.data import read_squad_json, split_squad_articles

    from .conftest import QUESTIONS, squad_payload

    payload: Any = squad_payload(QUESTIONS)
    article = payload["data"][0]
    payload["data"] = [{**article, "title": f"A{i}"} for i in range(5)]
    for i, entry in enumerate(payload["data"]):
        entry["paragraphs"] = [
            {**p, "qas": [{**q, "id": f"{q['id']}-{i}"} for q in p["qas"][: 1 + i % 4]]}
            for p in entry["paragraphs"]
        ]
    file = tmp_path / "articles.json"
    file.write_text(json.dumps(payload))
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["oneshot", "--model", str(tiny_model_dir), "--task", "squad", "--train-file",
         str(file), "--split-articles", "3:2", "--split-seed", "1", "--method", "magnitude",
         "--sparsity", "0.5", "--eval", "--max-seq-length", "32", "--doc-stride", "8",
         "--max-query-length", "12", "--output-dir", str(out), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    _, dev = split_squad_articles(read_squad_json(file), 3, 2, seed=1)
    assert len(dev) != len(split_squad_articles(read_squad_json(file), 3, 2, seed=0)[1])
    runs = json.loads((out / "metrics.json").read_text())["runs"]
    assert [r["metrics"]["num_examples"] for r in runs] == [len(dev), len(dev)]


def test_text_column_is_split_on_commas() -> None:
    """Regression: ``--text-column sentence1,sentence2`` was one column named with a comma."""
    from obert_train.cli.data_options import data_options_from_flags

    split = data_options_from_flags("glue", text_column=["sentence1,sentence2"])
    assert split.text_columns == ("sentence1", "sentence2")
    repeated = data_options_from_flags("glue", text_column=["sentence1", "sentence2"])
    assert repeated.text_columns == ("sentence1", "sentence2")
    assert data_options_from_flags("glue", text_column=None).text_columns is None
