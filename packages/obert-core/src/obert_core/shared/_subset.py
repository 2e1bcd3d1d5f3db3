"""The one training-subset rule: ``--max-train-samples N`` is a seeded random sample of N rows.

``obert-train`` (``load_task``'s ``max_train_samples``) and ``obert-deploy qat`` draw their
training subset here, so the same file, N and seed give the same rows in both
(``docs/concepts.md``, "One vocabulary across the command lines"). A random sample rather than
the first rows: training files are often sorted (by label, by source). Evaluation limits take
the first N instead (:func:`obert_core.shared.eval_subset`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["train_subset"]

T = TypeVar("T")


def train_subset(records: Sequence[T], limit: int | None, seed: int) -> list[T]:
    """``limit`` records drawn at random with ``seed``, in the order drawn.

    All of them (in file order) when ``limit`` is None or not below their number.

    Args:
        records: The training records in file order.
        limit: How many to keep (None: all).
        seed: Seed of the draw (``random.Random(seed).sample``).

    Returns:
        The subset.
    """
    if limit is None or limit >= len(records):
        return list(records)
    return random.Random(seed).sample(list(records), limit)
