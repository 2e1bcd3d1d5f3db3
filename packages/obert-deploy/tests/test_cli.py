"""The typer CLI end to end on the tiny checkpoint, and its error messages."""

from __future__ import annotations

import importlib.util
import json
import re
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
    md = (tmp_path / "b.md").read_text()
    assert md.startswith("CPU: ") and "avx2=" in md and "engine onnxruntime 1." in md
    assert "| p50 ms |" in md
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
    assert "| pytorch |" in out and "100.00 %" in out  # accuracy/agreement printed in percent


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "/no/such/ckpt", "-o", "x.onnx"], "does not exist"),
        (["export", "CKPT", "-o", "x.onnx", "--task", "summarize"], "'summarize' is not one of"),
        (
            ["export", "CKPT", "-o", "x.onnx", "--engine", "deepsparse", "--opset", "19"],
            "opset 19 is too new for --engine deepsparse",
        ),
        (
            ["export", "CKPT", "-o", "x.onnx", "--batch-size", "0"],
            "--batch-size': 0 is below 1; pass 1 or more",
        ),
        (
            ["evaluate", "CKPT", "MODEL", "--batch-size", "0"],
            "--batch-size': 0 is below 1; pass 1 or more",
        ),
        (
            ["qat", "CKPT", "-o", "q.onnx", "--batch-size", "0"],
            "--batch-size': 0 is below 1; pass 1 or more",
        ),
        (["size", "MODEL", "--reference", "/no/such/dense.onnx"], "'/no/such/dense.onnx' does"),
        (["evaluate", "CKPT", "/no/such/model.onnx"], "create it with `obert-deploy export`"),
        (
            ["evaluate", "CKPT", "MODEL", "--seq-len", "32"],
            "static shape [2, 16] but sequence length 32",
        ),
        (["bench", "/no/such/model.onnx"], "create it with `obert-deploy export`"),
        (["quantize", "MODEL", "-o", "q.onnx", "--method", "static"], "--calibration-data"),
        (["quantize", "MODEL", "-o", "q.onnx", "--method", "int3"], "'int3' is not one of"),
        (
            ["quantize", "MODEL", "-o", "q.onnx", "--method", "static", "--embedding-bits", "4"],
            "--embedding-bits 4 needs --method dynamic",
        ),
        (["quantize", "MODEL", "-o", "q.onnx", "--embedding-bits", "6"], "embedding_bits 6"),
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
    assert message in " ".join(result.output.split()), result.output
    assert not any(p.suffix == ".onnx" for p in tmp_path.iterdir())


def test_help_lists_choices() -> None:
    for command, choices in [
        ("export", ["question-answering", "feature-extraction", "deepsparse"]),
        ("quantize", ["dynamic", "static", "qoperator", "entropy"]),
        ("bench", ["latency", "throughput", "onnxruntime"]),
        ("evaluate", ["question-answering"]),
    ]:
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"})
        assert result.exit_code == 0, result.output
        out = re.sub(r"-\n\s+", "-", result.output)  # help text wraps after hyphens
        for choice in choices:
            assert choice in out, (command, choice)


def test_export_shape_flags(tmp_path: Path, tiny_checkpoint: Path) -> None:
    common = ["export", str(tiny_checkpoint), "--seq-len", "8", "--json"]
    _ok(*common, str(tmp_path / "s.json"), "-o", str(tmp_path / "s.onnx"), "--static-shapes")
    static = json.loads((tmp_path / "s.json").read_text())
    assert static["engine"] == "onnxruntime"
    assert static["input_shapes"]["input_ids"] == [1, 8]
    _ok(
        *common,
        str(tmp_path / "d.json"),
        "-o",
        str(tmp_path / "d.onnx"),
        "--engine",
        "deepsparse",
        "--dynamic-shapes",
    )
    dynamic = json.loads((tmp_path / "d.json").read_text())
    assert dynamic["ir_version"] == 8
    assert dynamic["input_shapes"]["input_ids"] == ["batch", "sequence"]
    assert dynamic["path"] == str(tmp_path / "d.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "d.onnx", "s.json", "s.onnx"]


def test_export_parity_failure_writes_nothing(tmp_path: Path, tiny_checkpoint: Path) -> None:
    out = tmp_path / "new_dir" / "m.onnx"
    result = runner.invoke(
        app,
        [
            *("export", str(tiny_checkpoint), "-o", str(out), "--seq-len", "8"),
            *("--atol", "1e-12", "--rtol", "0", "--json", str(tmp_path / "new_dir" / "m.json")),
        ],
    )
    assert result.exit_code == 2
    assert "differs from PyTorch" in result.output and "--atol/--rtol" in result.output
    assert list(tmp_path.iterdir()) == []  # not even the parent directory


def test_export_json_failure_keeps_no_onnx(tmp_path: Path, tiny_checkpoint: Path) -> None:
    (tmp_path / "taken").mkdir()
    out = tmp_path / "m.onnx"
    result = runner.invoke(
        app,
        [
            *("export", str(tiny_checkpoint), "-o", str(out), "--seq-len", "8", "--no-verify"),
            *("--json", str(tmp_path / "taken")),
        ],
    )
    assert result.exit_code == 2
    assert "--json" in result.output and "is a directory; pass a file path" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_bench_write_failure_writes_nothing(tmp_path: Path, static_onnx: Path) -> None:
    (tmp_path / "plot_dir").mkdir()
    result = runner.invoke(
        app,
        [
            *("bench", str(static_onnx), "--batch-size", "2", "--seq-len", "16"),
            *("--iterations", "1", "--warmup", "0", "--json", str(tmp_path / "b.json")),
            *("--markdown", str(tmp_path / "b.md"), "--plot", str(tmp_path / "plot_dir")),
        ],
    )
    assert result.exit_code == 2 and "is a directory" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot_dir"]


def test_quantize_dynamic(tmp_path: Path, dynamic_onnx: Path) -> None:
    out = tmp_path / "dyn.onnx"
    text = _ok("quantize", str(dynamic_onnx), "-o", str(out), "--json", str(tmp_path / "q.json"))
    assert "(dynamic," in text and "zeros kept: yes" in text
    assert "runs on ONNX Runtime only" in text
    report = json.loads((tmp_path / "q.json").read_text())
    assert report["method"] == "dynamic" and report["output"] == str(out)
    assert report["sparsity_kept"] is True
    assert out.stat().st_size < dynamic_onnx.stat().st_size
    from obert_deploy import load_onnx

    assert "MatMulInteger" in {n.op_type for n in load_onnx(out).graph.node}
    small = tmp_path / "emb4.onnx"
    _ok("quantize", str(dynamic_onnx), "-o", str(small), "--embedding-bits", "4")
    assert "GatherBlockQuantized" in {n.op_type for n in load_onnx(small).graph.node}
    assert small.stat().st_size < out.stat().st_size


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao not installed")
def test_qat_cli(tmp_path: Path, tiny_checkpoint: Path, data_dir: Path) -> None:
    out = tmp_path / "qat.onnx"
    text = _ok(
        "qat",
        str(tiny_checkpoint),
        "-o",
        str(out),
        "--train-data",
        str(data_dir / "train.tsv"),
        "--engine",
        "deepsparse",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--seq-len",
        "16",
        "--export-batch-size",
        "2",
        "--json",
        str(tmp_path / "qat.json"),
    )
    assert "QAT: 2 steps" in text and "masks kept: yes" in text
    report = json.loads((tmp_path / "qat.json").read_text())
    assert report["masks_kept"] is True and report["path"] == str(out)
    assert len(report["losses"]) == 2 and len(report["weights"]) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qat.json", "qat.onnx"]


@pytest.mark.parametrize("command", ["export", "evaluate"])
def test_missing_torch_stack_says_what_to_install(
    tmp_path: Path,
    tiny_checkpoint: Path,
    static_onnx: Path,
    command: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails
    args = (
        ["export", str(tiny_checkpoint), "-o", str(tmp_path / "m.onnx")]
        if command == "export"
        else ["evaluate", str(tiny_checkpoint), str(static_onnx), "--seq-len", "16"]
    )
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "needs 'transformers'" in result.output
    assert "pip install 'obert-deploy[export]' torch==2.13.0" in result.output
    assert list(tmp_path.iterdir()) == []


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
