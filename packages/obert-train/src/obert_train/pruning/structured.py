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
   at least ``min_keep`` per layer and layer sizes at multiples of ``multiple``; with
   ``allocation="uniform"`` every layer keeps the same count ``k`` (:func:`uniform_kept`: the
   allowed size nearest ``(1 - s)·n``), its own ``k`` highest-scored atoms, so the pruned model
   has one FFN width (one head count) and ``obert-train shrink`` writes it with smaller shapes;
4. with ``correct`` (beyond HEAPr, which removes without compensating), the remaining columns of
   each down / output projection are re-fitted by OBS on ``E[a aᵀ]``
   (:func:`obert_core.obs_group_correction`, the least-squares optimum, bias included);
5. the removed atoms are zeroed everywhere (up/gate rows and biases, down columns; q/k/v rows and
   biases, output columns) and masked, so they stay zero during recovery training.

The checkpoint stays a plain HF checkpoint of the original shapes; ``obert-deploy export``
removes the zero rows/columns physically, and ``obert-train shrink`` (:mod:`obert_train.shrink`)
writes a checkpoint with a smaller ``intermediate_size`` when every layer keeps the same width.
"""

from __future__ import annotations

import math
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
from obert_train.pruning.layout import (
    AttentionAtoms,
    ExpertAtoms,
    FfnAtoms,
    find_attention,
    find_experts,
    find_ffns,
)
from obert_train.pruning.masks import MaskState
from obert_train.pruning.method import MethodSettings, PruningMethod, StepContext
from obert_train.pruning.registry import register_method

__all__ = ["StructuredPruning", "StructuredSettings", "uniform_kept"]

Score = Literal["heapr", "heapr-full", "magnitude", "activation", "frequency", "random"]
Allocation = Literal["global", "uniform"]


class StructuredSettings(MethodSettings):
    """Settings of structured pruning (the sparsity is the fraction of atoms removed).

    Attributes:
        structure: ``"neurons"`` (FFN intermediate neurons), ``"heads"``, or ``"experts"``
            (the neurons of every expert of fused MoE layers: HEAPr's atomic experts).
        score: ``"heapr"`` (factorised output-space saliency), ``"heapr-full"`` (unfactorised),
            ``"magnitude"``, ``"activation"``, ``"frequency"`` (tokens routed to the atom's
            expert; MoE) or ``"random"``.
        correct: Re-fit the remaining down / output projection columns by OBS (C-1).
        num_batches: Calibration batches.
        grad_batch_size: Examples per calibration batch.
        min_keep: Atoms every layer keeps (neurons; heads: at least one is always kept).
        multiple: Layer sizes kept at multiples of this (neurons; heads use 1).
        allocation: How the removed atoms are spread over the layers: ``"global"`` (layer sizes
            follow the scores: one ranking over all layers, or each layer its own fraction with
            ``global_sparsity: false``) or ``"uniform"`` (every layer keeps the same number of
            atoms, :func:`uniform_kept`, chosen in each layer by its scores; every layer must
            have the same number of atoms; not for experts).
        damp_fraction: OBS dampening, a fraction of the mean diagonal of ``E[a aᵀ]``.
        weight_by_routing: Experts: scale an atom's score by the tokens routed to its expert
            (``N_e``), so scores are loss increases over all tokens and comparable across
            experts; False keeps HEAPr's per-expert normalisation (``N`` = tokens routed to
            that expert, so a rarely used expert's atoms score like a busy one's).
        seed: Seed of the calibration batches (and of ``score="random"``).
    """

    structure: Literal["neurons", "heads", "experts"] = "neurons"
    score: Score = "heapr"
    correct: bool = True
    num_batches: int = Field(default=16, ge=1)
    grad_batch_size: int = Field(default=16, ge=1)
    min_keep: int = Field(default=16, ge=0)
    multiple: int = Field(default=16, ge=1)
    allocation: Allocation = "global"

    omitted_at_default: ClassVar[tuple[str, ...]] = MethodSettings.omitted_at_default
    allocates_blocks: ClassVar[bool] = False
    damp_fraction: float = Field(default=DEFAULT_DAMP, gt=0)
    weight_by_routing: bool = True
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
    """One layer's (or one expert's) atoms: the weight whose columns they are, and their rows.

    ``weight`` is the ``(d, m)`` output-projection weight (a Linear's, or ``down_proj[e]``) and
    ``rows`` lists ``(weight, bias, offset)``: rows ``offset + j`` of ``weight`` (and of
    ``bias``) belong to column ``j`` (up/gate or q/k/v; for fused experts gate and up are
    halves of ``gate_up_proj[e]``).  ``linear`` is the module hooked during calibration (None
    for experts, whose statistics come from the wrapped experts forward).
    """

    name: str
    weight: torch.Tensor
    bias: torch.Tensor | None
    rows: tuple[tuple[torch.Tensor, torch.Tensor | None, int], ...]
    group: int
    linear: torch.nn.Linear | None = None
    owner: torch.Tensor | None = None  # the parameter ``weight`` is (a slice of)

    @property
    def count(self) -> int:
        return int(self.weight.shape[1]) // self.group


def _linear_unit(name: str, out: torch.nn.Linear, ins: Sequence[torch.nn.Linear], g: int) -> _Unit:
    bias: torch.Tensor | None = getattr(out, "bias", None)
    rows = tuple((m.weight.detach(), _bias(m), 0) for m in ins)
    detached = None if bias is None else bias.detach()
    return _Unit(name, out.weight.detach(), detached, rows, g, out, out.weight)


def _bias(module: torch.nn.Module) -> torch.Tensor | None:
    bias = getattr(module, "bias", None)
    return None if bias is None else bias.detach()


def _expert_units(block: ExpertAtoms) -> list[_Unit]:
    module: Any = block.module
    gate_up, down = module.gate_up_proj.detach(), module.down_proj.detach()
    return [
        _Unit(
            f"{block.name}.{e}",
            down[e],
            None,
            ((gate_up[e], None, 0), (gate_up[e], None, block.width)),
            1,
            None,
            module.down_proj,
        )
        for e in range(block.num_experts)
    ]


def _targeted(
    units: list[_Unit], params: Mapping[str, torch.nn.Parameter], what: str
) -> list[_Unit]:
    """The units whose output-projection weight is a target (masked, so it stays removed).

    Raises:
        TargetError: If none is (the recipe's ``params`` / ``--target`` miss them).
    """
    ids = {id(p) for p in params.values()}
    kept = [u for u in units if u.owner is not None and id(u.owner) in ids]
    if not kept:
        names = ", ".join(u.name for u in units[:3])
        raise TargetError(
            f"structured pruning of {what}: no target tensor is an output projection whose "
            f"columns are the atoms (e.g. {names}); add them to params / --target so the removed "
            "atoms are masked"
        )
    return kept


def _units(model: torch.nn.Module, structure: str) -> list[_Unit]:
    if structure == "neurons":
        ffns: list[FfnAtoms] = find_ffns(model)
        return [_linear_unit(f.down_name, f.down, f.ups, 1) for f in ffns]
    if structure == "experts":
        return [u for block in find_experts(model) for u in _expert_units(block)]
    blocks: list[AttentionAtoms] = find_attention(model)
    return [_linear_unit(a.out_name, a.out, a.qkv, a.head_dim) for a in blocks]


def uniform_kept(
    count: int, sparsity: float, *, min_keep: int, multiple: int, what: str = "neurons"
) -> int:
    """The atoms every layer keeps with ``allocation="uniform"``: one count for all layers.

    The allowed kept size nearest ``t = (1 - sparsity)·count`` (ties: keep more), the sizes
    being the multiples of ``multiple`` and ``count`` itself (the rule of
    :func:`obert_core.select_atoms`); the layer's own scores then choose which ``k`` it keeps.

    Args:
        count: Atoms of each layer (the same in every layer).
        sparsity: Target fraction of atoms removed, in [0, 1).
        min_keep: Atoms a layer keeps at least (heads: 1).
        multiple: Kept sizes are multiples of this (heads: 1).
        what: ``"neurons"`` or ``"heads"``, for messages.

    Returns:
        ``k``, with ``max(min_keep, 1) <= k <= count``.

    Raises:
        TargetError: If ``k`` would be 0 (every layer emptied) or below ``min_keep``, naming
            the largest sparsity that keeps the smallest allowed size.
    """
    target = (1.0 - sparsity) * count
    nearest = multiple * math.floor(target / multiple + 0.5)  # halves up: keep more
    k = count if nearest >= count or count - target <= abs(nearest - target) else nearest
    low = max(min_keep, 1)
    if k >= low:
        return k
    smallest = min(count, multiple * math.ceil(low / multiple))
    step = multiple if smallest < count else 0
    most = 1.0 - (smallest - step / 2) / count
    fix = (
        f"lower the sparsity to at most {most:.4g} (keeps {smallest})"
        if smallest < count
        else f"lower min_keep below {count}"
    )
    if k == 0:
        raise TargetError(
            f"allocation 'uniform' at sparsity {sparsity:.4g} keeps 0 of the {count} {what} of "
            f"every layer (nearest multiple of {multiple} to {target:.4g}): every layer would be "
            f"empty; {fix}"
        )
    raise TargetError(
        f"allocation 'uniform' at sparsity {sparsity:.4g} keeps {k} of the {count} {what} of "
        f"every layer, below min_keep={min_keep}; {fix}, or lower min_keep"
    )


def _same_count(units: Sequence[_Unit], what: str) -> int:
    """The one atom count of every layer (what ``allocation="uniform"`` needs).

    Raises:
        TargetError: Naming the layers and their counts when they differ.
    """
    counts = {u.name: u.count for u in units}
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{name}: {c}" for name, c in list(counts.items())[:6])
        raise TargetError(
            f"allocation 'uniform' keeps the same number of {what} in every layer, but the "
            f"layers have different numbers ({shown}); they cannot be made uniform: use "
            "allocation 'global' (then load the zero-padded checkpoint or the ONNX export)"
        )
    return next(iter(counts.values()))


def _token_mask(batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    mask = batch.get("attention_mask")
    return None if mask is None else mask.to(torch.float64)


@register_method
class StructuredPruning(PruningMethod):
    """Remove whole FFN neurons or attention heads (HEAPr scores, optional OBS correction).

    Attributes:
        atom_sparsity: After a pruning step, the fraction of the targeted atoms (neurons, heads)
            removed, the unit of the target sparsity; the weight sparsity over the pruned
            tensors (``MaskState.sparsity``) is lower, as the tensors hold other weights too.
            ``None`` before the first step.
    """

    atom_sparsity: float | None = None
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
        if self.cfg.score == "frequency" and self.cfg.structure != "experts":
            raise RecipeError(
                f"score 'frequency' ranks the atoms of MoE experts by their routed tokens; with "
                f"structure {self.cfg.structure!r} every atom ties: choose another score"
            )
        if self.cfg.allocation == "uniform" and self.cfg.structure == "experts":
            raise RecipeError(
                "allocation 'uniform' keeps the same number of neurons or heads per layer; for "
                "structure 'experts' use allocation 'global'"
            )
        if self.settings.mask_type != "unstructured":
            raise RecipeError(
                f"structured pruning removes whole neurons or heads; mask_type "
                f"{self.settings.mask_type!r} does not apply (leave it 'unstructured')"
            )

    def check_model(self, model: torch.nn.Module, params: Mapping[str, torch.nn.Parameter]) -> None:
        """The model has a known layout and its output projections are among the targets.

        Raises:
            TargetError: Naming the expected modules, or the missing targets; or settings that
                leave nothing to remove (``min_keep`` at or above every layer's size, after
                rounding to ``multiple``), so a run fails here, not at its first pruning step.
        """
        units = _targeted(_units(model, self.cfg.structure), params, self.cfg.structure)
        if self.cfg.allocation == "uniform":
            _same_count(units, self.cfg.structure)
        heads = self.cfg.structure == "heads"
        low, mult = (1, 1) if heads else (self.cfg.min_keep, self.cfg.multiple)
        if units and all(
            not any(low <= k < unit.count for k in range(0, unit.count, mult)) for unit in units
        ):
            sizes = sorted({unit.count for unit in units})
            raise TargetError(
                f"structured {self.cfg.structure}: min_keep={low} with multiple={mult} leaves "
                f"nothing to remove from layers of {sizes} atoms (every layer keeps all of "
                f"them); lower min_keep below {max(sizes)} (e.g. --set min_keep="
                f"{max(0, max(sizes) - mult)})"
            )

    def check_sparsity(
        self, model: torch.nn.Module, params: Mapping[str, torch.nn.Parameter], sparsity: float
    ) -> None:
        """With ``allocation="uniform"``: a step at ``sparsity`` leaves no layer empty.

        Raises:
            TargetError: As :func:`uniform_kept`, or for layers of different sizes.
        """
        if self.cfg.allocation != "uniform":
            return
        units = _targeted(_units(model, self.cfg.structure), params, self.cfg.structure)
        self._uniform_removals(units, sparsity)

    def _uniform_removals(self, units: list[_Unit], sparsity: float) -> dict[str, int]:
        """Atoms each layer loses with ``allocation="uniform"`` (all of them keep ``k``).

        Raises:
            TargetError: As :func:`uniform_kept`; or a layer already smaller than ``k``
                (pruned earlier with another allocation: masks never regrow).
        """
        heads = self.cfg.structure == "heads"
        count = _same_count(units, self.cfg.structure)
        k = uniform_kept(
            count,
            sparsity,
            min_keep=1 if heads else self.cfg.min_keep,
            multiple=1 if heads else self.cfg.multiple,
            what=self.cfg.structure,
        )
        for unit in units:
            alive = int(_alive(unit).sum())
            if alive < k:
                raise TargetError(
                    f"allocation 'uniform' at sparsity {sparsity:.4g} keeps {k} "
                    f"{self.cfg.structure} per layer, but {unit.name} has only {alive} left "
                    "(pruned earlier); removed atoms never regrow: raise the sparsity so every "
                    f"layer keeps at most {alive}"
                )
        return {unit.name: count - k for unit in units}

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
                u.weight,
                group_size=u.group,
                input_hessian=self.cfg.correct,
                output_fisher=self.cfg.score == "heapr",
            )
            for u in units
        }
        current: dict[str, Any] = {}
        handles = []

        def hook(unit: _Unit) -> Callable[..., None]:
            def forward(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
                del module
                _feed(stats[unit.name], args[0], output, current["mask"], need_grads)

            return forward

        for unit in units:
            if unit.linear is not None:
                handles.append(unit.linear.register_forward_hook(hook(unit)))
        experts = self.cfg.structure == "experts"
        wrapped = _wrap_experts(model, stats, current, need_grads) if experts else []
        was_training = model.training
        model.eval()
        start = time.perf_counter()
        try:
            device = next(model.parameters()).device
            for cpu_batch in calib.batches(ctx.round_index):
                batch = {k: v.to(device) for k, v in cpu_batch.items()}
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
            for module in wrapped:
                del module.forward  # back to the class's forward
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
            unused = unit.name in stats and stats[unit.name].num_tokens <= 0
            if unused and score not in ("magnitude", "random"):  # an expert no token reached
                out[unit.name] = torch.zeros(unit.count, dtype=torch.float64)
                continue
            if score == "heapr":
                out[unit.name] = stats[unit.name].saliency("factorised")
            elif score == "heapr-full":
                out[unit.name] = stats[unit.name].saliency("unfactorised")
            elif score == "activation":
                blocks = stats[unit.name].input_blocks()
                out[unit.name] = torch.diagonal(blocks, dim1=-2, dim2=-1).sum(-1)
            elif score == "frequency":
                out[unit.name] = torch.full(
                    (unit.count,), stats[unit.name].num_tokens, dtype=torch.float64
                )
            elif score == "magnitude":
                w = unit.weight.double()
                cols = w.square().sum(0).reshape(unit.count, unit.group).sum(-1)
                rows = sum(
                    m[off : off + unit.count * unit.group]
                    .double()
                    .square()
                    .sum(1)
                    .reshape(unit.count, unit.group)
                    .sum(-1)
                    for m, _, off in unit.rows
                )
                out[unit.name] = (cols * rows).sqrt()
            else:
                out[unit.name] = torch.rand(unit.count, generator=gen, dtype=torch.float64)
        weighted = ("heapr", "heapr-full", "activation")
        if self.cfg.structure == "experts" and self.cfg.weight_by_routing and score in weighted:
            for unit in units:
                out[unit.name] = out[unit.name] * stats[unit.name].num_tokens
        return out

    def score_atoms(self, calibration: Calibration, round_index: int = 0) -> dict[str, Any]:
        """Each layer's (each expert's) atom scores, without pruning (to inspect or compare).

        Args:
            calibration: From :meth:`gradient_sampler`.
            round_index: Seed offset of the calibration batches.

        Returns:
            Unit name (the down / output projection, or ``<experts module>.<e>``) → ``(n,)``
            float64 scores, lowest removed first.
        """
        units = _units(calibration.model, self.cfg.structure)
        ctx = StepContext(sampler=calibration, round_index=round_index)
        stats = self._statistics(units, calibration, ctx) if self._needs_stats(False) else {}
        return self._scores(units, stats)

    def _needs_stats(self, correcting: bool) -> bool:
        """Calibration is needed for every score but the weight-only ones, and to correct."""
        return self.cfg.score not in ("magnitude", "random") or correcting

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
        units = _targeted(_units(calib.model, cfg.structure), params, cfg.structure)
        heads = cfg.structure == "heads"
        alive = {u.name: _alive(u) for u in units}
        uniform = self._uniform_removals(units, sparsity) if cfg.allocation == "uniform" else None
        stats = self._statistics(units, calib, ctx) if self._needs_stats(cfg.correct) else {}
        start = time.perf_counter()
        scores = self._scores(units, stats)
        keep = oc.select_atoms(
            {k: torch.as_tensor(v, dtype=torch.float64).cpu() for k, v in scores.items()},
            None if uniform is not None else sparsity,
            num_remove=uniform,
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
        self.atom_sparsity = cut / total if total else 0.0
        ctx.log(
            f"structured {cfg.structure} ({cfg.score}{' + OBS correction' if cfg.correct else ''})"
            f": {cut} of {total} {cfg.structure} removed (atom fraction {self.atom_sparsity:.4f}; "
            f"weight sparsity over the pruned tensors {masks.sparsity():.4f})"
        )
        self.last_removed = removed

    def _correct(self, unit: _Unit, stats: oc.StructuredStats, gone: torch.Tensor) -> None:
        if stats.num_tokens <= 0:  # an expert no token was routed to: nothing to re-fit
            return
        hessian = stats.input_hessian(bias=unit.bias is not None)
        result = oc.obs_group_correction(
            unit.weight.double(),
            hessian,
            gone.cpu().numpy(),
            group_size=unit.group,
            damp=self.cfg.damp_fraction,
            bias=None if unit.bias is None else unit.bias.double(),
        )
        unit.weight.copy_(torch.as_tensor(result.weight).to(unit.weight.dtype))
        if unit.bias is not None and result.bias is not None:
            unit.bias.copy_(torch.as_tensor(result.bias).to(unit.bias.dtype))


def _alive(unit: _Unit) -> torch.Tensor:
    """Atoms whose output-projection columns are not all zero (earlier steps removed the rest)."""
    return unit.weight.ne(0).any(0).reshape(unit.count, unit.group).any(-1).cpu()


def _zero(unit: _Unit, gone: torch.Tensor) -> None:
    """Zero every weight of the removed atoms: output columns, input rows and their biases."""
    if not len(gone):
        return
    g = unit.group
    cols = (gone[:, None] * g + torch.arange(g)[None, :]).flatten()
    unit.weight[:, cols] = 0
    for weight, bias, offset in unit.rows:
        weight[offset + cols, :] = 0
        if bias is not None:
            bias[offset + cols] = 0


def _feed(
    stats: oc.StructuredStats,
    inputs: torch.Tensor,
    output: torch.Tensor,
    token_weight: torch.Tensor | None,
    need_grads: bool,
) -> None:
    """Feed one layer's (expert's) tokens: ``a`` now, the output gradient when backward runs.

    The inputs and token weights are bound here, at forward time, so the backward hook adds the
    statistics of exactly the batch that produced the gradient.
    """
    a = inputs.detach()
    if not need_grads:
        stats.add(a, token_weight=token_weight)
    elif output.requires_grad:
        output.register_hook(  # type: ignore[no-untyped-call]
            lambda grad: stats.add(a, grad.detach(), token_weight=token_weight)
        )


def _wrap_experts(
    model: torch.nn.Module,
    stats: Mapping[str, oc.StructuredStats],
    current: Mapping[str, Any],
    need_grads: bool,
) -> list[torch.nn.Module]:
    """Wrap each fused-experts forward to feed expert e's stats with its routed tokens only.

    The wrapper computes what transformers' eager experts loop computes (the class's
    ``_apply_gate``, else ``act(gate) * up``; the down projection; the routing weight) and sees
    ``a`` (the down projection's input) and the gradient of the down projection's output before
    the routing weight scales it.
    """
    wrapped = []
    for block in find_experts(model):
        module = block.module

        def forward(
            hidden: torch.Tensor,
            top_k_index: torch.Tensor,
            top_k_weights: torch.Tensor,
            _m: Any = module,
            _name: str = block.name,
        ) -> torch.Tensor:
            out = torch.zeros_like(hidden)
            mask = current.get("mask")
            weight = None if mask is None else mask.reshape(-1)
            for e in range(int(_m.down_proj.shape[0])):
                token_idx, pos = torch.where(top_k_index == e)
                if token_idx.numel() == 0:
                    continue
                gate_up = torch.nn.functional.linear(hidden[token_idx], _m.gate_up_proj[e])
                if hasattr(_m, "_apply_gate"):  # transformers' own gating of this class
                    a = _m._apply_gate(gate_up)
                else:
                    gate, up = gate_up.chunk(2, dim=-1)
                    a = _m.act_fn(gate) * up
                y = torch.nn.functional.linear(a, _m.down_proj[e])
                tw = None if weight is None else weight[token_idx]
                _feed(stats[f"{_name}.{e}"], a, y, tw, need_grads)
                out.index_add_(
                    0, token_idx, (y * top_k_weights[token_idx, pos, None]).to(out.dtype)
                )
            return out

        module.forward = forward
        wrapped.append(module)
    return wrapped


def _keep_masks(
    params: Mapping[str, torch.nn.Parameter], masks: MaskState
) -> dict[str, torch.Tensor]:
    """The target tensors' new keep-masks: their non-zeros, within their current masks."""
    current = masks.as_dict()
    return {name: current[name] & p.detach().ne(0).flatten().cpu() for name, p in params.items()}
