"""Numba kernels over the damped Fisher blocks ``F̂_b = λI + G_b/m`` (docs/math.md §2.1).

Each kernel factorises one block at a time in float64 (a loop over a range of blocks; the ``B×B``
block stays in cache), reading only the lower triangle of the Gram stack ``G`` (float32 or
float64):

* :func:`diag_inverse_kernel`: ``diag(F̂_b⁻¹)`` from the Cholesky factor ``L`` (``F̂_b = LLᵀ``) and
  ``X = L⁻¹``: ``[F̂_b⁻¹]_ii = Σ_{r≥i} X_ri²`` (``B³/3 + B³/3`` flops; the explicit inverse would
  take ``B³``);
* :func:`restricted_update_kernel`: the joint OBS update through the kept weights ``R`` of each
  block, ``u_S = rhs_S``, ``u_R = −F̂_RR⁻¹ F̂_RS rhs_S`` (a ``|R|×|R|`` Cholesky solve);
* :func:`solve_kernel`: ``F̂_b⁻¹ z_b``;
* :func:`superpose_kernel`: the superposed OBS update ``w_b − F̂_b⁻¹ z_b`` in one pass;
* :func:`factored_solve_kernel`: ``F̂_b⁻¹ z_b = XᵀX z_b`` from the inverse factors ``X = L⁻¹``
  that :func:`diag_inverse_kernel` keeps on request (two triangular products, ``B²`` flops,
  instead of a factorisation per block). They are kept *in the Gram's own memory*: the strictly
  lower triangle of a block's ``X`` in float64 takes ``4B(B−1)`` bytes, less than the ``4B²``
  of its float32 Gram block, so it fits there from the block's first 8-byte boundary
  (:func:`factor_offset`) and no block's factors reach the next block. The diagonal of ``X``
  and the live coordinates go to small side arrays.

``diag_inverse_kernel`` factors groups of eight fully live blocks (the first step from a dense
model) together, one block per SIMD lane (:mod:`._lane_kernels`).

**Decoupled coordinates** (docs/math.md §2.1, Eq. 6c). A coordinate whose row of the Gram is
zero (a pruned weight: its gradients are masked) is decoupled, ``F̂_qq = λ`` and ``F̂_qj = 0``, so
``[F̂⁻¹]_qq = 1/λ`` and ``(F̂⁻¹z)_q = z_q/λ``; each kernel factors only the ``k`` live
coordinates (``k³/3`` flops instead of ``B³/3``: 1/8 at 50 % sparsity). A block whose right-hand
side is zero (no weight removed there) is not factored at all. Both are exact, not approximations.

The loops are written for one block; ``fastmath`` allows only reassociation and contraction (so
the dot products vectorise), never approximate division or square roots. A block that is not
positive definite in float64 sets its entry of ``bad`` and leaves its output undefined.

The kernels are serial and release the GIL (``nogil``); :func:`run_on_blocks` runs them on
contiguous ranges of blocks in a thread pool, one range per core. Numba's own ``parallel=True``
is not used: its OpenMP threads spin after each parallel region and slowed the torch work that
follows a kernel in a pruning step by up to 5x (measured), and each block's result does not
depend on the split either way.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any

import numpy as np

from .._arrays import require_numba
from ._lane_kernels import LANES, full_group, lanes_diag, slp_vectorize
from ._linalg import _threads

__all__ = [
    "diag_inverse_kernel",
    "factor_arrays",
    "factor_offset",
    "factored_solve_kernel",
    "kernels_agree",
    "restricted_update_kernel",
    "run_on_blocks",
    "solve_kernel",
    "superpose_kernel",
]

numba = require_numba()


def factor_arrays(num_blocks: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The side arrays of factors kept in the Gram, for ``num_blocks`` blocks of size ``n``.

    ``X``'s diagonal (float64), the live coordinates (int16) and their number (int32).
    """
    return (
        np.empty((num_blocks, n)),
        np.empty((num_blocks, n), np.int16),
        np.empty(num_blocks, np.int32),
    )


_NO_FACTORS = (1, np.empty(0), *factor_arrays(0, 1))
"""``diag_inverse_kernel``'s factor arguments that keep nothing (scale, xbuf, xdiag, lv, nl)."""

_FASTMATH = {"reassoc", "contract"}


@numba.njit(cache=True, fastmath=_FASTMATH)  # type: ignore[untyped-decorator]
def _cholesky(a: np.ndarray, n: int, lower: np.ndarray) -> bool:  # pragma: no cover
    """``lower[:n, :n] ← L`` with ``LLᵀ = a[:n, :n]`` (lower triangle read); False if not PD."""
    for j in range(n):
        s = a[j, j]
        for k in range(j):
            s -= lower[j, k] * lower[j, k]
        if not s > 0.0:
            return False
        ljj = np.sqrt(s)
        lower[j, j] = ljj
        inv = 1.0 / ljj
        for i in range(j + 1, n):
            t = a[i, j]
            for k in range(j):
                t -= lower[i, k] * lower[j, k]
            lower[i, j] = t * inv
    return True


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")  # type: ignore[untyped-decorator]
def _load_live(
    gram: np.ndarray,
    b: int,
    damp: float,
    inv_m: float,
    a: np.ndarray,
    live: np.ndarray,
    rowabs: np.ndarray,
) -> int:  # pragma: no cover
    """``a[:k, :k] ← λI + gram[b]/m`` on the ``k`` live coordinates ``live[:k]``; returns ``k``.

    A coordinate is live when its row of the (symmetric) Gram has an entry other than 0 (NaN
    included: it must reach the factorisation and fail it); only the lower triangle is read.
    Decoupled coordinates, rows of exact zeros, are left out (Eq. 6c).
    """
    n: int = gram.shape[1]
    for i in range(n):
        rowabs[i] = 0.0
    for i in range(n):  # one pass: load, and Σ |entry| per row of the symmetric block
        t = 0.0
        for j in range(i + 1):
            v = np.float64(gram[b, i, j])
            a[i, j] = v * inv_m
            t += abs(v)  # a sum, not max(): max() would drop a NaN
            rowabs[j] += abs(v)
        rowabs[i] += t
    k = 0
    for i in range(n):
        if rowabs[i] != 0.0:  # > 0, or NaN
            live[k] = i
            k += 1
    if k < n:  # compact in place: live[p] ≥ p, so no entry is overwritten before it is read
        for p in range(k):
            ip = live[p]
            for r in range(p + 1):
                a[p, r] = a[ip, live[r]]
    for p in range(k):
        a[p, p] += damp
    return k


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")  # type: ignore[untyped-decorator]
def _factor_diag(
    lower: np.ndarray, k: int, xt: np.ndarray, out: np.ndarray, b: int, live: np.ndarray
) -> None:  # pragma: no cover
    """``out[b, live[i]] ← [(LLᵀ)⁻¹]_ii`` for ``i < k`` by Eq. 6a (``X = L⁻¹``, ``Σ_r X_ri²``)."""
    for i in range(k):  # xt[i, r] = X[r, i], X = L⁻¹ (lower), so both loops run on rows
        xt[i, i] = 1.0 / lower[i, i]
        for r in range(i + 1, k):
            t = 0.0
            for j in range(i, r):
                t += lower[r, j] * xt[i, j]
            xt[i, r] = -t / lower[r, r]
    for i in range(k):
        t = 0.0
        for r in range(i, k):
            t += xt[i, r] * xt[i, r]
        out[b, live[i]] = t


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def factor_offset(b: int, n: int, scale: int) -> int:  # pragma: no cover
    """Start of block ``b``'s factors in the float64 view of the Gram: its first 8-byte boundary.

    ``scale`` is the number of Gram entries per float64 (2: float32, 1: float64).
    """
    return (n * n * b + scale - 1) // scale


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _keep_block(
    xt: np.ndarray,
    k: int,
    live: np.ndarray,
    q: int,
    scale: int,
    xbuf: np.ndarray,
    xdiag: np.ndarray,
    lv: np.ndarray,
    nl: np.ndarray,
) -> None:  # pragma: no cover
    """Keep block ``q``'s ``X = L⁻¹`` over its ``k`` live coordinates (``xt[i, r] = X[r, i]``).

    ``X_ii`` goes to ``xdiag[q, i]``; column ``i`` below the diagonal (``k − 1 − i`` entries) to
    ``xbuf`` after the columns before it, from :func:`factor_offset`.
    """
    n = xdiag.shape[1]
    o = factor_offset(q, n, scale)
    for i in range(k):
        xdiag[q, i] = xt[i, i]
        for r in range(i + 1, k):
            xbuf[o] = xt[i, r]
            o += 1
        lv[q, i] = live[i]
    nl[q] = k


@numba.njit(cache=True, fastmath=_FASTMATH)  # type: ignore[untyped-decorator]
def _factor_solve(lower: np.ndarray, k: int, x: np.ndarray) -> None:  # pragma: no cover
    """``x[:k] ← (LLᵀ)⁻¹ x[:k]`` (forward, then back substitution)."""
    for i in range(k):
        t = x[i]
        for j in range(i):
            t -= lower[i, j] * x[j]
        x[i] = t / lower[i, i]
    for i in range(k - 1, -1, -1):
        t = x[i]
        for j in range(i + 1, k):
            t -= lower[j, i] * x[j]
        x[i] = t / lower[i, i]


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")  # type: ignore[untyped-decorator]
def _solve_live(
    gram: np.ndarray,
    b: int,
    damp: float,
    inv_m: float,
    z: np.ndarray,
    out: np.ndarray,
    a: np.ndarray,
    lower: np.ndarray,
    live: np.ndarray,
    rowabs: np.ndarray,
    x: np.ndarray,
) -> bool:  # pragma: no cover
    """``out_K ← F̂_KK⁻¹ z_K`` on block ``b``'s live coordinates ``K``, by a Cholesky factor.

    The decoupled entries of ``out`` (``z_q/λ``, Eq. 6c) are the caller's; False, with ``out_K``
    untouched, if the block is not positive definite.
    """
    k = _load_live(gram, b, damp, inv_m, a, live, rowabs)
    if not _cholesky(a, k, lower):
        return False
    for i in range(k):
        x[i] = z[live[i]]
    _factor_solve(lower, k, x)
    for i in range(k):
        out[live[i]] = x[i]
    return True


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)  # type: ignore[untyped-decorator]
def diag_inverse_kernel(
    lo: int,
    hi: int,
    gram: np.ndarray,
    damp: float,
    inv_m: float,
    out: np.ndarray,
    bad: np.ndarray,
    lanes: bool,
    scale: int,
    xbuf: np.ndarray,
    xdiag: np.ndarray,
    lv: np.ndarray,
    nl: np.ndarray,
) -> None:  # pragma: no cover
    """``out[b] ← diag((λI + gram[b]/m)⁻¹)`` for the blocks ``lo ≤ b < hi`` (Eqs. 6a, 6c).

    With ``lanes``, groups of ``LANES`` fully live blocks go through
    :func:`._lane_kernels.lanes_diag` (compile under :func:`._lane_kernels.slp_vectorize`). The
    groups start at multiples of ``LANES`` (where :func:`run_on_blocks` splits the blocks too), so
    whether a block is factored in its group or alone (another round-off) depends neither on the
    split nor on the blocks before its group.

    With ``xdiag`` of shape ``(num_blocks, B)`` (an empty array keeps nothing) each block's
    ``X = L⁻¹`` over its live coordinates is kept for :func:`factored_solve_kernel`: below the
    diagonal in ``xbuf``, the float64 view of ``gram``'s own memory (``scale`` Gram entries per
    float64), written only after the block (or its group) has been read; the diagonal in
    ``xdiag``, the live coordinates in ``lv[b, :k]`` and ``k`` in ``nl[b]``. A block that is not
    positive definite keeps nothing valid (and its Gram may be overwritten).
    """
    keep = xdiag.shape[0] > 0
    n = gram.shape[1]
    a = np.empty((n, n))
    lower = np.empty((n, n))
    xt = np.empty((n, n))
    live = np.empty(n, dtype=np.int64)
    rowabs = np.empty(n)
    la = np.empty((n, n, LANES))
    lxt = np.empty((n, n, LANES))
    lrd = np.empty((n, LANES))
    every = np.arange(n)
    b = lo
    while b < hi:
        stop = min(b - b % LANES + LANES, hi)  # the end of b's group (or of the range)
        whole = lanes and b % LANES == 0 and stop == b + LANES
        if whole and full_group(gram, b) and lanes_diag(gram, b, damp, inv_m, la, lxt, lrd, out):
            if keep:
                for lane in range(LANES):  # every coordinate live
                    _keep_block(lxt[:, :, lane], n, every, b + lane, scale, xbuf, xdiag, lv, nl)
            b = stop
            continue
        # not a whole fully live group, or a lane is not positive definite: one block at a time
        for q in range(b, stop):
            k = _load_live(gram, q, damp, inv_m, a, live, rowabs)
            if not _cholesky(a, k, lower):
                bad[q] = True
                continue
            for i in range(n):
                out[q, i] = 1.0 / damp  # decoupled; the live ones are overwritten below
            _factor_diag(lower, k, xt, out, q, live)
            if keep:
                _keep_block(xt, k, live, q, scale, xbuf, xdiag, lv, nl)
        b = stop


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)  # type: ignore[untyped-decorator]
def restricted_update_kernel(
    lo: int,
    hi: int,
    gram: np.ndarray,
    damp: float,
    inv_m: float,
    sel: np.ndarray,
    rhs: np.ndarray,
    out: np.ndarray,
    bad: np.ndarray,
) -> None:  # pragma: no cover
    """``out[b] ← F̂⁻¹ E_S ([F̂⁻¹]_SS)⁻¹ rhs_S`` through ``R = ¬S``.

    That is ``rhs_S`` on S and ``−F̂_RR⁻¹ F̂_RS rhs_S`` on R (``sel`` marks S), for the blocks
    ``lo ≤ b < hi``.
    """
    n = gram.shape[1]
    for b in range(lo, hi):
        kept = np.empty(n, dtype=np.int64)
        k = 0
        for i in range(n):
            out[b, i] = 0.0
            if sel[b, i]:
                out[b, i] = rhs[b, i]
            else:
                kept[k] = i
                k += 1
        nonzero = False
        for i in range(n):
            if sel[b, i] and rhs[b, i] != 0:
                nonzero = True
        if k == 0 or k == n or not nonzero:
            continue  # S empty: out = 0; R empty: out_S = rhs_S; rhs_S = 0: out = 0
        a = np.empty((k, k))
        lower = np.empty((k, k))
        x = np.empty(k)
        for p in range(k):
            ip = kept[p]
            # (F̂_RS rhs_S)_p, from the lower triangle of the symmetric block
            t = 0.0
            for j in range(n):
                if sel[b, j]:
                    g = gram[b, ip, j] if j <= ip else gram[b, j, ip]
                    t += np.float64(g) * rhs[b, j]
            x[p] = t * inv_m
            for q in range(p + 1):
                a[p, q] = np.float64(gram[b, ip, kept[q]]) * inv_m
            a[p, p] += damp
        if not _cholesky(a, k, lower):
            bad[b] = True
            continue
        for p in range(k):  # L y = F̂_RS rhs_S
            t = x[p]
            for q in range(p):
                t -= lower[p, q] * x[q]
            x[p] = t / lower[p, p]
        for p in range(k - 1, -1, -1):  # Lᵀ u = y
            t = x[p]
            for q in range(p + 1, k):
                t -= lower[q, p] * x[q]
            x[p] = t / lower[p, p]
        for p in range(k):
            out[b, kept[p]] = -x[p]


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)  # type: ignore[untyped-decorator]
def solve_kernel(
    lo: int,
    hi: int,
    gram: np.ndarray,
    damp: float,
    inv_m: float,
    z: np.ndarray,
    out: np.ndarray,
    bad: np.ndarray,
) -> None:  # pragma: no cover
    """``out[b] ← (λI + gram[b]/m)⁻¹ z[b]`` for the blocks ``lo ≤ b < hi`` (Eq. 6c)."""
    n = gram.shape[1]
    a = np.empty((n, n))
    lower = np.empty((n, n))
    live = np.empty(n, dtype=np.int64)
    rowabs = np.empty(n)
    x = np.empty(n)
    for b in range(lo, hi):
        nonzero = False
        for q in range(n):
            out[b, q] = z[b, q] / damp  # decoupled; the live ones are overwritten below
            if z[b, q] != 0:
                nonzero = True
        # F̂⁻¹0 = 0, without a factor
        if nonzero and not _solve_live(
            gram, b, damp, inv_m, z[b], out[b], a, lower, live, rowabs, x
        ):
            bad[b] = True


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")  # type: ignore[untyped-decorator]
def _apply_factors(
    scale: int,
    xbuf: np.ndarray,
    xdiag: np.ndarray,
    lv: np.ndarray,
    nl: np.ndarray,
    b: int,
    damp: float,
    z: np.ndarray,
    out: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
) -> None:  # pragma: no cover
    """``out ← F̂_b⁻¹ z = XᵀX z`` on block ``b``'s live coordinates, ``z_q/λ`` on the others.

    ``y = X z`` column by column, then ``(Xᵀy)_i = Σ_{r≥i} X_ri y_r``: ``B²`` flops, no division.
    """
    n = z.shape[0]
    for q in range(n):
        out[q] = z[q] / damp  # decoupled (Eq. 6c); the live ones are overwritten below
    k = nl[b]
    for i in range(k):
        x[i] = z[lv[b, i]]
        y[i] = 0.0
    start = factor_offset(b, n, scale)
    o = start
    for i in range(k):
        m = k - 1 - i
        col = xbuf[o : o + m]  # slices: no negative-index checks in the inner loops
        yy = y[i + 1 : k]
        xi = x[i]
        y[i] += xdiag[b, i] * xi
        for t in range(m):
            yy[t] += col[t] * xi
        o += m
    o = start
    for i in range(k):
        m = k - 1 - i
        col = xbuf[o : o + m]
        yy = y[i + 1 : k]
        t2 = xdiag[b, i] * y[i]
        for t in range(m):
            t2 += col[t] * yy[t]
        out[lv[b, i]] = t2
        o += m


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)  # type: ignore[untyped-decorator]
def factored_solve_kernel(
    lo: int,
    hi: int,
    scale: int,
    xbuf: np.ndarray,
    xdiag: np.ndarray,
    lv: np.ndarray,
    nl: np.ndarray,
    damp: float,
    z: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover
    """``out[b] ← F̂_b⁻¹ z[b] = XᵀX z[b]`` from the factors kept by :func:`diag_inverse_kernel`.

    ``B²`` flops per block and no division; decoupled coordinates get ``z_q/λ`` (Eq. 6c).
    """
    n = z.shape[1]
    x = np.empty(n)
    y = np.empty(n)
    for b in range(lo, hi):
        nonzero = False
        for q in range(n):
            if z[b, q] != 0:
                nonzero = True
        if nonzero:
            _apply_factors(scale, xbuf, xdiag, lv, nl, b, damp, z[b], out[b], x, y)
        else:
            for q in range(n):
                out[b, q] = 0.0


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _superpose_rhs(
    wb: np.ndarray, diag: np.ndarray, newly: np.ndarray, b: int, z: np.ndarray
) -> bool:  # pragma: no cover
    """``z ← w_q / [F̂⁻¹]_qq`` on block ``b``'s newly pruned weights, 0 elsewhere (Eq. 2).

    Returns whether any entry is non-zero (a block without one needs no solve).
    """
    nonzero = False
    for q in range(z.shape[0]):
        z[q] = 0.0
        if newly[b, q] and wb[b, q] != 0:
            z[q] = wb[b, q] / diag[b, q]
            nonzero = True
    return nonzero


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)  # type: ignore[untyped-decorator]
def superpose_kernel(
    lo: int,
    hi: int,
    gram: np.ndarray,
    damp: float,
    inv_m: float,
    scale: int,
    xbuf: np.ndarray,
    xdiag: np.ndarray,
    lv: np.ndarray,
    nl: np.ndarray,
    wb: np.ndarray,
    diag: np.ndarray,
    newly: np.ndarray,
    zero: np.ndarray,
    out: np.ndarray,
    bad: np.ndarray,
) -> None:  # pragma: no cover
    """``out[b] ← w_b − F̂_b⁻¹ z_b``, 0 on ``zero``: the superposed OBS update (Eq. 2), fused.

    ``z_q = w_q / [F̂⁻¹]_qq`` on the newly pruned weights (``newly``), 0 elsewhere, built per
    block. ``F̂_b⁻¹ z_b`` comes from the factors :func:`diag_inverse_kernel` kept (``xdiag``
    not empty) or else from a Cholesky factorisation of the block's live coordinates; a block
    with nothing newly pruned keeps its weights without either.
    """
    factored = xdiag.shape[0] > 0
    n = wb.shape[1]
    z = np.empty(n)
    dz = np.empty(n)
    x = np.empty(n)
    y = np.empty(n)
    a = np.empty((n, n))
    lower = np.empty((n, n))
    live = np.empty(n, dtype=np.int64)
    rowabs = np.empty(n)
    for b in range(lo, hi):
        if not _superpose_rhs(wb, diag, newly, b, z):
            for q in range(n):
                out[b, q] = 0.0 if zero[b, q] else wb[b, q]
            continue
        if factored:
            _apply_factors(scale, xbuf, xdiag, lv, nl, b, damp, z, dz, x, y)
        else:
            for q in range(n):
                dz[q] = z[q] / damp  # decoupled; the live ones are overwritten below
            if not _solve_live(gram, b, damp, inv_m, z, dz, a, lower, live, rowabs, x):
                bad[b] = True
                continue
        for q in range(n):
            out[b, q] = 0.0 if zero[b, q] else wb[b, q] - dz[q]


_KERNELS_AGREE: str | None = None


def kernels_agree() -> str:
    """How far the compiled ``diag`` kernels agree with the float64 reference (checked once).

    Once per process, for float32 and float64 Grams, on two groups of eight fixed positive
    definite ``12×12`` blocks: ``diag(F̂⁻¹)`` through the lanes and block by block, and
    ``F̂⁻¹z`` from the factors kept in the Gram (:func:`factored_solve_kernel`), each against
    ``numpy.linalg`` in float64 (relative difference ≤ 1e-9). ``diag_inverse_kernel`` is
    compiled with SLP vectorisation, which Numba keeps off by default after miscompilations.

    Returns:
        ``"lanes"`` (all agree), ``"blocks"`` (the lanes do not: :class:`FisherBlocks` factors
        every block alone) or ``"none"`` (the others do not either: it takes the LAPACK path).
        Each but the first comes with a ``RuntimeWarning`` that names the build.
    """
    global _KERNELS_AGREE
    if _KERNELS_AGREE is None:
        n, nb, m, damp = 12, 2 * LANES, 20, 1e-3
        rng = np.random.default_rng(0)
        g = rng.standard_normal((nb, m, n))
        z = rng.standard_normal((nb, n))
        lanes_ok = blocks_ok = True
        for dtype in (np.float32, np.float64):
            gram = np.einsum("nki,nkj->nij", g, g).astype(dtype)
            f = gram.astype(np.float64) / m + damp * np.eye(n)
            want = np.linalg.inv(f).diagonal(0, 1, 2)
            solved = np.linalg.solve(f, z[:, :, None])[:, :, 0]
            for lanes in (True, False):
                work = gram.copy()
                out = np.empty((nb, n))
                bad = np.zeros(nb, dtype=np.bool_)
                xdiag, lv, nl = factor_arrays(nb, n)
                xbuf = work.reshape(-1).view(np.float64)
                scale = 8 // work.itemsize
                with slp_vectorize():
                    diag_inverse_kernel(
                        0, nb, work, damp, 1.0 / m, out, bad, lanes, scale, xbuf, xdiag, lv, nl
                    )
                got = np.empty((nb, n))
                factored_solve_kernel(0, nb, scale, xbuf, xdiag, lv, nl, damp, z, got)
                ok = bool(
                    not bad.any()
                    and np.all(np.abs(out - want) <= 1e-9 * np.abs(want))
                    and np.all(np.abs(got - solved) <= 1e-9 * np.abs(solved).max())
                )
                if lanes:
                    lanes_ok = lanes_ok and ok
                else:
                    blocks_ok = blocks_ok and ok
        _KERNELS_AGREE = "lanes" if lanes_ok and blocks_ok else "blocks" if blocks_ok else "none"
        if _KERNELS_AGREE != "lanes":
            what = "SIMD-lane" if blocks_ok else "diag(F^-1)"
            instead = (
                "factors every block alone (slower, same results)"
                if blocks_ok
                else "uses the LAPACK kernels instead (slower)"
            )
            warnings.warn(
                f"obert-core's {what} kernels disagree with numpy.linalg on this build (numba "
                f"{numba.__version__}, LLVM SLP vectorisation); FisherBlocks {instead}. "
                "Please report it.",
                RuntimeWarning,
                stacklevel=2,
            )
    return _KERNELS_AGREE


def run_on_blocks(kernel: Callable[..., None], num_blocks: int, *args: Any) -> None:
    """``kernel(lo, hi, *args)`` over ``[0, num_blocks)`` split into one range per core.

    The ranges start at multiples of ``LANES``, so no group of :func:`diag_inverse_kernel` is split.
    """
    workers = max(1, min(_threads(), num_blocks // 64))
    bounds = [num_blocks * i // workers // LANES * LANES for i in range(workers)] + [num_blocks]
    if workers == 1:
        kernel(0, num_blocks, *args)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="obert-blocks") as pool:
        done = [pool.submit(kernel, lo, hi, *args) for lo, hi in pairwise(bounds)]
        for future in done:
            future.result()
