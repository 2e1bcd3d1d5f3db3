"""Calibration batches for static int8 quantization, tokenised from a GLUE-style TSV file."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from .._checks import check_seq_len, check_token_ids, onnx_max_positions
from .._errors import ObertDeployError
from ..bench._inputs import infer_vocab_size, load_onnx, onnx_inputs
from ..evaluation._readers import read_glue_tsv
from ..evaluation._tokenize import iter_batches, tokenize
from ..export._checkpoint import load_tokenizer

__all__ = ["calibration_batches"]


def calibration_batches(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    tokenizer: str,
    num_samples: int,
    seq_len: int,
    text_columns: Sequence[str] | None = None,
    *,
    allow_fewer: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Tokenise the first sentences of ``data`` into batches shaped for ``model``'s inputs.

    A static-shape model gets its own batch size and sequence length (the last batch padded by
    repeating its last row); a dynamic one batches of 1 and ``seq_len`` tokens.

    Args:
        model: The fp32 ONNX model to quantize (only its inputs are read).
        data: A GLUE-style TSV (header row; labels not needed).
        tokenizer: Directory (or Hub id) of the model's tokenizer.
        num_samples: Sentences to read.
        seq_len: Tokens per sentence for a dynamic-shape model.
        text_columns: TSV text columns; detected from the header when ``None``.
        allow_fewer: Calibrate on the sentences there are when ``data`` holds fewer than
            ``num_samples`` (``log`` is told how many); by default that is an error, as a
            calibration on a handful of sentences gives poor int8 ranges.
        log: Receives a line when fewer sentences than asked are used.

    Returns:
        The feed dicts to pass as ``calibration`` to :func:`~obert_deploy.quantize_onnx`.

    Raises:
        ObertDeployError: No sentences in ``data``, fewer than ``num_samples`` without
            ``allow_fewer``, a bad TSV, a sequence length above the model's positions, or token
            ids outside its vocabulary.
        CheckpointError: The tokenizer cannot be loaded.
        OnnxModelError: ``model`` is missing or corrupt.
    """
    proto = load_onnx(model, load_weights=False)
    inputs = onnx_inputs(proto)
    shape = inputs[0].shape if inputs else ()
    batch = shape[0] if len(shape) == 2 and isinstance(shape[0], int) else 1
    length = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else seq_len
    check_seq_len(length, onnx_max_positions(proto), f"ONNX model {str(model)!r}")
    dataset = read_glue_tsv(
        data, text_columns=text_columns, label_column=None, max_samples=num_samples
    )
    if not dataset.texts:
        raise ObertDeployError(f"no sentences in {str(data)!r}; pass a non-empty TSV")
    found = len(dataset.texts)
    if found < num_samples:
        if not allow_fewer:
            raise ObertDeployError(
                f"{str(data)!r} holds {found} sentence(s), fewer than the {num_samples} "
                f"calibration sentences asked (--num-calibration); pass a larger TSV, "
                f"--num-calibration {found}, or --allow-fewer-calibration to calibrate on "
                f"{found} anyway"
            )
        if log is not None:
            log(
                f"warning: calibrating on {found} sentence(s) of {str(data)!r}, fewer than the "
                f"{num_samples} asked (--allow-fewer-calibration)"
            )
    feeds = tokenize(load_tokenizer(tokenizer), dataset.texts, length, [i.name for i in inputs])
    check_token_ids(feeds, infer_vocab_size(proto), tokenizer)
    return [b for b, _ in iter_batches(feeds, batch, pad_last=True)]
