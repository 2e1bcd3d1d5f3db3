"""Magnitude pruning (gradual magnitude pruning, GMP, when scheduled during training).

Score ``|w|`` per weight (``||w_Q||^2`` per group of 4 for block4, per R x C block for RxC); no
weight update.  Run on a cubic schedule during fine-tuning this is the GMP baseline of Zhu & Gupta
(2017) that the oBERT paper compares against.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch

from obert_train.pruning.masks import MaskState
from obert_train.pruning.method import MethodSettings, PruningMethod, StepContext, select_masks
from obert_train.pruning.registry import register_method

__all__ = ["MagnitudePruning"]


@register_method
class MagnitudePruning(PruningMethod):
    """Remove the smallest ``|w|`` (groups: smallest ``||w_Q||^2``)."""

    name: ClassVar[str] = "magnitude"
    Settings: ClassVar[type[MethodSettings]] = MethodSettings
    recipe_tags: ClassVar[tuple[str, ...]] = ("GMPruningModifier", "MagnitudePruningModifier")

    def prune(
        self,
        params: Mapping[str, torch.nn.Parameter],
        masks: MaskState,
        sparsity: float,
        ctx: StepContext,
    ) -> None:
        """Score ``|w|`` (or group squared norms), choose masks, zero the pruned weights."""
        group = self.settings.group_size
        scores = {
            name: p.detach().reshape(-1, group).float().square().sum(-1)
            for name, p in params.items()
        }
        shapes = {name: tuple(p.shape) for name, p in params.items()}
        masks.update(select_masks(scores, sparsity, masks.as_dict(), self.settings, shapes))
