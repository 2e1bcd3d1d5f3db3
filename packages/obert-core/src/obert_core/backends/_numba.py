"""Numba backend: parallel CPU kernels over Fisher blocks.

Each kernel works on one B×B block at a time (``prange`` over blocks), so the block stays in the
L1/L2 cache while all gradients of a chunk stream through it:

* :func:`_gram_kernel` accumulates the lower triangle of ``G_bᵀG_b`` in float64 with rank-4 updates
  (products of float32 inputs are exact in float64);
* :func:`_sm_kernel` applies the Sherman–Morrison recursion of the reference implementation.

The damped Gram blocks are inverted in float64 by batched LAPACK (:mod:`._linalg`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._arrays import require_numba
from ._linalg import damped_block_inverse
from ._numpy import NumpyBackend

__all__ = ["NumbaBackend"]

numba = require_numba()


@numba.njit(parallel=True, cache=True, fastmath=False)  # type: ignore[untyped-decorator]
def _gram_kernel(acc: np.ndarray, g: np.ndarray, d: int, bs: int) -> None:  # pragma: no cover
    nb = acc.shape[0]
    k = g.shape[0]
    k4 = k - k % 4
    for b in numba.prange(nb):
        s0 = b * bs
        n = min(bs, d - s0)
        a = acc[b]
        for r in range(0, k4, 4):
            for i in range(n):
                x0 = np.float64(g[r, s0 + i])
                x1 = np.float64(g[r + 1, s0 + i])
                x2 = np.float64(g[r + 2, s0 + i])
                x3 = np.float64(g[r + 3, s0 + i])
                for j in range(i + 1):
                    a[i, j] += (
                        x0 * np.float64(g[r, s0 + j])
                        + x1 * np.float64(g[r + 1, s0 + j])
                        + x2 * np.float64(g[r + 2, s0 + j])
                        + x3 * np.float64(g[r + 3, s0 + j])
                    )
        for r in range(k4, k):
            for i in range(n):
                x0 = np.float64(g[r, s0 + i])
                for j in range(i + 1):
                    a[i, j] += x0 * np.float64(g[r, s0 + j])


@numba.njit(parallel=True, cache=True, fastmath=False)  # type: ignore[untyped-decorator]
def _sm_kernel(finv: np.ndarray, g: np.ndarray, d: int, m: float) -> None:  # pragma: no cover
    nb, bs, _ = finv.shape
    k = g.shape[0]
    for b in numba.prange(nb):
        start = b * bs
        n = min(bs, d - start)
        f = finv[b]
        u = np.empty(n, dtype=f.dtype)
        for r in range(k):
            x = g[r, start : start + n]
            alpha = m
            for i in range(n):
                t = 0.0
                for j in range(n):
                    t += f[i, j] * x[j]
                u[i] = t
                alpha += x[i] * t
            for i in range(n):
                ui = u[i] / alpha
                for j in range(n):
                    f[i, j] -= ui * u[j]


class NumbaBackend(NumpyBackend):
    """Parallel CPU backend on NumPy arrays (see module docstring); array set-up as NumPy's."""

    name = "numba"

    def add_gram(
        self,
        acc: np.ndarray,
        grads: np.ndarray,
        num_weights: int,
        block_size: int,
        *,
        first: bool = False,
        tiles: bool = False,
        tile_order: bool = False,
        untile_after: bool = False,
    ) -> bool | None:
        # ``new_gram`` (NumPy's) gives zeros, so ``first`` needs no special case
        g = np.ascontiguousarray(grads)
        if g.dtype not in (np.float32, np.float64):
            g = g.astype(np.float64)
        _gram_kernel(acc, g, num_weights, block_size)
        return None  # the builder checks the Gram

    def gram_to_inverse(
        self, acc: np.ndarray, damp: float, num_grads: int, num_weights: int, out_dtype: Any
    ) -> np.ndarray:
        return damped_block_inverse(acc, damp, num_grads, out_dtype, lower_only=True)

    def sm_update(
        self,
        finv: np.ndarray,
        grads: np.ndarray,
        num_weights: int,
        block_size: int,
        num_grads: int,
    ) -> None:
        g = np.ascontiguousarray(grads, dtype=finv.dtype)
        _sm_kernel(finv, g, num_weights, float(num_grads))
