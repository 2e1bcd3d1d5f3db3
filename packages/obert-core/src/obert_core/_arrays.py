"""Framework detection and small array helpers shared by NumPy and torch code paths.

``import obert_core`` must not import torch, so torch is only looked up lazily: an object is a torch
tensor only if torch has already been imported by the caller (it must have been, to create one).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import numpy as np

from ._errors import BackendUnavailableError, ObertError

__all__ = [
    "all_finite",
    "check_finite",
    "framework_of",
    "is_torch",
    "require_numba",
    "require_torch",
    "to_numpy",
]


def is_torch(x: object) -> bool:
    """Return True if ``x`` is a ``torch.Tensor`` (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def framework_of(*arrays: object, names: tuple[str, ...] | None = None) -> str:
    """Return ``"torch"`` or ``"numpy"`` for a set of arrays that must share one framework.

    Args:
        *arrays: NumPy arrays or torch tensors (``None`` entries are ignored).
        names: argument names, used in the error message.

    Raises:
        ObertError: if NumPy arrays and torch tensors are mixed, or an argument is neither.
    """
    kinds: list[tuple[str, str]] = []
    for i, a in enumerate(arrays):
        if a is None:
            continue
        name = names[i] if names else f"argument {i}"
        if is_torch(a):
            kinds.append((name, "torch"))
        elif isinstance(a, np.ndarray):
            kinds.append((name, "numpy"))
        else:
            raise ObertError(
                f"{name} must be a numpy.ndarray or torch.Tensor, got {type(a).__name__}; "
                "convert it with numpy.asarray(...) or torch.as_tensor(...)."
            )
    found = {k for _, k in kinds}
    if len(found) > 1:
        desc = ", ".join(f"{n}={k}" for n, k in kinds)
        raise ObertError(
            f"mixed NumPy and torch inputs ({desc}); pass all arrays from one framework, e.g. "
            "convert with torch.from_numpy(x) or t.detach().cpu().numpy()."
        )
    return found.pop() if found else "numpy"


def to_numpy(x: Any) -> np.ndarray:
    """Convert a NumPy array or torch tensor to a NumPy array (no copy when possible)."""
    if is_torch(x):
        return np.asarray(x.detach().cpu().numpy())
    return np.asarray(x)


def all_finite(x: Any) -> bool:
    """Whether every entry of a NumPy array or torch tensor is finite (no NaN, no inf).

    One sum reduction (NaN and inf propagate through it) is the fast path; only when the sum is not
    finite does the exact element-wise check run (a huge but finite sum may overflow to inf).
    """
    if is_torch(x):
        import torch

        if x.numel() == 0 or bool(torch.isfinite(x.sum())):
            return True
        return bool(torch.isfinite(x).all())
    arr = np.asarray(x)
    with np.errstate(over="ignore", invalid="ignore"):
        if arr.size == 0 or np.isfinite(arr.sum()):
            return True
    return bool(np.isfinite(arr).all())


def check_finite(x: Any, name: str) -> None:
    """Raise :class:`ObertError` if ``x`` contains NaN or inf (see :func:`all_finite`)."""
    if not all_finite(x):
        raise ObertError(
            f"{name} contains NaN or inf values; check the loss (e.g. fp16 overflow or a diverged "
            "model) and drop or recompute the non-finite entries before calling obert-core."
        )


def _require(module: str, remedy: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackendUnavailableError(
            f"backend {module!r} needs {module}, which is not installed; install it with {remedy}."
        ) from exc


def require_torch() -> Any:
    """Import and return torch, or raise an error saying how to install it."""
    return _require(
        "torch",
        "`pip install 'obert-core[torch]'` (on CPU-only machines pin it, e.g. "
        "`pip install torch==2.13.0`)",
    )


def require_numba() -> Any:
    """Import and return numba, or raise an error saying how to install it."""
    return _require("numba", "`pip install 'obert-core[numba]'` or use backend='numpy'")
