"""Zeroth-order gradient estimators and Hessian-vector product (DeepZero, arXiv 2310.02025).

Pure functions of a loss callable (see :mod:`obert_core.zo` for its two contracts) and the
parameters ``θ``; docs/math.md §9 has the equations and their tests:

    RGE:  ĝ = (1/q) Σ_i δ_i u_i,   δ_i = [l(θ + μu_i) − l(θ)] / μ                     (Z-1)
          (central: δ_i = [l(θ + μu_i) − l(θ − μu_i)] / 2μ)
    CGE:  ĝ_j = [l(θ + h_j e_j) − l(θ)] / h_j   for every j of the mask, 0 elsewhere   (Z-2)
    HVP:  Ĥv = [ĝ(θ + μ_v v) − ĝ(θ)] / μ_v,   both ĝ with the same directions          (Z-3)

``u_i`` are the isotropic directions of :func:`~obert_core.zo.zo_direction`, regenerated from
``(seed, step, i)``; ``h_j`` is the step actually representable in ``θ``'s dtype,
``fl(θ_j + μ) − θ_j``. RGE is unbiased for the gradient of the smoothed loss
``l_μ(θ) = E_u[l(θ + μu)]`` (equal to ``∇l`` on a quadratic); CGE is ``∇l`` to O(μ) (O(μ²)
central). Sums are accumulated in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._arrays import check_finite, framework_of
from .._errors import ObertError
from .._validate import check_choice, check_count, check_positive_int
from ._oracle import DISTRIBUTIONS, Oracle, check_mu, check_scheme, float64_like, result_like
from .directions import check_segments, draw

__all__ = ["cge", "check_mask", "rge", "shift", "zo_hvp"]

ESTIMATORS = ("rge", "cge")

Loss = Callable[[Any], Any]


def _cast(theta: Any, x: Any) -> Any:
    """``x`` in ``theta``'s dtype (the loss sees points of the parameters' dtype)."""
    if isinstance(theta, np.ndarray):
        return np.asarray(x, dtype=theta.dtype)
    return x.to(theta.dtype)


def shift(theta: Any, step: float, v: Any) -> Any:
    """``θ + step·v`` in ``theta``'s shape and dtype (``v`` of ``theta``'s size, any shape).

    Never recorded by autograd (``theta`` may require gradients).
    """
    if isinstance(theta, np.ndarray):
        return _cast(theta, theta + step * v.reshape(tuple(theta.shape)))
    import torch

    with torch.no_grad():
        return _cast(theta, theta + step * v.reshape(tuple(theta.shape)))


def _flat64(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.reshape(-1).astype(np.float64)
    import torch

    return x.reshape(-1).to(torch.float64)


class _RGE:
    """Checked settings of one randomised estimate (shared by rge, zo_hvp and the Fisher rows)."""

    def __init__(
        self,
        theta: Any,
        mu: object,
        q: object,
        seed: object,
        step: object,
        scheme: object,
        distribution: object,
        segments: Sequence[int] | None,
    ) -> None:
        self.mu = check_mu(mu)
        self.q = check_positive_int(q, "q")
        self.seed = check_count(seed, "seed")
        self.step = check_count(step, "step")
        self.scheme = check_scheme(scheme)
        self.dist = check_choice(distribution, "distribution", DISTRIBUTIONS)
        size = int(np.prod(tuple(theta.shape)))
        self.sizes = check_segments(segments, size, self.dist)

    def estimate(
        self, oracle: Oracle, point: Any, *, step: int, offset: int = 0, base: float | None = None
    ) -> Any:
        """(Z-1) at ``point`` with directions ``(seed, step, offset … offset + q − 1)``, float64."""
        mu, central = self.mu, self.scheme == "central"
        if not central and base is None:
            base = oracle.base() if point is oracle.theta else _base_at(oracle, point)

        def where(i: int) -> str:
            return f"direction {offset + i} (seed={self.seed}, step={step}, mu={mu})"

        def chunk(start: int, stop: int) -> Any:
            us = [
                draw(point, self.seed, step, offset + i, self.dist, self.sizes)
                for i in range(start, stop)
            ]
            plus = oracle.evaluate(
                [_cast(point, point + mu * u) for u in us], lambda k: where(start + k)
            )
            if central:
                minus = oracle.evaluate(
                    [_cast(point, point - mu * u) for u in us], lambda k: where(start + k)
                )
                deltas = (plus - minus) / (2.0 * mu)
            else:
                assert base is not None
                deltas = (plus - base) / mu
            acc = None
            for d, u in zip(deltas, us, strict=True):
                term = float(d) * _flat64(u)
                acc = term if acc is None else acc + term
            return acc

        parts = oracle.map_chunks(self.q, chunk)
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        return total / self.q


def _base_at(oracle: Oracle, point: Any) -> float:
    return float(oracle.evaluate([point], lambda _: "the shifted point θ + μ_v·v")[0])


def rge(
    loss: Loss,
    theta: Any,
    *,
    mu: float = 5e-3,
    q: int = 1,
    seed: int = 0,
    step: int = 0,
    scheme: str = "forward",
    distribution: str = "gaussian",
    segments: Sequence[int] | None = None,
    batch_size: int | None = None,
    workers: int = 1,
    base_loss: float | None = None,
) -> Any:
    """Randomised gradient estimate (Z-1) of ``loss`` at ``theta`` (arXiv 2310.02025, Eq. 1).

    Args:
        loss: ``loss(x) -> scalar`` for ``x`` of ``theta``'s shape (or, with ``batch_size``,
            ``loss(xs) -> (j,)`` for ``xs`` of shape ``(j, *theta.shape)``).
        theta: the parameters, a floating NumPy array or torch tensor of any shape.
        mu: the smoothing radius ``μ`` > 0.
        q: the number of directions ``q`` ≥ 1.
        seed: the seed; direction ``i`` is regenerated from ``(seed, step, i)``.
        step: the step the estimate belongs to (a training step, a Fisher row).
        scheme: ``"forward"`` (q + 1 losses, DeepZero) or ``"central"`` (2q, SPSA / MeZO).
        distribution: ``"gaussian"`` or ``"sphere"`` (:func:`~obert_core.zo.zo_direction`).
        segments: sphere only: the sizes of the tensors concatenated in ``theta`` (per-tensor
            normalisation, as DeepZero's reference code).
        batch_size: ``None`` (one point per loss call) or the most points per call.
        workers: threads evaluating chunks of points (at most the CPU cores available).
        base_loss: ``l(θ)`` if already known (forward scheme; saves one loss call).

    Returns:
        ``ĝ`` in ``theta``'s shape: float64 for NumPy, ``theta``'s dtype for torch.

    Raises:
        ObertError: ``mu`` ≤ 0 or non-finite, ``q`` < 1, a loss answer that is not a scalar or
            not finite (the direction is named), ``workers`` above the cores, bad options.
    """
    oracle = Oracle(loss, theta, batch_size=batch_size, workers=workers, estimator="rge")
    est = _RGE(theta, mu, q, seed, step, scheme, distribution, segments)
    base = None if base_loss is None else _check_base(base_loss)
    return result_like(theta, est.estimate(oracle, oracle.theta, step=est.step, base=base))


def _check_base(value: object) -> float:
    try:
        base = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ObertError(f"base_loss must be a number, got {value!r}.") from exc
    if not np.isfinite(base):
        raise ObertError(f"base_loss must be finite, got {value!r}.")
    return base


def check_mask(mask: Any, theta: Any, name: str = "mask") -> Any:
    """The flat indices (NumPy int64) of the True entries of a keep-mask over ``theta``."""
    framework_of(mask, theta, names=(name, "theta"))
    dtype = str(mask.dtype)
    if dtype not in ("bool", "torch.bool"):
        raise ObertError(
            f"{name} must be a boolean mask (True = estimate this coordinate), got dtype "
            f"{dtype}; pass e.g. weight != 0."
        )
    size = int(np.prod(tuple(theta.shape)))
    if tuple(mask.shape) not in (tuple(theta.shape), (size,)):
        raise ObertError(
            f"{name} has shape {tuple(mask.shape)} but theta has shape {tuple(theta.shape)}; "
            "pass a mask of theta's shape (or flat)."
        )
    flat = mask.reshape(-1)
    idx = np.flatnonzero(flat.detach().cpu().numpy() if not isinstance(flat, np.ndarray) else flat)
    if idx.size == 0:
        raise ObertError(
            f"{name} keeps no coordinate (all {size} entries are False); a masked estimate needs "
            "at least one True entry."
        )
    return idx


class _CGE:
    """Checked settings of one coordinate-wise estimate."""

    def __init__(self, theta: Any, mask: Any, mu: object, scheme: object) -> None:
        self.mu = check_mu(mu)
        self.scheme = check_scheme(scheme)
        size = int(np.prod(tuple(theta.shape)))
        self.idx = np.arange(size) if mask is None else check_mask(mask, theta)

    def estimate(self, oracle: Oracle, point: Any, base: float | None = None) -> Any:
        """(Z-2) at ``point``, float64 and flat, 0 outside the mask."""
        mu, central = self.mu, self.scheme == "central"
        flat = point.reshape(-1)
        if not central and base is None:
            base = oracle.base() if point is oracle.theta else _base_at(oracle, point)

        def shifted(j: int, sign: float) -> Any:
            x = flat.clone() if not isinstance(flat, np.ndarray) else flat.copy()
            x[j] = x[j] + sign * mu
            return x.reshape(tuple(point.shape))

        def chunk(start: int, stop: int) -> np.ndarray:
            js = [int(j) for j in self.idx[start:stop]]

            def where(k: int) -> str:
                return f"coordinate {js[k]} (mu={mu})"

            xs = [shifted(j, 1.0) for j in js]
            plus = oracle.evaluate(xs, where)
            hi = np.array([float(x.reshape(-1)[j]) for x, j in zip(xs, js, strict=True)])
            if central:
                xm = [shifted(j, -1.0) for j in js]
                minus = oracle.evaluate(xm, where)
                lo = np.array([float(x.reshape(-1)[j]) for x, j in zip(xm, js, strict=True)])
                return np.asarray((plus - minus) / (hi - lo))
            assert base is not None
            th = np.array([float(flat[j]) for j in js])
            return np.asarray((plus - base) / (hi - th))

        values = np.concatenate(oracle.map_chunks(int(self.idx.size), chunk))
        g = np.zeros(int(np.prod(tuple(point.shape))))
        g[self.idx] = values
        return float64_like(point, _from_numpy(point, g))


def _from_numpy(like: Any, g: np.ndarray) -> Any:
    if isinstance(like, np.ndarray):
        return g
    import torch

    return torch.from_numpy(g)


def cge(
    loss: Loss,
    theta: Any,
    mask: Any = None,
    *,
    mu: float = 5e-3,
    scheme: str = "forward",
    batch_size: int | None = None,
    workers: int = 1,
    base_loss: float | None = None,
) -> Any:
    """Coordinate-wise gradient estimate (Z-2) on the coordinates of ``mask`` (DeepZero, Eq. 2).

    Args:
        loss: the loss callable (as in :func:`rge`).
        theta: the parameters, a floating NumPy array or torch tensor of any shape.
        mask: boolean, ``theta``'s shape (or flat): True = estimate this coordinate (an oBERT
            keep-mask, or DeepZero's random sparse mask); ``None`` estimates every coordinate.
        mu: the step ``μ`` > 0 (the divisor is the step representable in ``theta``'s dtype).
        scheme: ``"forward"`` (``|mask| + 1`` losses) or ``"central"`` (``2|mask|``).
        batch_size: ``None`` (one point per loss call) or the most points per call.
        workers: threads evaluating chunks of coordinates (DeepZero's forward parallelism).
        base_loss: ``l(θ)`` if already known (forward scheme).

    Returns:
        ``ĝ`` in ``theta``'s shape, exactly 0 outside the mask (float64 for NumPy, ``theta``'s
        dtype for torch).

    Raises:
        ObertError: ``mu`` ≤ 0 or non-finite, a mask with no True entry or of the wrong shape
            or dtype, a loss answer that is not a finite scalar (the coordinate is named).
    """
    oracle = Oracle(loss, theta, batch_size=batch_size, workers=workers, estimator="cge")
    est = _CGE(theta, mask, mu, scheme)
    base = None if base_loss is None else _check_base(base_loss)
    return result_like(theta, est.estimate(oracle, oracle.theta, base))


def zo_hvp(
    loss: Loss,
    theta: Any,
    v: Any,
    *,
    estimator: str = "rge",
    mu: float = 5e-3,
    mu_v: float | None = None,
    q: int = 1,
    seed: int = 0,
    step: int = 0,
    mask: Any = None,
    scheme: str = "forward",
    distribution: str = "gaussian",
    segments: Sequence[int] | None = None,
    batch_size: int | None = None,
    workers: int = 1,
) -> Any:
    """Zeroth-order Hessian-vector product (Z-3): the difference of two gradient estimates.

    Both estimates use the same directions (common random numbers), so on a quadratic the
    finite-difference error of (Z-1)/(Z-2) cancels: with ``estimator="cge"`` (every coordinate)
    the result is ``Hv`` up to rounding, with ``"rge"`` it is ``(1/q) Σ u_i u_iᵀ H v``, unbiased.

    Args:
        loss: the loss callable (as in :func:`rge`).
        theta: the parameters.
        v: the vector, ``theta``'s size (any shape), same framework.
        estimator: ``"rge"`` or ``"cge"``.
        mu: ``μ`` of the inner gradient estimates.
        mu_v: the step along ``v`` (default ``mu``, as DeepZero's ZO-GraSP).
        q: RGE directions ``q`` ≥ 1.
        seed: RGE seed (directions ``(seed, step, i)``, the same for both estimates).
        step: RGE step of the directions' key.
        mask: CGE only: the coordinates to estimate (see :func:`cge`); rows outside are 0.
        scheme: ``"forward"`` or ``"central"``.
        distribution: RGE: ``"gaussian"`` or ``"sphere"``.
        segments: RGE sphere only: per-tensor sizes.
        batch_size: points per loss call (``None``: one).
        workers: threads evaluating the losses.

    Returns:
        ``Ĥv`` in ``theta``'s shape (float64 for NumPy, ``theta``'s dtype for torch).

    Raises:
        ObertError: bad ``mu``/``mu_v``/``q``, a ``v`` of another size or framework or with
            NaN/inf, a mask with ``estimator="rge"``, a bad loss answer.
    """
    kind = check_choice(estimator, "estimator", ESTIMATORS)
    oracle = Oracle(loss, theta, batch_size=batch_size, workers=workers, estimator="zo_hvp")
    theta = oracle.theta
    framework_of(v, theta, names=("v", "theta"))
    size = int(np.prod(tuple(theta.shape)))
    if int(np.prod(tuple(v.shape))) != size:
        raise ObertError(
            f"v has {int(np.prod(tuple(v.shape)))} entries but theta has {size}; pass a vector "
            "of theta's size."
        )
    check_finite(v, "v")
    step_v = check_mu(mu if mu_v is None else mu_v, "mu_v")
    shifted = shift(theta, step_v, v)
    if kind == "rge":
        if mask is not None:
            raise ObertError(
                "mask applies to estimator='cge' only; RGE perturbs every coordinate "
                "(pass estimator='cge' to restrict the product to the mask)."
            )
        est = _RGE(theta, mu, q, seed, step, scheme, distribution, segments)
        g0 = est.estimate(oracle, theta, step=est.step)
        g1 = est.estimate(oracle, shifted, step=est.step)
    else:
        cg = _CGE(theta, mask, mu, scheme)
        g0 = cg.estimate(oracle, theta)
        g1 = cg.estimate(oracle, shifted)
    return result_like(theta, (g1 - g0) / step_v)
