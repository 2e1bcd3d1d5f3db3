"""The recipe's learning-rate functions as a scheduler the Hugging Face ``Trainer`` uses.

``!LearningRateFunctionModifier`` phases (``linear``, ``cyclic_linear`` with a rewind to
``init_lr`` at every cycle boundary; docs/recipes.md) become one ``LambdaLR`` whose factor at
optimizer step k is ``recipe.lr_at(k, steps_per_epoch) / base_lr``; steps that no phase covers
keep the base learning rate.  The scheduler's state (its step count) is checkpointed by the
Trainer, so a resumed run continues on the same curve.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from obert_train.errors import RecipeError

if TYPE_CHECKING:
    from obert_train.recipe import Recipe

__all__ = ["recipe_lr_scheduler"]


def recipe_lr_scheduler(
    optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler following the recipe's LR modifiers (the optimizer's lr is the base).

    Args:
        optimizer: The optimizer (every param group's ``lr`` is the base the factor scales).
        recipe: The recipe.
        steps_per_epoch: Optimizer steps per epoch.

    Returns:
        A ``LambdaLR``; with no LR modifier it keeps the base learning rate.
    """
    bases = [float(group["lr"]) for group in optimizer.param_groups]

    if any(b == 0 for b in bases) and recipe.learning_rate:
        raise RecipeError(
            "the optimizer's learning rate is 0, so the recipe's LR functions cannot scale it; "
            "give the optimizer the recipe's peak LR (run_recipe does) or any positive LR"
        )

    def factor_for(base: float):  # type: ignore[no-untyped-def]
        def factor(step: int) -> float:
            lr = recipe.lr_at(step, steps_per_epoch)
            return 1.0 if lr is None else lr / base

        return factor

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor_for(b) for b in bases])
