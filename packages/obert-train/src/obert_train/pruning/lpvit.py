"""LPViT's block pruning (Low-Power Semi-structured Pruning for ViTs, arXiv 2407.02068).

One step to sparsity ``s`` (docs/math.md §8):

1. The calibration gradient ``g`` of every target tensor: the mean over ``num_grads`` batches of
   the gradient of LPViT's label-free loss ``mean(f(x)²)`` over the model's logits
   (:func:`lpvit_loss`; a ``loss_fn`` given to the driver replaces it).
2. Block scores ``mean |w ⊙ g|`` over each ``r×c`` block (B-2,
   :func:`obert_core.blocks.taylor_block_scores`).
3. Per-tensor ratios: with ``allocation="lpvit"`` (the default) LPViT's equal-slope allocation of
   the distortion curves (B-4) plus the power proxy (B-6) under the FLOPs (or latency) budget
   ``1 − s`` (:mod:`obert_train.pruning.blocks`); ``"uniform"``: ``s`` in every tensor;
   ``"global"``: one threshold over all block scores.
4. Each tensor keeps its best-scored blocks; no weight update (LPViT fine-tunes afterwards, with
   distillation in its recipe).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

import obert_core as oc
import obert_core.blocks as ob
from obert_train.errors import DataError, TargetError
from obert_train.fisher.distributed import DistContext
from obert_train.fisher.sampler import GradientSampler, LossFn
from obert_train.pruning.masks import MaskState
from obert_train.pruning.method import MethodSettings, PruningMethod, StepContext, select_masks
from obert_train.pruning.registry import register_method

__all__ = ["LPViTPruning", "LPViTSettings", "lpvit_loss", "mean_gradients"]


def lpvit_loss(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """LPViT's label-free calibration loss ``mean(f(x)²)`` over the model's logits.

    Labels in the batch (``labels``, ``label``, ``start_positions``, ``end_positions``) are not
    given to the model; the loss is the mean square of ``logits`` (or of ``start_logits`` and
    ``end_logits`` together for question answering).

    Raises:
        DataError: If the model's output has no logits.
    """
    drop = {"labels", "label", "start_positions", "end_positions"}
    out = model(**{k: v for k, v in batch.items() if k not in drop})
    logits = getattr(out, "logits", None)
    if logits is None:
        start, end = getattr(out, "start_logits", None), getattr(out, "end_logits", None)
        if start is None or end is None:
            raise DataError(
                f"the LPViT loss needs the model's logits, but {type(out).__name__} has none; "
                "pass loss_fn"
            )
        both: torch.Tensor = torch.cat([start.reshape(-1), end.reshape(-1)])
        return both.float().square().mean()
    out_loss: torch.Tensor = logits.float().square().mean()
    return out_loss


def mean_gradients(
    sampler: GradientSampler,
    params: Mapping[str, torch.nn.Parameter],
    masks: Mapping[str, torch.Tensor] | None = None,
    *,
    round_seed: int = 0,
) -> dict[str, torch.Tensor]:
    """The mean of the sampler's ``num_grads`` gradients per tensor (float64, each tensor's shape).

    Args:
        sampler: Its ``loss_fn`` defines the loss (LPViT: :func:`lpvit_loss`).
        params: Tensors to differentiate.
        masks: Keep-masks multiplied into the gradients, or None.
        round_seed: Batch-order offset (:meth:`GradientSampler.chunks`).
    """
    sums = {
        n: torch.zeros(p.numel(), dtype=torch.float64, device=p.device) for n, p in params.items()
    }
    count = 0
    for chunk in sampler.chunks(
        params, masks=masks, round_seed=round_seed, desc="LPViT calibration gradients"
    ):
        for name, grads in chunk.items():
            sums[name] += grads.double().sum(0)
        count += next(iter(chunk.values())).shape[0] if chunk else 0
    return {n: (s / max(count, 1)).reshape(params[n].shape) for n, s in sums.items()}


class LPViTSettings(MethodSettings):
    """Settings of LPViT's block pruning.

    Attributes:
        mask_type: An ``"RxC"`` block (LPViT: ``"16x16"`` in ViTs); required.
        allocation: ``"lpvit"`` (default), ``"uniform"`` or ``"global"``.
        num_grads: Calibration batches whose gradients are averaged into ``g``.
        grad_batch_size: Examples per calibration batch.
        damp: ``λ`` of the distortion (B-4).
        seed: Seed of the calibration batches.
    """

    mask_type: str = "16x16"
    allocation: Literal["global", "uniform", "lpvit", "obs"] = "lpvit"
    num_grads: int = Field(default=64, ge=1)
    grad_batch_size: int = Field(default=16, ge=1)
    damp: float = Field(default=ob.DEFAULT_DAMP, gt=0.0)
    seed: int = 0

    @model_validator(mode="after")
    def _check_block(self) -> LPViTSettings:
        if self.block is None:
            raise ValueError(
                f"method 'lpvit' prunes RxC blocks; mask_type {self.mask_type!r} is not one "
                "(use e.g. '16x16')"
            )
        return self


@register_method
class LPViTPruning(PruningMethod):
    """LPViT: blocks scored by ``mean |w ⊙ g|``, per-layer ratios by equal slopes (no update)."""

    name: ClassVar[str] = "lpvit"
    Settings: ClassVar[type[MethodSettings]] = LPViTSettings
    recipe_tags: ClassVar[tuple[str, ...]] = ("LPViTPruningModifier",)
    needs_gradients: ClassVar[bool] = True
    allocations: ClassVar[tuple[str, ...]] = ("global", "uniform", "lpvit")

    def gradient_sampler(
        self,
        model: torch.nn.Module,
        features: Sequence[Any],
        collate: Callable[[Sequence[Any]], dict[str, torch.Tensor]],
        *,
        loss_fn: LossFn | None = None,
        progress: bool = True,
        dist_ctx: DistContext | None = None,
    ) -> GradientSampler:
        """A sampler of the label-free loss (:func:`lpvit_loss`) unless ``loss_fn`` is given."""
        cfg = self.settings
        assert isinstance(cfg, LPViTSettings)
        return GradientSampler(
            model,
            features,
            collate,
            batch_size=cfg.grad_batch_size,
            num_grads=cfg.num_grads,
            seed=cfg.seed,
            loss_fn=loss_fn or lpvit_loss,
            progress=progress,
            dist_ctx=dist_ctx,
        )

    def prune(
        self,
        params: Mapping[str, torch.nn.Parameter],
        masks: MaskState,
        sparsity: float,
        ctx: StepContext,
    ) -> None:
        """Mean gradient, block scores, allocation, masks (see the module docstring).

        With ``allocation_rounds = K > 1`` the step is reached in K rounds (docs/math.md §8,
        (B-10)), each with a new mean gradient at the current pruned weights (its own
        calibration batches), new curves and the allocation of that round's cumulative budget.
        """
        cfg = self.settings
        assert isinstance(cfg, LPViTSettings)
        if not isinstance(ctx.sampler, GradientSampler):
            raise DataError(
                "method 'lpvit' needs calibration data: a GradientSampler (StepContext.sampler)"
            )
        rounds = cfg.allocation_rounds
        steps = [sparsity]
        if rounds > 1:
            floor = self.current_sparsity(masks)
            steps = ob.round_sparsities(floor, sparsity, rounds, cfg.allocation_spacing)
        for index, target in enumerate(steps):
            if rounds > 1:
                ctx.log(f"allocation round {index + 1}/{rounds}: to sparsity {target:.4f}")
            with ctx.sub_round(index, rounds):
                self._round(params, masks, float(target), ctx)

    def _round(
        self,
        params: Mapping[str, torch.nn.Parameter],
        masks: MaskState,
        sparsity: float,
        ctx: StepContext,
    ) -> None:
        """One round: mean gradient at the current weights, scores, curves, masks."""
        cfg = self.settings
        assert isinstance(cfg, LPViTSettings)
        block = cfg.block
        assert block is not None
        current = masks.as_dict()
        grads = mean_gradients(ctx.sampler, params, current, round_seed=ctx.round_index)
        shapes = {n: tuple(p.shape) for n, p in params.items()}
        c = block[1]
        scores = {
            n: (p.detach().double() * grads[n]).abs().reshape(-1, c).sum(-1)
            for n, p in params.items()
        }
        curves = None
        if cfg.block_allocation == "lpvit":
            try:
                curves = {
                    n: ob.taylor_distortion_curve(
                        p.detach().double(),
                        grads[n],
                        block,
                        damp=cfg.damp,
                        name=n,
                        ratios=ob.count_ratios(p.numel() // (block[0] * block[1])),
                    )
                    for n, p in params.items()
                }
            except oc.ObertError as exc:
                raise TargetError(str(exc)) from None
        masks.update(select_masks(scores, sparsity, current, cfg, shapes, distortion=curves))
