"""Batched float64 inversion of the damped Fisher blocks on CPU, shared by the CPU backends."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import ObertError

__all__ = ["damped_block_inverse"]

_CHUNK = 8192  # blocks per LAPACK call: bounds the float64 temporaries to ~160 MB at B = 50


def damped_block_inverse(
    acc: np.ndarray, damp: float, num_grads: int, out_dtype: Any, *, lower_only: bool = False
) -> np.ndarray:
    """Return ``inv(damp·I + acc/num_grads)`` for a ``(nb, B, B)`` float64 Gram stack.

    With ``lower_only`` only the lower triangle of ``acc`` is read (it is symmetrised first).
    The inversion runs in float64
    (batched LAPACK LU), so the tiny ``damp`` of the paper (1e-7) is resolved exactly; the result is
    cast to ``out_dtype`` chunk by chunk.

    Raises:
        ObertError: if a block is not positive definite (non-positive or non-finite diagonal).
    """
    nb, bs, _ = acc.shape
    out = np.empty(acc.shape, dtype=out_dtype)
    eye = damp * np.eye(bs)
    lower = np.tril(np.ones((bs, bs), dtype=bool), -1)
    for start in range(0, nb, _CHUNK):
        a = acc[start : start + _CHUNK]
        if lower_only:
            a = np.where(lower, a, np.swapaxes(a, 1, 2))
        inv = np.linalg.inv(a / num_grads + eye)
        diag = np.diagonal(inv, axis1=1, axis2=2)
        bad = ~(np.isfinite(diag).all(axis=1) & (diag > 0).all(axis=1))
        if bad.any():
            first = start + int(np.flatnonzero(bad)[0])
            raise ObertError(
                f"{int(bad.sum())} Fisher block(s) (first: block {first}) are not positive "
                f"definite with damp={damp!r}; increase damp."
            )
        out[start : start + _CHUNK] = inv
    return out
