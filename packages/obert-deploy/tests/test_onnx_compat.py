"""Graph rewrites: LayerNorm decomposition, GELU order, opset/IR lowering, DQ-transpose folding."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from obert_deploy import (
    convert_for_deepsparse,
    decompose_layer_norm,
    fold_dequantize_transpose,
    reorder_gelu,
)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _layer_norm_model(opset: int, with_bias: bool = True) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "scale")]
    inputs = ["x", "scale"]
    if with_bias:
        inits.append(numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "bias"))
        inputs.append("bias")
    node = helper.make_node("LayerNormalization", inputs, ["y"], axis=-1, epsilon=1e-5)
    graph = helper.make_graph(
        [node],
        "ln",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("with_bias", [True, False])
def test_decompose_layer_norm_is_exact(opset: int, with_bias: bool) -> None:
    feeds = {"x": np.random.default_rng(1).normal(size=(2, 3, 8)).astype(np.float32) * 3}
    model = _layer_norm_model(opset, with_bias)
    (expected,) = _run(model, feeds)
    decomposed = decompose_layer_norm(_layer_norm_model(opset, with_bias))
    assert "LayerNormalization" not in {n.op_type for n in decomposed.graph.node}
    onnx.checker.check_model(decomposed)
    (got,) = _run(decomposed, feeds)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_convert_for_deepsparse_lowers_opset_and_ir() -> None:
    model = _layer_norm_model(18)
    model.ir_version = 10
    feeds = {"x": np.ones((2, 3, 8), np.float32) * np.arange(8, dtype=np.float32)}
    (expected,) = _run(_layer_norm_model(18), feeds)
    for opset in (18, 14):
        converted = convert_for_deepsparse(
            onnx.ModelProto.FromString(model.SerializeToString()), opset=opset
        )
        assert converted.ir_version == 8
        assert converted.opset_import[0].version == opset
        assert "LayerNormalization" not in {n.op_type for n in converted.graph.node}
        (got,) = _run(converted, feeds)
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("per_channel", [True, False])
def test_fold_dequantize_transpose_is_exact(per_channel: bool) -> None:
    rng = np.random.default_rng(2)
    weight_q = rng.integers(-127, 128, size=(6, 4)).astype(np.int8)  # (out, in), torch layout
    weight_q[rng.random((6, 4)) < 0.5] = 0
    scale = (rng.random(6) + 0.5).astype(np.float32) if per_channel else np.float32(0.1)
    zero = np.zeros(6, np.int8) if per_channel else np.int8(0)
    attrs = {"axis": 0} if per_channel else {}
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], **attrs),
        helper.make_node("Transpose", ["w"], ["w_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "w_t"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 6])],
        [
            numpy_helper.from_array(weight_q, "w_q"),
            numpy_helper.from_array(np.asarray(scale), "w_scale"),
            numpy_helper.from_array(np.asarray(zero), "w_zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    feeds = {"x": rng.normal(size=(3, 4)).astype(np.float32)}
    (expected,) = _run(model, feeds)
    folded = fold_dequantize_transpose(model)
    assert [n.op_type for n in folded.graph.node] == ["DequantizeLinear", "MatMul"]
    stored = numpy_helper.to_array(next(i for i in folded.graph.initializer if i.name == "w_q"))
    np.testing.assert_array_equal(stored, weight_q.T)
    onnx.checker.check_model(folded)
    (got,) = _run(folded, feeds)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def _gelu_model(swap: bool) -> onnx.ModelProto:
    """``x -> MatMul -> GELU`` in the dynamo exporter's order ``x * (0.5 * (1 + erf(x / c)))``."""
    rng = np.random.default_rng(2)
    inits = [
        numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array(1.4142135, np.float32), "sqrt2"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Div", ["h", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["a"]),
        helper.make_node("Mul", ["half", "a"] if swap else ["a", "half"], ["m"]),
        helper.make_node("Mul", ["m", "h"] if swap else ["h", "m"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


@pytest.mark.parametrize("swap", [False, True])
def test_reorder_gelu_multiplies_by_x_first(swap: bool) -> None:
    feeds = {"x": np.random.default_rng(3).normal(size=(2, 8)).astype(np.float32)}
    (expected,) = _run(_gelu_model(swap), feeds)
    model = _gelu_model(swap)
    assert reorder_gelu(model) == 1
    onnx.checker.check_model(model)
    by_output = {n.output[0]: n for n in model.graph.node}
    assert sorted(by_output["m"].input) == ["a", "h"]  # x * (1 + erf) first ...
    assert sorted(by_output["y"].input) == ["half", "m"]  # ... then * 0.5
    (got,) = _run(model, feeds)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert reorder_gelu(model) == 0  # idempotent: the new order does not match again


def test_reorder_gelu_leaves_other_products_alone() -> None:
    model = _gelu_model(False)
    model.graph.node[1].input[0] = "x"  # erf of another tensor than the one multiplied: no GELU
    before = model.SerializeToString()
    assert reorder_gelu(model) == 0
    assert model.SerializeToString() == before
