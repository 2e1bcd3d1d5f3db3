"""Per-weight sparsity of PyTorch Linear layers and of ONNX weight initializers.

The ONNX side is pure NumPy + onnx (no torch import), so it also runs in the DeepSparse
environment. The exporter may rename and transpose weights (the dynamo exporter constant-folds
``W^T`` into a new initializer called ``val_<n>``), so PyTorch weights are matched to ONNX
initializers by content (``W`` or ``W^T``, bit-exact), not by name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import numpy_helper

from .._format import percent

if TYPE_CHECKING:
    import torch

__all__ = [
    "EMBEDDING_INPUTS",
    "OnnxWeightSparsity",
    "SparsityRow",
    "embedding_initializers",
    "linear_weights",
    "match_sparsity",
    "onnx_weight_sparsity",
    "sparsity_table_markdown",
]

_QUANT_CONSUMERS = {
    # op type -> index of the zero-point input that belongs to the weight at input index 0/1
    "DequantizeLinear": {0: 2},
    "MatMulInteger": {1: 3},
    "DynamicQuantizeMatMul": {1: 3},
    "MatMulIntegerToFloat": {1: 5},
    "QLinearMatMul": {0: 2, 3: 5},
}
#: Embedding lookups and the input positions that hold (parts of) the table: ``Gather`` reads
#: the table at input 0; ONNX Runtime's 4-bit ``GatherBlockQuantized`` reads the packed table at
#: 0, its scales at 2 and its zero points at 3.
EMBEDDING_INPUTS: dict[str, tuple[int, ...]] = {
    "Gather": (0,),
    "GatherBlockQuantized": (0, 2, 3),
}


@dataclass(frozen=True)
class SparsityRow:
    """Sparsity of one PyTorch Linear weight and of its ONNX initializer.

    Attributes:
        name: PyTorch parameter name.
        shape: PyTorch shape ``(out_features, in_features)``.
        torch_sparsity: Fraction of exact zeros in PyTorch.
        onnx_initializer: Name of the matching ONNX initializer, or ``None`` if none matched.
        onnx_sparsity: Fraction of zeros in that initializer.
        same_zeros: Whether the zero pattern is identical (``W`` stored as is or transposed).
    """

    name: str
    shape: tuple[int, ...]
    torch_sparsity: float
    onnx_initializer: str | None
    onnx_sparsity: float | None
    same_zeros: bool

    @property
    def pruned(self) -> bool:
        """True when the PyTorch weight has at least one exact zero."""
        return self.torch_sparsity > 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {**asdict(self), "shape": list(self.shape), "pruned": self.pruned}


@dataclass(frozen=True)
class OnnxWeightSparsity:
    """Sparsity of one weight-like (2-D, float or 8-bit integer) ONNX initializer.

    Attributes:
        name: Initializer name.
        shape: Its shape.
        dtype: NumPy dtype name (``float32``, ``int8``, ...).
        consumers: Op types reading it (directly, or through ``DequantizeLinear``).
        sparsity: Fraction of entries equal to the "zero" value (the quantization zero point for
            integer weights, 0.0 for float ones).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    consumers: tuple[str, ...]
    sparsity: float

    @property
    def is_embedding(self) -> bool:
        """True when only embedding lookups (``Gather``, 4-bit ``GatherBlockQuantized``) read it."""
        return bool(self.consumers) and set(self.consumers) <= set(EMBEDDING_INPUTS)


def embedding_initializers(model: onnx.ModelProto) -> set[str]:
    """Names of the initializers that belong to embedding tables.

    An initializer belongs to one when every use is a table input of an embedding lookup
    (:data:`EMBEDDING_INPUTS`), directly or through a ``DequantizeLinear`` whose output only
    feeds such lookups (then its scale and zero point belong to the table too).
    """
    uses: dict[str, list[tuple[str, int]]] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name:
                uses.setdefault(name, []).append((node.op_type, index))

    def lookup_only(name: str) -> bool:
        found = uses.get(name, [])
        return bool(found) and all(index in EMBEDDING_INPUTS.get(op, ()) for op, index in found)

    through_dq: set[str] = set()
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.output and lookup_only(node.output[0]):
            through_dq.update(name for name in node.input if name)
    initializers = {init.name for init in model.graph.initializer}
    embedding = {name for name in initializers if lookup_only(name)}
    for name in through_dq & initializers:
        if all(op == "DequantizeLinear" for op, _ in uses.get(name, [])):
            embedding.add(name)
    return embedding


def linear_weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Return every ``nn.Linear`` weight of ``model`` as a float32 NumPy array, by name."""
    import torch

    weights = {}
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            name = f"{module_name}.weight" if module_name else "weight"
            weights[name] = module.weight.detach().to(torch.float32).cpu().numpy()
    return weights


def _digest(array: np.ndarray) -> tuple[tuple[int, ...], str, str]:
    contiguous = np.ascontiguousarray(array)
    digest = hashlib.blake2b(contiguous.tobytes(), digest_size=16).hexdigest()
    return contiguous.shape, str(contiguous.dtype), digest


def match_sparsity(
    torch_weights: Mapping[str, np.ndarray], model: onnx.ModelProto
) -> list[SparsityRow]:
    """Match each PyTorch weight to the ONNX initializer holding it and compare sparsity.

    Args:
        torch_weights: Name -> float32 weight, e.g. from :func:`linear_weights`.
        model: The exported (fp32) ONNX model.

    Returns:
        One row per PyTorch weight, in the given order.
    """
    # digest -> (initializer name, fraction of exact zeros measured in the initializer)
    index: dict[tuple[tuple[int, ...], str, str], tuple[str, float]] = {}
    for init in model.graph.initializer:
        if len(init.dims) != 2:
            continue
        array = numpy_helper.to_array(init)
        sparsity = float(np.mean(array == 0)) if array.size else 0.0
        index.setdefault(_digest(array), (init.name, sparsity))
    rows = []
    for name, weight in torch_weights.items():
        torch_sparsity = float(np.mean(weight == 0)) if weight.size else 0.0
        found = index.get(_digest(weight)) or index.get(_digest(weight.T))
        rows.append(
            SparsityRow(
                name=name,
                shape=tuple(weight.shape),
                torch_sparsity=torch_sparsity,
                onnx_initializer=found[0] if found else None,
                onnx_sparsity=found[1] if found else None,
                same_zeros=found is not None,
            )
        )
    return rows


def _zero_points(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Map each quantized-weight initializer name to its zero point (scalar or per channel)."""
    inits = {init.name: init for init in model.graph.initializer}
    points: dict[str, np.ndarray] = {}
    for node in model.graph.node:
        for weight_index, zp_index in _QUANT_CONSUMERS.get(node.op_type, {}).items():
            if len(node.input) <= weight_index or node.input[weight_index] not in inits:
                continue
            weight = node.input[weight_index]
            if len(node.input) > zp_index and node.input[zp_index] in inits:
                zp = numpy_helper.to_array(inits[node.input[zp_index]])
                if node.op_type == "DequantizeLinear" and zp.size > 1:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                    shape = [1] * len(inits[weight].dims)
                    shape[axis] = zp.size
                    zp = zp.reshape(shape)
                elif zp.size > 1:  # per-column zero point of a MatMul B operand
                    zp = zp.reshape(1, -1)
                points[weight] = zp
    return points


def onnx_weight_sparsity(model: onnx.ModelProto) -> list[OnnxWeightSparsity]:
    """Sparsity of every 2-D float or 8-bit integer initializer of ``model``.

    For quantized weights the "zero" is the zero point, which is what a pruned weight is stored
    as (symmetric int8 quantization maps 0.0 to the integer 0).

    Args:
        model: Any ONNX model (fp32, dynamic/static int8, QDQ).

    Returns:
        One row per 2-D initializer with both dimensions >= 2, in initializer order.
    """
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    # See through DequantizeLinear: report what consumes the dequantized weight.
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input:
            consumers[node.input[0]] = consumers.get(node.output[0], []) or ["DequantizeLinear"]
    zero_points = _zero_points(model)
    rows = []
    for init in model.graph.initializer:
        if len(init.dims) != 2 or min(init.dims) < 2:
            continue
        array = numpy_helper.to_array(init)
        if array.dtype not in (np.float32, np.float16, np.int8, np.uint8):
            continue
        zero = zero_points.get(init.name, np.zeros((), dtype=array.dtype))
        rows.append(
            OnnxWeightSparsity(
                name=init.name,
                shape=tuple(int(d) for d in init.dims),
                dtype=str(array.dtype),
                consumers=tuple(sorted(set(consumers.get(init.name, [])))),
                sparsity=float(np.mean(array == zero)),
            )
        )
    return rows


def sparsity_table_markdown(rows: list[SparsityRow]) -> str:
    """Render export sparsity rows as a markdown table."""
    lines = [
        "| weight | shape | PyTorch sparsity | ONNX initializer | ONNX sparsity | zeros kept |",
        "|---|---|---:|---|---:|:---:|",
    ]
    for row in rows:
        onnx_sparsity = "-" if row.onnx_sparsity is None else percent(row.onnx_sparsity)
        kept = "yes" if row.same_zeros else ("NO" if row.pruned else "n/a")
        lines.append(
            f"| {row.name} | {'x'.join(map(str, row.shape))} | {percent(row.torch_sparsity)} | "
            f"{row.onnx_initializer or '-'} | {onnx_sparsity} | {kept} |"
        )
    return "\n".join(lines)
