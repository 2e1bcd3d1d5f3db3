"""The recipe's learning-rate functions as a scheduler the Hugging Face ``Trainer`` uses.

``!LearningRateFunctionModifier`` phases (``linear``, ``cyclic_linear`` with a rewind to
``init_lr`` at every cycle boundary, reference brief Sec. 2.1) become one ``LambdaLR`` whose
factor at optimizer step k is ``recipe.lr_at(k, steps_per_epoch) / base_lr``; steps that no phase
covers keep the base learning rate.  The scheduler's state (its step count) is checkpointed by the
Trainer, so a resumed run continues on the same curve.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

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

    def factor_for(base: float):  # type: ignore[no-untyped-def]
        def factor(step: int) -> float:
            lr = recipe.lr_at(step, steps_per_epoch)
            return 1.0 if lr is None or base == 0 else lr / base

        return factor

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor_for(b) for b in bases])
