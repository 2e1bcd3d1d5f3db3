"""Movement pruning (Sanh, Wolf & Rush 2020, "Movement Pruning", hard variant).

During fine-tuning each weight accumulates the score ``S_i = -sum_t w_i(t) * dL/dw_i(t)`` over the
optimizer steps t (the gradient accumulated over the step's micro-batches, after clipping) (Sec. 4,
Eq. 4 with the straight-through estimator of the top-k mask: the gradient of the loss with
respect to the score is ``dL/dw * w``); at a pruning step the weights with the lowest
accumulated score are removed.  Weights moving away from zero (``w`` and ``-grad`` of the same
sign) gain score and are kept, weights moving towards zero lose it.  There is no weight update.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from obert_train.errors import RecipeError
from obert_train.pruning.masks import MaskState
from obert_train.pruning.method import MethodSettings, PruningMethod, StepContext, select_masks
from obert_train.pruning.registry import register_method

__all__ = ["MovementPruning"]


@register_method
class MovementPruning(PruningMethod):
    """Hard movement pruning: scores ``-w * dL/dw`` accumulated at every optimizer step."""

    name: ClassVar[str] = "movement"
    Settings: ClassVar[type[MethodSettings]] = MethodSettings
    recipe_tags: ClassVar[tuple[str, ...]] = ("MovementPruningModifier",)
    needs_training: ClassVar[bool] = True

    def __init__(self, settings: MethodSettings | None = None, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.scores: dict[str, torch.Tensor] = {}
        self.updates = 0

    def prepare(
        self,
        params: Mapping[str, torch.nn.Parameter],
        masks: MaskState,
        ctx: StepContext,
    ) -> None:
        """Allocate one float32 score per weight, zero (kept after a resume)."""
        for name, p in params.items():
            if name not in self.scores:
                self.scores[name] = torch.zeros(p.numel(), dtype=torch.float32, device=p.device)

    @torch.no_grad()
    def after_backward(self, params: Mapping[str, torch.nn.Parameter], masks: MaskState) -> None:
        """``S -= w * grad`` for every target tensor with a gradient."""
        for name, p in params.items():
            if p.grad is None:
                continue
            self.scores[name].sub_((p.detach() * p.grad.detach()).reshape(-1).float())
        self.updates += 1

    def prune(
        self,
        params: Mapping[str, torch.nn.Parameter],
        masks: MaskState,
        sparsity: float,
        ctx: StepContext,
    ) -> None:
        """Remove the weights (or groups) with the lowest accumulated movement score.

        Raises:
            RecipeError: If no backward pass was seen yet (movement needs training: a one-shot
                movement step, or a step at epoch 0, has no scores).
        """
        if self.updates == 0:
            raise RecipeError(
                "movement pruning ranks weights by scores accumulated during training, and no "
                "training step has run yet; start its pruning after epoch 0 or use another method"
            )
        group = self.settings.group_size
        scores = {name: self.scores[name].reshape(-1, group).sum(-1) for name in params}
        shapes = {name: tuple(p.shape) for name, p in params.items()}
        masks.update(select_masks(scores, sparsity, masks.as_dict(), self.settings, shapes))

    def state_dict(self) -> dict[str, Any]:
        """The accumulated scores and the number of updates."""
        return {
            "scores": {n: s.cpu().clone() for n, s in self.scores.items()},
            "updates": self.updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.scores = {n: s.clone() for n, s in state["scores"].items()}
        self.updates = int(state["updates"])
