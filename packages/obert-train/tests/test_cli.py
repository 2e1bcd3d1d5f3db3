from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from typer.testing import CliRunner

from obert_train import sparsity_report
from obert_train.cli import app

runner = CliRunner()


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
    runs = metrics["runs"]
    assert [r["target_sparsity"] for r in runs] == [0.0, 0.5, 0.7]
    for run in runs[1:]:
        assert run["achieved_sparsity"] == pytest.approx(run["target_sparsity"], abs=1e-3)
        assert 0.0 <= run["metrics"]["accuracy"] <= 1.0
        assert ("gradients_s" in run["timings"]) == (run["target_sparsity"] == 0.5)
        model = AutoModelForSequenceClassification.from_pretrained(run["output_dir"])
        report = sparsity_report(model)["global"]["sparsity"]
        assert report == pytest.approx(run["achieved_sparsity"])
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if "sparsity" in line and "accuracy" in line)
    assert [line.split()[0] for line in lines[header + 1 : header + 4]] == ["0.00", "0.50", "0.70"]


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
        (["--sparsity", "1.5"], "less than 1"),
        (["--sparsity", "0.5", "--mask-type", "block3"], "mask_type 'block3' unknown"),
        (["--sparsity", "0.5", "--target", "nothing\\.weight"], "matched no parameter"),
        (["--sparsity", "0.5", "--max-memory", "1KB"], "--block-size|free memory"),
        (["--sparsity", "0.5", "--max-memory", "lots"], "cannot parse memory size"),
        (["--sparsity", "0.5", "--sparsity", "0.501"], "would both write sparsity-0.50"),
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


def test_finetune_keeps_masks(tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path) -> None:
    pruned = tmp_path / "pruned"
    assert (
        runner.invoke(
            app,
            [
                *_oneshot(
                    tiny_model_dir, sst2_dir, pruned, "--sparsity", "0.5", "--method", "magnitude"
                )
            ],
        ).exit_code
        == 0
    )
    out = tmp_path / "tuned"
    args = [
        "finetune", "--model", str(pruned / "sparsity-0.50"), "--task", "sst2",
        "--data-dir", str(sst2_dir), "--output-dir", str(out), "--epochs", "1",
        "--batch-size", "6",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    tuned = AutoModelForSequenceClassification.from_pretrained(out)
    assert sparsity_report(tuned)["global"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert "accuracy" in json.loads((out / "finetune.json").read_text())["metrics"]


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
