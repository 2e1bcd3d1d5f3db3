"""Per-layer pruning ratios under a FLOPs or latency budget by equal slopes (docs/math.md §8).

A pure function of per-layer curves sampled on one grid of ratios ``a_0 < … < a_{n−1}``: the
distortion ``D_l`` (:func:`~obert_core.blocks.taylor_distortion_curve` or
:func:`~obert_core.blocks.obs_distortion_curve`), the budgeted cost ``C_l`` (kept FLOPs,
:func:`~obert_core.blocks.flops_curve`, or latency, :func:`~obert_core.blocks.latency_curve`) and,
optionally, LPViT's power proxy ``P_l`` (:func:`~obert_core.blocks.lpvit_power_curve`).

The objective of a layer is ``O_l = EMA(D_l) + β P_l`` with, unless given,

    β = mean_l max_a O′_{D,l}(a) / mean_l max_a P′_l(a)                                  (β)

(slopes by :func:`~obert_core.blocks.stencil_slopes`). For an exponent ``s`` each layer takes one
grid point:

* ``rule="lpvit"`` (arXiv 2407.02068 §3.3, as its reference code): the point whose slope
  ``dO_l/da`` is closest to ``2^s``;
* ``rule="lagrange"``: the minimiser of ``O_l(a) + 2^s C_l(a)`` — the exact Lagrangian choice, so
  the allocation is optimal among all allocations that cost no more (for any curves; with convex
  ones it is the equal-slope point ``dO_l/dC_l = −2^s``);
* ``rule="uniform"`` (the baseline): one ratio for every layer, the smallest grid point that meets
  the budget (the distortion curves are not used).

``s`` is found by bisection in ``[−100, 100]``: the smallest ``s`` whose total cost
``Σ_l C_l(a_l)`` is within ``budget · Σ_l C_l(0)``. Every layer keeps at least the density
``min(0.05, budget / 2)`` (LPViT's minimum): grid points above ``1 − min_density`` are never taken.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import ObertError
from .._validate import check_positive_int
from .curves import _check_ratios, ema, pruned_blocks, stencil_slopes

__all__ = ["RULES", "Allocation", "allocate_ratios"]

RULES = ("lpvit", "lagrange", "uniform")

_S_LOW, _S_HIGH = -100.0, 100.0


@dataclass(frozen=True)
class Allocation:
    """The result of :func:`allocate_ratios`.

    Attributes:
        ratios: layer name → pruning ratio (a grid point: the fraction of its blocks removed).
        cost: the total cost ``Σ_l C_l(a_l)`` at those ratios.
        dense_cost: ``Σ_l C_l(0)``.
        budget: the budget asked for (a fraction of ``dense_cost``).
        exponent: ``s``; the slope (``rule="lpvit"``) or multiplier (``"lagrange"``) is ``2^s``
            (0 for ``"uniform"``).
        beta: the weight of the power curves in the objective (0 without them).
        min_density: the density every layer keeps at least.
    """

    ratios: dict[str, float]
    cost: float
    dense_cost: float
    budget: float
    exponent: float
    beta: float
    min_density: float


def _curves(value: object, what: str, names: list[str] | None, n: int) -> dict[str, np.ndarray]:
    if not isinstance(value, Mapping) or not value:
        raise ObertError(
            f"{what} must be a non-empty mapping layer name → curve over the ratios, got "
            f"{type(value).__name__}."
        )
    if names is not None and set(value) != set(names):
        missing = sorted(set(names) - set(value))
        extra = sorted(set(value) - set(names))
        raise ObertError(
            f"{what} must have a curve for exactly the layers of distortion: missing {missing}, "
            f"unknown {extra}."
        )
    out = {}
    for name, curve in value.items():
        arr = np.asarray(curve, dtype=np.float64)
        if arr.shape != (n,):
            raise ObertError(
                f"{what}[{name!r}] has shape {arr.shape}; every curve has one value per ratio "
                f"({n})."
            )
        if not np.all(np.isfinite(arr)):
            raise ObertError(f"{what}[{name!r}] contains NaN or inf; recompute the curve.")
        out[str(name)] = arr
    return out


def _check_budget(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ObertError(f"budget must be a number in (0, 1), got {value!r}.")
    b = float(value)
    if not (0.0 < b < 1.0):
        raise ObertError(
            f"budget must be in (0, 1) (the fraction of the dense FLOPs or latency kept, e.g. "
            f"0.5), got {value!r}."
        )
    return b


def allocate_ratios(
    distortion: Mapping[str, Any],
    cost: Mapping[str, Any],
    budget: float,
    *,
    ratios: Any = None,
    power: Mapping[str, Any] | None = None,
    beta: float | None = None,
    rule: str = "lpvit",
    smooth: float | None = 0.5,
    h: int = 4,
    min_density: float | None = None,
    blocks: Mapping[str, int] | None = None,
) -> Allocation:
    """Per-layer pruning ratios that keep ``budget`` of the dense cost, by equal slopes.

    Args:
        distortion: layer name → ``D_l`` at each ratio.
        cost: layer name → the budgeted cost ``C_l`` at each ratio (kept FLOPs or latency), the
            same layers.
        budget: the fraction of the dense total cost ``Σ_l C_l(0)`` to keep, in (0, 1).
        ratios: the grid the curves are sampled on (default
            :func:`~obert_core.blocks.ratio_grid`, 0 … 1 by 0.01), starting at 0.
        power: layer name → LPViT's power proxy ``P_l`` at each ratio, added as ``β P_l``.
        beta: ``β`` (default: (β) of the module docstring when ``power`` is given, else 0).
        rule: ``"lpvit"`` (slope closest to ``2^s``), ``"lagrange"`` or ``"uniform"`` (see the
            module docstring).
        smooth: the EMA weight applied to each ``D_l`` (LPViT: 0.5); ``None`` or 0: no smoothing.
        h: the stencil offset of :func:`~obert_core.blocks.stencil_slopes` (LPViT: 4).
        min_density: the smallest density a layer keeps (default ``min(0.05, budget/2)``).
        blocks: layer name → its number of blocks ``n``; a layer at ratio ``a`` removes
            ``round(a·n)`` of them, and with ``blocks`` given the ratios it may take are those
            that keep at least ``ceil(min_density·n)`` blocks (without it: ``a ≤ 1 −
            min_density``, which rounding can undercut by a block).

    Returns:
        An :class:`Allocation`; ``cost ≤ budget · dense_cost``.

    Raises:
        ObertError: a budget outside (0, 1), curves that do not match the layers or the grid, or a
            budget no allocation on the grid meets (raise it or lower ``min_density``).
    """
    b = _check_budget(budget)
    if rule not in RULES:
        raise ObertError(f"unknown rule {rule!r}; choose one of {', '.join(map(repr, RULES))}.")
    a = _check_ratios(ratios)
    if a[0] != 0.0:
        raise ObertError(f"ratios must start at 0 (the dense layer), got {a[0]!r}.")
    n = a.shape[0]
    dist = _curves(distortion, "distortion", None, n)
    names = list(dist)
    costs = _curves(cost, "cost", names, n)
    for name, cv in costs.items():
        if np.any(cv < 0):
            raise ObertError(f"cost[{name!r}] has negative values; costs are FLOPs or latencies.")
    pw = _curves(power, "power", names, n) if power is not None else None
    dens = min(0.05, b / 2) if min_density is None else _check_density(min_density)
    allowed = _allowed(a, dens, names, blocks)
    if smooth is not None and smooth != 0:
        dist = {k: ema(v, smooth) for k, v in dist.items()}
    bet = 0.0
    if pw is not None:
        bet = _beta(a, dist, pw, h) if beta is None else _check_beta(beta)
    elif beta is not None:
        raise ObertError("beta weighs the power curves; pass power=... with it, or drop beta.")
    obj = {k: dist[k] + bet * pw[k] if pw is not None else dist[k] for k in names}
    dense = float(sum(costs[k][0] for k in names))
    target = b * dense
    if rule == "uniform":
        return _uniform(a, costs, allowed, target, dense, b, bet, dens)
    choose = _chooser(rule, a, obj, costs, allowed, h)

    def total(s: float) -> tuple[float, dict[str, int]]:
        pick = choose(s)
        return float(sum(costs[k][pick[k]] for k in names)), pick

    hi_cost, hi_pick = total(_S_HIGH)
    if hi_cost > target * (1 + 1e-12):
        raise ObertError(
            f"budget={b!r} cannot be met: the cheapest allocation found keeps "
            f"{hi_cost / dense:.4g} of the dense cost (every layer keeps at least density "
            f"{dens:.4g}); raise the budget or lower min_density."
        )
    lo_cost, lo_pick = total(_S_LOW)
    s_hi = _S_HIGH
    if lo_cost <= target * (1 + 1e-12):
        s_hi, hi_cost, hi_pick = _S_LOW, lo_cost, lo_pick
    else:
        s_lo = _S_LOW
        for _ in range(200):
            if s_hi - s_lo <= 1e-9:
                break
            mid = 0.5 * (s_lo + s_hi)
            c_mid, p_mid = total(mid)
            if c_mid <= target * (1 + 1e-12):
                s_hi, hi_cost, hi_pick = mid, c_mid, p_mid
            else:
                s_lo = mid
    return Allocation(
        ratios={k: float(a[hi_pick[k]]) for k in names},
        cost=hi_cost,
        dense_cost=dense,
        budget=b,
        exponent=s_hi,
        beta=bet,
        min_density=dens,
    )


def _uniform(
    a: np.ndarray,
    costs: dict[str, np.ndarray],
    allowed: dict[str, np.ndarray],
    target: float,
    dense: float,
    budget: float,
    beta: float,
    dens: float,
) -> Allocation:
    """``rule="uniform"``: the smallest common grid ratio whose total cost meets the budget."""
    totals: np.ndarray = np.sum(np.stack(list(costs.values())), axis=0)
    common = np.logical_and.reduce(list(allowed.values()))
    for j in np.flatnonzero(common).tolist():
        if float(totals[j]) <= target * (1 + 1e-12):
            return Allocation(
                ratios=dict.fromkeys(costs, float(a[j])),
                cost=float(totals[j]),
                dense_cost=dense,
                budget=budget,
                exponent=0.0,
                beta=beta,
                min_density=dens,
            )
    best = float(min(totals[common])) if common.any() else dense
    raise ObertError(
        f"budget={budget!r} cannot be met with one ratio for every layer: the sparsest allowed "
        f"keeps {best / dense:.4g} of the dense cost (every layer keeps at least density "
        f"{dens:.4g}); raise the budget or lower min_density."
    )


def _check_density(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ObertError(f"min_density must be a number in [0, 1), got {value!r}.")
    d = float(value)
    if not (0.0 <= d < 1.0):
        raise ObertError(f"min_density must be in [0, 1) (LPViT: 0.05), got {value!r}.")
    return d


def _check_beta(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (math.isfinite(float(value)) and float(value) >= 0)
    ):
        raise ObertError(f"beta must be a finite number ≥ 0, got {value!r}.")
    return float(value)


def _beta(a: np.ndarray, dist: dict[str, np.ndarray], pw: dict[str, np.ndarray], h: int) -> float:
    d_slope = float(np.mean([stencil_slopes(a, v, h).max() for v in dist.values()]))
    p_slope = float(np.mean([stencil_slopes(a, v, h).max() for v in pw.values()]))
    if not (p_slope > 0):
        raise ObertError(
            "the power curves never increase with the ratio, so beta cannot be derived from "
            "their slopes; pass beta=... or check the power curves."
        )
    return d_slope / p_slope


def _allowed(
    a: np.ndarray, dens: float, names: list[str], blocks: Mapping[str, int] | None
) -> dict[str, np.ndarray]:
    """Per layer, the grid points it may take (a boolean mask over the grid).

    ``a ≤ 1 − dens``, and with ``blocks`` at least ``ceil(dens·n)`` of its ``n`` blocks kept
    (``round(a·n)`` removed).
    """
    base = a <= 1.0 - dens + 1e-12
    if blocks is None:
        return dict.fromkeys(names, base)
    missing = [k for k in names if k not in blocks]
    if missing or len(blocks) != len(names):
        raise ObertError(
            f"blocks must name the same layers as the curves; missing {missing[:3]}, "
            f"extra {[k for k in blocks if k not in names][:3]}."
        )
    out = {}
    for k in names:
        n = check_positive_int(blocks[k], f"blocks[{k!r}]")
        out[k] = base & (n - pruned_blocks(n, a) >= math.ceil(dens * n - 1e-9))
    return out


def _chooser(
    rule: str,
    a: np.ndarray,
    obj: dict[str, np.ndarray],
    costs: dict[str, np.ndarray],
    allowed: dict[str, np.ndarray],
    h: int,
) -> Callable[[float], dict[str, int]]:
    idxs = {k: np.flatnonzero(allowed[k]) for k in obj}
    if rule == "lpvit":
        slopes = {k: stencil_slopes(a, v, h)[idxs[k]] for k, v in obj.items()}

        def closest(v: np.ndarray, t: float) -> int:
            # outside the range of the slopes |v − t| rounds to one value for every point (t =
            # 2^100 absorbs them): the closest slope is then the largest or the smallest
            if t >= v.max():
                return int(v.shape[0] - 1 - np.argmax(v[::-1]))  # ties: the most pruning
            if t <= v.min():
                return int(np.argmin(v))
            return int(np.argmin(np.abs(v - t)))

        def pick_lpvit(s: float) -> dict[str, int]:
            t = 2.0**s
            return {k: int(idxs[k][closest(v, t)]) for k, v in slopes.items()}

        return pick_lpvit
    sub_obj = {k: v[idxs[k]] for k, v in obj.items()}
    sub_cost = {k: costs[k][idxs[k]] for k in obj}

    def pick_lagrange(s: float) -> dict[str, int]:
        mu = 2.0**s
        out = {}
        for k, v in sub_obj.items():
            val = v + mu * sub_cost[k]
            best = np.flatnonzero(val <= val.min())
            # among exact ties the cheapest point (so the total cost falls as mu grows)
            out[k] = int(idxs[k][best[np.argmin(sub_cost[k][best])]])
        return out

    return pick_lagrange
