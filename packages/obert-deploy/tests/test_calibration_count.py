"""Static int8 calibrates on the sentences asked for, or says why not (issue 18: a 2-row TSV
silently gave a 2-sentence calibration when 128 were asked)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from obert_deploy import ObertDeployError
from obert_deploy.cli import app
from obert_deploy.quantize import calibration_batches

from .conftest import write_tsv

runner = CliRunner()


def test_fewer_sentences_than_asked_is_an_error_naming_both_counts(
    dynamic_onnx: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    tsv = write_tsv(tmp_path / "two.tsv", 2, seed=3)
    with pytest.raises(ObertDeployError, match=r"holds 2 sentence\(s\), fewer than the 128"):
        calibration_batches(dynamic_onnx, tsv, str(tiny_checkpoint), 128, 16)
    lines: list[str] = []
    batches = calibration_batches(
        dynamic_onnx, tsv, str(tiny_checkpoint), 128, 16, allow_fewer=True, log=lines.append
    )
    assert sum(len(next(iter(b.values()))) for b in batches) == 2
    assert lines and "calibrating on 2 sentence(s)" in lines[0] and "128 asked" in lines[0]


def test_the_cli_refuses_a_short_calibration_file_unless_allowed(
    dynamic_onnx: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    tsv = write_tsv(tmp_path / "two.tsv", 2, seed=3)
    out = tmp_path / "q.onnx"
    args = [
        "quantize", str(dynamic_onnx), "-o", str(out), "--method", "static", "--seq-len", "16",
        "--calibration-data", str(tsv), "--tokenizer", str(tiny_checkpoint),
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "fewer than the 128 calibration sentences" in result.output
    assert "--allow-fewer-calibration" in result.output
    assert not out.exists()
    result = runner.invoke(app, [*args, "--allow-fewer-calibration"])
    assert result.exit_code == 0, result.output
    assert "warning: calibrating on 2 sentence(s)" in result.output
    assert out.is_file()
