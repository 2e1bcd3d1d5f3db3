"""``obert-deploy qat`` names the bad option or row instead of blaming the data (issue 18)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from obert_deploy import ObertDeployError, QATConfig, qat_export
from obert_deploy.cli import app

runner = CliRunner()


def _error_line(result: object) -> str:
    output: str = result.output  # type: ignore[attr-defined]
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


def test_steps_zero_names_the_option(tmp_path: Path, tiny_checkpoint: Path, data_dir: Path) -> None:
    out = tmp_path / "q.onnx"
    result = runner.invoke(
        app,
        [
            *("qat", str(tiny_checkpoint), "-o", str(out)),
            *("--train-data", str(data_dir / "train.tsv"), "--steps", "0"),
        ],
    )
    assert result.exit_code == 2
    line = _error_line(result)
    assert "--steps" in line and "0" in line
    assert "data" not in line.lower()
    assert not out.exists()


def test_a_label_outside_the_head_is_named_by_line(tmp_path: Path, tiny_checkpoint: Path) -> None:
    data = tmp_path / "train.tsv"
    rows = [f"good movie {i}\t{i % 2}" for i in range(6)] + ["odd row\t5"]
    data.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "q.onnx"
    result = runner.invoke(
        app,
        [
            *("qat", str(tiny_checkpoint), "-o", str(out), "--train-data", str(data)),
            *("--steps", "4", "--batch-size", "2", "--seq-len", "16"),
        ],
    )
    assert result.exit_code == 2, result.output
    line = _error_line(result)
    assert "line 8" in line and "label 5" in line and "num_labels=2" in line
    assert "bug" not in line
    assert not out.exists()


def test_qat_export_refuses_labels_outside_the_head(
    tmp_path: Path, tiny_model: torch.nn.Module
) -> None:
    feeds = {
        "input_ids": np.ones((2, 16), np.int64),
        "attention_mask": np.ones((2, 16), np.int64),
        "token_type_ids": np.zeros((2, 16), np.int64),
    }
    batches = [(feeds, np.array([0, 1])), (feeds, np.array([1, 7]))]
    with pytest.raises(ObertDeployError, match=r"batch 1: label 7 .*num_labels=2"):
        qat_export(tiny_model, tmp_path / "x.onnx", batches, QATConfig(seq_len=16, steps=1))
    assert not (tmp_path / "x.onnx").exists()
