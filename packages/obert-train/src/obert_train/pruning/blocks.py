"""Per-layer ratios of RxC block masks under a FLOPs or latency budget (LPViT, arXiv 2407.02068).

With an ``"RxC"`` mask type, the setting ``allocation`` decides how many blocks each target
tensor loses at a step to sparsity ``s`` (docs/math.md §8, (B-4)–(B-7)):

* ``"global"``: one threshold over every block score (or one fraction per tensor without
  ``global_sparsity``), as for the other mask types;
* ``"uniform"``: every tensor loses the same fraction ``s`` of its blocks;
* ``"lpvit"``: equal slopes of LPViT's distortion curves (B-4) of the mean label-free gradient
  (method ``lpvit``), with LPViT's power proxy (B-6);
* ``"obs"``: equal slopes of the exact OBS loss curves (B-5) of oBERT's blocked Fisher (method
  ``obert``).

The budget is what the schedule's sparsity already means: a step to ``s`` keeps ``1 − s`` of the
dense cost of the target Linears.  Every ``r×c`` block costs ``2·r·c`` FLOPs per token, so with the
default cost (FLOPs) ``s`` is the fraction of the target weights removed; with a latency table
(``latency_table``, format in :func:`load_latency_table`) it is the fraction of their summed
measured latency removed.  The allocation itself is :func:`obert_core.blocks.allocate_ratios`;
inside a tensor the best-scored blocks stay (:func:`obert_core.blocks.block_keep_mask`).

The ratios are chosen by the exact Lagrangian rule (``rule="lagrange"``: each layer minimises
``O_l(a) + 2^s C_l(a)``, optimal among all allocations that cost no more), not by LPViT's own
"slope closest to ``2^s``" rule: on non-convex curves the latter cannot always reach a budget
(the tests' tiny BERT with ``8x8`` blocks at sparsity 0.5: it keeps at best 0.7617 of the FLOPs,
the Lagrangian rule 0.4727; ``test_lpvit_slope_rule_misses_a_budget_the_lagrangian_rule_meets``).

``allocation_rounds = K`` (docs/math.md §8, (B-10)) reaches a step's target in K rounds
(:func:`obert_core.blocks.round_sparsities`), each allocating its cumulative budget from curves
taken at the current pruned weights; the blocks a tensor has already lost are passed as ``start``
so no tensor is given fewer and the budget is still met within one block.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

import obert_core as oc
import obert_core.blocks as ob
from obert_core.shared import LATENCY_TABLE_FORMAT
from obert_train.errors import ArgumentError, DataError, RecipeError, TargetError

__all__ = [
    "ALLOCATIONS",
    "LATENCY_TABLE_FORMAT",
    "allocate_block_ratios",
    "allocated_block_masks",
    "block_counts",
    "check_latency_table",
    "cost_sparsity",
    "load_latency_table",
]

ALLOCATIONS = ("global", "uniform", "lpvit", "obs")
"""The values of the ``allocation`` setting of RxC block masks."""


LatencyTable = dict[tuple[int, int], dict[float, float]]


def load_latency_table(path: str | Path) -> LatencyTable:
    """Read a latency table: layer shape → latency at a few fractions of blocks kept.

    The file is JSON::

        {
          "format": "obert-latency-table/1",
          "unit": "ms",
          "machine": "free text: CPU, threads, engine",
          "layers": {
            "3072x768": {"1.0": 0.912, "0.5": 0.488, "0.25": 0.271, "0.05": 0.094},
            "768x768":  {"1.0": 0.236, "0.5": 0.129, "0.05": 0.027}
          }
        }

    A ``layers`` key is a weight shape ``"OUTxIN"`` (``out_features x in_features``, the
    ``(R, C)`` of the weight); its value maps the fraction of blocks kept (the density, in
    [0, 1]; ``"1.0"`` = dense, required) to the measured latency in ``unit``.  Between measured
    densities the latency is interpolated linearly; below the lowest one it stays at that
    latency (:func:`obert_core.blocks.latency_curve`).  ``unit`` and ``machine`` are for the
    reader; only ``format`` and ``layers`` are checked.

    Args:
        path: The JSON file.

    Returns:
        ``{(out_features, in_features): {density: latency}}``.

    Raises:
        DataError: If the file is missing, not JSON, of another format, or an entry is malformed
            (naming the entry and the value).
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(
            f"latency_table {str(file)!r} is not a file; give the path of the JSON table"
        )
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"latency_table {str(file)!r} is not JSON: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != LATENCY_TABLE_FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise DataError(
            f"latency_table {str(file)!r} has format {got!r}; expected {LATENCY_TABLE_FORMAT!r} "
            "(see docs/train.md, 'Block allocation')"
        )
    layers = payload.get("layers")
    if not isinstance(layers, dict) or not layers:
        raise DataError(
            f"latency_table {str(file)!r}: 'layers' must map 'OUTxIN' shapes to "
            "{density: latency}"
        )
    table: LatencyTable = {}
    for key, entry in layers.items():
        head, sep, tail = str(key).lower().partition("x")
        if not sep or not head.isdigit() or not tail.isdigit() or not int(head) or not int(tail):
            raise DataError(
                f"latency_table {str(file)!r}: layer key {key!r} is not a shape 'OUTxIN' "
                "like '3072x768'"
            )
        if not isinstance(entry, dict) or not entry:
            raise DataError(
                f"latency_table {str(file)!r}: layer {key!r} must map densities to latencies, "
                f"got {entry!r}"
            )
        curve: dict[float, float] = {}
        for dens, lat in entry.items():
            try:
                d = float(dens)
            except ValueError:
                d = math.nan
            ok_lat = isinstance(lat, int | float) and not isinstance(lat, bool)
            if not 0.0 <= d <= 1.0 or not ok_lat or not math.isfinite(lat) or lat < 0:
                raise DataError(
                    f"latency_table {str(file)!r}: layer {key!r} maps density {dens!r} to "
                    f"{lat!r}; densities are numbers in [0, 1], latencies finite and >= 0"
                )
            curve[d] = float(lat)
        if 1.0 not in curve:
            raise DataError(
                f"latency_table {str(file)!r}: layer {key!r} has no dense latency (density "
                "'1.0'); measure the dense layer too"
            )
        table[(int(head), int(tail))] = curve
    return table


def check_latency_table(path: str | Path, shapes: Mapping[str, tuple[int, ...]]) -> LatencyTable:
    """The table of ``path``, checked to cover the shape of every target tensor.

    Raises:
        DataError: As :func:`load_latency_table`.
        TargetError: Naming the first tensor whose shape the table lacks and the shapes it has.
    """
    table = load_latency_table(path)
    for name, shape in shapes.items():
        dims = (int(shape[0]), int(shape[-1]))
        if len(shape) != 2 or dims not in table:
            known = sorted(f"{r}x{c}" for r, c in table)
            raise TargetError(
                f"latency_table {str(path)!r} has no entry for {name} of shape "
                f"{'x'.join(map(str, shape))}; it covers {known}. Measure that shape and add it"
            )
    return table


def block_counts(shapes: Mapping[str, tuple[int, ...]], block: tuple[int, int]) -> dict[str, int]:
    """``{name: number of r×c blocks}``.

    A tensor's curves are sampled at ``0 … n`` pruned blocks
    (:func:`obert_core.blocks.count_ratios`).
    """
    return {
        n: math.prod(ob.block_grid((int(s[0]), int(s[-1])), block, name=n))
        for n, s in shapes.items()
    }


def _cost_curves(
    shapes: Mapping[str, tuple[int, int]],
    block: tuple[int, int],
    latency: LatencyTable | None,
    counts: Mapping[str, int],
) -> dict[str, np.ndarray]:
    grid = {n: ob.count_ratios(k) for n, k in counts.items()}
    try:
        if latency is not None:
            return {
                n: ob.latency_curve(latency, s, block, ratios=grid[n], name=n)
                for n, s in shapes.items()
            }
        return {n: ob.flops_curve(s, block, ratios=grid[n]) for n, s in shapes.items()}
    except oc.ObertError as exc:
        raise TargetError(str(exc)) from None


def allocate_block_ratios(
    allocation: str,
    shapes: Mapping[str, tuple[int, int]],
    block: tuple[int, int],
    sparsity: float,
    *,
    distortion: Mapping[str, Any] | None = None,
    latency: LatencyTable | None = None,
    floor: float | None = None,
    start: Mapping[str, int] | None = None,
) -> ob.Allocation:
    """Per-tensor block ratios of a step to ``sparsity`` (the cost fraction removed).

    Args:
        allocation: ``"uniform"``, ``"lpvit"`` or ``"obs"``.
        shapes: ``{name: (R, C)}`` of every target tensor.
        block: ``(r, c)``.
        sparsity: The fraction of the dense cost removed, in (0, 1).
        distortion: ``{name: curve at 0 … n pruned blocks}`` (sampled at
            :func:`obert_core.blocks.count_ratios` of :func:`block_counts`) for ``"lpvit"`` /
            ``"obs"``.
        latency: A latency table (cost = latency), or None (cost = FLOPs).
        floor: ``allocation_floor``: every tensor keeps at least this fraction of the blocks the
            uniform allocation keeps it (:func:`obert_core.blocks.allocate_ratios`, ``floor``);
            None: LPViT's minimum density alone.
        start: ``{name: blocks already pruned}``: no tensor loses fewer (masks never regrow; a
            round of iterative allocation, docs/math.md §8, (B-10)); None: none.

    Returns:
        The :class:`obert_core.blocks.Allocation` (``pruned``: blocks removed per tensor; the
        budget met within one block).

    Raises:
        RecipeError: If ``sparsity`` is outside (0, 1) or the budget is out of reach.
        ArgumentError: If ``"lpvit"`` / ``"obs"`` come without distortion curves.
    """
    if not 0.0 < sparsity < 1.0:
        raise RecipeError(
            f"allocation {allocation!r}: the budget is 1 - sparsity, so the sparsity must lie in "
            f"(0, 1), got {sparsity!r}"
        )
    counts = block_counts(shapes, block)
    cost = _cost_curves(shapes, block, latency, counts)
    if allocation == "uniform":
        dist = {n: np.zeros(counts[n] + 1) for n in shapes}
    elif distortion is None:
        raise ArgumentError(f"allocation {allocation!r} needs the distortion curves")
    else:
        dist = {n: np.asarray(distortion[n], dtype=np.float64) for n in shapes}
    power = (
        {
            n: ob.lpvit_power_curve(s, block, ratios=ob.count_ratios(counts[n]))
            for n, s in shapes.items()
        }
        if allocation == "lpvit"
        else None
    )
    try:
        return ob.allocate_ratios(
            dist,
            cost,
            1.0 - sparsity,
            power=power,
            rule="uniform" if allocation == "uniform" else "lagrange",
            blocks=counts,
            floor=None if allocation == "uniform" else floor,
            start=start,
        )
    except oc.ObertError as exc:
        raise RecipeError(f"allocation {allocation!r} at sparsity {sparsity:.4g}: {exc}") from None


def _block_scores(scores: torch.Tensor, shape: tuple[int, int], block: tuple[int, int]) -> Any:
    """``(R/r, C/c)`` block scores from one score per row segment of ``c`` weights."""
    (rows, cols), (r, c) = shape, block
    return scores.detach().double().reshape(rows // r, r, cols // c).sum(1).cpu()


def allocated_block_masks(
    allocation: str,
    scores: Mapping[str, torch.Tensor],
    sparsity: float,
    masks: Mapping[str, torch.Tensor],
    shapes: Mapping[str, tuple[int, ...]],
    block: tuple[int, int],
    *,
    distortion: Mapping[str, Any] | None = None,
    latency: LatencyTable | None = None,
    floor: float | None = None,
) -> dict[str, torch.Tensor]:
    """Keep-masks of a step to ``sparsity`` with per-tensor block ratios from the allocation.

    Each tensor keeps its best blocks by the sum of their ``r`` row-segment scores (oBERT: the
    exact OBS block saliency, (B-3)).  A tensor whose allocated ratio is below the fraction of its
    blocks already pruned keeps its current blocks (masks never regrow).

    Args:
        allocation: ``"uniform"``, ``"lpvit"`` or ``"obs"``.
        scores: ``{name: flat scores}``, one per row segment of ``c`` weights.
        sparsity: The fraction of the dense cost removed.
        masks: Current flat keep-masks.
        shapes: ``{name: (R, C)}``.
        block: ``(r, c)``.
        distortion: Curves for ``"lpvit"`` / ``"obs"`` (see :func:`allocate_block_ratios`).
        latency: A latency table, or None (FLOPs).
        floor: ``allocation_floor`` (see :func:`allocate_block_ratios`).

    Returns:
        ``{name: flat bool keep-mask}``.
    """
    dims = {n: (int(shapes[n][0]), int(shapes[n][1])) for n in scores}
    r, c = block
    olds = {n: masks[n].reshape(dims[n]).to(torch.bool).cpu() for n in scores}
    gone = {
        n: int((~old.reshape(dims[n][0] // r, r, dims[n][1] // c, c).any(3).any(1)).sum())
        for n, old in olds.items()
    }
    plan = allocate_block_ratios(
        allocation, dims, block, sparsity, distortion=distortion, latency=latency, floor=floor,
        start=gone,
    )  # fmt: skip
    out = {}
    for name, sc in scores.items():
        rows, cols = dims[name]
        old = olds[name]
        n = (rows // r) * (cols // c)
        ratio = max(plan.ratios[name], gone[name] / n)
        keep = ob.block_keep_mask(
            _block_scores(sc, dims[name], block), ratio, block, current_mask=old, name=name
        )
        out[name] = (keep.reshape(-1) & old.reshape(-1)).to(masks[name].device)
    return out


def cost_sparsity(
    masks: Mapping[str, torch.Tensor],
    shapes: Mapping[str, tuple[int, ...]],
    block: tuple[int, int],
    latency: LatencyTable | None,
) -> float:
    """The fraction of the dense cost the masks remove (the allocation's unit of sparsity).

    FLOPs: the fraction of blocks pruned (all blocks cost the same).  Latency: ``1 − Σ_l
    L_l(density_l) / Σ_l L_l(1)`` with each tensor's table entry.
    """
    r, c = block
    kept_cost = dense_cost = 0.0
    for name, mask in masks.items():
        rows, cols = (int(d) for d in shapes[name][:2])
        alive = mask.reshape(rows // r, r, cols // c, c).any(3).any(1)
        n = alive.numel()
        pruned = n - int(alive.sum())
        if latency is None:
            kept_cost += n - pruned
            dense_cost += n
        else:
            grid = [0.0, pruned / n] if pruned else [0.0, 1.0]
            at = ob.latency_curve(latency, (rows, cols), block, ratios=grid, name=name)
            kept_cost += float(at[1]) if pruned else float(at[0])
            dense_cost += float(at[0])
    return 1.0 - kept_cost / dense_cost if dense_cost > 0 else 0.0
