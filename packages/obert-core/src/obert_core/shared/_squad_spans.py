"""SQuAD span post-processing and the evaluation subset rule, one implementation for every package.

From per-window start/end logits to one answer text per question (the post-processing of
Devlin et al. 2019, Sec. 4.2, as in Hugging Face's ``run_qa.py``): in each window the
``n_best`` highest start and end logits *among the context tokens* are paired, spans that are
reversed or longer than ``max_answer_length`` tokens are skipped, and the span with the largest
``start + end`` logit over all windows of a question wins; its text is the context between the
start token's first and the end token's last character.  Candidates are taken in descending
logit order (the earlier token first among equal logits) and a tie keeps the span found first,
then the earlier window, so the same logits give the same answer in obert-train's PyTorch
evaluation and obert-deploy's ONNX evaluation, hence the same F1 (:func:`squad_scores`).

Pure Python: logits are any sequences of numbers (lists, NumPy rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from obert_core._errors import ObertError

__all__ = [
    "SQUAD_MAX_ANSWER_LENGTH",
    "SQUAD_N_BEST",
    "eval_subset",
    "squad_best_span",
    "squad_predictions",
]

SQUAD_N_BEST = 20
"""Start and end candidates per window (Hugging Face ``run_qa.py``'s ``n_best_size``)."""
SQUAD_MAX_ANSWER_LENGTH = 30
"""Longest answer span in tokens (``run_qa.py``'s ``max_answer_length``)."""

Offsets = Sequence[tuple[int, int] | None]
T = TypeVar("T")


def _floats(values: Any) -> list[float]:
    as_list = values.tolist() if hasattr(values, "tolist") else values
    return [float(v) for v in as_list]


def squad_best_span(
    start_logits: Sequence[float] | Any,
    end_logits: Sequence[float] | Any,
    offsets: Offsets,
    *,
    n_best: int = SQUAD_N_BEST,
    max_answer_length: int = SQUAD_MAX_ANSWER_LENGTH,
) -> tuple[float, int, int] | None:
    """The best answer span of one window.

    Args:
        start_logits: Start logit per token of the window (padding may be cut off or kept).
        end_logits: End logit per token.
        offsets: Per token ``(first char, end char)`` in the context, ``None`` for tokens that
            are not context (question, special tokens, padding).
        n_best: Start / end candidates, the highest logits among the context tokens.
        max_answer_length: Longest span in tokens.

    Returns:
        ``(score, first char, end char)`` of the best span, or ``None`` if the window has no
        valid span.
    """
    starts_all, ends_all = _floats(start_logits), _floats(end_logits)
    size = min(len(starts_all), len(ends_all), len(offsets))
    chars = {i: span for i in range(size) if (span := offsets[i]) is not None}
    starts = sorted(chars, key=lambda i: (-starts_all[i], i))[:n_best]
    ends = sorted(chars, key=lambda i: (-ends_all[i], i))[:n_best]
    best: tuple[float, int, int] | None = None
    for s in starts:
        for e in ends:
            if e < s or e - s + 1 > max_answer_length:
                continue
            score = starts_all[s] + ends_all[e]
            if best is None or score > best[0]:
                best = (score, chars[s][0], chars[e][1])
    return best


def squad_predictions(
    windows: Iterable[tuple[int, Any, Any, Offsets]],
    contexts: Sequence[str],
    *,
    n_best: int = SQUAD_N_BEST,
    max_answer_length: int = SQUAD_MAX_ANSWER_LENGTH,
) -> list[str]:
    """One answer text per question from the logits of all its windows.

    Args:
        windows: ``(question index, start logits, end logits, offsets)`` per window, in order.
        contexts: The context paragraph of each question (index = question index).
        n_best: Start / end candidates per window.
        max_answer_length: Longest span in tokens.

    Returns:
        The answer of each question, ``""`` for a question without any valid span.
    """
    best: dict[int, tuple[float, int, int]] = {}
    for index, start, end, offsets in windows:
        span = squad_best_span(
            start, end, offsets, n_best=n_best, max_answer_length=max_answer_length
        )
        if span is not None and (index not in best or span[0] > best[index][0]):
            best[index] = span
    return [contexts[i][best[i][1] : best[i][2]] if i in best else "" for i in range(len(contexts))]


def eval_subset(records: Sequence[T], limit: object) -> list[T]:
    """The records an evaluation limited to ``limit`` examples uses: the first ``limit``.

    The one subset rule of every evaluation (obert-train's ``max_eval_samples``, obert-deploy's
    ``max_samples``, ``obert quickstart --max-eval-samples``), as Hugging Face's ``run_glue.py``
    / ``run_qa.py`` select ``range(max_eval_samples)``: the same limit gives the same examples
    in every package.

    Args:
        records: Dev records in file order.
        limit: How many to keep, an ``int`` (``None``: all).

    Returns:
        The first ``limit`` records (all of them if there are fewer).

    Raises:
        ObertError: If ``limit`` is below 1.
    """
    if limit is None:
        return list(records)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ObertError(f"eval sample limit {limit!r}: must be a whole number >= 1 (or None: all)")
    return list(records[:limit])
