"""SQuAD context windows: one rule for how questions and contexts become model inputs.

Long contexts are split into windows of ``max_seq_length`` tokens that overlap by
``doc_stride`` tokens, after the question is cut to ``max_query_length`` tokens (Devlin et al.
2019, Sec. 4.2; the defaults of Hugging Face's ``run_qa.py``: 384 / 128 / 64).  obert-train's
PyTorch evaluation and obert-deploy's ONNX evaluation build their windows with
:func:`squad_windows`, and take the answers with :func:`~obert_core.shared.squad_predictions`,
so one model gives one F1 in both.

The tokenizer is any fast Hugging Face tokenizer; it is called, never imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from obert_core._errors import ObertError

__all__ = ["SQUAD_DOC_STRIDE", "SQUAD_MAX_QUERY_LENGTH", "squad_doc_stride", "squad_windows"]

SQUAD_DOC_STRIDE = 128
"""Overlap of consecutive context windows, in tokens, where the window has room for it."""
SQUAD_MAX_QUERY_LENGTH = 64
"""Questions are cut to this many tokens."""


def squad_doc_stride(
    max_seq_length: int,
    doc_stride: int | None = None,
    question_tokens: int = SQUAD_MAX_QUERY_LENGTH,
) -> int:
    """The overlap of context windows: ``doc_stride`` checked, or the default for the length.

    A window holds the question (``question_tokens``: the longest question after the cut to
    ``max_query_length``), three special tokens and ``room = max_seq_length - question_tokens -
    3`` context tokens; the overlap must be smaller than ``room``.  The default is
    :data:`SQUAD_DOC_STRIDE` wherever it fits (``128 < room``: 256- and 384-token windows),
    else ``room // 2`` (each window then advances by half its context).

    Args:
        max_seq_length: Tokens per window.
        doc_stride: The overlap asked for, or ``None`` for the default.
        question_tokens: Tokens of the longest (cut) question.

    Returns:
        The overlap.

    Raises:
        ObertError: If the window has no room for context, or ``doc_stride`` does not fit.
    """
    room = max_seq_length - question_tokens - 3
    if room < 2:
        raise ObertError(
            f"max_seq_length {max_seq_length} leaves no room for SQuAD context after a "
            f"{question_tokens}-token question and 3 special tokens; raise --max-seq-length "
            "(384 is usual) or lower --max-query-length"
        )
    if doc_stride is None:  # 128 wherever it fits (as before), else half the room
        return SQUAD_DOC_STRIDE if room > SQUAD_DOC_STRIDE else room // 2
    if doc_stride < 1 or doc_stride >= room:
        raise ObertError(
            f"doc_stride {doc_stride} must be < max_seq_length {max_seq_length} - "
            f"{question_tokens} question tokens - 3 = {room}; lower --doc-stride or "
            "--max-query-length, or raise --max-seq-length"
        )
    return doc_stride


def squad_windows(
    tokenizer: Any,
    questions: Sequence[str],
    contexts: Sequence[str],
    *,
    max_seq_length: int,
    doc_stride: int | None = None,
    max_query_length: int = SQUAD_MAX_QUERY_LENGTH,
    pad: bool = False,
) -> Any:
    """Tokenise SQuAD questions and contexts into overlapping windows (the one rule).

    Questions are stripped on the left and cut to ``max_query_length`` tokens at a token
    boundary; each context is split into windows of ``max_seq_length`` tokens overlapping by
    :func:`squad_doc_stride` tokens for the longest cut question (only the context is
    truncated).  The same questions give the same windows in every package.

    Args:
        tokenizer: A fast Hugging Face tokenizer (offset mappings are needed).
        questions: One question per example.
        contexts: One context per example.
        max_seq_length: Tokens per window.
        doc_stride: Window overlap, or ``None`` for the default of :func:`squad_doc_stride`.
        max_query_length: Tokens a question is cut to.
        pad: Pad every window to ``max_seq_length`` (static-shape models).

    Returns:
        The tokenizer's encoding with ``overflow_to_sample_mapping`` and ``offset_mapping``;
        ``encoding.sequence_ids(i)`` marks window ``i``'s context tokens with 1.

    Raises:
        ObertError: As :func:`squad_doc_stride`.
    """
    stripped = [q.lstrip() for q in questions]
    cut = tokenizer(
        stripped,
        add_special_tokens=False,
        truncation=True,
        max_length=max_query_length,
        return_offsets_mapping=True,
    )
    short = [
        q[: offsets[-1][1]] if offsets else q
        for q, offsets in zip(stripped, cut["offset_mapping"], strict=True)
    ]
    longest = max((len(ids) for ids in cut["input_ids"]), default=0)
    stride = squad_doc_stride(max_seq_length, doc_stride, longest)
    return tokenizer(
        short,
        list(contexts),
        truncation="only_second",
        max_length=max_seq_length,
        stride=stride,
        padding="max_length" if pad else False,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
