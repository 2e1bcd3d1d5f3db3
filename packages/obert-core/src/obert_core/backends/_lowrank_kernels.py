"""Numba kernels over the rank-``m`` Fisher blocks of :class:`~obert_core.LowRankFisher`.

With ``G̃_b`` the stored ``m × B`` gradients of block ``b`` (docs/math.md §2.2, Eq. W-4),

    K̃_b = mλI_m + G̃_b G̃_bᵀ = L_b L_bᵀ,   Y_b = L_b⁻¹ G̃_b,
    [F̂_b⁻¹]_qq = (1 − ‖Y_b e_q‖²) / λ,      F̂_b⁻¹ z = (z − G̃_bᵀ L_b⁻ᵀ L_b⁻¹ G̃_b z) / λ      (W-5)

* :func:`lowrank_diag_kernel`: ``diag(F̂_b⁻¹)`` by (W-5): the ``m × m`` Gram, its Cholesky factor
  and the forward substitution ``Y_b = L_b⁻¹G̃_b`` row by row, in place over a float64 copy of
  the block (``m²B/2 + m³/6 + m²B/2`` multiply-adds; the batched LAPACK path of
  ``LowRankFisher`` forms ``K̃_b⁻¹`` and the product ``K̃_b⁻¹G̃_b``, about three times as many).
* :func:`lowrank_superpose_kernel`: the superposed OBS update ``w − F̂⁻¹z`` with ``z`` built
  per block from the weights, ``diag(F̂⁻¹)`` and the newly pruned mask (no float64 temporaries
  of the whole tensor).
* :func:`lowrank_matvec_kernel`: ``F̂_b⁻¹ z_b`` by (W-5), factoring ``K̃_b`` again. No factor is
  kept between the two: ``F̂⁻¹z`` reads the gradients anyway, and their ``m × m`` Gram and its
  Cholesky factor cost less than writing ``8m²`` bytes per block and reading them back
  (measured on MiniLM's 212,337 blocks, docs/benchmarks.md).

Only the live columns of ``G̃_b`` are read into the float64 copy: a zero column (a pruned weight,
whose gradients are masked) adds nothing to ``K̃_b``, its leverage is 0, so ``[F̂_b⁻¹]_qq = 1/λ``
and ``(F̂_b⁻¹z)_q = z_q/λ`` exactly (docs/math.md §2.1, Eq. 6c); the Gram and the substitution
then cost ``m²k`` for ``k`` live columns instead of ``m²B``. A block with ``z_b = 0`` (no weight
removed there) is not factored at all. With few live columns (``c ≤ 5m/4``: most blocks once a
layer is sparser than ``1 − m/B``) the ``c × c`` block itself, ``λI_c + G̃_cᵀG̃_c/m``, is
factored instead of ``K̃_b`` (Eqs. 6a and 6c): ``c²m/2 + c³/3`` multiply-adds against
``m²c + m³/6``, and exact where (W-5) is not. When the live columns lie in (or near) the span of
the gradients their leverages are ``1 − O(λ)``, and ``1 − ‖Y_b e_q‖²`` cancels: at λ = 1e-7 the
Woodbury diagonal was off by up to 8 % on such blocks (against a 60-digit inverse), the primal
one by 1e-15.

Every inner loop runs over the contiguous columns of a row (the dot products of the Gram
with ``fastmath`` reassociation), one block at a time, so a block's float64 rows stay in cache.
A block whose ``K̃_b`` has no Cholesky factor in float64 sets its entry of ``bad`` (the caller
then takes the pseudo-inverse path). The kernels are serial and release the GIL; they run on
ranges of blocks through :func:`~obert_core.backends._block_kernels.run_on_blocks`.
"""

from __future__ import annotations

import numpy as np

from .._arrays import require_numba
from ._block_kernels import _FASTMATH, _cholesky, _factor_diag, _factor_solve, _superpose_rhs

__all__ = ["lowrank_diag_kernel", "lowrank_matvec_kernel", "lowrank_superpose_kernel"]

numba = require_numba()


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")  # type: ignore[untyped-decorator]
def _gather_live(
    grads: np.ndarray,
    b: int,
    g: np.ndarray,
    gt: np.ndarray,
    live: np.ndarray,
    colmax: np.ndarray,
) -> int:  # pragma: no cover
    """The ``c`` live (non-zero) columns ``live[:c]`` of ``G̃_b``, gathered in float64; returns c.

    Into ``g[:m, :c]`` (rows: gradients) for the dual system, or transposed into ``gt[:c, :m]``
    (rows: columns of ``G̃_b``, so the primal Gram's dot products are contiguous) when
    ``c ≤ 5m/4`` (:func:`_primal`).
    """
    m, n = grads.shape[1], grads.shape[2]
    for q in range(n):
        colmax[q] = 0.0
    for i in range(m):  # one pass: copy, and max |g̃| per column (branch-free, so it vectorises)
        for q in range(n):
            v = np.float64(grads[b, i, q])
            g[i, q] = v
            colmax[q] = max(colmax[q], abs(v))
    c = 0
    for q in range(n):
        if colmax[q] > 0.0:
            live[c] = q
            c += 1
    if _primal(c, m):
        for p in range(c):
            q = live[p]
            for i in range(m):
                gt[p, i] = g[i, q]
    elif c < n:  # compact the rows in place: live[p] ≥ p
        for i in range(m):
            for p in range(c):
                g[i, p] = g[i, live[p]]
    return c


@numba.njit(cache=True)  # type: ignore[untyped-decorator]
def _primal(c: int, m: int) -> bool:  # pragma: no cover
    """Whether the live ``c × c`` block is factored instead of the ``m × m`` ``K̃_b``."""
    return 4 * c <= 5 * m


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")  # type: ignore[untyped-decorator]
def _dual_factor(
    g: np.ndarray, m: int, c: int, mdamp: float, k: np.ndarray, lower: np.ndarray
) -> bool:  # pragma: no cover
    """``lower ← L_b`` of ``K̃_b = mλI_m + G̃_bG̃_bᵀ`` over the live columns; False if not PD."""
    for i in range(m):
        for j in range(i + 1):
            t = 0.0
            for p in range(c):
                t += g[i, p] * g[j, p]
            k[i, j] = t
        k[i, i] += mdamp
    return bool(_cholesky(k, m, lower))


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")  # type: ignore[untyped-decorator]
def _primal_factor(
    gt: np.ndarray, m: int, c: int, mdamp: float, damp: float, a: np.ndarray, lower: np.ndarray
) -> bool:  # pragma: no cover
    """``lower ←`` the factor of ``λI_c + G̃_cᵀG̃_c/M``, the live ``c × c`` block; False if not PD.

    ``gt[:c, :m]``: the live columns of ``G̃_b`` as rows (:func:`_gather_live`). ``M`` is the
    normaliser of Eq. F (``num_grads``, ``mdamp = Mλ``), not the number ``m`` of stored rows.
    """
    inv_m = damp / mdamp
    for p in range(c):
        for r in range(p + 1):
            t = 0.0
            for i in range(m):
                t += gt[p, i] * gt[r, i]
            a[p, r] = t * inv_m
        a[p, p] += damp
    return bool(_cholesky(a, c, lower))


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _scratch(m: int, n: int) -> tuple[np.ndarray, ...]:  # pragma: no cover
    """One thread's float64 work arrays for blocks of ``m`` gradients × ``n`` columns.

    ``(g, gt, k, lower, a, v, acc, live, colmax)``: the live columns as rows of gradients and
    transposed, the ``m × m`` system, a factor, the ``c × c`` system, two vectors, the live
    column indices and the per-column maxima of :func:`_gather_live`.
    """
    size = max(m, n)
    return (
        np.empty((m, n)),
        np.empty((n, m)),
        np.empty((m, m)),
        np.zeros((size, size)),
        np.empty((n, n)),
        np.empty(size),
        np.empty(n),
        np.empty(n, dtype=np.int64),
        np.empty(n),
    )


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)  # type: ignore[untyped-decorator]
def lowrank_diag_kernel(
    lo: int,
    hi: int,
    grads: np.ndarray,
    mdamp: float,
    damp: float,
    out: np.ndarray,
    bad: np.ndarray,
) -> None:  # pragma: no cover
    """``out[b] ← diag(F̂_b⁻¹)`` (W-5; the ``c × c`` block when ``c ≤ 5m/4``), ``lo ≤ b < hi``."""
    m, n = grads.shape[1], grads.shape[2]
    g, gt, k, lower, a, _, lev, live, colmax = _scratch(m, n)
    xt = np.empty((n, n))
    for b in range(lo, hi):
        c = _gather_live(grads, b, g, gt, live, colmax)
        for q in range(n):
            out[b, q] = 1.0 / damp  # a dead column; the live ones are overwritten below
        if _primal(c, m):  # the smaller (and exact) system
            if not _primal_factor(gt, m, c, mdamp, damp, a, lower):
                bad[b] = True
                continue
            _factor_diag(lower, c, xt, out, b, live)
            continue
        if not _dual_factor(g, m, c, mdamp, k, lower):
            bad[b] = True
            continue
        for p in range(c):
            lev[p] = 0.0
        for i in range(m):  # row i of Y = L⁻¹G̃ overwrites row i of g (rows < i are Y already)
            for j in range(i):
                f = lower[i, j]
                for p in range(c):
                    g[i, p] -= f * g[j, p]
            inv = 1.0 / lower[i, i]
            for p in range(c):
                y = g[i, p] * inv
                g[i, p] = y
                lev[p] += y * y
        for p in range(c):
            out[b, live[p]] = (1.0 - lev[p]) / damp


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")  # type: ignore[untyped-decorator]
def _solve_block(
    grads: np.ndarray,
    b: int,
    mdamp: float,
    damp: float,
    z: np.ndarray,
    x: np.ndarray,
    work: tuple[np.ndarray, ...],
) -> bool:  # pragma: no cover
    """``x ← F̂_b⁻¹ z`` for one block (W-5, or the primal system); False if not PD.

    ``work``: the scratch arrays of :func:`_scratch`.
    """
    g, gt, k, lower, a, v, acc, live, colmax = work
    m, n = grads.shape[1], grads.shape[2]
    for q in range(n):
        x[q] = z[q] / damp  # a dead column; the live ones are overwritten below
    c = _gather_live(grads, b, g, gt, live, colmax)
    if _primal(c, m):  # the smaller (and exact) system
        if not _primal_factor(gt, m, c, mdamp, damp, a, lower):
            return False
        for p in range(c):
            v[p] = z[live[p]]
        _factor_solve(lower, c, v)
        for p in range(c):
            x[live[p]] = v[p]
        return True
    if not _dual_factor(g, m, c, mdamp, k, lower):
        return False
    for i in range(m):  # v = G̃ z, then v = K̃⁻¹ G̃ z
        t = 0.0
        for p in range(c):
            t += g[i, p] * z[live[p]]
        v[i] = t
    _factor_solve(lower, m, v)
    for p in range(c):
        acc[p] = z[live[p]]
    for i in range(m):  # z − G̃ᵀ v, row by row
        f = v[i]
        for p in range(c):
            acc[p] -= g[i, p] * f
    for p in range(c):
        x[live[p]] = acc[p] / damp
    return True


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)  # type: ignore[untyped-decorator]
def lowrank_matvec_kernel(
    lo: int,
    hi: int,
    grads: np.ndarray,
    mdamp: float,
    damp: float,
    z: np.ndarray,
    out: np.ndarray,
    bad: np.ndarray,
) -> None:  # pragma: no cover
    """``out[b] ← F̂_b⁻¹ z[b]`` (W-5; the ``c × c`` block when ``c ≤ 5m/4``), ``lo ≤ b < hi``."""
    n = grads.shape[2]
    work = _scratch(grads.shape[1], n)
    for b in range(lo, hi):
        nonzero = False
        for q in range(n):
            if z[b, q] != 0:
                nonzero = True
        if not nonzero:
            for q in range(n):
                out[b, q] = 0.0  # F̂⁻¹0 = 0, without a factor
            continue
        if not _solve_block(grads, b, mdamp, damp, z[b], out[b], work):
            bad[b] = True


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)  # type: ignore[untyped-decorator]
def lowrank_superpose_kernel(
    lo: int,
    hi: int,
    grads: np.ndarray,
    mdamp: float,
    damp: float,
    wb: np.ndarray,
    diag: np.ndarray,
    newly: np.ndarray,
    zero: np.ndarray,
    out: np.ndarray,
    bad: np.ndarray,
) -> None:  # pragma: no cover
    """``out[b] ← w_b − F̂_b⁻¹ z_b``, 0 on ``zero``: the superposed OBS update (Eq. 2), fused.

    ``z_q = w_q / [F̂⁻¹]_qq`` on the newly pruned weights (``newly``) and 0 elsewhere, built per
    block; a block with nothing newly pruned keeps its weights without a factor.
    """
    n = grads.shape[2]
    work = _scratch(grads.shape[1], n)
    z = np.empty(n)
    x = np.empty(n)
    for b in range(lo, hi):
        if _superpose_rhs(wb, diag, newly, b, z):
            if not _solve_block(grads, b, mdamp, damp, z, x, work):
                bad[b] = True
                continue
            for q in range(n):
                out[b, q] = 0.0 if zero[b, q] else wb[b, q] - x[q]
        else:
            for q in range(n):
                out[b, q] = 0.0 if zero[b, q] else wb[b, q]
