"""Numba kernels over the damped Fisher blocks ``F̂_b = λI + G_b/m`` (docs/math.md §2.1).

Each kernel factorises one block at a time in float64 (a loop over a range of blocks; the ``B×B``
block stays in cache), reading only the lower triangle of the Gram stack ``G`` (float32 or
float64):

* :func:`diag_inverse_kernel`: ``diag(F̂_b⁻¹)`` from the Cholesky factor ``L`` (``F̂_b = LLᵀ``) and
  ``X = L⁻¹``: ``[F̂_b⁻¹]_ii = Σ_{r≥i} X_ri²`` (``B³/3 + B³/3`` flops; the explicit inverse would
  take ``B³``);
* :func:`restricted_update_kernel`: the joint OBS update through the kept weights ``R`` of each
  block, ``u_S = rhs_S``, ``u_R = −F̂_RR⁻¹ F̂_RS rhs_S`` (a ``|R|×|R|`` Cholesky solve);
* :func:`solve_kernel`: ``F̂_b⁻¹ z_b``.

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

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any

import numpy as np

from .._arrays import require_numba
from ._linalg import _threads

__all__ = ["diag_inverse_kernel", "restricted_update_kernel", "run_on_blocks", "solve_kernel"]

numba = require_numba()

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


@numba.njit(cache=True, fastmath=_FASTMATH)  # type: ignore[untyped-decorator]
def _load(
    gram: np.ndarray, b: int, damp: float, inv_m: float, a: np.ndarray
) -> None:  # pragma: no cover
    """``a ← λI + gram[b]/m`` in float64 (lower triangle only)."""
    n = gram.shape[1]
    for i in range(n):
        for j in range(i + 1):
            a[i, j] = np.float64(gram[b, i, j]) * inv_m
        a[i, i] += damp


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)  # type: ignore[untyped-decorator]
def diag_inverse_kernel(
    lo: int, hi: int, gram: np.ndarray, damp: float, inv_m: float, out: np.ndarray, bad: np.ndarray
) -> None:  # pragma: no cover
    """``out[b] ← diag((λI + gram[b]/m)⁻¹)`` for the blocks ``lo ≤ b < hi``."""
    n = gram.shape[1]
    for b in range(lo, hi):
        a = np.empty((n, n))
        lower = np.empty((n, n))
        xt = np.empty((n, n))  # xt[i, r] = X[r, i], X = L⁻¹ (lower), so both loops run on rows
        _load(gram, b, damp, inv_m, a)
        if not _cholesky(a, n, lower):
            bad[b] = True
            continue
        for i in range(n):
            xt[i, i] = 1.0 / lower[i, i]
            for r in range(i + 1, n):
                t = 0.0
                for k in range(i, r):
                    t += lower[r, k] * xt[i, k]
                xt[i, r] = -t / lower[r, r]
        for i in range(n):
            t = 0.0
            for r in range(i, n):
                t += xt[i, r] * xt[i, r]
            out[b, i] = t


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
        if k == 0 or k == n:
            continue  # S empty: out = 0; R empty: out_S = rhs_S
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
    """``out[b] ← (λI + gram[b]/m)⁻¹ z[b]`` for the blocks ``lo ≤ b < hi``."""
    n = gram.shape[1]
    for b in range(lo, hi):
        a = np.empty((n, n))
        lower = np.empty((n, n))
        _load(gram, b, damp, inv_m, a)
        if not _cholesky(a, n, lower):
            bad[b] = True
            continue
        for i in range(n):
            t = z[b, i]
            for k in range(i):
                t -= lower[i, k] * out[b, k]
            out[b, i] = t / lower[i, i]
        for i in range(n - 1, -1, -1):
            t = out[b, i]
            for k in range(i + 1, n):
                t -= lower[k, i] * out[b, k]
            out[b, i] = t / lower[i, i]


def run_on_blocks(kernel: Callable[..., None], num_blocks: int, *args: Any) -> None:
    """``kernel(lo, hi, *args)`` over ``[0, num_blocks)`` split into one range per core."""
    workers = max(1, min(_threads(), num_blocks // 64))
    bounds = [num_blocks * i // workers for i in range(workers + 1)]
    if workers == 1:
        kernel(0, num_blocks, *args)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="obert-blocks") as pool:
        done = [pool.submit(kernel, lo, hi, *args) for lo, hi in pairwise(bounds)]
        for future in done:
            future.result()
