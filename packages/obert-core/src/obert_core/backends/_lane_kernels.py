"""Eight fully live Fisher blocks factored at once, one per SIMD lane (docs/math.md §2.1).

The per-block kernels of :mod:`._block_kernels` factor one ``B×B`` block at a time; their inner
loops are dot products of length ``< B`` that vectorise only through reassociation and a
horizontal sum at the end of each. When a group of :data:`LANES` consecutive blocks is fully live
(no decoupled coordinate, as in the first pruning step from a dense model), the same
factorisation runs on all eight with the block index innermost (``a[i, j, lane]``), so each
scalar operation of the one-block algorithm becomes one 8-wide vector operation and no dot
product needs a horizontal sum.

The lanes are written out as eight scalars (``_dot`` and the helpers after it) for LLVM's SLP
(superword-level parallelism) vectoriser to combine into vector operations; a loop over a lane
array is vectorised along the dot product (gathers of stride 8) or not at all. These functions
allow contraction (FMA) but not reassociation, so the lanes keep the one-block order of
operations. Numba turns SLP vectorisation off by default (``NUMBA_SLP_VECTORIZE=0`` since Numba
0.57, after miscompilations elsewhere): without it the eight lanes run as eight scalar
instruction streams. :func:`slp_vectorize` turns it on while the kernels that call these
functions are compiled, and :func:`._block_kernels.kernels_agree` checks once per process that
the compiled kernels give ``numpy.linalg``'s values on a fixed problem before any is used (a
miscompiled build falls back to the per-block kernel, or to LAPACK, with a warning). Measured on
8,192 dense ``50×50`` blocks, one thread: 0.122 s without SLP, 0.066 s with it
(docs/benchmarks.md). The results are those of the per-block kernels up to float64 round-off
(the same operations in another order).

The dot products run two rows at a time (:func:`_dot2`, register blocking): the Cholesky
update of rows ``i`` and ``i + 1`` of column ``j``, and rows ``r`` and ``r + 1`` of the ``X = L⁻¹``
recurrence, load each entry of the shared row once and keep four vector chains in flight instead
of two. Each sum keeps :func:`_dot`'s order of terms, so the values are the same to the bit.
``diag(F̂⁻¹)`` of one MiniLM layer (35,390 blocks of 50, 2 threads) took 0.21–0.24 s instead of
0.30–0.31 s at best (docs/benchmarks.md).

A group is *fully live* when every diagonal entry of its eight Gram blocks is non-zero (a
decoupled coordinate has an all-zero row, so a zero diagonal; a NaN diagonal counts as live and
fails the factorisation). A group with a lane that is not positive definite returns False and the
caller factors its blocks one at a time, which reports the bad ones.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from .._arrays import require_numba

__all__ = ["LANES", "full_group", "lanes_diag", "slp_vectorize"]

numba = require_numba()

LANES = 8
"""Blocks per group (float64 lanes of an AVX-512 register)."""

_CONTRACT = {"contract"}


_SLP_LOCK = threading.Lock()
_SLP_STATE = {"depth": 0, "before": 0}


@contextmanager
def slp_vectorize() -> Iterator[None]:
    """Numba's SLP vectoriser on while the block (compiles and) runs, as it was after.

    Numba reads ``numba.config.SLP_VECTORIZE`` whenever it optimises a function, so only what
    compiles inside the block (the first call of a kernel with new argument types, and the
    helpers it compiles first) is affected; loading a kernel from Numba's cache or calling it
    again is not. Blocks of several threads nest: the switch is on while any of them runs and
    is restored when the last one ends.
    """
    with _SLP_LOCK:
        if _SLP_STATE["depth"] == 0:
            _SLP_STATE["before"] = numba.config.SLP_VECTORIZE
            numba.config.SLP_VECTORIZE = 1
        _SLP_STATE["depth"] += 1
    try:
        yield
    finally:
        with _SLP_LOCK:
            _SLP_STATE["depth"] -= 1
            if _SLP_STATE["depth"] == 0:
                numba.config.SLP_VECTORIZE = _SLP_STATE["before"]


Lanes = tuple[float, float, float, float, float, float, float, float]
"""One float per lane."""


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def full_group(gram: np.ndarray, b0: int) -> bool:  # pragma: no cover
    """Whether blocks ``b0 … b0 + LANES − 1`` have no zero diagonal entry (no decoupled row)."""
    n = gram.shape[1]
    for lane in range(LANES):
        for i in range(n):
            if gram[b0 + lane, i, i] == 0:
                return False
    return True


@numba.njit(cache=True, fastmath=_CONTRACT, inline="always")  # type: ignore[untyped-decorator]
def _dot(
    p: np.ndarray, i: int, q: np.ndarray, j: int, lo: int, hi: int
) -> Lanes:  # pragma: no cover
    """``Σ_{lo ≤ k < hi} p[i, k, l] · q[j, k, l]`` for each of the eight lanes ``l``."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    for k in range(lo, hi):
        s0 += p[i, k, 0] * q[j, k, 0]
        s1 += p[i, k, 1] * q[j, k, 1]
        s2 += p[i, k, 2] * q[j, k, 2]
        s3 += p[i, k, 3] * q[j, k, 3]
        s4 += p[i, k, 4] * q[j, k, 4]
        s5 += p[i, k, 5] * q[j, k, 5]
        s6 += p[i, k, 6] * q[j, k, 6]
        s7 += p[i, k, 7] * q[j, k, 7]
    return s0, s1, s2, s3, s4, s5, s6, s7


@numba.njit(cache=True, fastmath=_CONTRACT, inline="always")  # type: ignore[untyped-decorator]
def _dot2(
    p: np.ndarray, i: int, q: np.ndarray, j: int, lo: int, hi: int
) -> tuple[Lanes, Lanes]:  # pragma: no cover
    """:func:`_dot` of rows ``i`` and ``i + 1`` of ``p`` with row ``j`` of ``q``, in one pass.

    Each ``q[j, k]`` is loaded once for both rows, and the sixteen sums are four independent
    vector chains instead of two (register blocking); each sum adds its terms in :func:`_dot`'s
    order, so the results are the same to the bit.
    """
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = 0.0
    u = i + 1
    for k in range(lo, hi):
        q0 = q[j, k, 0]
        q1 = q[j, k, 1]
        q2 = q[j, k, 2]
        q3 = q[j, k, 3]
        q4 = q[j, k, 4]
        q5 = q[j, k, 5]
        q6 = q[j, k, 6]
        q7 = q[j, k, 7]
        s0 += p[i, k, 0] * q0
        s1 += p[i, k, 1] * q1
        s2 += p[i, k, 2] * q2
        s3 += p[i, k, 3] * q3
        s4 += p[i, k, 4] * q4
        s5 += p[i, k, 5] * q5
        s6 += p[i, k, 6] * q6
        s7 += p[i, k, 7] * q7
        t0 += p[u, k, 0] * q0
        t1 += p[u, k, 1] * q1
        t2 += p[u, k, 2] * q2
        t3 += p[u, k, 3] * q3
        t4 += p[u, k, 4] * q4
        t5 += p[u, k, 5] * q5
        t6 += p[u, k, 6] * q6
        t7 += p[u, k, 7] * q7
    return (s0, s1, s2, s3, s4, s5, s6, s7), (t0, t1, t2, t3, t4, t5, t6, t7)


@numba.njit(cache=True, fastmath=_CONTRACT, inline="always")  # type: ignore[untyped-decorator]
def _sub(a: np.ndarray, i: int, j: int, s: Lanes) -> None:  # pragma: no cover
    """``a[i, j, l] −= s_l`` for the eight lanes."""
    a[i, j, 0] -= s[0]
    a[i, j, 1] -= s[1]
    a[i, j, 2] -= s[2]
    a[i, j, 3] -= s[3]
    a[i, j, 4] -= s[4]
    a[i, j, 5] -= s[5]
    a[i, j, 6] -= s[6]
    a[i, j, 7] -= s[7]


@numba.njit(cache=True, fastmath=_CONTRACT, inline="always")  # type: ignore[untyped-decorator]
def _neg_scaled(
    x: np.ndarray, i: int, r: int, s: Lanes, rd: np.ndarray
) -> None:  # pragma: no cover
    """``x[i, r, l] ← −s_l · rd[r, l]`` for the eight lanes."""
    x[i, r, 0] = -s[0] * rd[r, 0]
    x[i, r, 1] = -s[1] * rd[r, 1]
    x[i, r, 2] = -s[2] * rd[r, 2]
    x[i, r, 3] = -s[3] * rd[r, 3]
    x[i, r, 4] = -s[4] * rd[r, 4]
    x[i, r, 5] = -s[5] * rd[r, 5]
    x[i, r, 6] = -s[6] * rd[r, 6]
    x[i, r, 7] = -s[7] * rd[r, 7]


@numba.njit(cache=True, fastmath=_CONTRACT, inline="always")  # type: ignore[untyped-decorator]
def _neg_scaled_next(
    x: np.ndarray, i: int, r: int, t: Lanes, a: np.ndarray, rd: np.ndarray
) -> None:  # pragma: no cover
    """``x[i, r + 1, l] ← −(t_l + a[r + 1, r, l] · x[i, r, l]) · rd[r + 1, l]`` for the lanes.

    Row ``r + 1`` of the ``X`` recurrence when ``t`` summed its terms ``k < r``: the last term
    needs ``x[i, r]``, known only after row ``r``; added last, as :func:`_dot` would.
    """
    u = r + 1
    x[i, u, 0] = -(t[0] + a[u, r, 0] * x[i, r, 0]) * rd[u, 0]
    x[i, u, 1] = -(t[1] + a[u, r, 1] * x[i, r, 1]) * rd[u, 1]
    x[i, u, 2] = -(t[2] + a[u, r, 2] * x[i, r, 2]) * rd[u, 2]
    x[i, u, 3] = -(t[3] + a[u, r, 3] * x[i, r, 3]) * rd[u, 3]
    x[i, u, 4] = -(t[4] + a[u, r, 4] * x[i, r, 4]) * rd[u, 4]
    x[i, u, 5] = -(t[5] + a[u, r, 5] * x[i, r, 5]) * rd[u, 5]
    x[i, u, 6] = -(t[6] + a[u, r, 6] * x[i, r, 6]) * rd[u, 6]
    x[i, u, 7] = -(t[7] + a[u, r, 7] * x[i, r, 7]) * rd[u, 7]


@numba.njit(cache=True, fastmath=_CONTRACT, inline="always")  # type: ignore[untyped-decorator]
def _put(out: np.ndarray, b0: int, i: int, s: Lanes) -> None:  # pragma: no cover
    """``out[b0 + l, i] ← s_l`` for the eight lanes."""
    out[b0 + 0, i] = s[0]
    out[b0 + 1, i] = s[1]
    out[b0 + 2, i] = s[2]
    out[b0 + 3, i] = s[3]
    out[b0 + 4, i] = s[4]
    out[b0 + 5, i] = s[5]
    out[b0 + 6, i] = s[6]
    out[b0 + 7, i] = s[7]


@numba.njit(cache=True, fastmath=_CONTRACT)  # type: ignore[untyped-decorator]
def _factor(
    gram: np.ndarray, b0: int, damp: float, inv_m: float, a: np.ndarray, rd: np.ndarray
) -> bool:  # pragma: no cover
    """``a[:, :, l] ← L_l`` (lower) with ``L_l L_lᵀ = λI + gram[b0 + l]/m``, ``rd ← 1/diag(L)``.

    Left-looking (Crout) Cholesky, the per-block kernel's order; False if a lane is not
    positive definite in float64 (a NaN included).
    """
    n = gram.shape[1]
    for i in range(n):
        for j in range(i + 1):
            for lane in range(LANES):
                a[i, j, lane] = np.float64(gram[b0 + lane, i, j]) * inv_m
        for lane in range(LANES):
            a[i, i, lane] += damp
    for j in range(n):
        i = j
        while i + 1 < n:  # two rows at a time: row j's entries loaded once for both
            s, t = _dot2(a, i, a, j, 0, j)
            _sub(a, i, j, s)
            _sub(a, i + 1, j, t)
            i += 2
        if i < n:
            _sub(a, i, j, _dot(a, i, a, j, 0, j))
        for lane in range(LANES):
            d = a[j, j, lane]
            if not d > 0.0:
                return False
            r = np.sqrt(d)
            a[j, j, lane] = r
            rd[j, lane] = 1.0 / r
        for i in range(j + 1, n):
            for lane in range(LANES):
                a[i, j, lane] *= rd[j, lane]
    return True


@numba.njit(cache=True, fastmath=_CONTRACT)  # type: ignore[untyped-decorator]
def lanes_diag(
    gram: np.ndarray,
    b0: int,
    damp: float,
    inv_m: float,
    a: np.ndarray,
    xt: np.ndarray,
    rd: np.ndarray,
    out: np.ndarray,
) -> bool:  # pragma: no cover
    """``out[b0 + l] ← diag((λI + gram[b0 + l]/m)⁻¹)`` for the eight lanes (Eq. 6a).

    ``X = L⁻¹`` by rows of ``Xᵀ`` (``xt[i, r] = X[r, i]``), then ``[F̂⁻¹]_ii = Σ_r X_ri²``; the
    work arrays are ``(B, B, LANES)`` (``a``, ``xt``) and ``(B, LANES)`` (``rd``). False, with
    ``out`` untouched, when a lane is not positive definite.
    """
    n = gram.shape[1]
    if not _factor(gram, b0, damp, inv_m, a, rd):
        return False
    for i in range(n):
        for lane in range(LANES):
            xt[i, i, lane] = rd[i, lane]
        r = i + 1
        while r + 1 < n:  # rows r and r + 1 of the recurrence share the loads of xt[i]
            s, t = _dot2(a, r, xt, i, i, r)
            _neg_scaled(xt, i, r, s, rd)
            _neg_scaled_next(xt, i, r, t, a, rd)
            r += 2
        if r < n:
            _neg_scaled(xt, i, r, _dot(a, r, xt, i, i, r), rd)
    for i in range(n):
        _put(out, b0, i, _dot(xt, i, xt, i, i, n))
    return True
