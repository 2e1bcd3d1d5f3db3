"""OpenVINO as a second maintained engine: parity with ONNX Runtime, bench, evaluate, errors.

The ONNX files are the ones ONNX Runtime runs (exported in-process by the conftest fixtures);
timings are measured, never asserted.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from obert_deploy import (
    BenchConfig,
    DynamicInt8Config,
    EngineNotInstalledError,
    ObertDeployError,
    OnnxModelError,
    benchmark,
    evaluate,
    quantize_onnx,
    results_to_markdown,
)
from obert_deploy.bench import create_runner, make_inputs, onnx_inputs
from obert_deploy.cli import app

from .conftest import SEQ_LEN

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed")
runner = CliRunner()


def _feeds(path: Path, batch: int) -> dict[str, np.ndarray]:
    inputs = onnx_inputs(onnx.load(str(path), load_external_data=False))
    return make_inputs(inputs, batch, SEQ_LEN, vocab_size=60, seed=3)


def _outputs(engine: str, path: Path, batch: int) -> list[np.ndarray]:
    model = create_runner(engine, path, batch_size=batch, seq_len=SEQ_LEN, threads=1)
    return model.run(_feeds(path, batch))


@needs_openvino
@pytest.mark.parametrize("fixture", ["dynamic_onnx", "static_onnx"])
def test_openvino_matches_onnxruntime(fixture: str, request: pytest.FixtureRequest) -> None:
    """Float32 on both (OpenVINO would pick bfloat16 on AMX/AVX512-BF16 CPUs by default)."""
    path = request.getfixturevalue(fixture)
    ort_out = _outputs("onnxruntime", path, 2)
    ov_out = _outputs("openvino", path, 2)
    assert len(ov_out) == len(ort_out)
    for ours, theirs in zip(ov_out, ort_out, strict=True):
        assert ours.shape == theirs.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


@needs_openvino
def test_openvino_runs_dynamic_int8_like_onnxruntime(dynamic_onnx: Path, tmp_path: Path) -> None:
    """ONNX Runtime's dynamic int8 (MatMulInteger) file runs on OpenVINO: same predictions."""
    int8 = Path(quantize_onnx(dynamic_onnx, tmp_path / "int8.onnx", DynamicInt8Config()).output)
    ort_logits = _outputs("onnxruntime", int8, 4)[0]
    ov_logits = _outputs("openvino", int8, 4)[0]
    fp32_logits = _outputs("onnxruntime", dynamic_onnx, 4)[0]
    # Both int8 runs stay close to the float model; their own rounding may differ slightly.
    assert np.max(np.abs(ov_logits - fp32_logits)) < 0.1
    assert np.max(np.abs(ov_logits - ort_logits)) < 0.1


@needs_openvino
def test_bench_reports_the_engine_and_its_settings(dynamic_onnx: Path) -> None:
    common = {"batch_size": 2, "seq_len": SEQ_LEN, "iterations": 3, "warmup": 1, "threads": 1}
    ort = benchmark(dynamic_onnx, BenchConfig(engine="onnxruntime", **common))
    ov = benchmark(dynamic_onnx, BenchConfig(engine="openvino", **common))
    assert ov.engine == "openvino" and ov.engine_version.startswith("20")
    assert ov.meta["INFERENCE_NUM_THREADS"] == "1" and ov.meta["NUM_STREAMS"] == "1"
    assert ov.meta["PERFORMANCE_HINT"] == "LATENCY"
    assert ov.meta["INFERENCE_PRECISION_HINT"] == "f32"
    table = results_to_markdown([ort, ov])
    assert "| tiny_dynamic | onnxruntime |" in table and "| tiny_dynamic | openvino |" in table


@needs_openvino
def test_bench_throughput_streams(dynamic_onnx: Path) -> None:
    config = BenchConfig(
        engine="openvino",
        batch_size=2,
        seq_len=SEQ_LEN,
        iterations=6,
        warmup=1,
        scenario="throughput",
        threads=2,
        streams=2,
    )
    result = benchmark(dynamic_onnx, config)
    assert result.streams == 2 and result.meta["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert result.meta["NUM_STREAMS"] == "2" and result.items_per_s > 0


@needs_openvino
def test_sparse_weights_decompression_rate_is_passed_and_reported(dynamic_onnx: Path) -> None:
    config = BenchConfig(
        engine="openvino",
        batch_size=1,
        seq_len=SEQ_LEN,
        iterations=2,
        warmup=0,
        threads=1,
        sparse_weights_decompression_rate=0.5,
    )
    result = benchmark(dynamic_onnx, config)
    assert float(result.meta["CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE"]) == 0.5
    report = result.meta["sparse_weights_decompression"]
    assert report.startswith("sparse kernels in ") and "FullyConnected layers" in report
    assert ("no AMX" in report) is (not result.cpu["amx"])
    if not result.cpu["amx"]:
        assert report.startswith("sparse kernels in 0 of ")


def test_sparse_rate_refused_for_other_engines_and_outside_0_1() -> None:
    with pytest.raises(ObertDeployError, match=r"OpenVINO option.*--engine openvino"):
        BenchConfig(engine="onnxruntime", sparse_weights_decompression_rate=0.5)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ObertDeployError, match=r"not in 0\.\.1"):
            BenchConfig(engine="openvino", sparse_weights_decompression_rate=bad)


def test_missing_openvino_says_how_to_install(
    dynamic_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "openvino" else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(EngineNotInstalledError) as info:
        create_runner("openvino", dynamic_onnx, batch_size=1, seq_len=SEQ_LEN, threads=1)
    message = str(info.value)
    assert "pip install 'obert-deploy[openvino]'" in message
    assert isinstance(info.value, ImportError)
    result = runner.invoke(
        app, ["bench", str(dynamic_onnx), "--engine", "openvino", "--iterations", "1"]
    )
    assert result.exit_code == 2 and "obert-deploy[openvino]" in result.output
    assert "Traceback" not in result.output


def _unreadable_for_openvino(path: Path) -> Path:
    """A valid ONNX file (onnx's checker passes) with an op of a domain OpenVINO does not know."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])
    node = helper.make_node("Frobnicate", ["input_ids"], ["logits"], domain="com.example.nowhere")
    graph = helper.make_graph([node], "unreadable", [ids], [out])
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example.nowhere", 1)],
    )
    onnx.save(model, str(path))
    return path


@needs_openvino
def test_file_openvino_cannot_read_is_named(tmp_path: Path) -> None:
    path = _unreadable_for_openvino(tmp_path / "custom_op.onnx")
    with pytest.raises(
        OnnxModelError, match=r"OpenVINO .*cannot (read|compile) '.*custom_op\.onnx'"
    ):
        create_runner("openvino", path, batch_size=1, seq_len=SEQ_LEN, threads=1)
    out = tmp_path / "r.json"
    result = runner.invoke(
        app, ["bench", str(path), "--engine", "openvino", "--iterations", "1", "--json", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert "custom_op.onnx" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom_op.onnx"]  # nothing written


@needs_openvino
def test_cli_bench_side_by_side(dynamic_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ["bench", str(dynamic_onnx), "--engine", "onnxruntime", "--engine", "openvino"]
    args += ["--batch-size", "1", "--max-seq-length", str(SEQ_LEN), "--iterations", "2"]
    args += ["--threads", "1", "--json", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "onnxruntime" in result.output and "openvino" in result.output
    rows = json.loads(out.read_text())
    assert [r["engine"] for r in rows] == ["onnxruntime", "openvino"]


@needs_openvino
def test_evaluate_on_openvino_matches_onnxruntime(
    tiny_checkpoint: Path, dynamic_onnx: Path, data_dir: Path
) -> None:
    """Five examples with batch 2: the last, partial batch is padded for OpenVINO's shape."""
    common = {"data": data_dir / "dev.tsv", "seq_len": SEQ_LEN, "batch_size": 2, "threads": 1}
    ort = evaluate(tiny_checkpoint, [dynamic_onnx], max_samples=5, **common)
    ov = evaluate(tiny_checkpoint, [dynamic_onnx], max_samples=5, engine="openvino", **common)
    ort_model, ov_model = ort.results[1], ov.results[1]
    assert ov_model.engine == "openvino"
    assert ov_model.metrics == ort_model.metrics
    assert ov_model.agreement == 1.0
    assert ov_model.max_abs_diff is not None and ov_model.max_abs_diff < 1e-3


def test_cli_sparse_rate_needs_openvino_and_0_1(dynamic_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    base = ["bench", str(dynamic_onnx), "--iterations", "1", "--json", str(out)]
    result = runner.invoke(app, [*base, "--sparse-weights-decompression-rate", "0.5"])
    assert result.exit_code == 2 and "is an OpenVINO option" in result.output
    assert "--engine openvino" in result.output
    result = runner.invoke(
        app, [*base, "--engine", "openvino", "--sparse-weights-decompression-rate", "1.5"]
    )
    assert result.exit_code == 2 and "1.5" in result.output
    assert not out.exists()
