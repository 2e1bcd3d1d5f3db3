"""Up-front checks that turn silent garbage or deep engine tracebacks into one clear error.

* non-finite weights (a diverged or damaged model): named per tensor, before export, QAT,
  quantization or evaluation;
* non-finite outputs (a finite model that still overflows);
* a sequence length beyond the model's position embeddings: read from the checkpoint config,
  or from the ONNX graph (the row count of the position-embedding table).

Torch is imported only by the functions that take a torch model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import numpy_helper

from ._errors import CheckpointError, OnnxModelError, ShapeMismatchError, VerificationError

if TYPE_CHECKING:
    import torch

__all__ = [
    "check_finite_initializers",
    "check_finite_outputs",
    "check_finite_parameters",
    "check_seq_len",
    "check_token_ids",
    "config_max_positions",
    "nonfinite_summary",
    "onnx_max_positions",
]

#: Model types whose position ids start after the padding index (RoBERTa family): the usable
#: length is ``max_position_embeddings - pad_token_id - 1``.
_PADDED_POSITIONS = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert"})
_FLOAT_TYPES = frozenset(
    {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.BFLOAT16,
    }
)
_SHOWN = 3


def _describe(name: str, values: np.ndarray) -> str | None:
    """``"name (2 NaN, 1 inf of 64)"`` when ``values`` has non-finite entries, else ``None``."""
    with np.errstate(invalid="ignore"):
        if values.size == 0 or np.isfinite(values.sum()):
            return None
    nan = int(np.isnan(values).sum())
    inf = int(np.isinf(values).sum())
    if nan == 0 and inf == 0:
        return None  # a finite tensor whose sum overflowed
    parts = [f"{nan} NaN"] if nan else []
    parts += [f"{inf} inf"] if inf else []
    return f"{name} ({', '.join(parts)} of {values.size})"


def nonfinite_summary(tensors: Iterable[tuple[str, np.ndarray]]) -> tuple[list[str], int]:
    """Describe the tensors that hold NaN or inf.

    Args:
        tensors: ``(name, float array)`` pairs.

    Returns:
        One ``"name (k NaN, j inf of n)"`` per bad tensor, and the number of tensors checked.
    """
    bad, total = [], 0
    for name, values in tensors:
        total += 1
        found = _describe(name, values)
        if found is not None:
            bad.append(found)
    return bad, total


def _listing(bad: Sequence[str]) -> str:
    more = f", ... ({len(bad) - _SHOWN} more)" if len(bad) > _SHOWN else ""
    return ", ".join(bad[:_SHOWN]) + more


def _torch_tensors(model: torch.nn.Module) -> Iterable[tuple[str, np.ndarray]]:
    import torch

    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.is_floating_point():
            yield name, tensor.detach().to(torch.float32).cpu().numpy()


def check_finite_parameters(model: torch.nn.Module, source: str) -> None:
    """Refuse a model with NaN or inf parameters or buffers, naming them.

    Args:
        model: The loaded model.
        source: Where it came from (checkpoint directory), for the message.

    Raises:
        CheckpointError: Some floating-point tensor is not finite.
    """
    bad, total = nonfinite_summary(_torch_tensors(model))
    if bad:
        raise CheckpointError(
            f"checkpoint {source!r} has NaN/inf weights in {len(bad)} of {total} tensors: "
            f"{_listing(bad)}; the model diverged or the file is damaged, so every output would "
            "be garbage: use an earlier checkpoint or re-train (nothing was written)"
        )


def check_finite_initializers(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Refuse an ONNX model with NaN or inf float initializers, naming them.

    Raises:
        OnnxModelError: Some float initializer is not finite.
    """
    tensors = (
        (init.name, numpy_helper.to_array(init).astype(np.float32, copy=False))
        for init in model.graph.initializer
        if init.data_type in _FLOAT_TYPES
    )
    bad, total = nonfinite_summary(tensors)
    if bad:
        raise OnnxModelError(
            f"ONNX model {os.fspath(path)!r} has NaN/inf weights in {len(bad)} of {total} float "
            f"initializers: {_listing(bad)}; it was exported from a broken model: re-export it "
            "from a checkpoint with finite weights (nothing was written)"
        )


def check_finite_outputs(
    outputs: Sequence[np.ndarray], names: Sequence[str], what: str, remedy: str
) -> None:
    """Refuse NaN or inf model outputs.

    Args:
        outputs: Output arrays, in ``names`` order.
        names: Output names.
        what: Which model produced them (e.g. ``"PyTorch"`` or a file name), for the message.
        remedy: What to do about it, appended to the message.

    Raises:
        VerificationError: An output holds NaN or inf.
    """
    bad, _ = nonfinite_summary(
        (name, np.asarray(out, dtype=np.float32)) for name, out in zip(names, outputs, strict=True)
    )
    if bad:
        raise VerificationError(f"{what} output {_listing(bad)} is not finite; {remedy}")


def config_max_positions(config: Any) -> int | None:
    """Longest sequence a Hugging Face config's absolute position embeddings allow, if bounded.

    Args:
        config: A ``transformers`` ``PretrainedConfig``.

    Returns:
        ``max_position_embeddings`` (less the padding offset of the RoBERTa family), or ``None``
        when the model has no absolute position embeddings.
    """
    maximum = getattr(config, "max_position_embeddings", None)
    if not isinstance(maximum, int) or maximum <= 0:
        return None
    if getattr(config, "position_biased_input", True) is False:  # DeBERTa: relative only
        return None
    if getattr(config, "model_type", "") in _PADDED_POSITIONS:
        maximum -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return maximum


def _table_rows(model: onnx.ModelProto, name: str, producers: dict[str, onnx.NodeProto]) -> int:
    """Rows of the 2-D table ``name`` (an initializer, possibly behind DequantizeLinear)."""
    inits = {init.name: init for init in model.graph.initializer}
    if name not in inits and name in producers:
        node = producers[name]
        if node.op_type == "DequantizeLinear" and node.input:
            name = node.input[0]
    init = inits.get(name)
    return int(init.dims[0]) if init is not None and len(init.dims) == 2 else 0


def _constant_rooted(name: str, model: onnx.ModelProto, producers: dict[str, Any]) -> bool:
    """Whether ``name`` is computed from a constant through its data inputs (not a graph input)."""
    inputs = {value.name for value in model.graph.input}
    inits = {init.name for init in model.graph.initializer}
    for _ in range(32):
        if name in inputs:
            return False
        if name in inits:
            return True
        node = producers.get(name)
        if node is None:
            return False
        if node.op_type == "Constant":
            return True
        if not node.input:
            return False
        name = node.input[0]
    return False


def onnx_max_positions(model: onnx.ModelProto) -> int | None:
    """Rows of the position-embedding table of an exported Transformer, if one is found.

    The position table is the embedding lookup (``Gather`` or ``GatherBlockQuantized``) whose
    indices come from a constant (the ``position_ids`` buffer), not from a graph input; with
    several such tables (token types from a buffer too) the largest is taken.

    Returns:
        The number of positions, or ``None`` when the graph has no such lookup.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    rows = [
        _table_rows(model, node.input[0], producers)
        for node in model.graph.node
        if node.op_type in ("Gather", "GatherBlockQuantized")
        and len(node.input) > 1
        and _constant_rooted(node.input[1], model, producers)
    ]
    best = max(rows, default=0)
    return best or None


def check_seq_len(seq_len: int, maximum: int | None, what: str) -> None:
    """Refuse a sequence length beyond the model's position embeddings.

    Args:
        seq_len: The requested tokens per sequence.
        maximum: The model's limit (``None``: unbounded or unknown, nothing to check).
        what: The model, for the message (checkpoint directory or ONNX file).

    Raises:
        ShapeMismatchError: ``seq_len > maximum``.
    """
    if maximum is not None and seq_len > maximum:
        raise ShapeMismatchError(
            f"sequence length {seq_len} (--max-seq-length) exceeds the {maximum} positions of "
            f"{what} (its max_position_embeddings); pass --max-seq-length {maximum} or less"
        )


def check_token_ids(feeds: dict[str, np.ndarray], vocab_size: int | None, tokenizer: str) -> None:
    """Refuse token ids beyond the model's vocabulary (the tokenizer of another model).

    Args:
        feeds: Tokenised inputs (``input_ids`` is checked).
        vocab_size: Rows of the model's word embeddings (``None`` or 0: unknown, not checked).
        tokenizer: Where the tokenizer came from, for the message.

    Raises:
        CheckpointError: An id is ``>= vocab_size``.
    """
    ids = feeds.get("input_ids")
    if ids is not None and ids.size and vocab_size and int(ids.max()) >= vocab_size:
        raise CheckpointError(
            f"the tokenizer of {tokenizer!r} produces token id {int(ids.max())}, but the model's "
            f"vocabulary has {vocab_size} tokens; pass the tokenizer the model was trained with "
            "(--tokenizer CHECKPOINT_DIR)"
        )
