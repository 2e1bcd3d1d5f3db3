"""Validation and small float64 linear-algebra helpers shared by the structured-pruning modules.

Everything here works on NumPy arrays and torch tensors alike; torch is only touched when the input
already is a tensor, and all math runs in float64 on the input's device.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .._arrays import check_finite, framework_of, is_torch, to_numpy
from .._errors import ObertError
from .._validate import check_positive_int
from .._xp import Xp

__all__ = [
    "as_rows",
    "check_damp_fraction",
    "check_groups",
    "copy_f64",
    "damped_inverse",
    "group_blocks",
    "group_columns",
    "to_index",
    "token_weights",
    "weight_matrix",
]


def weight_matrix(weight: Any, name: str = "weight") -> tuple[Xp, Any]:
    """Check a ``(d, m)`` weight (torch ``Linear`` layout, out × in); return a float64 copy."""
    framework_of(weight, names=(name,))
    shape = tuple(weight.shape)
    if len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
        raise ObertError(
            f"{name} must be a non-empty 2-D matrix of shape (out_features, in_features) — the "
            f"torch Linear layout, e.g. the down projection (d, m) — got shape {shape}; pass "
            "weight.T for a tensor stored as (in, out), and one expert's slice of a fused 3-D "
            "tensor."
        )
    check_finite(weight, name)
    xp = Xp(weight)
    return xp, copy_f64(xp, weight)


def copy_f64(xp: Xp, x: Any) -> Any:
    """A float64 copy of ``x`` (never a view of the caller's storage), detached from autograd."""
    if xp.torch:
        return x.detach().to(dtype=xp._t.float64, copy=True)
    return np.array(x, dtype=np.float64, copy=True)


def check_groups(width: int, group_size: object) -> tuple[int, int]:
    """Return ``(group_size, num_groups)``; the group size must divide the layer width."""
    g = check_positive_int(group_size, "group_size")
    if width % g:
        raise ObertError(
            f"group_size={g} does not divide the layer width {width} (the number of input columns "
            f"of the weight); for attention heads pass the head dimension, e.g. hidden_size // "
            f"num_heads, which must divide {width}."
        )
    return g, width // g


def check_damp_fraction(value: object) -> float:
    """The relative dampening: a finite float ≥ 0 (fraction of the mean diagonal of ``H``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ObertError(
            f"damp must be a float ≥ 0 (a fraction of the mean diagonal of the input Hessian, "
            f"default 0.01), got {value!r}."
        )
    damp = float(value)
    if not math.isfinite(damp) or damp < 0.0:
        raise ObertError(
            f"damp must be finite and ≥ 0 (a fraction of the mean diagonal of the input Hessian, "
            f"default 0.01 as in OBC/GPTQ), got {value!r}."
        )
    return damp


def as_rows(xp: Xp, x: Any, width: int, name: str, what: str, device: Any) -> Any:
    """``x`` of shape ``(..., width)`` flattened to ``(tokens, width)`` float64 on ``device``."""
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) < 1 or shape[-1] != width:
        raise ObertError(
            f"{name} must have shape (..., {width}) ({what}; leading dimensions such as (batch, "
            f"seq) are flattened into tokens), got shape {shape}."
        )
    check_finite(x, name)
    rows = x.reshape(-1, width)
    if xp.torch:
        rows = rows.detach()
        if device is not None and rows.device != device:
            rows = rows.to(device)
    return xp.f64(rows)


def token_weights(xp: Xp, w: Any, lead: tuple[int, ...], device: Any) -> Any:
    """Token weights (bool mask or floats ≥ 0) of shape ``lead``, as float64 ``(tokens,)``."""
    shape = tuple(getattr(w, "shape", ()))
    if shape != lead:
        raise ObertError(
            f"token_weight must have the leading shape of the inputs {lead} (one weight or mask "
            f"entry per token; 0 or False drops a padding token), got shape {shape}."
        )
    check_finite(w, "token_weight")
    flat = w.reshape(-1)
    if xp.torch:
        flat = flat.detach()
        if device is not None and flat.device != device:
            flat = flat.to(device)
    out = xp.f64(flat)
    if out.shape[0] and float(out.min()) < 0:
        raise ObertError(
            f"token_weight must be ≥ 0 (a mask or a routing count), got a minimum of "
            f"{float(out.min())!r}."
        )
    return out


def to_index(remove: Any, num_groups: int, name: str = "remove") -> np.ndarray:
    """Group indices (ints, NumPy or torch) as a sorted int64 NumPy array, checked for range."""
    if not (is_torch(remove) or isinstance(remove, np.ndarray)):
        remove = np.asarray(remove)
    arr = to_numpy(remove).reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ObertError(
            f"{name} must hold integer group indices, got dtype {arr.dtype}; for a boolean mask "
            "pass np.flatnonzero(mask) (or mask.nonzero()) instead."
        )
    idx = arr.astype(np.int64)
    if idx.size > num_groups:
        raise ObertError(
            f"{name} lists {idx.size} groups but the layer has only {num_groups}; a layer cannot "
            "lose more atoms than it has."
        )
    if idx.size and (idx.min() < 0 or idx.max() >= num_groups):
        bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
        raise ObertError(
            f"{name} contains group index {bad}, outside 0 … {num_groups - 1} (the layer has "
            f"{num_groups} groups)."
        )
    uniq = np.unique(idx)
    if uniq.size != idx.size:
        raise ObertError(f"{name} lists a group more than once ({idx.tolist()}); pass each once.")
    return uniq


def group_columns(idx: np.ndarray, group_size: int) -> np.ndarray:
    """The column indices of groups ``idx`` (group ``q`` = columns ``q·g … q·g + g − 1``)."""
    return (idx[:, None] * group_size + np.arange(group_size)[None, :]).reshape(-1)


def group_blocks(xp: Xp, mat: Any, num_groups: int, group_size: int) -> Any:
    """The ``g×g`` diagonal blocks of the leading ``n·g × n·g`` part of ``mat``: ``(n, g, g)``."""
    w = num_groups * group_size
    four = mat[:w, :w].reshape(num_groups, group_size, num_groups, group_size)
    return xp.einsum("qiqj->qij", four)


def damped_inverse(xp: Xp, hessian: Any, width: int, damp: float, name: str = "hessian") -> Any:
    """``(H + damp·mean(diag H[:width])·I)⁻¹`` in float64, by Cholesky (``H`` symmetrised first)."""
    h = xp.f64(hessian)
    h = 0.5 * (h + h.T)
    diag = h.diagonal()
    mean = float(diag[:width].mean())
    if not mean > 0.0:
        raise ObertError(
            f"{name} has a zero (or negative) mean diagonal {mean!r}: the calibration inputs are "
            "all zero (or the statistic is not E[a aᵀ]); feed real activations."
        )
    n = h.shape[0]
    h = h + (damp * mean) * xp.eye(n)
    if xp.torch:
        t = xp._t
        chol, info = t.linalg.cholesky_ex(h)
        if int(info) != 0:
            raise _not_pd(name, damp)
        return t.cholesky_inverse(chol)
    try:
        np.linalg.cholesky(h)
    except np.linalg.LinAlgError as exc:
        raise _not_pd(name, damp) from exc
    inv = np.linalg.inv(h)
    return 0.5 * (inv + inv.T)


def _not_pd(name: str, damp: float) -> ObertError:
    return ObertError(
        f"{name} + damp·mean(diag)·I is not positive definite with damp={damp!r} (too few "
        "calibration tokens for the layer width, or dead inputs); increase damp (default 0.01)."
    )
