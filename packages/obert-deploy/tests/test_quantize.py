"""Post-training int8 quantization with ONNX Runtime keeps zeros and stays accurate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from obert_deploy import (
    DynamicInt8Config,
    ObertDeployError,
    StaticInt8Config,
    load_onnx,
    make_inputs,
    onnx_inputs,
    onnx_weight_sparsity,
    quantize_onnx,
)


def _outputs(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _feeds(path: Path, seed: int) -> dict[str, np.ndarray]:
    return make_inputs(onnx_inputs(load_onnx(path)), 2, 16, vocab_size=80, seed=seed)


def test_dynamic_int8(tmp_path: Path, dynamic_onnx: Path) -> None:
    out = tmp_path / "dyn_int8.onnx"
    report = quantize_onnx(dynamic_onnx, out, DynamicInt8Config())
    model = load_onnx(out)
    assert "MatMulInteger" in {n.op_type for n in model.graph.node}
    assert report.sparsity_kept
    encoder = {k: v for k, v in report.sparsity_after.items() if v > 0.5}
    assert len(encoder) == 12
    assert all(v >= 0.79 for v in encoder.values())
    assert report.output_bytes < report.input_bytes
    feeds = _feeds(dynamic_onnx, seed=3)
    np.testing.assert_allclose(_outputs(out, feeds), _outputs(dynamic_onnx, feeds), atol=0.05)


def test_dynamic_int8_with_4bit_embeddings(tmp_path: Path, dynamic_onnx: Path) -> None:
    int8, int4 = tmp_path / "int8.onnx", tmp_path / "emb4.onnx"
    quantize_onnx(dynamic_onnx, int8, DynamicInt8Config())
    report = quantize_onnx(dynamic_onnx, int4, DynamicInt8Config(embedding_bits=4))
    model = load_onnx(int4)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("GatherBlockQuantized") == 3  # word, position and token-type tables
    assert "Gather" not in ops or all(
        n.input[0] not in {i.name for i in model.graph.initializer if len(i.dims) == 2}
        for n in model.graph.node
        if n.op_type == "Gather"
    )
    assert "MatMulInteger" in ops
    assert report.sparsity_kept  # the pruned MatMul weights are still int8 with their zeros
    assert report.output_bytes < int8.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb4.onnx", "int8.onnx"]  # no stage
    feeds = _feeds(dynamic_onnx, seed=5)
    np.testing.assert_allclose(_outputs(int4, feeds), _outputs(dynamic_onnx, feeds), atol=0.1)


def test_bad_embedding_bits(tmp_path: Path, dynamic_onnx: Path) -> None:
    with pytest.raises(ObertDeployError, match="embedding_bits 2"):
        DynamicInt8Config(embedding_bits=2)
    with pytest.raises(ObertDeployError, match="embedding_block_size 48"):
        DynamicInt8Config(embedding_bits=4, embedding_block_size=48)


def test_static_qdq_int8_keeps_format_for_deepsparse(
    static_onnx: Path, static_int8_onnx: Path
) -> None:
    model = load_onnx(static_int8_onnx)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "MatMulInteger" not in ops
    assert model.ir_version <= 8  # still loadable by DeepSparse / onnx 1.14
    int8 = [w for w in onnx_weight_sparsity(model) if w.dtype == "int8" and not w.is_embedding]
    assert sum(w.sparsity >= 0.79 for w in int8) == 12  # the 12 pruned encoder weights
    feeds = _feeds(static_onnx, seed=4)
    np.testing.assert_allclose(
        _outputs(static_int8_onnx, feeds), _outputs(static_onnx, feeds), atol=0.1
    )


def test_static_needs_calibration(tmp_path: Path, static_onnx: Path) -> None:
    with pytest.raises(ObertDeployError, match="calibration data"):
        quantize_onnx(static_onnx, tmp_path / "x.onnx", StaticInt8Config())
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(ObertDeployError, match="calibration data was empty"):
        quantize_onnx(static_onnx, tmp_path / "x.onnx", StaticInt8Config(), calibration=[])
    assert list(tmp_path.iterdir()) == []


def test_unknown_config_and_bad_options(tmp_path: Path, static_onnx: Path) -> None:
    with pytest.raises(ObertDeployError, match=r"no quantization handler for str"):
        quantize_onnx(static_onnx, tmp_path / "x.onnx", "int4")  # type: ignore[arg-type]
    with pytest.raises(ObertDeployError, match="'kl'"):
        StaticInt8Config(calibration_method="kl")


def test_static_qoperator_for_deepsparse(tmp_path: Path, static_onnx: Path) -> None:
    config = StaticInt8Config.for_engine("deepsparse")
    assert (config.quant_format, config.per_channel, config.op_types) == (
        "qoperator",
        False,
        ("MatMul",),
    )
    feeds = [_feeds(static_onnx, seed=s) for s in range(4)]
    out = tmp_path / "qop.onnx"
    report = quantize_onnx(static_onnx, out, config, calibration=feeds)
    assert report.method == "static-qoperator" and report.sparsity_kept
    model = load_onnx(out)
    ops = {n.op_type for n in model.graph.node}
    assert "QLinearMatMul" in ops and "DequantizeLinear" in ops
    assert model.ir_version <= 8
    int8 = [w for w in onnx_weight_sparsity(model) if w.dtype == "int8"]
    assert sum(w.sparsity >= 0.79 and "QLinearMatMul" in w.consumers for w in int8) == 12
    check = _feeds(static_onnx, seed=9)
    np.testing.assert_allclose(_outputs(out, check), _outputs(static_onnx, check), atol=0.1)
    assert StaticInt8Config.for_engine("deepsparse", per_channel=True).per_channel is True
    with pytest.raises(ObertDeployError, match="'tflite'"):
        StaticInt8Config.for_engine("tflite")
    with pytest.raises(ObertDeployError, match="'qlinear'"):
        StaticInt8Config(quant_format="qlinear")
