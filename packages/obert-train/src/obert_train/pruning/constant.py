"""Constant masks: keep the pattern a model starts with (sparse transfer, Kurtic et al. Sec. 4.2).

The masks are the model's zeros when training starts (an upstream-pruned checkpoint); no step
prunes more, and the driver holds every pruned weight at exactly zero through training.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch

from obert_train.errors import RecipeError
from obert_train.pruning.masks import MaskState
from obert_train.pruning.method import MethodSettings, PruningMethod, StepContext
from obert_train.pruning.registry import register_method

__all__ = ["ConstantPruning"]


@register_method
class ConstantPruning(PruningMethod):
    """Fixed masks: the zeros of the target tensors at the start stay zero, nothing else."""

    name: ClassVar[str] = "constant"
    Settings: ClassVar[type[MethodSettings]] = MethodSettings
    recipe_tags: ClassVar[tuple[str, ...]] = ("ConstantPruningModifier",)
    schedules_pruning: ClassVar[bool] = False

    def prune(
        self,
        params: Mapping[str, torch.nn.Parameter],
        masks: MaskState,
        sparsity: float,
        ctx: StepContext,
    ) -> None:
        """Constant masks never prune.

        Raises:
            RecipeError: Always.
        """
        raise RecipeError(
            "the constant method keeps the masks it starts with and has no pruning step; "
            "use magnitude, movement or obert to prune"
        )
