"""Sparsity schedules as pure functions (docs/math.md §5).

The gradual schedule of the paper (SparseML ``inter_func: cubic``) is

    s(t) = s_f + (s_i − s_f) · (1 − x)³,   x = (t − t₀) / (t₁ − t₀) clipped to [0, 1],

with pruning steps at ``t₀, t₀ + f, …, t₁``. ``num_recomputations`` splits one step into ``k``
sub-steps at linearly interpolated sparsities, each with a fresh Fisher.
"""

from __future__ import annotations

import math

from ._errors import ObertError
from ._validate import check_finite_real, check_positive_int, check_sparsity

__all__ = ["cubic_sparsity", "linear_sparsity", "pruning_steps", "recomputation_sparsities"]

_MAX_STEPS = 1_000_000  # more pruning steps than this is a unit mistake (steps vs epochs)


def _progress(step: float, start: float, end: float) -> float:
    step = check_finite_real(step, "step")
    start = check_finite_real(start, "start")
    end = check_finite_real(end, "end")
    if end < start:
        raise ObertError(f"need start <= end, got start={start!r}, end={end!r}.")
    if end == start:
        return 1.0 if step >= start else 0.0
    return min(max((step - start) / (end - start), 0.0), 1.0)


def cubic_sparsity(
    step: float, init_sparsity: float, final_sparsity: float, start: float, end: float
) -> float:
    """Cubic schedule ``s_f + (s_i − s_f)(1 − x)³`` (Zhu & Gupta 2017; oBERT recipes).

    Args:
        step: current time (epoch or step); before ``start`` the result is ``init_sparsity``, after
            ``end`` it is ``final_sparsity``.
        init_sparsity: ``s_i`` in [0, 1).
        final_sparsity: ``s_f`` in [0, 1).
        start: ``t₀``.
        end: ``t₁`` ≥ ``t₀``.
    """
    si = check_sparsity(init_sparsity, "init_sparsity")
    sf = check_sparsity(final_sparsity, "final_sparsity")
    x = _progress(step, start, end)
    return sf + (si - sf) * (1.0 - x) ** 3


def linear_sparsity(
    step: float, init_sparsity: float, final_sparsity: float, start: float, end: float
) -> float:
    """Linear schedule ``s_i + (s_f − s_i)·x`` (same arguments as :func:`cubic_sparsity`)."""
    si = check_sparsity(init_sparsity, "init_sparsity")
    sf = check_sparsity(final_sparsity, "final_sparsity")
    x = _progress(step, start, end)
    return si + (sf - si) * x


def pruning_steps(start: float, end: float, frequency: float) -> list[float]:
    """Times of the pruning steps ``t₀, t₀ + f, …, t₁`` (``end`` included when it is on the grid).

    Example: ``pruning_steps(2, 26, 4)`` → ``[2, 6, 10, 14, 18, 22, 26]`` (the oBERT recipes).
    """
    if check_finite_real(frequency, "frequency") <= 0:
        raise ObertError(f"frequency must be a positive number, got {frequency!r}.")
    _progress(start, start, end)
    n = math.floor((end - start) / frequency + 1e-9)
    if n >= _MAX_STEPS:
        raise ObertError(
            f"frequency={frequency!r} gives {n + 1} pruning steps between start={start!r} and "
            f"end={end!r}; pass a larger frequency (in the units of start and end)."
        )
    return [start + i * frequency for i in range(n + 1)]


def recomputation_sparsities(current: float, target: float, num_recomputations: int) -> list[float]:
    """Sub-step targets of one pruning step split into ``k`` recomputations (linear in sparsity).

    Returns ``k`` sparsities ``current + (target − current)·j/k`` for ``j = 1..k``; the last is
    exactly ``target``.
    """
    c = check_sparsity(current, "current")
    t = check_sparsity(target, "target")
    k = check_positive_int(num_recomputations, "num_recomputations")
    if t < c:
        raise ObertError(
            f"target sparsity {t:.4g} is below the current sparsity {c:.4g}; masks never regrow."
        )
    return [c + (t - c) * j / k for j in range(1, k)] + [t]
