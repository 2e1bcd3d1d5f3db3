"""Per-layer block ratios of a model's weights in one call: curves, costs and allocation.

The composition LPViT (arXiv 2407.02068 §3) runs, from tensors to ratios (docs/math.md §8):

* ``method="lpvit"``: distortion (B-4) from the calibration gradient
  (:func:`~obert_core.blocks.taylor_distortion_curve`), plus the power proxy with β of (B-6);
* ``method="obs"``: the exact OBS loss (B-5) of the blocked Fisher
  (:func:`~obert_core.blocks.obs_distortion_curve`), no power proxy unless asked;
* ``method="uniform"``: one ratio for every layer.

The budgeted cost is the kept FLOPs (:func:`~obert_core.blocks.flops_curve`) or, with a latency
table, the measured latency (:func:`~obert_core.blocks.latency_curve`);
:func:`~obert_core.blocks.allocate_ratios` picks the ratios.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._errors import ObertError
from .allocation import Allocation, allocate_ratios
from .curves import (
    DEFAULT_DAMP,
    count_ratios,
    flops_curve,
    latency_curve,
    lpvit_power_curve,
    obs_distortion_curve,
    taylor_distortion_curve,
)
from .grid import block_grid, parse_block

__all__ = ["METHODS", "allocate_blocks"]

METHODS = ("uniform", "lpvit", "obs")


def _per_layer(value: object, what: str, names: list[str], method: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ObertError(
            f"method={method!r} needs {what}: a mapping layer name → tensor for every weight, "
            f"got {type(value).__name__}."
        )
    missing = [n for n in names if n not in value]
    if missing:
        raise ObertError(f"{what} has no entry for {missing}; pass one for every weight.")
    return value


def allocate_blocks(
    weights: Mapping[str, Any],
    block: str | int | tuple[int, int],
    budget: float,
    *,
    method: str = "lpvit",
    grads: Mapping[str, Any] | None = None,
    finvs: Mapping[str, Any] | None = None,
    latency: Mapping[tuple[int, int], Any] | None = None,
    power: bool | None = None,
    rule: str | None = None,
    smooth: float | None = 0.5,
    h: int = 4,
    min_density: float | None = None,
    damp: float = DEFAULT_DAMP,
    floor: float | None = None,
    start: Mapping[str, int] | None = None,
) -> Allocation:
    """Per-layer pruning ratios of ``r×c`` blocks that keep ``budget`` of the dense cost.

    Args:
        weights: layer name → ``(R, C)`` weight (NumPy or torch); every one a whole number of
            blocks.
        block: the block shape, e.g. ``"16x16"``.
        budget: the fraction of the dense FLOPs (or latency) kept, in (0, 1).
        method: ``"lpvit"``, ``"obs"`` or ``"uniform"`` (see the module docstring).
        grads: layer name → mean calibration gradient (``method="lpvit"``).
        finvs: layer name → blocked inverse Fisher (``method="obs"``).
        latency: ``(R, C)`` → {density → latency} (see
            :func:`~obert_core.blocks.latency_curve`); default: the kept FLOPs.
        power: add LPViT's power proxy with its automatic β (default: for ``"lpvit"`` only).
        rule: the rule of :func:`~obert_core.blocks.allocate_ratios` (default ``"lpvit"``;
            ``"uniform"`` for ``method="uniform"``).
        smooth: the EMA weight of the distortion curves (LPViT: 0.5; ``None``: none).
        h: the stencil offset of the slopes (LPViT: 4).
        min_density: the smallest density a layer keeps (default ``min(0.05, budget/2)``).
        damp: ``λ`` of LPViT's distortion (B-4).
        floor: ``φ`` of (B-9): every layer keeps at least this fraction of the blocks the
            uniform allocation keeps it (see :func:`~obert_core.blocks.allocate_ratios`).
        start: layer name → blocks already removed, for a round of iterative allocation (B-10):
            no layer loses fewer (see :func:`~obert_core.blocks.allocate_ratios`).

    Every curve is sampled at each layer's whole numbers of pruned blocks ``0 … n``
    (:func:`~obert_core.blocks.count_ratios`), so the budget is met within one block
    (docs/math.md §8, (B-8)).

    Returns:
        The :class:`~obert_core.blocks.Allocation` (``pruned``: blocks removed per layer); keep
        each layer's blocks with :func:`~obert_core.blocks.block_keep_mask` at its ratio.

    Raises:
        ObertError: an unknown method, a missing gradient / inverse Fisher / latency entry, a
            weight that is not a whole number of blocks (naming it and its shape), or a budget
            outside (0, 1) or out of reach.
    """
    if method not in METHODS:
        raise ObertError(
            f"unknown method {method!r}; choose one of {', '.join(map(repr, METHODS))}."
        )
    if not weights:
        raise ObertError("weights must be a non-empty mapping layer name → 2-D weight.")
    rc = parse_block(block)
    names = [str(n) for n in weights]
    counts = {}
    for name in names:
        rows, cols = block_grid(tuple(weights[name].shape), rc, name=name)
        counts[name] = rows * cols
    # each layer's candidate points: its whole numbers of pruned blocks 0 … n
    grid = {n: count_ratios(counts[n]) for n in names}
    shapes = {n: tuple(int(d) for d in weights[n].shape) for n in names}
    if latency is not None:
        cost = {n: latency_curve(latency, shapes[n], rc, ratios=grid[n], name=n) for n in names}
    else:
        cost = {n: flops_curve(shapes[n], rc, ratios=grid[n]) for n in names}
    if method == "lpvit":
        g = _per_layer(grads, "grads", names, method)
        dist = {
            n: taylor_distortion_curve(weights[n], g[n], rc, ratios=grid[n], damp=damp, name=n)
            for n in names
        }
    elif method == "obs":
        f = _per_layer(finvs, "finvs", names, method)
        dist = {
            n: obs_distortion_curve(weights[n], f[n], rc, ratios=grid[n], name=n) for n in names
        }
    else:
        dist = {n: np.zeros(counts[n] + 1) for n in names}
    use_power = (method == "lpvit") if power is None else bool(power)
    if use_power and method == "uniform":
        raise ObertError("method='uniform' has no objective for the power proxy; drop power=True.")
    pw = {n: lpvit_power_curve(shapes[n], rc, ratios=grid[n]) for n in names} if use_power else None
    chosen = rule if rule is not None else ("uniform" if method == "uniform" else "lpvit")
    return allocate_ratios(
        dist,
        cost,
        budget,
        power=pw,
        rule=chosen,
        smooth=smooth,
        h=h,
        min_density=min_density,
        blocks=counts,
        floor=floor,
        start=start,
    )
