"""Per-layer curves over the pruning ratio: distortion, cost, smoothing, slopes (docs/math.md §8).

For a layer at pruning ratio ``a`` (its ``round(a·n)`` lowest-scored ``r×c`` blocks removed,
:func:`~obert_core.blocks.block_keep_mask`), LPViT (arXiv 2407.02068 §3.2–3.3) measures

    D(a) = mean((δw ⊙ g)²) + ½ δwᵀ(g gᵀ + λI) δw
         = (1/d) Σ_{i∈P} (w_i g_i)² + ½ (Σ_{i∈P} w_i g_i)² + ½ λ Σ_{i∈P} w_i²         (D-L)

with ``δw = −w`` on the removed set ``P`` (no weight update), ``d = R·C``, ``λ = 1e-7``; and a
power proxy ``P(a) = (blocks removed) · ⌊C/16⌋``. The OBS variant replaces (D-L) by the exact loss
increase of removing ``P`` with the optimal update of the blocked Fisher,

    D_OBS(a) = Σ_f ½ w_{S_f}ᵀ ([F̂⁻¹]_{S_f S_f})⁻¹ w_{S_f},                                   (D-O)

with ``S_f`` the removed weights (``P`` and those pruned earlier) inside Fisher block ``f``

(oBERT Eq. 4 for all removed weights of each Fisher block at once, the loss of
:func:`~obert_core.blocks.obs_block_update`). The budgeted costs are the kept FLOPs
(:func:`flops_curve`) or a measured latency (:func:`latency_curve`). Curves are sampled on a grid
of ratios (a layer's whole numbers of pruned blocks, :func:`count_ratios`, or LPViT's
``0, 0.01, …, 1``, :func:`ratio_grid`, the default), smoothed by a bias-corrected EMA
(:func:`ema`) and differentiated with a five-point stencil (:func:`stencil_slopes`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._arrays import framework_of, to_numpy
from .._errors import ObertError
from .._operators import DenseBlocks, as_operator
from .._validate import check_damp, check_positive_int
from .grid import _block_states, block_grid, parse_block
from .scores import _check_weight, obs_block_saliency, taylor_block_scores

__all__ = [
    "DEFAULT_DAMP",
    "count_ratios",
    "ema",
    "flops_curve",
    "latency_curve",
    "lpvit_power_curve",
    "obs_distortion_curve",
    "pruned_blocks",
    "ratio_grid",
    "stencil_slopes",
    "taylor_distortion_curve",
]

#: LPViT's dampening λ of the quadratic term of (D-L).
DEFAULT_DAMP = 1e-7


def ratio_grid(steps: int = 100) -> np.ndarray:
    """The ratios ``0, 1/steps, …, 1`` (LPViT: ``steps = 100``, a step of 0.01)."""
    n = check_positive_int(steps, "steps")
    return np.linspace(0.0, 1.0, n + 1)


def count_ratios(num_blocks: int) -> np.ndarray:
    """The ratios ``k / n`` for ``k = 0 … n`` pruned blocks of ``n``: a layer's candidate points.

    Sampled there, every curve of this module has one value per whole number of pruned blocks
    (``round((k / n)·n) = k``), which is what :func:`~obert_core.blocks.allocate_ratios` takes
    with ``blocks=`` (docs/math.md §8, (B-8)).
    """
    n = check_positive_int(num_blocks, "num_blocks")
    out: np.ndarray = np.arange(n + 1, dtype=np.float64) / n
    return out


def _check_ratios(ratios: Any) -> np.ndarray:
    a: np.ndarray = np.asarray(ratio_grid() if ratios is None else ratios, dtype=np.float64)
    if a.ndim != 1 or a.shape[0] < 2:
        raise ObertError(
            f"ratios must be a 1-D grid of at least 2 pruning ratios, got shape {a.shape}; use "
            "ratio_grid(100)."
        )
    if not np.all(np.isfinite(a)) or a[0] < 0.0 or a[-1] > 1.0 or np.any(np.diff(a) <= 0):
        raise ObertError(
            f"ratios must increase strictly within [0, 1], got {a.tolist()[:6]}…; use "
            "ratio_grid(100)."
        )
    return a


def pruned_blocks(num_blocks: int, ratios: Any = None) -> np.ndarray:
    """Blocks removed at each ratio: ``round(a·n)`` (:func:`~obert_core.blocks.block_keep_mask`)."""
    n = check_positive_int(num_blocks, "num_blocks")
    a = _check_ratios(ratios)
    return np.array([round(float(x) * n) for x in a], dtype=np.int64)


def _order(scores: np.ndarray) -> np.ndarray:
    """Block indices in the order :func:`block_keep_mask` removes them (lowest first, stable)."""
    return np.argsort(scores.reshape(-1), kind="stable")


def _block_sums(x: np.ndarray, r: int, c: int) -> np.ndarray:
    rows, cols = x.shape
    out: np.ndarray = x.reshape(rows // r, r, cols // c, c).sum((1, 3)).reshape(-1)
    return out


def taylor_distortion_curve(
    weights: Any,
    grad: Any,
    block: str | int | tuple[int, int],
    *,
    ratios: Any = None,
    scores: Any = None,
    damp: float = DEFAULT_DAMP,
    name: str = "weight",
) -> np.ndarray:
    """LPViT's distortion (D-L) at every ratio: ``mean((δw⊙g)²) + ½(gᵀδw)² + ½λ‖δw‖²``.

    The blocks removed at ratio ``a`` are the ``round(a·n)`` lowest of ``scores`` (default
    :func:`~obert_core.blocks.taylor_block_scores`), so ``D`` is cumulative sums of three per-block
    sums in that order: O(R·C) for the whole curve.

    Args:
        weights: ``(R, C)`` weight, NumPy or torch.
        grad: ``(R, C)`` mean calibration gradient of a label-free loss (see
            :func:`~obert_core.blocks.taylor_block_scores`).
        block: the block shape.
        ratios: the grid (default :func:`ratio_grid`).
        scores: ``(R/r, C/c)`` block scores deciding the order of removal.
        damp: ``λ`` (LPViT: 1e-7).
        name: the tensor's name, for error messages.

    Returns:
        float64 NumPy ``(len(ratios),)``; ``D(0) = 0``.
    """
    r, c = parse_block(block)
    a = _check_ratios(ratios)
    lam = check_damp(damp)
    default = taylor_block_scores(weights, grad, (r, c), name=name)
    sc = _scores(default if scores is None else scores, weights, (r, c), name)
    w = to_numpy(weights).astype(np.float64)
    g = to_numpy(grad).astype(np.float64)
    wg = w * g
    order = _order(sc)
    s1 = np.concatenate([[0.0], np.cumsum(_block_sums(wg * wg, r, c)[order])])
    s2 = np.concatenate([[0.0], np.cumsum(_block_sums(wg, r, c)[order])])
    s3 = np.concatenate([[0.0], np.cumsum(_block_sums(w * w, r, c)[order])])
    k = pruned_blocks(order.shape[0], a)
    out: np.ndarray = s1[k] / w.size + 0.5 * s2[k] ** 2 + 0.5 * lam * s3[k]
    return out


def _scores(scores: Any, weights: Any, block: tuple[int, int], name: str) -> np.ndarray:
    framework_of(weights, scores, names=(name, "scores"))
    want = block_grid(tuple(weights.shape), block, name=name)
    got = tuple(int(d) for d in scores.shape)
    if got != want:
        raise ObertError(
            f"scores for {name} have shape {got} but its {block[0]}x{block[1]} blocks form a "
            f"{want[0]}x{want[1]} grid; pass one score per block."
        )
    sc = to_numpy(scores).astype(np.float64)
    if not np.all(np.isfinite(sc)):
        raise ObertError(f"scores for {name} contain NaN or inf; recompute them.")
    return sc


def obs_distortion_curve(
    weights: Any,
    finv: Any,
    block: str | int | tuple[int, int],
    *,
    ratios: Any = None,
    scores: Any = None,
    current_mask: Any = None,
    name: str = "weight",
) -> np.ndarray:
    """The OBS loss increase (D-O) of removing the ``round(a·n)`` lowest-scored blocks, every ratio.

    The exact joint loss of :func:`~obert_core.blocks.obs_block_update` (all removed weights of a
    Fisher block solved together, earlier-pruned weights held at 0), not the sum of single-block
    saliencies. Only the Fisher blocks a new block touches are solved again at each ratio.

    Args:
        weights: ``(R, C)`` weight, NumPy or torch.
        finv: the blocked inverse Fisher (dense blocks or an :class:`~obert_core.MFACInverse`).
        block: the block shape.
        ratios: the grid (default :func:`ratio_grid`).
        scores: the order of removal, ``(R/r, C/c)`` (default
            :func:`~obert_core.blocks.obs_block_saliency`).
        current_mask: keep-mask of earlier pruning (default ``weights != 0``); its blocks are
            removed first.
        name: the tensor's name, for error messages.

    Returns:
        float64 NumPy ``(len(ratios),)``.
    """
    r, c = parse_block(block)
    a = _check_ratios(ratios)
    _check_weight(weights, name)
    rows, cols = (int(d) for d in weights.shape)
    br, bc = block_grid((rows, cols), (r, c), name=name)
    default = obs_block_saliency(weights, finv, (r, c), name=name) if scores is None else scores
    sc = _scores(default, weights, (r, c), name)
    w = to_numpy(weights).astype(np.float64).reshape(-1)
    if current_mask is None:
        zero0 = w == 0
    else:
        framework_of(weights, current_mask, names=(name, "current_mask"))
        if tuple(current_mask.shape) != (rows, cols):
            raise ObertError(
                f"current_mask for {name} has shape {tuple(current_mask.shape)}, not "
                f"{(rows, cols)}."
            )
        if str(current_mask.dtype) not in ("bool", "torch.bool"):
            raise ObertError(f"current_mask for {name} must be boolean, got {current_mask.dtype}.")
        zero0 = ~to_numpy(current_mask).reshape(-1)
        sc = sc.copy()
        sc.reshape(-1)[~_block_states(current_mask, (r, c), name).reshape(-1)] = -np.inf
    op = as_operator(finv, weights.reshape(-1))
    bsz, nfb = op.block_size, op.num_blocks
    total = nfb * bsz
    wflat = np.zeros(total)
    wflat[: w.shape[0]] = w
    wb = wflat.reshape(nfb, bsz)
    sflat = np.zeros(total, dtype=bool)
    sflat[: w.shape[0]] = zero0
    sel = sflat.reshape(nfb, bsz)
    dense = isinstance(op, DenseBlocks)
    fnp = to_numpy(op.finv) if dense else None  # type: ignore[attr-defined]
    contrib = np.zeros(nfb)
    # the flattened indices of each block, in removal order
    grid_r = np.arange(br * bc) // bc
    grid_c = np.arange(br * bc) % bc
    u = np.arange(r)[:, None] * cols + np.arange(c)[None, :]
    order = _order(sc)
    k = pruned_blocks(br * bc, a)
    out = np.zeros(a.shape[0])
    done = 0
    for j, kj in enumerate(k.tolist()):
        if kj > done or j == 0:
            new = order[done:kj]
            idx = (grid_r[new] * r * cols + grid_c[new] * c)[:, None, None] + u[None]
            flat = idx.reshape(-1)
            sflat[flat] = True
            changed = np.unique(flat // bsz) if j else np.flatnonzero(sel.any(1))
            if changed.size:
                contrib[changed] = _loss(fnp, op, sel, wb, changed, dense)
            done = kj
        out[j] = contrib.sum()
    return out


def _loss(
    fnp: np.ndarray | None,
    op: Any,
    sel: np.ndarray,
    wb: np.ndarray,
    blocks: np.ndarray,
    dense: bool,
) -> np.ndarray:
    """``½ w_Sᵀ([F̂⁻¹]_SS)⁻¹ w_S`` of each Fisher block in ``blocks``."""
    if dense:
        assert fnp is not None
        sub = DenseBlocks(fnp[blocks], blocks.shape[0] * fnp.shape[1])
        z = sub.restricted_solve(sel[blocks], wb[blocks])
        return np.asarray(0.5 * (wb[blocks] * z).sum(-1))
    subset = getattr(op, "_subset", None)
    if subset is not None:  # FisherBlocks / LowRankFisher: solve the changed blocks only
        op, wb, sel = subset(blocks), wb[blocks], sel[blocks]
    xp = op.xp
    rhs = xp.f64(wb) if not xp.torch else xp._t.from_numpy(wb).to(op.xp.device)
    s = sel if not xp.torch else xp._t.from_numpy(sel).to(op.xp.device)
    z = to_numpy(op.restricted_solve(s, rhs))
    out: np.ndarray = np.asarray(0.5 * (wb * z).sum(-1))
    return out if subset is not None else out[blocks]


def flops_curve(
    shape: Sequence[int], block: str | int | tuple[int, int], *, ratios: Any = None
) -> np.ndarray:
    """Kept FLOPs per token of a ``(R, C)`` Linear at each ratio: ``2·r·c·(n − round(a·n))``."""
    r, c = parse_block(block)
    br, bc = block_grid(tuple(shape), (r, c))
    n = br * bc
    out: np.ndarray = 2.0 * r * c * (n - pruned_blocks(n, ratios)).astype(np.float64)
    return out


def lpvit_power_curve(
    shape: Sequence[int], block: str | int | tuple[int, int], *, ratios: Any = None
) -> np.ndarray:
    """LPViT's power proxy at each ratio: ``(blocks removed) · ⌊C/16⌋`` (arXiv 2407.02068 §3.3)."""
    r, c = parse_block(block)
    br, bc = block_grid(tuple(shape), (r, c))
    cols = int(tuple(shape)[1])
    out: np.ndarray = pruned_blocks(br * bc, ratios).astype(np.float64) * float(cols // 16)
    return out


def latency_curve(
    table: Mapping[tuple[int, int], Any],
    shape: Sequence[int],
    block: str | int | tuple[int, int],
    *,
    ratios: Any = None,
    name: str = "weight",
) -> np.ndarray:
    """Measured latency of a ``(R, C)`` layer at each ratio, from a per-shape latency table.

    Args:
        table: ``(R, C)`` → {block density → latency}: the latency of that layer shape measured at
            a few densities (fraction of blocks kept, ``1.0`` = dense), in any one unit.
        shape: the layer's weight shape.
        block: the block shape.
        ratios: the grid (default :func:`ratio_grid`).
        name: the layer's name, for error messages.

    Returns:
        float64 ``(len(ratios),)``: linear interpolation in the density ``1 − round(a·n)/n``;
        below the lowest measured density the latency at that density (a sparser layer is never
        predicted faster than measured).

    Raises:
        ObertError: the table has no entry for ``shape``, an entry is not a mapping of densities in
            [0, 1] to finite latencies ≥ 0, or a density the grid needs lies above the highest
            measured one (measure the dense layer, density 1.0).
    """
    r, c = parse_block(block)
    dims = tuple(int(d) for d in shape)
    br, bc = block_grid(dims, (r, c), name=name)
    if not isinstance(table, Mapping):
        raise ObertError(
            f"the latency table must map (out_features, in_features) → {{density: latency}}, got "
            f"{type(table).__name__}."
        )
    entry = table.get((dims[0], dims[1]))
    if entry is None:
        known = sorted(tuple(k) for k in table)
        raise ObertError(
            f"the latency table has no entry for {name} of shape {dims}; it covers {known}. "
            f"Measure that shape (density → latency) and add it."
        )
    if not isinstance(entry, Mapping) or not entry:
        raise ObertError(
            f"the latency table's entry for shape {dims} must be a non-empty mapping density → "
            f"latency, got {entry!r}."
        )
    pairs = []
    for dens, lat in entry.items():
        ok = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (dens, lat))
        if not ok or not (0.0 <= float(dens) <= 1.0) or not math.isfinite(float(lat)) or lat < 0:
            raise ObertError(
                f"the latency table's entry for shape {dims} maps density {dens!r} to latency "
                f"{lat!r}; densities must lie in [0, 1] and latencies be finite and ≥ 0."
            )
        pairs.append((float(dens), float(lat)))
    pairs.sort()
    xs = np.array([p[0] for p in pairs])
    ys = np.array([p[1] for p in pairs])
    n = br * bc
    density = 1.0 - pruned_blocks(n, ratios) / n
    if density.max() > xs[-1] + 1e-12:
        raise ObertError(
            f"the latency table's entry for shape {dims} stops at density {xs[-1]:.4g} but the "
            f"grid needs {density.max():.4g}; add the dense latency (density 1.0)."
        )
    out: np.ndarray = np.interp(density, xs, ys)
    return out


def ema(values: Any, weight: object = 0.5) -> np.ndarray:
    """Bias-corrected exponential moving average of a curve (LPViT's smoothing).

    ``m_t = weight·m_{t−1} + (1 − weight)·y_t`` from ``m_0 = 0``, returned as
    ``m_t / (1 − weight^t)``, so a constant curve is unchanged; ``weight = 0`` returns the curve.

    Args:
        values: ``(n,)`` the curve.
        weight: in [0, 1) (LPViT: 0.5).
    """
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
        raise ObertError(f"the EMA weight must be a number in [0, 1), got {weight!r}.")
    beta = float(weight)
    if not (0.0 <= beta < 1.0):
        raise ObertError(f"the EMA weight must be in [0, 1) (LPViT: 0.5), got {weight!r}.")
    y = np.asarray(values, dtype=np.float64)
    out = np.empty_like(y)
    last = 0.0
    for t, v in enumerate(y.tolist(), start=1):
        last = beta * last + (1.0 - beta) * v
        out[t - 1] = last / (1.0 - beta**t)
    return out


def stencil_slopes(x: Any, y: Any, h: int = 4) -> np.ndarray:
    """``dy/dx`` at every grid point by the five-point stencil (offsets ``h/2`` and ``h``).

    At point ``i`` with ``k = min(h/2, ⌊i/2⌋, ⌊(n−1−i)/2⌋) ≥ 1``:

        y′_i ≈ (−y_{i+2k} + 8 y_{i+k} − 8 y_{i−k} + y_{i−2k}) / (3 (x_{i+2k} − x_{i−2k}))

    (exact for polynomials of degree ≤ 4 on a uniform grid); where ``k = 0`` (the two points next to
    each end) the central difference, and at the ends the one-sided difference.

    Args:
        x: ``(n,)`` increasing grid (uniform for the stencil's accuracy), ``n ≥ 2``.
        y: ``(n,)`` the curve.
        h: the stencil's outer offset, even ≥ 2 (LPViT: 4).

    Returns:
        float64 ``(n,)``.
    """
    hh = check_positive_int(h, "h")
    if hh % 2:
        raise ObertError(f"h must be an even integer ≥ 2 (offsets h/2 and h), got {h!r}.")
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    n = xs.shape[0]
    if xs.ndim != 1 or ys.shape != xs.shape or n < 2:
        raise ObertError(
            f"x and y must be 1-D of the same length ≥ 2, got shapes {xs.shape} and {ys.shape}."
        )
    out = np.empty(n)
    for i in range(n):
        k = min(hh // 2, i // 2, (n - 1 - i) // 2)
        if k >= 1:
            num = -ys[i + 2 * k] + 8 * ys[i + k] - 8 * ys[i - k] + ys[i - 2 * k]
            out[i] = num / (3.0 * (xs[i + 2 * k] - xs[i - 2 * k]))
        elif 0 < i < n - 1:
            out[i] = (ys[i + 1] - ys[i - 1]) / (xs[i + 1] - xs[i - 1])
        elif i == 0:
            out[i] = (ys[1] - ys[0]) / (xs[1] - xs[0])
        else:
            out[i] = (ys[i] - ys[i - 1]) / (xs[i] - xs[i - 1])
    return out
