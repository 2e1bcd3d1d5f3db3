"""Batched float64 inversion of the damped Fisher blocks on CPU, shared by the CPU backends."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .._errors import ObertError

__all__ = ["damped_block_inverse"]

_CHUNK = 2048  # blocks per LAPACK call (~40 MB of float64 at B = 50)


def _threads() -> int:
    """Worker threads of the CPU block kernels.

    The cores this process may use, and no more than torch's intra-op threads when torch is
    loaded (so ``torch.set_num_threads(1)``, e.g. ``obert-train run --threads 1``, keeps these
    kernels on one core).
    """
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = max(1, os.cpu_count() or 1)
    torch = sys.modules.get("torch")
    if torch is not None:
        cores = min(cores, max(1, int(torch.get_num_threads())))
    return cores


def damped_block_inverse(
    acc: np.ndarray, damp: float, num_grads: int, out_dtype: Any, *, lower_only: bool = False
) -> np.ndarray:
    """Return ``inv(damp·I + acc/num_grads)`` for a ``(nb, B, B)`` Gram stack.

    ``acc`` (float64, or float32 converted chunk by chunk) is consumed: it may be scaled and damped
    in place. With ``lower_only`` only its lower
    triangle is read (it is symmetrised first). The inversion runs in float64 (batched LAPACK LU;
    NumPy's linalg gufuncs release the GIL, so chunks run on all cores), so the tiny ``damp`` of the
    paper (1e-7) is resolved exactly; results are cast to ``out_dtype`` chunk by chunk.

    Raises:
        ObertError: if a block is not positive definite (non-positive or non-finite diagonal).
    """
    nb, bs, _ = acc.shape
    out = np.empty(acc.shape, dtype=out_dtype)
    iu = np.triu_indices(bs, 1)
    diag = np.arange(bs)

    def work(start: int) -> int:
        a = acc[start : start + _CHUNK]
        if a.dtype != np.float64:  # float32 accumulator (torch fast path): convert chunk-wise
            a = a.astype(np.float64)
        if lower_only:
            a[:, iu[0], iu[1]] = a[:, iu[1], iu[0]]
        a *= 1.0 / num_grads
        a[:, diag, diag] += damp
        inv = np.linalg.inv(a)
        d = inv[:, diag, diag]
        bad = ~(np.isfinite(d).all(axis=1) & (d > 0).all(axis=1))
        out[start : start + _CHUNK] = inv
        return -1 if not bad.any() else start + int(np.flatnonzero(bad)[0])

    starts = range(0, nb, _CHUNK)
    with ThreadPoolExecutor(max_workers=min(_threads(), len(starts))) as pool:
        failed = [b for b in pool.map(work, starts) if b >= 0]
    if failed:
        raise ObertError(
            f"Fisher block {failed[0]} is not positive definite with damp={damp!r}; increase damp."
        )
    return out
