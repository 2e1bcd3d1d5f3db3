"""The typer CLI end to end on the tiny checkpoint, and its error messages."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from obert_deploy.cli import app

runner = CliRunner()


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_export_size_quantize_bench_evaluate(
    tmp_path: Path, tiny_checkpoint: Path, data_dir: Path
) -> None:
    model = tmp_path / "m.onnx"
    out = _ok(
        "export",
        str(tiny_checkpoint),
        "-o",
        str(model),
        "--engine",
        "deepsparse",
        "--seq-len",
        "16",
        "--batch-size",
        "2",
        "--json",
        str(tmp_path / "export.json"),
    )
    assert "zeros kept in ONNX: 12 of 12" in out
    assert json.loads((tmp_path / "export.json").read_text())["ir_version"] == 8

    int8 = tmp_path / "m_int8.onnx"
    out = _ok(
        "quantize",
        str(model),
        "-o",
        str(int8),
        "--method",
        "static",
        "--calibration-data",
        str(data_dir / "train.tsv"),
        "--tokenizer",
        str(tiny_checkpoint),
        "--num-calibration",
        "8",
        "--engine",
        "deepsparse",
    )
    assert "zeros kept: yes" in out and "static-qoperator" in out

    out = _ok(
        "size", str(model), str(int8), "--reference", str(model), "--json", str(tmp_path / "s.json")
    )
    assert "m_int8.onnx" in out
    sizes = json.loads((tmp_path / "s.json").read_text())
    assert sizes[1]["file_bytes"] < sizes[0]["file_bytes"]

    out = _ok(
        "bench",
        str(model),
        str(int8),
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--iterations",
        "3",
        "--warmup",
        "1",
        "--json",
        str(tmp_path / "b.json"),
        "--markdown",
        str(tmp_path / "b.md"),
        "--plot",
        str(tmp_path / "b.png"),
    )
    assert "avx2=" in out and "p50 ms" in out
    assert len(json.loads((tmp_path / "b.json").read_text())) == 2
    assert (tmp_path / "b.png").stat().st_size > 1000

    out = _ok(
        "evaluate",
        str(tiny_checkpoint),
        str(model),
        "--data",
        str(data_dir / "dev.tsv"),
        "--seq-len",
        "16",
        "--max-samples",
        "10",
    )
    assert "| pytorch |" in out and "100.00%" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "/no/such/ckpt", "-o", "x.onnx"], "does not exist"),
        (["export", "CKPT", "-o", "x.onnx", "--task", "summarize"], "unsupported task 'summarize'"),
        (["bench", "/no/such/model.onnx"], "create it with `obert-deploy export`"),
        (["quantize", "MODEL", "-o", "q.onnx", "--method", "static"], "--calibration-data"),
        (["quantize", "MODEL", "-o", "q.onnx", "--method", "int3"], "unknown --method 'int3'"),
        (["bench", "MODEL", "--batch-size", "4"], "static shape [2, 16] but batch size 4"),
    ],
)
def test_errors_exit_2_with_message(
    tmp_path: Path, static_onnx: Path, tiny_checkpoint: Path, args: list[str], message: str
) -> None:
    args = [
        a.replace("CKPT", str(tiny_checkpoint)).replace("MODEL", str(static_onnx)) for a in args
    ]
    args = [str(tmp_path / a) if a.endswith(".onnx") and "/" not in a else a for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert not any(p.suffix == ".onnx" for p in tmp_path.iterdir())


@pytest.mark.skipif(
    importlib.util.find_spec("deepsparse") is not None, reason="deepsparse installed"
)
def test_bench_deepsparse_not_installed(static_onnx: Path) -> None:
    result = runner.invoke(
        app,
        [
            "bench",
            str(static_onnx),
            "--engine",
            "deepsparse",
            "--batch-size",
            "2",
            "--seq-len",
            "16",
        ],
    )
    assert result.exit_code == 2
    assert "pip install -e 'packages/obert-deploy[deepsparse]'" in result.output
