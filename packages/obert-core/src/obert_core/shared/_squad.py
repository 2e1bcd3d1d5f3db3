"""The official SQuAD v1.1 metric (Rajpurkar et al. 2016, ``evaluate-v1.1.py``).

Answers are normalised (lower case; punctuation and the articles *a*, *an*, *the* removed;
whitespace collapsed); exact match and token-overlap F1 take the best score over the gold
answers.  obert-train's evaluation and obert-deploy's ONNX evaluation both score with these
functions, so one model's outputs give one number in every package.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

__all__ = ["squad_normalize_answer", "squad_scores"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation)


def squad_normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (official v1.1).

    Args:
        text: An answer string.

    Returns:
        The normalised answer.
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    common = collections.Counter(prediction_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(prediction: str, answers: Sequence[str]) -> tuple[float, float]:
    """Exact match and F1 (0/1 scale) of one prediction against the accepted answers.

    Args:
        prediction: Predicted answer text.
        answers: Accepted answer strings.

    Returns:
        ``(exact_match, f1)``, each in ``[0, 1]`` and the best over ``answers``; ``(0, 0)``
        when ``answers`` is empty.
    """
    pred = squad_normalize_answer(prediction)
    pred_tokens = pred.split()
    best_em, best_f1 = 0.0, 0.0
    for answer in answers:
        gold = squad_normalize_answer(answer)
        best_em = max(best_em, float(pred == gold))
        best_f1 = max(best_f1, _f1(pred_tokens, gold.split()))
    return best_em, best_f1
