"""A tiny array-namespace shim for the obs/mask/M-FAC code.

The handful of operations needed, for NumPy arrays and torch tensors alike (torch is only touched
when the input already is a tensor).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import is_torch

__all__ = ["Xp", "xp_of"]


class Xp:
    """Operations on one framework's arrays; ``like`` fixes the torch device."""

    def __init__(self, like: Any) -> None:
        self.torch = is_torch(like)
        self.device = like.device if self.torch else None
        if self.torch:
            import torch

            self._t = torch

    def f64(self, x: Any) -> Any:
        """``x`` as float64 (no copy if it already is)."""
        return x.to(self._t.float64) if self.torch else np.asarray(x, dtype=np.float64)

    def astype(self, x: Any, like: Any) -> Any:
        """``x`` cast to the dtype of ``like``."""
        return x.to(like.dtype) if self.torch else x.astype(like.dtype, copy=False)

    def zeros(self, shape: tuple[int, ...], dtype: str = "float64") -> Any:
        """A zero array of float64 (or ``"bool"``) on the right device."""
        if self.torch:
            return self._t.zeros(shape, dtype=getattr(self._t, dtype), device=self.device)
        return np.zeros(shape, dtype=dtype)

    def eye(self, n: int) -> Any:
        """The float64 identity."""
        if self.torch:
            return self._t.eye(n, dtype=self._t.float64, device=self.device)
        return np.eye(n)

    def einsum(self, spec: str, *ops: Any) -> Any:
        """``einsum`` of the framework."""
        return self._t.einsum(spec, *ops) if self.torch else np.einsum(spec, *ops, optimize=True)

    def solve(self, a: Any, b: Any) -> Any:
        """Batched solve ``a x = b`` with ``a (..., n, n)`` and ``b (..., n)``."""
        if self.torch:
            return self._t.linalg.solve(a, b.unsqueeze(-1)).squeeze(-1)
        return np.linalg.solve(a, b[..., None])[..., 0]

    def where(self, cond: Any, x: Any, y: Any) -> Any:
        """Element-wise select."""
        if self.torch:
            return self._t.where(cond, x, y)
        return np.where(cond, x, y)

    def pad(self, x: Any, total: int) -> Any:
        """Zero-pad a 1-D array at the end to length ``total``."""
        extra = total - x.shape[0]
        if extra == 0:
            return x
        if self.torch:
            return self._t.nn.functional.pad(x, (0, extra))
        return np.concatenate([x, np.zeros(extra, dtype=x.dtype)])

    def any(self, x: Any) -> bool:
        """Whether any element is true."""
        return bool(x.any())

    def sqrt(self, x: Any) -> Any:
        """Element-wise square root."""
        return self._t.sqrt(x) if self.torch else np.sqrt(x)


def xp_of(x: Any) -> Xp:
    """The :class:`Xp` for the framework (and device) of ``x``."""
    return Xp(x)
