"""Structured pruning of FFN neurons or attention heads, second-order (HEAPr + OBS correction).

A pruning step at target ``s`` (the fraction of atoms removed, over all layers):

1. calibration: ``num_batches`` batches of task data through the model (eval mode, task loss);
   hooks on each down projection (each attention output projection for heads) feed its input
   ``a_t`` and the loss gradient of its output ``g_t`` to :class:`obert_core.StructuredStats`,
   padding tokens excluded;
2. scores per atom: HEAPr's output-space saliency (``score="heapr"``, factorised
   ``E[a_k²]·w_kᵀGw_k``; ``"heapr-full"`` unfactorised ``E[(a_k w_kᵀg)²]``), or the baselines
   ``"magnitude"`` (‖up row‖·‖down column‖), ``"activation"`` (``E[a_k²]``) and ``"random"``;
3. :func:`obert_core.select_atoms` ranks atoms globally (``global_sparsity``) or per layer, keeps
   at least ``min_keep`` per layer and layer sizes at multiples of ``multiple``;
4. with ``correct`` (beyond HEAPr, which removes without compensating), the remaining columns of
   each down / output projection are re-fitted by OBS on ``E[a aᵀ]``
   (:func:`obert_core.obs_group_correction`, the least-squares optimum, bias included);
5. the removed atoms are zeroed everywhere (up/gate rows and biases, down columns; q/k/v rows and
   biases, output columns) and masked, so they stay zero during recovery training.

The checkpoint stays a plain HF checkpoint of the original shapes; ``obert-deploy export``
removes the zero rows/columns physically.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

import obert_core as oc
from obert_core.structured import DEFAULT_DAMP
from obert_train.errors import RecipeError, TargetError
from obert_train.fisher.distributed import DistContext
from obert_train.fisher.sampler import LossFn
from obert_train.pruning.layout import AttentionAtoms, FfnAtoms, find_attention, find_ffns
from obert_train.pruning.masks import MaskState
from obert_train.pruning.method import MethodSettings, PruningMethod, StepContext
from obert_train.pruning.registry import register_method

__all__ = ["StructuredPruning", "StructuredSettings"]

Score = Literal["heapr", "heapr-full", "magnitude", "activation", "random"]


class StructuredSettings(MethodSettings):
    """Settings of structured pruning (the sparsity is the fraction of atoms removed).

    Attributes:
        structure: ``"neurons"`` (FFN intermediate neurons) or ``"heads"``.
        score: ``"heapr"`` (factorised output-space saliency), ``"heapr-full"`` (unfactorised),
            ``"magnitude"``, ``"activation"`` or ``"random"``.
        correct: Re-fit the remaining down / output projection columns by OBS (C-1).
        num_batches: Calibration batches.
        grad_batch_size: Examples per calibration batch.
        min_keep: Atoms every layer keeps (neurons; heads: at least one is always kept).
        multiple: Layer sizes kept at multiples of this (neurons; heads use 1).
        damp_fraction: OBS dampening, a fraction of the mean diagonal of ``E[a aᵀ]``.
        seed: Seed of the calibration batches (and of ``score="random"``).
    """

    structure: Literal["neurons", "heads"] = "neurons"
    score: Score = "heapr"
    correct: bool = True
    num_batches: int = Field(default=16, ge=1)
    grad_batch_size: int = Field(default=16, ge=1)
    min_keep: int = Field(default=16, ge=0)
    multiple: int = Field(default=16, ge=1)
    damp_fraction: float = Field(default=DEFAULT_DAMP, gt=0)
    seed: int = 0


@dataclass
class Calibration:
    """The data a structured step runs through the model (built by ``gradient_sampler``)."""

    model: torch.nn.Module
    features: Sequence[Any]
    collate: Callable[[Sequence[Any]], dict[str, torch.Tensor]]
    batch_size: int
    num_batches: int
    seed: int
    loss_fn: LossFn | None = None
    progress: bool = True

    def batches(self, round_index: int) -> list[dict[str, torch.Tensor]]:
        """``num_batches`` seeded batches (fewer if the data are short; at least one).

        Raises:
            TargetError: If there is not one full batch of data.
        """
        n = len(self.features)
        if n < self.batch_size:
            raise TargetError(
                f"calibration needs at least one batch of {self.batch_size} examples, the task "
                f"has {n}; lower grad_batch_size or give more data"
            )
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + round_index)
        order = torch.randperm(n, generator=gen).tolist()
        count = min(self.num_batches, n // self.batch_size)
        return [
            self.collate(
                [self.features[i] for i in order[b * self.batch_size :][: self.batch_size]]
            )
            for b in range(count)
        ]


@dataclass
class _Unit:
    """One layer's atoms: the projection whose input columns they are, and what else to zero."""

    name: str
    out: torch.nn.Linear  # down projection / attention output projection
    rows: tuple[torch.nn.Linear, ...]  # up/gate or q/k/v: rows of each atom
    group: int  # columns per atom

    @property
    def count(self) -> int:
        return int(self.out.weight.shape[1]) // self.group


def _units(model: torch.nn.Module, structure: str) -> list[_Unit]:
    if structure == "neurons":
        ffns: list[FfnAtoms] = find_ffns(model)
        return [_Unit(f.down_name, f.down, f.ups, 1) for f in ffns]
    blocks: list[AttentionAtoms] = find_attention(model)
    return [_Unit(a.out_name, a.out, a.qkv, a.head_dim) for a in blocks]


def _token_mask(batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    mask = batch.get("attention_mask")
    return None if mask is None else mask.to(torch.float64)


@register_method
class StructuredPruning(PruningMethod):
    """Remove whole FFN neurons or attention heads (HEAPr scores, optional OBS correction)."""

    name: ClassVar[str] = "structured"
    Settings: ClassVar[type[MethodSettings]] = StructuredSettings
    recipe_tags: ClassVar[tuple[str, ...]] = ("StructuredPruningModifier",)
    needs_gradients: ClassVar[bool] = True

    @property
    def cfg(self) -> StructuredSettings:
        """The settings, typed."""
        assert isinstance(self.settings, StructuredSettings)
        return self.settings

    def check(self, params: Mapping[str, torch.nn.Parameter]) -> None:
        """Structured atoms are whole rows/columns: only the unstructured mask type applies.

        Raises:
            RecipeError: For another mask type.
        """
        if self.settings.mask_type != "unstructured":
            raise RecipeError(
                f"structured pruning removes whole neurons or heads; mask_type "
                f"{self.settings.mask_type!r} does not apply (leave it 'unstructured')"
            )

    def current_sparsity(self, masks: MaskState) -> float:
        """Atoms are counted by :func:`obert_core.select_atoms` (which refuses regrowth): 0."""
        del masks
        return 0.0

    def gradient_sampler(
        self,
        model: torch.nn.Module,
        features: Sequence[Any],
        collate: Callable[[Sequence[Any]], dict[str, torch.Tensor]],
        *,
        loss_fn: LossFn | None = None,
        progress: bool = True,
        dist_ctx: DistContext | None = None,
    ) -> Any:
        """The calibration data (the statistics are gathered by hooks, not parameter gradients)."""
        del dist_ctx
        _units(model, self.cfg.structure)  # layout errors before any work
        return Calibration(
            model,
            features,
            collate,
            self.cfg.grad_batch_size,
            self.cfg.num_batches,
            self.cfg.seed,
            loss_fn,
            progress,
        )

    def _statistics(
        self, units: list[_Unit], calib: Calibration, ctx: StepContext
    ) -> dict[str, oc.StructuredStats]:
        model = calib.model
        need_grads = self.cfg.score in ("heapr", "heapr-full")
        stats = {
            u.name: oc.StructuredStats(
                u.out.weight.detach(),
                group_size=u.group,
                input_hessian=self.cfg.correct,
                output_fisher=self.cfg.score == "heapr",
            )
            for u in units
        }
        current: dict[str, Any] = {}
        captured: dict[str, torch.Tensor] = {}
        handles = []

        def hook(unit: _Unit) -> Callable[..., None]:
            def forward(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
                del module
                captured[unit.name] = args[0].detach()
                if need_grads and output.requires_grad:
                    output.register_hook(  # type: ignore[no-untyped-call]
                        lambda grad: stats[unit.name].add(
                            captured[unit.name], grad.detach(), token_weight=current["mask"]
                        )
                    )
                elif not need_grads:
                    stats[unit.name].add(captured[unit.name], token_weight=current["mask"])

            return forward

        for unit in units:
            handles.append(unit.out.register_forward_hook(hook(unit)))
        was_training = model.training
        model.eval()
        start = time.perf_counter()
        try:
            for batch in calib.batches(ctx.round_index):
                current["mask"] = _token_mask(batch)
                if need_grads:
                    model.zero_grad(set_to_none=True)
                    loss = calib.loss_fn(model, batch) if calib.loss_fn else model(**batch).loss
                    if not torch.isfinite(loss):
                        raise TargetError(f"calibration loss is {float(loss)}; check the model")
                    loss.backward()
                else:
                    with torch.no_grad():
                        model(**batch)
        finally:
            for handle in handles:
                handle.remove()
            model.zero_grad(set_to_none=True)
            model.train(was_training)
        ctx.add_time("calibration_s", time.perf_counter() - start)
        return stats

    def _scores(
        self, units: list[_Unit], stats: Mapping[str, oc.StructuredStats]
    ) -> dict[str, Any]:
        score = self.cfg.score
        out: dict[str, Any] = {}
        gen = torch.Generator().manual_seed(self.cfg.seed)
        for unit in units:
            if score == "heapr":
                out[unit.name] = stats[unit.name].saliency("factorised")
            elif score == "heapr-full":
                out[unit.name] = stats[unit.name].saliency("unfactorised")
            elif score == "activation":
                blocks = stats[unit.name].input_blocks()
                out[unit.name] = torch.diagonal(blocks, dim1=-2, dim2=-1).sum(-1)
            elif score == "magnitude":
                w = unit.out.weight.detach().double()
                cols = w.square().sum(0).reshape(unit.count, unit.group).sum(-1)
                rows = sum(
                    m.weight.detach()
                    .double()
                    .square()
                    .sum(1)
                    .reshape(unit.count, unit.group)
                    .sum(-1)
                    for m in unit.rows
                )
                out[unit.name] = (cols * rows).sqrt()
            else:
                out[unit.name] = torch.rand(unit.count, generator=gen, dtype=torch.float64)
        return out

    def prune(
        self,
        params: Mapping[str, torch.nn.Parameter],
        masks: MaskState,
        sparsity: float,
        ctx: StepContext,
    ) -> None:
        """Remove the fraction ``sparsity`` of atoms (see the module docstring)."""
        calib = ctx.sampler
        if not isinstance(calib, Calibration):
            raise TargetError("structured pruning needs task data: pass task= (or use run)")
        cfg = self.cfg
        units = _units(calib.model, cfg.structure)
        heads = cfg.structure == "heads"
        alive = {u.name: _alive(u) for u in units}
        needs_stats = cfg.score not in ("magnitude", "random") or cfg.correct
        stats = self._statistics(units, calib, ctx) if needs_stats else {}
        start = time.perf_counter()
        scores = self._scores(units, stats)
        keep = oc.select_atoms(
            {k: torch.as_tensor(v, dtype=torch.float64).cpu() for k, v in scores.items()},
            sparsity,
            scope=cfg.scope,
            min_keep=1 if heads else cfg.min_keep,
            multiple=1 if heads else cfg.multiple,
            current_masks=alive,
        )
        removed: dict[str, list[int]] = {}
        with torch.no_grad():
            for unit in units:
                gone = (~torch.as_tensor(keep[unit.name], dtype=torch.bool)).nonzero().flatten()
                removed[unit.name] = gone.tolist()
                if cfg.correct and len(gone):
                    self._correct(unit, stats[unit.name], gone)
                _zero(unit, gone)
        masks.update(_keep_masks(params, masks))
        ctx.add_time("select_s", time.perf_counter() - start)
        total = sum(u.count for u in units)
        cut = sum(len(v) for v in removed.values())
        ctx.log(
            f"structured {cfg.structure} ({cfg.score}{' + OBS correction' if cfg.correct else ''})"
            f": {cut} of {total} removed ({cut / total:.1%})"
        )
        self.last_removed = removed

    def _correct(self, unit: _Unit, stats: oc.StructuredStats, gone: torch.Tensor) -> None:
        layer = unit.out
        bias: torch.Tensor | None = getattr(layer, "bias", None)
        hessian = stats.input_hessian(bias=bias is not None)
        result = oc.obs_group_correction(
            layer.weight.detach().double(),
            hessian,
            gone.cpu().numpy(),
            group_size=unit.group,
            damp=self.cfg.damp_fraction,
            bias=None if bias is None else bias.detach().double(),
        )
        layer.weight.copy_(torch.as_tensor(result.weight).to(layer.weight.dtype))
        if bias is not None and result.bias is not None:
            bias.copy_(torch.as_tensor(result.bias).to(bias.dtype))


def _alive(unit: _Unit) -> torch.Tensor:
    """Atoms whose output-projection columns are not all zero (earlier steps removed the rest)."""
    w = unit.out.weight.detach()
    return w.ne(0).any(0).reshape(unit.count, unit.group).any(-1).cpu()


def _zero(unit: _Unit, gone: torch.Tensor) -> None:
    """Zero every weight of the removed atoms: output columns, input rows and their biases."""
    if not len(gone):
        return
    g = unit.group
    cols = (gone[:, None] * g + torch.arange(g)[None, :]).flatten()
    unit.out.weight[:, cols] = 0
    for module in unit.rows:
        module.weight[cols, :] = 0
        if module.bias is not None:
            module.bias[cols] = 0


def _keep_masks(
    params: Mapping[str, torch.nn.Parameter], masks: MaskState
) -> dict[str, torch.Tensor]:
    """The target tensors' new keep-masks: their non-zeros, within their current masks."""
    current = masks.as_dict()
    return {name: current[name] & p.detach().ne(0).flatten().cpu() for name, p in params.items()}
