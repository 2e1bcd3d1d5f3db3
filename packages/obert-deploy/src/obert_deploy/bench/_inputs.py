"""Read ONNX files and their input signatures; build inputs; check requested shapes.

Torch-free: used by the benchmark in the DeepSparse environment as well.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .._errors import OnnxModelError, ShapeMismatchError, brief

__all__ = [
    "OnnxInput",
    "check_input_shapes",
    "feed_shape",
    "has_token_inputs",
    "infer_vocab_size",
    "is_static",
    "load_onnx",
    "make_inputs",
    "onnx_inputs",
]

_ELEM_TO_NUMPY: dict[int, np.dtype[Any]] = {
    onnx.TensorProto.INT64: np.dtype(np.int64),
    onnx.TensorProto.INT32: np.dtype(np.int32),
    onnx.TensorProto.FLOAT: np.dtype(np.float32),
    onnx.TensorProto.BOOL: np.dtype(np.bool_),
}


@dataclass(frozen=True)
class OnnxInput:
    """One graph input.

    Attributes:
        name: Input name, e.g. ``"input_ids"``.
        dtype: NumPy dtype of the input.
        shape: Dimensions; an ``int`` for a static dimension, a ``str`` (symbol) or ``None`` for a
            dynamic one.
    """

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int | str | None, ...]


def load_onnx(path: str | os.PathLike[str], *, load_weights: bool = True) -> onnx.ModelProto:
    """Load an ONNX file, turning a missing or corrupt file into :class:`OnnxModelError`.

    Args:
        path: The ``.onnx`` file.
        load_weights: Also load external tensor data (if any).
    """
    file = Path(path)
    if file.is_dir():
        found = sorted(p.name for p in file.glob("*.onnx"))[:3]
        hint = f" (it holds {', '.join(found)})" if found else ""
        raise OnnxModelError(
            f"ONNX model {str(file)!r} is a directory{hint}; pass the .onnx file itself "
            "(a checkpoint directory is exported with `obert-deploy export`)"
        )
    if not file.is_file():
        raise OnnxModelError(
            f"ONNX model {str(file)!r} does not exist; create it with `obert-deploy export`"
        )
    try:
        model = onnx.load(str(file), load_external_data=load_weights)
    except Exception as exc:  # protobuf DecodeError and friends
        raise OnnxModelError(
            f"ONNX model {str(file)!r} cannot be parsed ({brief(exc)}); the file is corrupt or "
            "not ONNX: re-create it with `obert-deploy export`"
        ) from exc
    if not model.graph.node:
        raise OnnxModelError(
            f"ONNX model {str(file)!r} has an empty graph; the file is corrupt or not ONNX: "
            "re-create it with `obert-deploy export`"
        )
    return model


def onnx_inputs(model: onnx.ModelProto) -> list[OnnxInput]:
    """Return the graph inputs that are not initializers, in graph order."""
    initializer_names = {init.name for init in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializer_names:
            continue
        tensor = value.type.tensor_type
        dims: list[int | str | None] = []
        for dim in tensor.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param"):
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        dtype = _ELEM_TO_NUMPY.get(tensor.elem_type, np.dtype(np.int64))
        inputs.append(OnnxInput(name=value.name, dtype=dtype, shape=tuple(dims)))
    return inputs


def is_static(inputs: list[OnnxInput]) -> bool:
    """True when every dimension of every input is a fixed integer."""
    return all(isinstance(d, int) for spec in inputs for d in spec.shape)


def has_token_inputs(inputs: list[OnnxInput]) -> bool:
    """True when the model takes ``(batch, sequence)`` token inputs (rank 2), as text models do.

    Image models (``pixel_values`` of shape ``(batch, channels, height, width)``) and other
    fixed-shape inputs have no sequence axis: ``--max-seq-length`` does not apply to them.
    """
    return any(len(spec.shape) == 2 for spec in inputs)


def feed_shape(spec: OnnxInput, batch_size: int, seq_len: int) -> tuple[int, ...]:
    """The concrete shape fed to ``spec`` for a ``(batch_size, seq_len)`` request.

    A token input (rank 2) gets ``(batch_size, seq_len)``; any other input (an image's
    ``(batch, channels, height, width)``) gets ``batch_size`` on its first axis and its own
    static dimensions elsewhere (:func:`check_input_shapes` refuses dynamic ones first).
    """
    if len(spec.shape) == 2:
        return (batch_size, seq_len)
    return (batch_size, *(int(d) if isinstance(d, int) else 1 for d in spec.shape[1:]))


def check_input_shapes(
    inputs: list[OnnxInput], batch_size: int, seq_len: int, *, model_name: str = "model"
) -> None:
    """Check that a ``(batch_size, seq_len)`` request fits every input's static dimensions.

    Token inputs are rank 2, ``(batch, sequence)``; an input of another rank (an image's
    ``pixel_values``, ``(batch, channels, height, width)``) must have static dimensions after
    the batch axis, and only its batch axis is checked against the request.

    Raises:
        ShapeMismatchError: A static dimension differs from the request, or a non-token input
            has a dynamic dimension after its batch axis; the message names the input, its
            shape and how to fix it.
    """
    if batch_size < 1 or seq_len < 1:
        raise ShapeMismatchError(
            f"batch size {batch_size} and sequence length {seq_len} must both be >= 1"
        )
    wanted = (batch_size, seq_len)
    for spec in inputs:
        if len(spec.shape) != 2:
            _check_fixed_input(spec, batch_size, model_name)
            continue
        for axis, (dim, want) in enumerate(zip(spec.shape, wanted, strict=True)):
            if isinstance(dim, int) and dim != want:
                what = "batch size" if axis == 0 else "sequence length"
                fixed = [
                    f"{flag} {value}"
                    for flag, value in zip(
                        ("--batch-size", "--max-seq-length"), spec.shape, strict=True
                    )
                    if isinstance(value, int)
                ]
                raise ShapeMismatchError(
                    f"{model_name}: input {spec.name!r} has static shape {list(spec.shape)} but "
                    f"{what} {want} was requested; use {' '.join(fixed)}, or re-export with "
                    f"`obert-deploy export --batch-size {batch_size} --max-seq-length {seq_len}` "
                    "(or --dynamic-shapes for ONNX Runtime)"
                )


def _check_fixed_input(spec: OnnxInput, batch_size: int, model_name: str) -> None:
    """An input that is not ``(batch, sequence)``: static after the batch axis, batch fits."""
    if not spec.shape:
        raise ShapeMismatchError(
            f"{model_name}: input {spec.name!r} is a scalar; obert-deploy feeds batched inputs "
            "(batch, sequence) tokens or (batch, ...) fixed-shape tensors such as images"
        )
    dynamic = [axis for axis, dim in enumerate(spec.shape[1:], start=1) if not isinstance(dim, int)]
    if dynamic:
        raise ShapeMismatchError(
            f"{model_name}: input {spec.name!r} of shape {list(spec.shape)} has dynamic axes "
            f"{dynamic} after the batch axis; obert-deploy feeds such inputs (images) at their "
            "exported size: re-export with `obert-deploy export` (only the batch axis dynamic)"
        )
    batch = spec.shape[0]
    if isinstance(batch, int) and batch != batch_size:
        raise ShapeMismatchError(
            f"{model_name}: input {spec.name!r} has static shape {list(spec.shape)} but batch "
            f"size {batch_size} was requested; use --batch-size {batch}, or re-export with "
            f"`obert-deploy export --batch-size {batch_size}` (or --dynamic-shapes for ONNX "
            "Runtime)"
        )


def infer_vocab_size(model: onnx.ModelProto, input_name: str = "input_ids") -> int | None:
    """Return the number of rows of the embedding table gathered by ``input_name``, if found."""
    inits = {init.name: init for init in model.graph.initializer}
    sources = {input_name}
    for node in model.graph.node:
        if node.op_type in ("Cast", "Identity") and node.input and node.input[0] in sources:
            sources.add(node.output[0])
        elif node.op_type == "Gather" and len(node.input) > 1 and node.input[1] in sources:
            table = inits.get(node.input[0])
            if table is not None and len(table.dims) == 2:
                return int(table.dims[0])
            if table is None:
                # Quantized embeddings: Gather(DequantizeLinear(table_q), ids).
                producer = next((n for n in model.graph.node if node.input[0] in n.output), None)
                if producer is not None and producer.input and producer.input[0] in inits:
                    return int(numpy_helper.to_array(inits[producer.input[0]]).shape[0])
    return None


def make_inputs(
    inputs: list[OnnxInput],
    batch_size: int,
    seq_len: int,
    *,
    vocab_size: int | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Build one batch of synthetic inputs (random ids, full attention, segment 0; images).

    Latency does not depend on the token values; ids are drawn below ``vocab_size`` (or 100).
    A float input that is not ``(batch, sequence)`` (an image model's ``pixel_values``) gets
    standard normal values at its exported shape (:func:`feed_shape`), batch ``batch_size``.

    Args:
        inputs: The model's inputs (from :func:`onnx_inputs`).
        batch_size: Rows.
        seq_len: Tokens per row.
        vocab_size: Upper bound of the token ids (capped at 30000); default 100.
        seed: Seed of the random ids.

    Returns:
        Input name -> array of shape :func:`feed_shape` in the input's dtype.
    """
    rng = np.random.default_rng(seed)
    high = max(2, min(vocab_size or 100, 30000))
    feed: dict[str, np.ndarray] = {}
    for spec in inputs:
        shape = feed_shape(spec, batch_size, seq_len)
        array: np.ndarray[Any, np.dtype[Any]]
        if len(shape) != 2 and np.issubdtype(spec.dtype, np.floating):
            array = rng.standard_normal(shape)  # pixel_values: normalised images
        elif spec.name == "input_ids" or ("ids" in spec.name and "type" not in spec.name):
            array = rng.integers(1, high, size=shape)
        elif "mask" in spec.name:
            array = np.ones(shape)
        else:
            array = np.zeros(shape)
        feed[spec.name] = array.astype(spec.dtype)
    return feed
