"""Tokenisation of texts to fixed-shape int64 NumPy feeds, and batching of those feeds."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._errors import ObertDeployError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["iter_batches", "tokenize"]


def tokenize(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[tuple[str, ...]],
    seq_len: int,
    input_names: Sequence[str],
) -> dict[str, np.ndarray]:
    """Tokenise texts to int64 arrays of shape ``(len(texts), seq_len)`` (padded, truncated).

    Args:
        tokenizer: A ``transformers`` tokenizer.
        texts: One tuple of 1 or 2 segments per example.
        seq_len: Tokens per example (padding to and truncation at this length).
        input_names: Model inputs to return; ``token_type_ids`` is zero-filled when the
            tokenizer does not produce it.

    Returns:
        Input name -> int64 array of shape ``(len(texts), seq_len)``.

    Raises:
        ObertDeployError: The tokenizer does not produce a required input.
    """
    first = [t[0] for t in texts]
    second = [t[1] for t in texts] if texts and len(texts[0]) > 1 else None
    encoded: Any = tokenizer(
        first,
        second,
        padding="max_length",
        truncation=True,
        max_length=seq_len,
        return_tensors="np",
    )
    feeds = {}
    for name in input_names:
        if name in encoded:
            feeds[name] = np.asarray(encoded[name], dtype=np.int64)
        elif name == "token_type_ids":
            feeds[name] = np.zeros((len(texts), seq_len), dtype=np.int64)
        else:
            raise ObertDeployError(f"the tokenizer does not produce model input {name!r}")
    return feeds


def iter_batches(
    feeds: dict[str, np.ndarray], batch_size: int, *, pad_last: bool = False
) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """Yield ``(batch, n_real)`` slices of ``feeds``.

    With ``pad_last`` the final partial batch is padded to ``batch_size`` by repeating its last
    row (for static-shape models); ``n_real`` says how many rows are real.

    Args:
        feeds: Input name -> array with the examples on axis 0.
        batch_size: Rows per batch (>= 1).
        pad_last: Pad the final partial batch to ``batch_size``.

    Yields:
        ``(batch, n_real)`` pairs.

    Raises:
        ObertDeployError: ``batch_size`` < 1.
    """
    if batch_size < 1:
        raise ObertDeployError(f"batch size {batch_size} must be >= 1; pass --batch-size 1 or more")
    total = len(next(iter(feeds.values())))
    for start in range(0, total, batch_size):
        batch = {k: v[start : start + batch_size] for k, v in feeds.items()}
        real = len(next(iter(batch.values())))
        if pad_last and real < batch_size:
            batch = {
                k: np.concatenate([v, np.repeat(v[-1:], batch_size - real, axis=0)])
                for k, v in batch.items()
            }
        yield batch, real
