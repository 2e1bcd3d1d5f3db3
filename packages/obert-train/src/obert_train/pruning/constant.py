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

    def check(self, params: Mapping[str, torch.nn.Parameter]) -> None:
        """Refuse tensors without a single zero: there is no pattern to keep (a dense model).

        Sparse transfer starts from a pruned checkpoint; run on a dense one, constant masks
        would silently train a dense model.

        Raises:
            RecipeError: Naming the tensors and what to start from instead.
        """
        super().check(params)
        if params and not any(bool((p.detach() == 0).any()) for p in params.values()):
            names = list(params)
            more = f", ... ({len(names)} in all)" if len(names) > 3 else ""
            shown = ", ".join(names[:3]) + more
            raise RecipeError(
                f"!ConstantPruningModifier keeps the zeros the model starts with, but its "
                f"tensors ({shown}) have no zeros: the model is dense; start from a pruned "
                "(e.g. upstream-pruned) checkpoint, or prune with a pruning modifier"
            )

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
