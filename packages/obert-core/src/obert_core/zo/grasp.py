"""ZO-GraSP: pruning at initialisation from a zeroth-order Hessian-gradient product.

DeepZero (arXiv 2310.02025, §4) scores each weight with GraSP's ``S = −θ ⊙ Hg`` (Wang et al.,
ICLR 2020), both ``g`` and ``Hg`` estimated from forward passes only (docs/math.md §9):

    ĝ = RGE(θ),   Ĥĝ = [RGE(θ + μĝ) − RGE(θ)] / μ,   S = −θ ⊙ Ĥĝ                      (Z-4)

with ``q = 192`` and ``μ = 5e-3``. The weights are ranked globally on ``|S|`` (the smallest pruned,
as ``torch.nn.utils.prune.L1Unstructured`` does in the reference code), but only the resulting
per-tensor sparsities are kept: training then draws a fresh random mask per tensor at those
sparsities (:func:`random_layer_masks`) and estimates only its kept coordinates with CGE.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .._arrays import framework_of, is_torch
from .._errors import ObertError
from .._validate import check_count, check_sparsity
from ..masks import _check_mapping, select_mask
from ._oracle import Oracle, result_like
from .directions import direction_seed
from .estimators import _RGE, shift

__all__ = ["random_layer_masks", "zo_grasp_ratios", "zo_grasp_scores"]


def zo_grasp_scores(
    loss: Callable[[Any], Any],
    theta: Any,
    *,
    mu: float = 5e-3,
    q: int = 192,
    seed: int = 0,
    step: int = 0,
    scheme: str = "forward",
    distribution: str = "gaussian",
    segments: Sequence[int] | None = None,
    batch_size: int | None = None,
    workers: int = 1,
) -> Any:
    """ZO-GraSP scores (Z-4), ``S = −θ ⊙ Ĥĝ``, one per parameter.

    ``ĝ`` uses directions ``(seed, step, 0 … q−1)`` and the Hessian product the fresh directions
    ``(seed, step, q … 2q−1)`` for both of its estimates (``3q + 2`` losses with the forward
    scheme). Rank with :func:`zo_grasp_ratios`.

    Args:
        loss: the loss callable of :func:`~obert_core.zo.rge` (e.g. the loss of a fixed batch
            of ``samples_per_class`` examples per class).
        theta: the parameters to score (flat, or one tensor).
        mu: ``μ`` of the estimates and of the step along ``ĝ`` (DeepZero: 5e-3).
        q: directions per estimate (DeepZero: 192).
        seed: the seed of the directions.
        step: the step of the directions' key.
        scheme: ``"forward"`` or ``"central"``.
        distribution: ``"gaussian"`` or ``"sphere"``.
        segments: sphere only: per-tensor sizes (see :func:`~obert_core.zo.zo_direction`).
        batch_size: points per loss call (``None``: one).
        workers: threads evaluating the losses.

    Returns:
        ``S`` in ``theta``'s shape (float64 for NumPy, ``theta``'s dtype for torch).
    """
    oracle = Oracle(loss, theta, batch_size=batch_size, workers=workers, estimator="zo_grasp")
    theta = oracle.theta
    est = _RGE(theta, mu, q, seed, step, scheme, distribution, segments)
    base = oracle.base() if est.scheme == "forward" else None
    g = est.estimate(oracle, theta, step=est.step, base=base)
    shifted = shift(theta, est.mu, g)
    h0 = est.estimate(oracle, theta, step=est.step, offset=est.q, base=base)
    h1 = est.estimate(oracle, shifted, step=est.step, offset=est.q)
    hg = (h1 - h0) / est.mu
    flat = theta.reshape(-1)
    theta64 = flat.detach().double() if is_torch(theta) else flat.astype(np.float64)
    return result_like(theta, -theta64 * hg)


def zo_grasp_ratios(scores: Mapping[str, Any], sparsity: float) -> dict[str, float]:
    """Per-tensor sparsities from one global ranking of ``|S|`` (DeepZero's layer ratios).

    Args:
        scores: tensor name → ZO-GraSP scores (:func:`zo_grasp_scores`, split per tensor).
        sparsity: the global fraction of weights to prune, in [0, 1).

    Returns:
        tensor name → its fraction of pruned weights when the ``sparsity`` smallest ``|S|``
        over all tensors are pruned (ties broken by position, as :func:`~obert_core.select_mask`).
    """
    _check_mapping(scores, "scores", "ZO-GraSP scores", "zo_grasp_ratios({'w': s}, 0.9)")
    if len(scores) == 0:
        raise ObertError("scores is empty; pass a mapping of tensor name → scores.")
    s = check_sparsity(sparsity)
    framework_of(*scores.values(), names=tuple(scores))
    magnitudes = {n: abs(v) for n, v in scores.items()}
    masks = select_mask(magnitudes, s, scope="global")
    return {n: 1.0 - float(m.sum()) / int(np.prod(tuple(m.shape))) for n, m in masks.items()}


def random_layer_masks(
    like: Mapping[str, Any],
    sparsities: Mapping[str, float],
    *,
    seed: int = 0,
    step: int = 0,
) -> dict[str, Any]:
    """A fresh random keep-mask per tensor at the given sparsities (DeepZero's sparse training).

    Tensor ``k`` (in the order of ``like``) prunes exactly ``round(s_k · n_k)`` positions drawn
    from the key ``(seed, step, k)``; the same key gives the same masks, so a run redrawing them
    every few epochs needs only its seed and the step.

    Args:
        like: tensor name → an array or tensor of the tensor's shape (framework and device of the
            masks).
        sparsities: tensor name → fraction pruned in [0, 1) (e.g. :func:`zo_grasp_ratios`);
            tensors missing here are kept dense.
        seed: the seed (integer ≥ 0).
        step: the redraw's number (integer ≥ 0).

    Returns:
        tensor name → boolean keep-mask (True = kept) in the tensor's shape and framework.
    """
    _check_mapping(like, "like", "array", "random_layer_masks({'w': w}, {'w': 0.9})")
    _check_mapping(sparsities, "sparsities", "sparsity", "{'w': 0.9}")
    if len(like) == 0:
        raise ObertError("like is empty; pass a mapping of tensor name → array.")
    unknown = sorted(set(sparsities) - set(like))
    if unknown:
        raise ObertError(
            f"sparsities names tensors that like does not have: {unknown}; use the same names."
        )
    seed = check_count(seed, "seed")
    step = check_count(step, "step")
    out: dict[str, Any] = {}
    for k, (name, t) in enumerate(like.items()):
        framework_of(t, names=(f"like[{name!r}]",))
        n = int(np.prod(tuple(t.shape)))
        s = check_sparsity(sparsities.get(name, 0.0), f"sparsities[{name!r}]")
        rng = np.random.Generator(np.random.PCG64(direction_seed(seed, step, k)))
        keep = np.ones(n, dtype=bool)
        keep[rng.permutation(n)[: round(s * n)]] = False
        if is_torch(t):
            import torch

            out[name] = torch.from_numpy(keep.reshape(tuple(t.shape))).to(t.device)
        else:
            out[name] = keep.reshape(tuple(t.shape))
    return out
