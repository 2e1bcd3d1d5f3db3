"""ZO-GraSP per-tensor sparsities of a Hugging Face model, from forward passes only.

DeepZero (arXiv 2310.02025, §4; docs/math.md §9, (Z-4)) scores the weights at initialisation
with ``S = −θ ⊙ Ĥĝ``, both factors estimated by :func:`obert_core.zo.zo_grasp_scores`, ranks
``|S|`` globally and keeps only the resulting per-tensor sparsities
(:func:`obert_core.zo.zo_grasp_ratios`). They serve as the ``gradient_sparsity`` of
:class:`~obert_train.ZOSettings` (DeepZero's random sparse gradients) or as per-layer targets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from obert_core.zo import zo_grasp_ratios, zo_grasp_scores
from obert_train._validate import check_int, check_real
from obert_train.errors import ArgumentError, ModelError, TrainingError
from obert_train.pruning.targets import resolve_target_params

__all__ = ["zo_grasp_sparsities"]


def zo_grasp_sparsities(
    model: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    sparsity: float,
    *,
    params: Mapping[str, torch.nn.Parameter] | None = None,
    q: int = 192,
    mu: float = 5e-3,
    seed: int = 0,
    loss_fn: Callable[[torch.nn.Module, Mapping[str, torch.Tensor]], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Per-tensor sparsities from one global ZO-GraSP ranking (DeepZero's layer ratios).

    The loss of ``batch`` (eval mode, ``torch.no_grad``) is evaluated ``3q + 2`` times with the
    target tensors overwritten in place by perturbed copies; the weights are restored exactly
    afterwards (also when a loss fails).

    Args:
        model: A Hugging Face model (or any module whose ``loss_fn`` gives a scalar loss).
        batch: A batch with labels, on the model's device (DeepZero: a few examples per class).
        sparsity: The global fraction of the target weights to prune, in [0, 1).
        params: The target tensors by name (default: the BERT encoder's Linear weights,
            :func:`~obert_train.resolve_target_params`).
        q: Directions per estimate (DeepZero: 192).
        mu: The smoothing radius (DeepZero: 5e-3).
        seed: The seed of the directions.
        loss_fn: ``loss_fn(model, batch) -> scalar`` (default ``model(**batch).loss``).

    Returns:
        Target name → its fraction of pruned weights (the sparsity-weighted mean is ``sparsity``).

    Raises:
        ModelError: the model returns no loss for the batch.
        TrainingError: a non-finite loss (obert-core names the perturbation).
        ArgumentError: an argument of the wrong type.
        OptionError: ``sparsity``, ``q``, ``mu`` or ``seed`` out of range.
    """
    where = "zo_grasp_sparsities"
    if not isinstance(model, torch.nn.Module):
        raise ArgumentError(f"{where}: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(batch, Mapping):
        raise ArgumentError(
            f"{where}: batch must be a mapping of model inputs (with labels), got "
            f"{type(batch).__name__}"
        )
    check_real(sparsity, "sparsity", where, low=0.0, high=1.0, high_open=True)
    check_int(q, "q", where, minimum=1)
    check_real(mu, "mu", where, low=0.0, low_open=True)
    check_int(seed, "seed", where, minimum=0)
    targets = dict(params) if params is not None else resolve_target_params(model)
    tensors = list(targets.values())
    originals = [p.detach().clone() for p in tensors]
    flat = torch.cat([p.reshape(-1) for p in originals]).to(torch.float64)
    sizes = [p.numel() for p in tensors]
    was_training = model.training
    model.eval()

    def loss(x: torch.Tensor) -> float:
        for p, part in zip(tensors, torch.split(x, sizes), strict=True):
            p.copy_(part.view_as(p))
        out = loss_fn(model, batch) if loss_fn is not None else model(**batch).loss
        if out is None:
            raise ModelError(
                f"the model returned no loss for the batch (keys {sorted(batch)}); pass labels"
            )
        return float(out.detach().double())

    try:
        with torch.no_grad():
            scores = zo_grasp_scores(loss, flat, q=q, mu=mu, seed=seed)
    except ValueError as exc:
        if "the loss returned" in str(exc):
            raise TrainingError(f"ZO-GraSP stopped: {exc}") from exc
        raise
    finally:
        with torch.no_grad():
            for p, original in zip(tensors, originals, strict=True):
                p.copy_(original)
        model.train(was_training)
    per_tensor: dict[str, Any] = {}
    for name, part in zip(targets, torch.split(scores, sizes), strict=True):
        per_tensor[name] = part
    return zo_grasp_ratios(per_tensor, sparsity)
