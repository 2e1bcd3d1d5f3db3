"""Per-layer pruning ratios under a FLOPs or latency budget by equal slopes (docs/math.md §8).

A pure function of per-layer curves: the distortion ``D_l``
(:func:`~obert_core.blocks.taylor_distortion_curve` or
:func:`~obert_core.blocks.obs_distortion_curve`), the budgeted cost ``C_l`` (kept FLOPs,
:func:`~obert_core.blocks.flops_curve`, or latency, :func:`~obert_core.blocks.latency_curve`) and,
optionally, LPViT's power proxy ``P_l`` (:func:`~obert_core.blocks.lpvit_power_curve`).

The curves are sampled on each layer's **candidate points**. Where the number ``n_l`` of a layer's
blocks is known (``blocks=``, as :func:`~obert_core.blocks.allocate_blocks` and obert-train pass
it) the candidates are its whole numbers of pruned blocks ``k = 0 … n_l``, the ratios
``k / n_l`` (:func:`~obert_core.blocks.count_ratios`); only where the counts are unknown is there
one grid of ratios ``a_0 = 0 < … < a_{m−1}`` for every layer (LPViT's ``0, 0.01, …, 1``).

The objective of a layer is ``O_l = EMA(D_l) + β P_l`` with, unless given,

    β = mean_l max_a O′_{D,l}(a) / mean_l max_a P′_l(a)                                  (B-6)

(slopes in the ratio by :func:`~obert_core.blocks.stencil_slopes`). For an exponent ``s`` each
layer takes one candidate point:

* ``rule="lpvit"`` (arXiv 2407.02068 §3.3, as its reference code): the point whose slope
  ``dO_l/da`` is closest to ``2^s``;
* ``rule="lagrange"``: the minimiser of ``O_l + 2^s C_l`` — the exact Lagrangian choice, so the
  allocation is optimal among all allocations that cost no more (for any curves; with convex
  ones it is the equal-slope point ``dO_l/dC_l = −2^s``);
* ``rule="uniform"`` (the baseline): one ratio for every layer, the smallest that meets the
  budget (the distortion curves are not used).

``s`` is found by bisection in ``[−100, 100]``: the smallest ``s`` whose total cost
``Σ_l C_l`` is within ``budget · Σ_l C_l(0)``. Then the **fill** (B-8) gives back what the last
bisection step overshot: one candidate point at a time (one block, with counts), the layer whose
step back lowers its objective most (or raises it least) per unit of cost (``rule="uniform"``
with counts: the layer pruned the most, as a fraction of its blocks), as long as the total stays
within the budget. With block counts the budget is then met within one block: no layer could
take one more back.

Every layer keeps at least the density ``min(0.05, budget / 2)`` (LPViT's minimum): with counts
at least ``ceil(min_density·n_l)`` blocks, on a shared grid no ratio above ``1 − min_density``.

The **floor** ``φ`` (B-9) bounds how far below the uniform allocation a layer may go: layer ``l``
keeps at least ``ceil(φ·u_l)`` blocks, ``u_l`` the blocks the uniform rule keeps it at the same
budget (on a shared grid: the density ``φ·(1 − a_u)``). The curves are each layer's own loss,
which grows with the layer's removals alone and misses the compounding of the removals of the
layers before it; the floor is the trust region of that model (docs/math.md §8). Since the
uniform allocation meets the budget and respects every floor (``φ ≤ 1``), a floor never makes a
budget unreachable for ``rule="lagrange"``.

**Iterative allocation** (B-10): the budget reached in ``K`` rounds (:func:`round_sparsities`:
equal or geometric steps of the cost), each round allocating the cumulative budget of that round
from curves measured *at the current pruned point* (fresh gradients, the curves of the
additional removals, flat over the blocks already gone). ``start`` carries the blocks already
removed: no layer is given fewer (masks never regrow), and the fill never steps a layer back
below them, so the last round still meets its budget within one block.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import ObertError
from .._validate import check_positive_int
from .curves import _check_ratios, count_ratios, ema, stencil_slopes
from .grid import _check_ratio

__all__ = ["RULES", "SPACINGS", "Allocation", "allocate_ratios", "round_sparsities"]

RULES = ("lpvit", "lagrange", "uniform")
SPACINGS = ("equal", "geometric")

_S_LOW, _S_HIGH = -100.0, 100.0
_TOL = 1e-12


@dataclass(frozen=True)
class Allocation:
    """The result of :func:`allocate_ratios`.

    Attributes:
        ratios: layer name → pruning ratio (a candidate point: the fraction of its blocks
            removed; with block counts ``k / n``, which
            :func:`~obert_core.blocks.block_keep_mask` turns back into exactly ``k`` blocks).
        cost: the total cost ``Σ_l C_l(a_l)`` at those ratios.
        dense_cost: ``Σ_l C_l(0)``.
        budget: the budget asked for (a fraction of ``dense_cost``).
        exponent: ``s``; the slope (``rule="lpvit"``) or multiplier (``"lagrange"``) is ``2^s``
            (0 for ``"uniform"``).
        beta: the weight of the power curves in the objective (0 without them).
        min_density: the density every layer keeps at least.
        pruned: layer name → number of blocks removed, where the counts were given (``blocks=``);
            else empty.
        floor: ``φ`` of (B-9): every layer keeps at least this fraction of the blocks (density)
            the uniform allocation keeps it (0: no floor).
    """

    ratios: dict[str, float]
    cost: float
    dense_cost: float
    budget: float
    exponent: float
    beta: float
    min_density: float
    pruned: dict[str, int] = field(default_factory=dict)
    floor: float = 0.0


def _curves(
    value: object, what: str, names: list[str] | None, sizes: Mapping[str, int] | int
) -> dict[str, np.ndarray]:
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
        if isinstance(sizes, int):
            n, unit = sizes, f"one value per ratio ({sizes})"
        else:
            n = sizes[str(name)]
            unit = f"one value per number of pruned blocks 0 … {n - 1} ({n})"
        if arr.shape != (n,):
            raise ObertError(f"{what}[{name!r}] has shape {arr.shape}; every curve has {unit}.")
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


def _counts(blocks: object, names: list[str]) -> dict[str, int]:
    if not isinstance(blocks, Mapping):
        raise ObertError(
            f"blocks must be a mapping layer name → number of blocks, got {type(blocks).__name__}."
        )
    missing = [k for k in names if k not in blocks]
    extra = [str(k) for k in blocks if k not in names]
    if missing or extra:
        raise ObertError(
            f"blocks must name the same layers as the curves; missing {missing[:3]}, "
            f"extra {extra[:3]}."
        )
    return {k: check_positive_int(blocks[k], f"blocks[{k!r}]") for k in names}


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
    floor: float | None = None,
    start: Mapping[str, int] | None = None,
) -> Allocation:
    """Per-layer pruning ratios that keep ``budget`` of the dense cost, by equal slopes.

    Args:
        distortion: layer name → ``D_l`` at each candidate point.
        cost: layer name → the budgeted cost ``C_l`` at each candidate point (kept FLOPs or
            latency), the same layers.
        budget: the fraction of the dense total cost ``Σ_l C_l(0)`` to keep, in (0, 1).
        ratios: the grid of ratios every curve is sampled on when the block counts are unknown
            (default :func:`~obert_core.blocks.ratio_grid`, 0 … 1 by 0.01), starting at 0; not
            together with ``blocks``.
        power: layer name → LPViT's power proxy ``P_l`` at each candidate point, added as
            ``β P_l``.
        beta: ``β`` (default: (B-6) of the module docstring when ``power`` is given, else 0).
        rule: ``"lpvit"`` (slope closest to ``2^s``), ``"lagrange"`` or ``"uniform"`` (see the
            module docstring).
        smooth: the EMA weight applied to each ``D_l`` (LPViT: 0.5); ``None`` or 0: no smoothing.
        h: the stencil offset of :func:`~obert_core.blocks.stencil_slopes` (LPViT: 4).
        min_density: the smallest density a layer keeps (default ``min(0.05, budget/2)``).
        blocks: layer name → its number of blocks ``n_l``. Then every curve of layer ``l`` has
            ``n_l + 1`` values, at ``k = 0 … n_l`` pruned blocks (the ratios
            :func:`~obert_core.blocks.count_ratios`), and the budget is met within one block.
        floor: ``φ`` in [0, 1] of (B-9): every layer keeps at least ``ceil(φ·u_l)`` of its
            blocks, ``u_l`` the blocks the uniform rule keeps it at this budget (on a shared
            grid, the density ``φ`` times the uniform density); ``None`` or 0: only
            ``min_density``. ``1`` allows no layer below the uniform allocation.
        start: layer name → blocks it has already lost (with ``blocks``; (B-10)): every layer
            loses at least these, the fill never gives them back, and a layer already pruned
            past its minimum density or floor stays where it is. Default: none.

    Returns:
        An :class:`Allocation`; ``cost ≤ budget · dense_cost``.

    Raises:
        ObertError: a budget outside (0, 1), curves that do not match the layers or their
            candidate points, ``ratios`` and ``blocks`` together, a ``floor`` outside [0, 1],
            ``start`` without ``blocks`` or outside ``0 … n_l``, or a budget no allocation meets
            (raise it or lower ``min_density``).
    """
    b = _check_budget(budget)
    phi = 0.0 if floor is None else _check_floor(floor)
    if rule not in RULES:
        raise ObertError(f"unknown rule {rule!r}; choose one of {', '.join(map(repr, RULES))}.")
    if not isinstance(distortion, Mapping) or not distortion:  # type: ignore[redundant-expr]
        raise ObertError(
            "distortion must be a non-empty mapping layer name → curve over the ratios, got "
            f"{type(distortion).__name__}."
        )
    names = [str(k) for k in distortion]
    dens = min(0.05, b / 2) if min_density is None else _check_density(min_density)
    counts: dict[str, int] = {}
    if blocks is not None:
        if ratios is not None:
            raise ObertError(
                "pass ratios (one grid for every layer, block counts unknown) or blocks (each "
                "layer's curves at 0 … n pruned blocks), not both."
            )
        counts = _counts(blocks, names)
        grids = {k: count_ratios(counts[k]) for k in names}
        sizes: Mapping[str, int] | int = {k: counts[k] + 1 for k in names}
        # at least ceil(dens·n) blocks kept: k ≤ n − ceil(dens·n)
        top = {k: counts[k] - math.ceil(dens * counts[k] - 1e-9) for k in names}
    else:
        a = _check_ratios(ratios)
        if a[0] != 0.0:
            raise ObertError(f"ratios must start at 0 (the dense layer), got {a[0]!r}.")
        grids = dict.fromkeys(names, a)
        sizes = a.shape[0]
        last = int(np.flatnonzero(a <= 1.0 - dens + _TOL)[-1])
        top = dict.fromkeys(names, last)
    lost = _start(start, counts, names)
    dist = _curves(distortion, "distortion", None, sizes)
    costs = _curves(cost, "cost", names, sizes)
    for name, cv in costs.items():
        if np.any(cv < 0):
            raise ObertError(f"cost[{name!r}] has negative values; costs are FLOPs or latencies.")
    pw = _curves(power, "power", names, sizes) if power is not None else None
    if smooth is not None and smooth != 0:
        dist = {k: ema(v, smooth) for k, v in dist.items()}
    bet = 0.0
    if pw is not None:
        bet = _beta(grids, dist, pw, h) if beta is None else _check_beta(beta)
    elif beta is not None:
        raise ObertError("beta weighs the power curves; pass power=... with it, or drop beta.")
    obj = {k: dist[k] + bet * pw[k] if pw is not None else dist[k] for k in names}
    dense = float(sum(costs[k][0] for k in names))
    target = b * dense * (1 + _TOL)

    if phi > 0 and rule != "uniform":  # (B-9): no layer below φ of its uniform share
        upick = _uniform(grids, costs, top, target, dense, b, dens, bool(counts))
        if counts:
            upick = _fill(upick, costs, {}, target, grids, uniform=True)
            for k in names:
                top[k] = min(top[k], counts[k] - math.ceil(phi * (counts[k] - upick[k]) - 1e-9))
        else:
            a = grids[names[0]]
            low = phi * (1.0 - float(a[upick[names[0]]]))
            last = int(np.flatnonzero(a <= 1.0 - low + _TOL)[-1])
            top = {k: min(top[k], last) for k in names}

    top = {k: max(top[k], lost[k]) for k in names}  # a layer past its cap stays where it is

    def result(pick: dict[str, int], exponent: float) -> Allocation:
        return Allocation(
            ratios={k: float(grids[k][pick[k]]) for k in names},
            cost=float(sum(costs[k][pick[k]] for k in names)),
            dense_cost=dense,
            budget=b,
            exponent=exponent,
            beta=bet,
            min_density=dens,
            pruned={k: pick[k] for k in counts},
            floor=phi,
        )

    if rule == "uniform":
        pick = _uniform(grids, costs, top, target, dense, b, dens, bool(counts), lost)
        if counts:  # within one block of the budget, the most-pruned layers stepping back
            pick = _fill(pick, costs, {}, target, grids, uniform=True, low=lost)
        return result(pick, 0.0)
    choose = _chooser(rule, grids, obj, costs, top, h, lost)

    def total(s: float) -> tuple[float, dict[str, int]]:
        pick = choose(s)
        return float(sum(costs[k][pick[k]] for k in names)), pick

    hi_cost, hi_pick = total(_S_HIGH)
    if hi_cost > target:
        raise ObertError(
            f"budget={b!r} cannot be met: the cheapest allocation found keeps "
            f"{hi_cost / dense:.4g} of the dense cost (every layer keeps at least density "
            f"{dens:.4g}" + (f" and {phi:.4g} of its uniform share" if phi else "") + "); raise "
            "the budget or lower min_density."
        )
    lo_cost, lo_pick = total(_S_LOW)
    s_hi = _S_HIGH
    if lo_cost <= target:
        s_hi, hi_cost, hi_pick = _S_LOW, lo_cost, lo_pick
    else:
        s_lo = _S_LOW
        for _ in range(200):
            if s_hi - s_lo <= 1e-9:
                break
            mid = 0.5 * (s_lo + s_hi)
            c_mid, p_mid = total(mid)
            if c_mid <= target:
                s_hi, hi_cost, hi_pick = mid, c_mid, p_mid
            else:
                s_lo = mid
    return result(_fill(hi_pick, costs, obj, target, grids, uniform=False, low=lost), s_hi)


def _start(start: object, counts: Mapping[str, int], names: list[str]) -> dict[str, int]:
    """Blocks already removed per layer (0 without ``start``), checked against ``0 … n_l``."""
    if start is None:
        return dict.fromkeys(names, 0)
    if not counts:
        raise ObertError(
            "start (blocks already removed per layer) needs the block counts: pass blocks=..."
        )
    if not isinstance(start, Mapping) or set(map(str, start)) != set(names):
        got = sorted(map(str, start)) if isinstance(start, Mapping) else type(start).__name__
        raise ObertError(
            f"start must map every layer of the curves to the blocks it has already lost; got "
            f"{got!r} for layers {names[:3]}…"
        )
    out = {}
    for k in names:
        v = start[k]
        if (
            isinstance(v, bool)
            or not isinstance(v, numbers.Integral)
            or not 0 <= int(v) <= counts[k]
        ):
            raise ObertError(
                f"start[{k!r}] = {v!r}: the blocks a layer has already lost must be a whole "
                f"number in 0 … {counts[k]} (its blocks)."
            )
        out[k] = int(v)
    return out


def round_sparsities(
    current: float, target: float, rounds: int, spacing: str = "equal"
) -> list[float]:
    """The cumulative cost removed after each of ``rounds`` rounds of iterative allocation (B-10).

    ``"equal"``: ``s_j = s_0 + (s_K − s_0)·j/K`` (equal steps of the cost removed, oBERT's
    recomputation steps); ``"geometric"``: the kept cost falls by the same factor every round,
    ``1 − s_j = (1 − s_0)·((1 − s_K)/(1 − s_0))^{j/K}`` (larger steps first, each removing the same
    fraction of what is left). The last entry is exactly ``target``.

    Args:
        current: ``s_0``, the cost already removed, in [0, 1).
        target: ``s_K``, in [current, 1).
        rounds: ``K ≥ 1``.
        spacing: ``"equal"`` or ``"geometric"``.

    Returns:
        ``[s_1, …, s_K]``, non-decreasing, ``s_K = target``.

    Raises:
        ObertError: a sparsity outside [0, 1), ``target < current`` (masks never regrow),
            ``rounds < 1`` or an unknown spacing.
    """
    pair: tuple[tuple[str, object], ...] = (("current", current), ("target", target))
    for name, value in pair:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ObertError(f"{name} must be a number in [0, 1), got {value!r}.")
        if not 0.0 <= float(value) < 1.0:
            raise ObertError(
                f"{name} must be in [0, 1) (the fraction of the dense cost removed), got {value!r}."
            )
    c, t = float(current), float(target)
    if t < c:
        raise ObertError(
            f"target {t:.4g} is below current {c:.4g}: removed blocks never come back; use a "
            "target ≥ current."
        )
    k = check_positive_int(rounds, "rounds")
    if spacing not in SPACINGS:
        raise ObertError(
            f"unknown spacing {spacing!r}; choose one of {', '.join(map(repr, SPACINGS))}."
        )
    if spacing == "equal":
        steps = [c + (t - c) * j / k for j in range(1, k)]
    else:
        steps = [1.0 - (1.0 - c) * ((1.0 - t) / (1.0 - c)) ** (j / k) for j in range(1, k)]
    return [*steps, t]


def _fill(
    pick: dict[str, int],
    costs: dict[str, np.ndarray],
    obj: Mapping[str, Any],
    target: float,
    grids: Mapping[str, np.ndarray],
    *,
    uniform: bool,
    low: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """(B-8): step layers back one candidate point at a time while the total stays in budget.

    A step back of layer ``l`` from point ``i`` costs ``Δ_l = C_l(i−1) − C_l(i)`` and lowers its
    objective by ``G_l = O_l(i) − O_l(i−1)``; among the steps that fit, the one with the largest
    ``G_l / Δ_l`` is taken (a step that costs nothing first). The budget is a target: a step
    that raises the objective (a curve that is not monotone, such as (B-4) with its
    ``½(gᵀδw)²`` term) is still taken when nothing better fits, the least harmful first.
    ``uniform``: ``obj`` maps each layer to its current ratio, and the layer pruned
    the most (as a fraction of its blocks) steps back first (``obj`` is not used). No layer
    steps back below ``low`` (the blocks it had already lost, (B-10)).
    """
    out = dict(pick)
    total = float(sum(costs[k][out[k]] for k in out))
    while True:
        best: tuple[float, float, str] | None = None
        for k, i in out.items():
            if i <= (low[k] if low is not None else 0):
                continue
            delta = float(costs[k][i - 1] - costs[k][i])
            if total + delta > target:
                continue
            if uniform:
                key = float(grids[k][i])
            else:
                gain = float(obj[k][i] - obj[k][i - 1])
                key = math.inf if delta <= 0 else gain / delta
            cand = (key, float(grids[k][i]), k)
            if best is None or cand[:2] > best[:2]:
                best = cand
        if best is None:
            return out
        k = best[2]
        total += float(costs[k][out[k] - 1] - costs[k][out[k]])
        out[k] -= 1


def _uniform(
    grids: dict[str, np.ndarray],
    costs: dict[str, np.ndarray],
    top: dict[str, int],
    target: float,
    dense: float,
    budget: float,
    dens: float,
    counted: bool,
    low: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """``rule="uniform"``: the smallest common ratio whose total cost meets the budget.

    On a shared grid a common grid point every layer may take; with block counts any ratio
    ``a`` (the union of the layers' ``k / n``), each layer at its point nearest ``a``
    (``round(a·n)`` blocks), capped by its minimum density and no fewer than ``low`` (blocks
    already lost).
    """
    names = list(grids)
    if counted:
        cands = np.unique(np.concatenate([grids[k] for k in names]))
        for a in cands.tolist():
            pick = {k: min(round(a * (grids[k].shape[0] - 1)), top[k]) for k in names}
            if low is not None:
                pick = {k: max(pick[k], low[k]) for k in names}
            if sum(float(costs[k][pick[k]]) for k in names) <= target:
                return pick
        best = sum(float(costs[k][top[k]]) for k in names)
    else:
        common = min(top.values())
        totals: np.ndarray = np.sum(np.stack(list(costs.values())), axis=0)
        for j in range(common + 1):
            if float(totals[j]) <= target:
                return dict.fromkeys(names, j)
        best = float(totals[: common + 1].min())
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


def _check_floor(value: object) -> float:
    return _check_ratio(
        value,
        "floor",
        "the fraction of its uniform share of blocks every layer keeps at least, e.g. 0.5; "
        "1 = never below uniform",
    )


def _check_beta(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (math.isfinite(float(value)) and float(value) >= 0)
    ):
        raise ObertError(f"beta must be a finite number ≥ 0, got {value!r}.")
    return float(value)


def _beta(
    grids: Mapping[str, np.ndarray],
    dist: dict[str, np.ndarray],
    pw: dict[str, np.ndarray],
    h: int,
) -> float:
    d_slope = float(np.mean([stencil_slopes(grids[k], v, h).max() for k, v in dist.items()]))
    p_slope = float(np.mean([stencil_slopes(grids[k], v, h).max() for k, v in pw.items()]))
    if not (p_slope > 0):
        raise ObertError(
            "the power curves never increase with the ratio, so beta cannot be derived from "
            "their slopes; pass beta=... or check the power curves."
        )
    return d_slope / p_slope


def _chooser(
    rule: str,
    grids: Mapping[str, np.ndarray],
    obj: dict[str, np.ndarray],
    costs: dict[str, np.ndarray],
    top: Mapping[str, int],
    h: int,
    low: Mapping[str, int],
) -> Callable[[float], dict[str, int]]:
    """The choice of every layer for an exponent ``s`` (a candidate index in ``low … top``)."""
    if rule == "lpvit":
        slopes = {k: stencil_slopes(grids[k], v, h)[low[k] : top[k] + 1] for k, v in obj.items()}

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
            return {k: low[k] + closest(v, t) for k, v in slopes.items()}

        return pick_lpvit
    sub_obj = {k: v[low[k] : top[k] + 1] for k, v in obj.items()}
    sub_cost = {k: costs[k][low[k] : top[k] + 1] for k in obj}

    def pick_lagrange(s: float) -> dict[str, int]:
        mu = 2.0**s
        out = {}
        for k, v in sub_obj.items():
            val = v + mu * sub_cost[k]
            best = np.flatnonzero(val <= val.min())
            # among exact ties the cheapest point (so the total cost falls as mu grows)
            out[k] = low[k] + int(best[np.argmin(sub_cost[k][best])])
        return out

    return pick_lagrange
