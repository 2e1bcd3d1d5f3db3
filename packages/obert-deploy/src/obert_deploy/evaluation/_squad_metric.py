"""The official SQuAD v1.1 answer metric: exact match and F1 after answer normalisation."""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

__all__ = ["squad_scores"]


def _normalize(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_scores(prediction: str, answers: Sequence[str]) -> tuple[float, float]:
    """Exact match and F1 (0/1 scale) of one prediction against the accepted answers.

    Both use the official SQuAD v1.1 normalisation (lower case, no punctuation, articles or
    extra whitespace) and take the best score over the answers.

    Args:
        prediction: Predicted answer text.
        answers: Accepted answer strings.

    Returns:
        ``(exact_match, f1)``, each in ``[0, 1]``; ``(0, 0)`` when ``answers`` is empty.
    """
    if not answers:
        return 0.0, 0.0
    pred = _normalize(prediction)
    pred_tokens = pred.split()
    best_em, best_f1 = 0.0, 0.0
    for answer in answers:
        gold = _normalize(answer)
        best_em = max(best_em, float(pred == gold))
        gold_tokens = gold.split()
        common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
        same = sum(common.values())
        if same:
            precision = same / len(pred_tokens)
            recall = same / len(gold_tokens)
            best_f1 = max(best_f1, 2 * precision * recall / (precision + recall))
    return best_em, best_f1
