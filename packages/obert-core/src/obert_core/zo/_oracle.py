"""The loss oracle of the zeroth-order estimators: argument checks, calls and their answers.

A *loss* is a callable of the parameters alone. Two contracts (arXiv 2310.02025; docs/math.md §9):

* one point per call (``batch_size=None``): ``loss(x) -> scalar`` with ``x`` of ``theta``'s shape,
  framework, dtype and device; the answer is a float, a 0-d (or one-element) NumPy array or tensor;
* a batch of points per call (``batch_size=k``): ``loss(xs) -> (j,)`` with ``xs`` of shape
  ``(j, *theta.shape)``, ``j ≤ k`` (one forward of a batched model evaluates many perturbations).

Every answer is checked: a non-scalar or a NaN/inf stops the estimate with an
:class:`~obert_core.ObertError` naming the point (unperturbed, direction ``i``, coordinate ``j``).
Chunks of points are mapped over ``workers`` threads (forward parallelism: useful when the loss
releases the GIL, as torch and ONNX Runtime do); the chunking depends on ``batch_size`` only, and
chunk results are combined in chunk order, so the result is bit-identical for any worker count.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any, TypeVar

import numpy as np

from .._arrays import framework_of, is_torch
from .._errors import ObertError
from .._validate import check_choice, check_positive_int

__all__ = [
    "DISTRIBUTIONS",
    "SCHEMES",
    "Oracle",
    "available_cores",
    "check_mu",
    "check_scheme",
    "check_theta",
    "float64_like",
    "result_like",
]

#: finite-difference schemes: forward ``[l(θ+μu) − l(θ)]/μ`` (DeepZero), central (SPSA / MeZO).
SCHEMES = ("forward", "central")
#: direction distributions of the randomised estimator.
DISTRIBUTIONS = ("gaussian", "sphere")

T = TypeVar("T")


def available_cores() -> int:
    """The number of CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - non-Linux


def check_mu(value: object, name: str = "mu") -> float:
    """Return the smoothing radius ``μ`` as a float if it is finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ObertError(f"{name} must be a positive float such as 5e-3, got {value!r}.")
    mu = float(value)
    if not math.isfinite(mu) or mu <= 0.0:
        raise ObertError(
            f"{name} must be finite and > 0 (DeepZero uses 5e-3; float32 parameters need "
            f"≳1e-3), got {value!r}."
        )
    return mu


def check_theta(theta: Any, name: str = "theta") -> str:
    """Check that ``theta`` is a non-empty floating NumPy array or tensor; return its framework."""
    framework = framework_of(theta, names=(name,))
    if framework == "torch":
        floating = bool(theta.dtype.is_floating_point)
    else:
        floating = bool(np.issubdtype(theta.dtype, np.floating))
    if not floating:
        raise ObertError(
            f"{name} must be a floating-point array (the perturbed points are θ + μu), got dtype "
            f"{theta.dtype}; convert it with .astype(float) / .double()."
        )
    if int(np.prod(tuple(theta.shape))) == 0:
        raise ObertError(f"{name} is empty (shape {tuple(theta.shape)}); pass the parameters.")
    return framework


def float64_like(theta: Any, x: Any) -> Any:
    """``x`` as float64 in ``theta``'s framework and device."""
    if is_torch(theta):
        return x.to(dtype=_torch().float64, device=theta.device)
    return np.asarray(x, dtype=np.float64)


def result_like(theta: Any, g64: Any) -> Any:
    """An estimate accumulated in float64, returned in ``theta``'s shape and framework.

    NumPy results stay float64 (the reference); torch results take ``theta``'s dtype (float32 for
    half precision, which cannot hold a finite-difference quotient reliably).
    """
    g64 = g64.reshape(tuple(theta.shape))
    if not is_torch(theta):
        return g64
    torch = _torch()
    dtype = theta.dtype if theta.dtype in (torch.float32, torch.float64) else torch.float32
    return g64.to(dtype)


def _torch() -> Any:
    import torch

    return torch


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


class Oracle:
    """Evaluates a loss callable at points built from ``theta``, with the checks above.

    Args:
        loss: the loss callable (see the module docstring for the two contracts).
        theta: the unperturbed parameters.
        batch_size: ``None`` (one point per call) or the most points per call.
        workers: threads evaluating chunks in parallel, at most the cores available.
        estimator: the calling function's name, for messages.
    """

    def __init__(
        self,
        loss: Callable[[Any], Any],
        theta: Any,
        *,
        batch_size: int | None,
        workers: int,
        estimator: str,
    ) -> None:
        if not callable(loss):
            raise ObertError(
                f"loss must be a callable of the parameters, got {type(loss).__name__}; pass "
                "e.g. lambda x: float(model_loss(x))."
            )
        self.loss = loss
        self.theta = theta.detach() if is_torch(theta) else theta
        """The unperturbed point (detached: the estimators never build an autograd graph)."""
        self.torch = check_theta(theta) == "torch"
        self.batch_size = (
            None if batch_size is None else check_positive_int(batch_size, "batch_size")
        )
        self.workers = check_positive_int(workers, "workers")
        cores = available_cores()
        if self.workers > cores:
            raise ObertError(
                f"workers={workers} exceeds the {cores} CPU cores this process may use; pass "
                f"workers <= {cores} (threads beyond the cores only slow the forwards down)."
            )
        self.estimator = estimator

    @property
    def chunk(self) -> int:
        """Points per chunk: ``batch_size``, or 1 for one point per call."""
        return self.batch_size or 1

    def _no_grad(self) -> Any:
        return _torch().no_grad() if self.torch else nullcontext()

    def evaluate(self, points: Sequence[Any], where: Callable[[int], str]) -> np.ndarray:
        """The float64 losses at ``points`` (one call, or one call per point)."""
        with self._no_grad():
            if self.batch_size is None:
                return np.array(
                    [self._answer(self.loss(p), 1, where, k)[0] for k, p in enumerate(points)]
                )
            stacked = _torch().stack(list(points)) if self.torch else np.stack(list(points))
            return self._answer(self.loss(stacked), len(points), where, 0)

    def base(self) -> float:
        """``l(θ)``."""
        return float(self.evaluate([self.theta], lambda _: "the unperturbed theta")[0])

    def map_chunks(self, n: int, fn: Callable[[int, int], T]) -> list[T]:
        """``fn(start, stop)`` on the chunks of ``range(n)``, in order (threaded if workers > 1)."""
        chunks = _chunks(n, self.chunk)

        def run(chunk: tuple[int, int]) -> T:
            with self._no_grad():  # thread-local: set in the worker that builds the points
                return fn(*chunk)

        if self.workers == 1 or len(chunks) == 1:
            return [run(c) for c in chunks]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(run, chunks))

    def _answer(self, out: Any, k: int, where: Callable[[int], str], offset: int) -> np.ndarray:
        try:
            if is_torch(out):
                arr = out.detach().to("cpu", _torch().float64).numpy()
            else:
                arr = np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ObertError(
                f"{self.estimator}: the loss returned {type(out).__name__} {out!r:.80} at "
                f"{where(offset)}; it must return a number (a float, or a 0-d array/tensor)."
            ) from exc
        if arr.size != k:
            want = "a scalar" if self.batch_size is None else f"{k} losses, one per point"
            raise ObertError(
                f"{self.estimator}: the loss returned shape {tuple(arr.shape)} at {where(offset)}; "
                f"it must return {want} (reduce a per-sample loss with .mean()"
                + (
                    ", or pass batch_size=None for one point per call)."
                    if self.batch_size is None
                    else ")."
                )
            )
        arr = arr.reshape(-1)
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            j = int(bad[0])
            raise ObertError(
                f"{self.estimator}: the loss returned {arr[j]} at {where(offset + j)}; the "
                "estimate is stopped — check the model (a diverged or fp16-overflowing loss) or "
                "lower mu."
            )
        return np.asarray(arr, dtype=np.float64)


def check_scheme(scheme: object) -> str:
    """Return ``scheme`` if it is one of :data:`SCHEMES`."""
    return check_choice(scheme, "scheme", SCHEMES)
