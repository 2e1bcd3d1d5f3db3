"""Graph rewrites that make exported ONNX models run well on older engines (DeepSparse 1.8).

DeepSparse 1.8.0 bundles an ONNX Runtime that reads IR version <= 9 (the dynamo exporter writes
IR 10), and it has no native kernel for the opset-17 ``LayerNormalization`` op that
``torch.onnx.export(dynamo=True)`` emits: such nodes fall back to its slow ONNX Runtime path
(measured here on MiniLM-L6: 88 % of ops supported with it, 97 % once decomposed, at opset 18
as well as 14). :func:`convert_for_deepsparse` decomposes ``LayerNormalization`` into the
primitive ops that the TorchScript exporter used to emit, puts the exact-erf GELU into the
TorchScript exporter's operation order (:func:`reorder_gelu`) and lowers the IR version; the
opset can stay at 18 (``onnx`` 1.14 reads up to 19) or be converted down.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter

from .._errors import ObertDeployError, OnnxModelError

__all__ = [
    "DEEPSPARSE_IR_VERSION",
    "DEEPSPARSE_OPSET",
    "MIN_OPSET",
    "convert_for_deepsparse",
    "decompose_layer_norm",
    "fold_dequantize_transpose",
    "opset_version",
    "reorder_gelu",
    "set_opset",
]

#: Highest IR version that DeepSparse 1.8.0's bundled ONNX Runtime loads is 9; 8 is what
#: onnx 1.14 writes for opset 14 models, so files stay readable by the older ``onnx`` too.
DEEPSPARSE_IR_VERSION = 8
#: Opset of DeepSparse exports: the dynamo exporter's native 18 (no lossy conversion needed).
DEEPSPARSE_OPSET = 18
#: Lowest opset reachable from the exporter's 18 with ``onnx.version_converter`` for BERT graphs
#: (transformers 5 attention needs >= 14; 18 -> 13 has no converter adapter for ``Add``).
MIN_OPSET = 14


def opset_version(model: onnx.ModelProto) -> int:
    """Return the default-domain (``ai.onnx``) opset of ``model``.

    Raises:
        OnnxModelError: ``model`` imports no default-domain opset.
    """
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise OnnxModelError(
        "ONNX model has no default-domain (ai.onnx) opset import; it was not written by an ONNX "
        "exporter: re-export it with `obert-deploy export`"
    )


def _const(graph: onnx.GraphProto, name: str, value: np.ndarray) -> str:
    graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def _reduce_mean_last(src: str, dst: str, axes_input: str) -> onnx.NodeProto:
    """``ReduceMean`` over the last axis (axes as an input from opset 18, else an attribute)."""
    if axes_input:
        return helper.make_node("ReduceMean", [src, axes_input], [dst], keepdims=1)
    return helper.make_node("ReduceMean", [src], [dst], axes=[-1], keepdims=1)


def decompose_layer_norm(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every ``LayerNormalization`` node (last-axis) by primitive ops, in place.

    ``y = (x - mean(x)) / sqrt(var(x) + eps) * scale + bias`` with ``ReduceMean`` over the last
    axis, exactly the subgraph the TorchScript exporter writes for ``torch.nn.LayerNorm``
    (Ba et al. 2016, Eq. 4). Nodes normalising over several axes, or whose mean/inv-std outputs
    are used, are left alone.

    Args:
        model: Model with a default-domain opset >= 17 (``LayerNormalization`` exists from 17).

    Returns:
        The same ``model`` object, rewritten.
    """
    graph = model.graph
    axes_as_input = opset_version(model) >= 18
    nodes: list[onnx.NodeProto] = []
    axes_name = ""
    for index, node in enumerate(graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        extra_outputs = [o for o in node.output[1:] if o]
        if node.op_type != "LayerNormalization" or attrs.get("axis", -1) != -1 or extra_outputs:
            nodes.append(node)
            continue
        if axes_as_input and not axes_name:
            axes_name = _const(graph, "obert_ln_axes", np.array([-1], dtype=np.int64))
        prefix = f"obert_ln{index}_"
        eps = _const(graph, prefix + "eps", np.array(attrs.get("epsilon", 1e-5), np.float32))
        x, scale = node.input[0], node.input[1]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        scaled = prefix + "scaled" if bias else node.output[0]
        nodes += [
            _reduce_mean_last(x, prefix + "mean", axes_name),
            helper.make_node("Sub", [x, prefix + "mean"], [prefix + "centered"]),
            helper.make_node("Mul", [prefix + "centered", prefix + "centered"], [prefix + "sq"]),
            _reduce_mean_last(prefix + "sq", prefix + "var", axes_name),
            helper.make_node("Add", [prefix + "var", eps], [prefix + "var_eps"]),
            helper.make_node("Sqrt", [prefix + "var_eps"], [prefix + "std"]),
            helper.make_node("Div", [prefix + "centered", prefix + "std"], [prefix + "normed"]),
            helper.make_node("Mul", [prefix + "normed", scale], [scaled]),
        ]
        if bias:
            nodes.append(helper.make_node("Add", [scaled, bias], [node.output[0]]))
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def reorder_gelu(model: onnx.ModelProto) -> int:
    """Rewrite ``x * (0.5 * (1 + erf(x / c)))`` as ``(x * (1 + erf(x / c))) * 0.5``, in place.

    The dynamo exporter writes the exact GELU (Hendrycks & Gimpel 2016) with the ``0.5`` applied
    to ``1 + erf`` first; the TorchScript exporter multiplied by ``x`` first. DeepSparse 1.8 only
    fuses the second order into the preceding (sparse) GEMM: with the first, every intermediate
    layer of MiniLM-L6 left an unfused "naive subgraph" and the 90 %-sparse model ran at 8.5 ms
    instead of 5 ms per sequence (batch 1, seq 128, 2 cores; ``deepsparse.model_debug_analysis``).
    The two orders differ only by float rounding.

    Args:
        model: Model to rewrite.

    Returns:
        Number of GELU subgraphs rewritten.
    """
    graph = model.graph
    scalars = {init.name for init in graph.initializer if int(np.prod(init.dims)) == 1}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    rewritten = 0
    for outer in graph.node:
        if outer.op_type != "Mul" or len(outer.input) != 2:
            continue
        for x, inner_out in (tuple(outer.input), tuple(reversed(outer.input))):
            inner = producer.get(inner_out)
            if inner is None or inner.op_type != "Mul" or consumers.get(inner_out) != 1:
                continue
            add_out, half = inner.input
            if half not in scalars:
                half, add_out = add_out, half
            add = producer.get(add_out)
            if add is None or add.op_type != "Add" or half not in scalars:
                continue
            erf = next(
                (producer[i] for i in add.input if i in producer and producer[i].op_type == "Erf"),
                None,
            )
            div = producer.get(erf.input[0]) if erf is not None else None
            if div is None or div.op_type != "Div" or div.input[0] != x:
                continue
            del inner.input[:]
            inner.input.extend([x, add_out])
            del outer.input[:]
            outer.input.extend([inner.output[0], half])
            rewritten += 1
            break
    return rewritten


def set_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Convert ``model`` to default-domain ``opset`` with ``onnx.version_converter``.

    ``LayerNormalization`` is decomposed first when the target is below 17, where it does not
    exist. Returns a new model (or ``model`` itself when already at ``opset``).

    Raises:
        ObertDeployError: The converter cannot reach ``opset``; the message names it.
    """
    if opset_version(model) == opset:
        return model
    if opset < 17:
        decompose_layer_norm(model)
    try:
        converted = version_converter.convert_version(model, opset)
    except Exception as exc:  # the C++ converter raises RuntimeError/IndexError
        raise ObertDeployError(
            f"cannot convert the exported graph to opset {opset} ({exc}); use a higher "
            f"--opset (18 needs no conversion)"
        ) from exc
    return converted


def convert_for_deepsparse(
    model: onnx.ModelProto,
    *,
    opset: int = DEEPSPARSE_OPSET,
    ir_version: int = DEEPSPARSE_IR_VERSION,
) -> onnx.ModelProto:
    """Make a dynamo-exported model loadable and fast in DeepSparse 1.8.

    Decomposes ``LayerNormalization``, reorders the GELU multiplications
    (:func:`reorder_gelu`), converts to ``opset`` and lowers the IR version.

    Args:
        model: Exported model (any opset >= ``opset``).
        opset: Target default-domain opset.
        ir_version: Target IR version (DeepSparse 1.8 reads <= 9).

    Returns:
        The converted model, checked with ``onnx.checker``.
    """
    decompose_layer_norm(model)
    reorder_gelu(model)
    converted = set_opset(model, opset)
    converted.ir_version = min(int(converted.ir_version), ir_version)
    onnx.checker.check_model(converted)
    return converted


def fold_dequantize_transpose(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold ``DequantizeLinear(W_q) -> Transpose`` on constant 2-D weights into the initializer.

    PT2E-quantized ``nn.Linear`` layers export as ``DequantizeLinear(W_int8, axis=0)`` followed by
    ``Transpose(perm=[1, 0])`` before ``MatMul``. Storing ``W_int8`` transposed with ``axis=1``
    gives the standard QDQ ``MatMul`` weight pattern that ONNX Runtime and DeepSparse fuse into
    integer kernels. The rewrite is exact (a permutation of stored integers). In place.
    """
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    removed: set[str] = set()
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        users = consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "Transpose" or node.output[0] in graph_outputs:
            continue
        transpose = users[0]
        if transpose.output[0] in graph_outputs:
            continue
        perm = [helper.get_attribute_value(a) for a in transpose.attribute if a.name == "perm"]
        weight = numpy_helper.to_array(inits[node.input[0]])
        if weight.ndim != 2 or (perm and list(perm[0]) != [1, 0]):
            continue
        if len(consumers.get(node.input[0], [])) != 1:
            continue
        scale = inits.get(node.input[1])
        per_channel = scale is not None and numpy_helper.to_array(scale).size > 1
        inits[node.input[0]].CopyFrom(
            numpy_helper.from_array(np.ascontiguousarray(weight.T), node.input[0])
        )
        if per_channel:
            old_axis = next(
                (int(helper.get_attribute_value(a)) for a in node.attribute if a.name == "axis"), 1
            )
            kept_attrs = [a for a in node.attribute if a.name != "axis"]
            del node.attribute[:]
            node.attribute.extend([*kept_attrs, helper.make_attribute("axis", 1 - old_axis % 2)])
        for user in graph.node:
            for i, name in enumerate(user.input):
                if name == transpose.output[0]:
                    user.input[i] = node.output[0]
        removed.add(transpose.output[0])
    kept = [n for n in graph.node if not (n.op_type == "Transpose" and n.output[0] in removed)]
    del graph.node[:]
    graph.node.extend(kept)
    return model
