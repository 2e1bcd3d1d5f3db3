"""Numba kernels over the rank-``m`` Fisher blocks of :class:`~obert_core.LowRankFisher`.

With ``G̃_b`` the stored ``m × B`` gradients of block ``b`` (docs/math.md §2.2, Eq. W-4),

    K̃_b = mλI_m + G̃_b G̃_bᵀ = L_b L_bᵀ,   Y_b = L_b⁻¹ G̃_b,
    [F̂_b⁻¹]_qq = (1 − ‖Y_b e_q‖²) / λ,      F̂_b⁻¹ z = (z − G̃_bᵀ L_b⁻ᵀ L_b⁻¹ G̃_b z) / λ      (W-5)

* :func:`lowrank_diag_kernel`: ``diag(F̂_b⁻¹)`` by (W-5): the ``m × m`` Gram, its Cholesky factor
  and the forward substitution ``Y_b = L_b⁻¹G̃_b`` row by row, in place over a float64 copy of
  the block (``m²B/2 + m³/6 + m²B/2`` multiply-adds; the batched LAPACK path of
  ``LowRankFisher`` forms ``K̃_b⁻¹`` and the product ``K̃_b⁻¹G̃_b``, about three times as many).
* :func:`lowrank_matvec_kernel`: ``F̂_b⁻¹ z_b`` by (W-5), factoring ``K̃_b`` again. No factor is
  kept between the two: ``F̂⁻¹z`` reads the gradients anyway, and their ``m × m`` Gram and its
  Cholesky factor cost less than writing ``8m²`` bytes per block and reading them back
  (measured on MiniLM's 212,337 blocks, docs/benchmarks.md).

Every inner loop runs over the ``B`` contiguous columns of a row (the dot products of the Gram
with ``fastmath`` reassociation), one block at a time, so a block's float64 rows stay in cache.
A block whose ``K̃_b`` has no Cholesky factor in float64 sets its entry of ``bad`` (the caller
then takes the pseudo-inverse path). The kernels are serial and release the GIL; they run on
ranges of blocks through :func:`~obert_core.backends._block_kernels.run_on_blocks`.
"""

from __future__ import annotations

import numpy as np

from .._arrays import require_numba
from ._block_kernels import _FASTMATH, _cholesky

__all__ = ["lowrank_diag_kernel", "lowrank_matvec_kernel"]

numba = require_numba()


@numba.njit(cache=True, fastmath=_FASTMATH)  # type: ignore[untyped-decorator]
def _load_factor(
    grads: np.ndarray, b: int, mdamp: float, g: np.ndarray, k: np.ndarray, lower: np.ndarray
) -> bool:  # pragma: no cover
    """``g ← G̃_b`` (float64) and ``lower ← L_b`` of ``K̃_b = mλI + G̃_bG̃_bᵀ``; False if not PD."""
    m, n = grads.shape[1], grads.shape[2]
    for i in range(m):
        for q in range(n):
            g[i, q] = np.float64(grads[b, i, q])
    for i in range(m):
        for j in range(i + 1):
            t = 0.0
            for q in range(n):
                t += g[i, q] * g[j, q]
            k[i, j] = t
        k[i, i] += mdamp
    return bool(_cholesky(k, m, lower))


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
    """``out[b] ← diag(F̂_b⁻¹)`` (W-5) for ``lo ≤ b < hi``."""
    m, n = grads.shape[1], grads.shape[2]
    g = np.empty((m, n))
    k = np.empty((m, m))
    lower = np.zeros((m, m))
    lev = np.empty(n)
    for b in range(lo, hi):
        if not _load_factor(grads, b, mdamp, g, k, lower):
            bad[b] = True
            continue
        for q in range(n):
            lev[q] = 0.0
        for i in range(m):  # row i of Y = L⁻¹G̃ overwrites row i of g (rows < i are Y already)
            for j in range(i):
                c = lower[i, j]
                for q in range(n):
                    g[i, q] -= c * g[j, q]
            inv = 1.0 / lower[i, i]
            for q in range(n):
                y = g[i, q] * inv
                g[i, q] = y
                lev[q] += y * y
        for q in range(n):
            out[b, q] = (1.0 - lev[q]) / damp


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
    """``out[b] ← F̂_b⁻¹ z[b]`` (W-5) for ``lo ≤ b < hi``."""
    m, n = grads.shape[1], grads.shape[2]
    g = np.empty((m, n))
    k = np.empty((m, m))
    lower = np.zeros((m, m))
    v = np.empty(m)
    for b in range(lo, hi):
        if not _load_factor(grads, b, mdamp, g, k, lower):
            bad[b] = True
            continue
        for i in range(m):  # v = L⁻¹ G̃ z
            t = 0.0
            for q in range(n):
                t += g[i, q] * z[b, q]
            for j in range(i):
                t -= lower[i, j] * v[j]
            v[i] = t / lower[i, i]
        for i in range(m - 1, -1, -1):  # v = L⁻ᵀ v = K̃⁻¹ G̃ z
            t = v[i]
            for j in range(i + 1, m):
                t -= lower[j, i] * v[j]
            v[i] = t / lower[i, i]
        for q in range(n):
            out[b, q] = z[b, q]
        for i in range(m):
            c = v[i]
            for q in range(n):
                out[b, q] -= g[i, q] * c
        for q in range(n):
            out[b, q] /= damp
