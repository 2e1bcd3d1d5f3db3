"""Seeded random directions of the zeroth-order estimators, regenerated instead of stored.

Direction ``i`` of step ``t`` under seed ``s`` is drawn from a generator seeded by the NumPy
``SeedSequence([s, t, i])`` (as MeZO regenerates its perturbation from a seed), so an estimate,
a Fisher row or a training step is reproduced bit for bit from ``(seed, step, index)`` alone and
no direction is ever kept. NumPy arrays draw from ``numpy.random.Generator`` (PCG64), float64;
torch tensors from a ``torch.Generator`` on the tensor's device, in its dtype. The two frameworks
draw different numbers for the same key (each is reproducible on its own).

Both distributions are isotropic, ``E[u uᵀ] = I`` (docs/math.md §9, arXiv 2310.02025 §3):

* ``"gaussian"``: ``u ~ N(0, I_d)``;
* ``"sphere"``: ``u`` uniform on the sphere of radius ``√d`` — or, with ``segments`` (the sizes
  of the tensors concatenated in the flat vector), each segment independently uniform on its own
  sphere of radius ``√d_s``: the per-tensor normalisation of DeepZero's reference code, scaled so
  that the estimate needs no dimension factor.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._arrays import is_torch
from .._errors import ObertError
from .._validate import check_choice, check_count
from ._oracle import DISTRIBUTIONS, check_theta

__all__ = ["check_segments", "direction_seed", "draw", "zo_direction"]


def direction_seed(seed: int, step: int, index: int) -> int:
    """One 63-bit integer seed for the key ``(seed, step, index)`` (``SeedSequence`` mixing)."""
    state = np.random.SeedSequence([seed, step, index]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def check_segments(segments: Sequence[int] | None, size: int, distribution: str) -> tuple[int, ...]:
    """Return the segment sizes (one segment of ``size`` by default), checked."""
    if segments is None:
        return (size,)
    if distribution != "sphere":
        raise ObertError(
            f"segments={segments!r} only applies to distribution='sphere' (per-tensor sphere "
            "directions); Gaussian directions need no segments — drop the argument."
        )
    try:
        sizes = tuple(check_count(s, "segments entry") for s in segments)
    except TypeError as exc:
        raise ObertError(f"segments must be a sequence of tensor sizes, got {segments!r}.") from exc
    if any(s == 0 for s in sizes) or sum(sizes) != size:
        raise ObertError(
            f"segments={list(sizes)} must be positive sizes adding up to the {size} parameters; "
            "pass [p.numel() for p in params] for the concatenated tensors."
        )
    return sizes


def zo_direction(
    theta: Any,
    seed: int,
    step: int,
    index: int,
    *,
    distribution: str = "gaussian",
    segments: Sequence[int] | None = None,
) -> Any:
    """The random direction ``u`` for the key ``(seed, step, index)``, in ``theta``'s shape.

    Args:
        theta: the parameters (only their shape, framework, dtype and device are used).
        seed: the run's seed (integer ≥ 0).
        step: the step (or Fisher row) the direction belongs to (integer ≥ 0).
        index: the direction's number within the step (integer ≥ 0).
        distribution: ``"gaussian"`` or ``"sphere"`` (see the module docstring).
        segments: sphere only: sizes of the tensors concatenated in ``theta.reshape(-1)``, each
            normalised on its own (default: one segment).

    Returns:
        ``u`` with ``E[u uᵀ] = I``: a float64 NumPy array, or a tensor of ``theta``'s dtype
        (float32 for half precision) on its device.

    Raises:
        ObertError: a negative or non-integer key, an unknown distribution, bad segments.
    """
    check_theta(theta)
    key = [check_count(v, n) for v, n in ((seed, "seed"), (step, "step"), (index, "index"))]
    dist = check_choice(distribution, "distribution", DISTRIBUTIONS)
    size = int(np.prod(tuple(theta.shape)))
    sizes = check_segments(segments, size, dist)
    return draw(theta, key[0], key[1], key[2], dist, sizes)


def draw(
    theta: Any, seed: int, step: int, index: int, distribution: str, sizes: tuple[int, ...]
) -> Any:
    """:func:`zo_direction` without the argument checks (the estimators' inner loop)."""
    size = sum(sizes)
    mixed = direction_seed(seed, step, index)
    if is_torch(theta):
        import torch

        dtype = theta.dtype if theta.dtype in (torch.float32, torch.float64) else torch.float32
        gen = torch.Generator(device=theta.device).manual_seed(mixed)
        u = torch.randn(size, generator=gen, dtype=dtype, device=theta.device)
        if distribution == "sphere":
            parts = torch.split(u, list(sizes))
            u = torch.cat([p * (p.numel() ** 0.5 / torch.linalg.vector_norm(p)) for p in parts])
        return u.reshape(tuple(theta.shape))
    un = np.random.Generator(np.random.PCG64(mixed)).standard_normal(size)
    if distribution == "sphere":
        bounds = np.cumsum((0, *sizes))
        for s, e in itertools.pairwise(bounds):
            un[s:e] *= np.sqrt(e - s) / np.linalg.norm(un[s:e])
    return un.reshape(tuple(theta.shape))
