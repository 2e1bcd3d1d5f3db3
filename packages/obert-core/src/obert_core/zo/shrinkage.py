"""Black-box OBS from per-tensor ZO Fisher traces, shrunk toward the model's mean by a loss.

Where the only oracle is the loss (an ONNX graph run by ONNX Runtime), a whole-model ZO Fisher
is noise: a Gaussian RGE row inflates every diagonal entry by ``‖g‖²/q``, ``d/q`` times an
average ``g_j²`` (docs/math.md §9). Confining the directions to one tensor ``k`` at a time
resolves one number per tensor, the trace of its Fisher (Z-8), i.e. the isotropic Fisher
``c_k I`` on tensor ``k``. Ranked globally, ``w²·c_k`` lets that one (noisy) scalar set the
whole sparsity of tensor ``k``; shrinking ``c_k`` toward the model's mean curvature ``c̄``
(Ledoit–Wolf style; SparseGPT's relative dampening is the same idea for the Hessian's diagonal)
interpolates between per-tensor OBS (ρ = 0) and global magnitude (ρ = 1) (Z-9), and the
shrinkage is chosen by the black-box loss of the pruned model on calibration data (Z-10):

    c_k = mean_t ‖ĝ_{k,t}‖² / (1 + (d_k + 1)/q) / d_k                                   (Z-8)
    S_j = ½ w_j² ((1 − ρ) c_k + ρ c̄ + λ),   c̄ = Σ_k d_k c_k / Σ_k d_k,   j in tensor k   (Z-9)
    ρ* = argmin_{ρ in grid} L_cal(w ⊙ M_s(ρ)),   M_s(ρ) = the global keep-mask of S at s  (Z-10)
    c_k^sec = 2 [L(w − δ_k) − L(w)] / ‖δ_k‖²,   δ_k = w_k ⊙ ¬M_k  (k pruned alone)        (Z-11)

(Z-8) inverts ``E‖ĝ‖² = ‖g‖²(1 + (d + 1)/q)`` for ``q`` Gaussian directions per row. Only the
ranking of (Z-9) matters, so ``c̄``'s scale is immaterial and ρ = 1 is exactly magnitude.
(Z-11) is the other black-box curvature of tensor ``k``: the secant along the pruning step
itself, one forward per tensor instead of ``2q`` per row. At a minimum (``∇L = 0``, a fine-tuned
model) ``L(w − δ) − L(w) = ½ δᵀHδ + O(‖δ‖³)``, so ``c_k^sec`` is the Rayleigh quotient of the
Hessian along ``δ_k``, exactly the curvature that the isotropic model ``c_k I`` of (Z-9) needs to
predict the loss of that step; unlike (Z-8) it has no ``d/q`` noise floor.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import ObertError
from .._validate import check_finite_real, check_positive_int, check_sparsity

__all__ = [
    "ShrinkageChoice",
    "calibrate_shrinkage",
    "secant_curvatures",
    "shrunk_tensor_saliency",
    "tensor_curvatures",
]

DEFAULT_GRID: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
"""The shrinkages :func:`calibrate_shrinkage` tries by default (0: per-tensor OBS, 1: magnitude)."""


def tensor_curvatures(
    sq_norms: Mapping[str, Sequence[float]], sizes: Mapping[str, int], q: int
) -> dict[str, float]:
    """Per-tensor curvatures ``c_k = tr F_k / d_k`` from ZO rows confined to each tensor (Z-8).

    Args:
        sq_norms: name → the squared norms ``‖ĝ_{k,t}‖²`` of tensor ``k``'s RGE rows (Gaussian
            directions, ``q`` per row, drawn in tensor ``k`` only; one row per mini-batch).
        sizes: name → ``d_k``, the number of weights of tensor ``k``.
        q: directions per row.

    Returns:
        name → ``c_k`` (float64), the mean Fisher diagonal entry of tensor ``k``.

    Raises:
        ObertError: ``q`` < 1, a missing or non-positive size, no rows, or a negative or
            non-finite squared norm (each named).
    """
    q = check_positive_int(q, "q")
    out: dict[str, float] = {}
    for name, norms in sq_norms.items():
        if name not in sizes:
            raise ObertError(f"sizes has no entry for {name!r}; pass sizes={{{name!r}: d_k}}.")
        d = check_positive_int(sizes[name], f"sizes[{name!r}]")
        values = np.asarray(norms, dtype=np.float64).reshape(-1)
        if values.size == 0:
            raise ObertError(f"sq_norms[{name!r}] has no rows; pass at least one ‖ĝ‖².")
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            bad = float(values[~(np.isfinite(values) & (values >= 0))][0])
            raise ObertError(f"sq_norms[{name!r}] holds {bad!r}; squared norms are finite and ≥ 0.")
        out[name] = float(values.mean() / (1.0 + (d + 1) / q) / d)
    return out


def _check_curvatures(weights: Mapping[str, Any], curvatures: Mapping[str, float]) -> None:
    if not weights:
        raise ObertError("weights is empty; pass a mapping of parameter name → weight tensor.")
    for name in weights:
        if name not in curvatures:
            raise ObertError(
                f"curvatures has no entry for {name!r}; pass one c_k per weight tensor."
            )
        c = check_finite_real(curvatures[name], f"curvatures[{name!r}]")
        if c < 0:
            raise ObertError(f"curvatures[{name!r}] is {c!r}; a Fisher trace is ≥ 0.")


def _check_shrinkage(value: object) -> float:
    rho = check_finite_real(value, "shrinkage")
    if not 0.0 <= rho <= 1.0:
        raise ObertError(
            f"shrinkage must be in [0, 1] (0: per-tensor OBS, 1: magnitude), got {value!r}."
        )
    return rho


def _numel(w: Any) -> int:
    return int(math.prod(tuple(w.shape)))


def shrunk_tensor_saliency(
    weights: Mapping[str, Any],
    curvatures: Mapping[str, float],
    shrinkage: float,
    *,
    damp: float = 0.0,
) -> dict[str, Any]:
    """OBS saliencies of the isotropic per-tensor Fisher, shrunk toward the mean curvature (Z-9).

    Args:
        weights: name → weight tensor (NumPy or torch, any shape).
        curvatures: name → ``c_k`` ≥ 0 (e.g. from :func:`tensor_curvatures`).
        shrinkage: ρ in [0, 1]: 0 ranks ``w²·c_k`` (per-tensor OBS), 1 ranks ``w²`` (magnitude).
        damp: ``λ`` ≥ 0 added to every curvature (OBS dampening).

    Returns:
        name → float64 saliencies in the weight's framework and shape (lower = pruned first;
        feed :func:`~obert_core.select_mask` with ``scope="global"``).

    Raises:
        ObertError: empty weights, a missing, negative or non-finite curvature, ρ outside
            [0, 1], a negative or non-finite ``damp``.
    """
    _check_curvatures(weights, curvatures)
    rho = _check_shrinkage(shrinkage)
    lam = check_finite_real(damp, "damp")
    if lam < 0:
        raise ObertError(f"damp must be ≥ 0, got {damp!r}.")
    sizes = {n: _numel(w) for n, w in weights.items()}
    total = sum(sizes.values())
    mean = sum(sizes[n] * float(curvatures[n]) for n in weights) / max(total, 1)
    out: dict[str, Any] = {}
    for name, w in weights.items():
        scale = 0.5 * ((1.0 - rho) * float(curvatures[name]) + rho * mean + lam)
        if isinstance(w, np.ndarray):
            out[name] = np.asarray(w, dtype=np.float64) ** 2 * scale
        else:  # torch
            out[name] = w.detach().double() ** 2 * scale
    return out


@dataclass(frozen=True)
class ShrinkageChoice:
    """What :func:`calibrate_shrinkage` chose, and the calibration losses it compared.

    Attributes:
        shrinkage: the chosen ρ.
        masks: name → boolean keep-mask at that ρ (True = kept).
        losses: ρ → calibration loss of the model pruned at that ρ, in grid order.
    """

    shrinkage: float
    masks: dict[str, Any]
    losses: dict[float, float]


def calibrate_shrinkage(
    weights: Mapping[str, Any],
    curvatures: Mapping[str, float],
    sparsity: float,
    loss: Callable[[Mapping[str, Any]], float],
    *,
    grid: Sequence[float] = DEFAULT_GRID,
    damp: float = 0.0,
) -> ShrinkageChoice:
    """Choose the shrinkage ρ of (Z-9) by the black-box loss of the pruned model (Z-10).

    For each ρ of ``grid`` the global mask at ``sparsity`` of :func:`shrunk_tensor_saliency` is
    handed to ``loss`` (e.g. the mean cross-entropy of calibration rows through ONNX Runtime
    with the weights ``w ⊙ M``; never the evaluation data); the lowest loss wins, a tie going
    to the larger ρ (closer to magnitude). Masks that equal an earlier grid point's are not
    evaluated again (their loss is copied).

    Args:
        weights: name → weight tensor (NumPy or torch).
        curvatures: name → ``c_k`` ≥ 0.
        sparsity: the global target in [0, 1).
        loss: keep-masks (name → boolean, the weights' framework and shape) → a finite scalar.
        grid: the shrinkages to try, each in [0, 1].
        damp: ``λ`` ≥ 0 of (Z-9).

    Returns:
        The chosen ρ, its masks and every grid point's loss.

    Raises:
        ObertError: bad weights / curvatures / sparsity / grid (empty, or a ρ outside [0, 1]),
            or a loss answer that is not a finite scalar (the ρ is named).
    """
    from ..masks import select_mask

    _check_curvatures(weights, curvatures)
    s = check_sparsity(sparsity)
    if isinstance(grid, (str, bytes)) or len(grid) == 0:
        raise ObertError(
            f"grid must be a non-empty sequence of shrinkages in [0, 1], got {grid!r}."
        )
    rhos = [_check_shrinkage(r) for r in grid]
    losses: dict[float, float] = {}
    seen: list[tuple[list[Any], float]] = []
    best: tuple[float, float, dict[str, Any]] | None = None
    for rho in rhos:
        scores = shrunk_tensor_saliency(weights, curvatures, rho, damp=damp)
        masks = select_mask(scores, s, scope="global")
        flat = [_as_numpy(masks[n]) for n in weights]
        value = next(
            (v for f, v in seen if all(np.array_equal(a, b) for a, b in zip(f, flat, strict=True))),
            None,
        )
        if value is None:
            value = _check_loss(loss(masks), rho)
            seen.append((flat, value))
        losses[rho] = value
        if best is None or value < best[0] or (value == best[0] and rho > best[1]):
            best = (value, rho, masks)
    assert best is not None
    return ShrinkageChoice(shrinkage=best[1], masks=best[2], losses=losses)


def _as_numpy(x: Any) -> Any:
    return x if isinstance(x, np.ndarray) else x.detach().cpu().numpy()


def _check_loss(value: Any, rho: float, where: str | None = None) -> float:
    at = where if where is not None else f"the masks at shrinkage {rho:g}"
    arr = np.asarray(_as_numpy(value) if hasattr(value, "detach") else value)
    if arr.size != 1 or not isinstance(arr.reshape(-1)[0].item(), numbers.Real):
        raise ObertError(
            f"loss returned {value!r} for {at}; it must return one finite scalar (the "
            "calibration loss of the pruned model)."
        )
    number = float(arr.reshape(-1)[0])
    if not math.isfinite(number):
        raise ObertError(
            f"loss returned {number!r} for {at}; a calibration loss must be finite (check the "
            "pruned model's outputs)."
        )
    return number


def secant_curvatures(
    weights: Mapping[str, Any],
    keep: Mapping[str, Any],
    loss: Callable[[Mapping[str, Any]], float],
) -> dict[str, float]:
    """Per-tensor curvatures along each tensor's own pruning step, from forward passes (Z-11).

    ``loss`` is called once with no replacement (the dense loss ``L(w)``) and once per tensor
    ``k`` with ``{k: w_k ⊙ M_k}`` (tensor ``k`` pruned alone, every other tensor dense).

    Args:
        weights: name → weight tensor (NumPy or torch).
        keep: name → boolean keep-mask of the probe step (True = kept), e.g. tensor ``k``'s own
            magnitude mask at the target sparsity; at least one weight pruned per tensor.
        loss: name → replacement tensor (a subset of ``weights``, the rest dense) → finite scalar,
            e.g. the mean cross-entropy of calibration rows through ONNX Runtime.

    Returns:
        name → ``c_k^sec`` ≥ 0 (a loss decrease, from noise or a model off its minimum, gives 0).

    Raises:
        ObertError: empty weights, a missing or mis-shaped mask, a mask that prunes nothing
            (or only zeros) in a tensor, or a loss answer that is not a finite scalar.
    """
    if not weights:
        raise ObertError("weights is empty; pass a mapping of parameter name → weight tensor.")
    steps: dict[str, float] = {}
    for name, w in weights.items():
        if name not in keep:
            raise ObertError(f"keep has no mask for {name!r}; pass one keep-mask per tensor.")
        m = np.asarray(_as_numpy(keep[name]))
        if m.dtype != np.bool_ or m.shape != tuple(w.shape):
            raise ObertError(
                f"keep[{name!r}] must be a boolean mask of shape {tuple(w.shape)}, got "
                f"{m.dtype} {m.shape}."
            )
        wn = np.asarray(_as_numpy(w), dtype=np.float64)
        steps[name] = float((wn[~m] ** 2).sum())
        if steps[name] == 0.0:
            raise ObertError(
                f"keep[{name!r}] prunes no non-zero weight; the probe step must remove some "
                "(e.g. the tensor's magnitude mask at the target sparsity)."
            )
    base = _check_loss(loss({}), -1.0, "the dense weights")
    out: dict[str, float] = {}
    for name, w in weights.items():
        pruned = w * keep[name] if isinstance(w, np.ndarray) else w * _like(keep[name], w)
        value = _check_loss(loss({name: pruned}), -1.0, f"{name!r} pruned alone")
        out[name] = max(0.0, 2.0 * (value - base) / steps[name])
    return out


def _like(mask: Any, w: Any) -> Any:
    import torch

    return torch.as_tensor(mask, device=w.device)
