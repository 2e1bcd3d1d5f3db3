"""Pruning methods behind one interface.

A step takes the model from its current masks to a target sparsity, choosing new masks and
updating the remaining weights in place.

* :class:`MagnitudePruning`: score |w| (||w_Q||^2 for groups), no weight update.
* :class:`ObertPruning`: the Optimal BERT Surgeon step (Kurtic et al. 2022, Sec. 3): empirical
  block inverse-Fisher from m loss gradients, OBS saliency ``rho_Q = 1/2 w_Q^T ([F^-1]_QQ)^-1 w_Q``
  and the optimal update ``dw = -F^-1 E_Q ([F^-1]_QQ)^-1 w_Q`` of the surviving weights.

New methods (e.g. movement pruning, which accumulates scores during training) subclass
:class:`PruningMethod` and are added with :func:`obert_train.register_method`.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch

import obert_core as oc
from obert_train._config import OneShotConfig
from obert_train._distributed import DistContext
from obert_train._grads import GradientSampler

__all__ = ["MagnitudePruning", "PruningMethod", "StepContext", "select_masks"]

logger = logging.getLogger("obert_train")


@dataclass
class StepContext:
    """Everything a pruning step may need besides the tensors.

    Attributes:
        config: The run settings.
        sampler: Gradient sampler (required by gradient-based methods).
        dist: Process group (Fisher work is sharded by tensor across ranks).
        round_index: Index of the recomputation sub-step (new gradient batches each round).
        timings: Seconds per phase, accumulated by the method.
        log: Receives human-readable progress lines (the memory plan, ...).
        fisher_cache: If given, the first round's inverse Fishers and scores are stored here
            and reused by later steps that start from the same weights (e.g. one model pruned
            to several target sparsities in one-recomputation runs).
    """

    config: OneShotConfig
    sampler: GradientSampler | None = None
    dist: DistContext = field(default_factory=DistContext)
    round_index: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    log: Callable[[str], None] = logger.info
    fisher_cache: dict[str, dict[str, torch.Tensor]] | None = None

    def add_time(self, key: str, seconds: float) -> None:
        """Accumulate ``seconds`` under ``key``."""
        self.timings[key] = self.timings.get(key, 0.0) + seconds


def select_masks(
    scores: Mapping[str, torch.Tensor],
    sparsity: float,
    masks: Mapping[str, torch.Tensor],
    config: OneShotConfig,
) -> dict[str, torch.Tensor]:
    """New keep-masks from scores via ``obert_core.select_mask`` (already pruned stay pruned).

    Args:
        scores: ``{name: flat scores}``, one per weight (or per group of ``config.group_size``).
        sparsity: Target fraction of zeros (over all tensors, or per tensor for
            ``scope="layer"``; N:M masks ignore it).
        masks: Current flat keep-masks (True = kept).
        config: Supplies the mask type, N:M pattern, group size and scope.

    Returns:
        ``{name: flat bool keep-mask}`` for every name in ``scores``.
    """
    chosen = oc.select_mask(
        dict(scores),
        sparsity,
        scope=config.scope,
        current_masks=dict(masks),
        group_size=config.group_size,
        nm=config.nm,
    )
    return {name: torch.as_tensor(chosen[name]).to(torch.bool) for name in scores}


class PruningMethod(abc.ABC):
    """One pruning step: current keep-masks -> keep-masks at ``sparsity``, weights updated."""

    name: ClassVar[str]
    needs_gradients: ClassVar[bool] = False

    @abc.abstractmethod
    def step(
        self,
        params: Mapping[str, torch.nn.Parameter],
        masks: Mapping[str, torch.Tensor],
        sparsity: float,
        ctx: StepContext,
    ) -> dict[str, torch.Tensor]:
        """Prune to ``sparsity`` and return the new flat keep-masks (True = kept).

        Args:
            params: Target tensors, updated in place (pruned weights set to exactly 0).
            masks: Current flat keep-masks; weights already pruned stay pruned.
            sparsity: Target fraction of zeros (global or per tensor, by ``ctx.config.scope``).
            ctx: Settings, gradient sampler, process group, timings.
        """


class MagnitudePruning(PruningMethod):
    """Magnitude pruning: remove the smallest |w| (groups: smallest ``||w_Q||^2``)."""

    name: ClassVar[str] = "magnitude"

    def step(
        self,
        params: Mapping[str, torch.nn.Parameter],
        masks: Mapping[str, torch.Tensor],
        sparsity: float,
        ctx: StepContext,
    ) -> dict[str, torch.Tensor]:
        """Score |w| (or group squared norms), choose masks, zero the pruned weights."""
        group = ctx.config.group_size
        scores = {
            name: p.detach().reshape(-1, group).float().square().sum(-1)
            for name, p in params.items()
        }
        new_masks = select_masks(scores, sparsity, masks, ctx.config)
        with torch.no_grad():
            for name, p in params.items():
                p.mul_(new_masks[name].view_as(p).to(p.dtype))
        return new_masks
