"""The pruning lifecycle that one-shot and gradual pruning share, and each method's settings.

A :class:`PruningMethod` goes through the same phases whether it runs once outside a training
loop (:func:`~obert_train.oneshot_prune`) or inside a Hugging Face ``Trainer``
(:class:`~obert_train.ObertPruningCallback`)::

    check(params)                           first: tensors the mask type cannot split refused
    check_model(model, params)              then: a model layout the method cannot prune refused
    check_sparsity(model, params, s)        each scheduled target the model cannot take refused
    gradient_sampler(model, data, ...)      the loss-gradient sampler ``prune`` needs, or None
    prepare(params, masks, ctx)             once, before training or the one-shot step
    after_backward(params, masks)           once per optimizer step, with the accumulated (and
                                            clipped) gradients in ``.grad`` (movement scores)
    prune(params, masks, sparsity, ctx)     at each scheduled step: new masks, weights updated
    masks.apply()                           after every optimizer step (done by the driver)
    finalize(params, masks)                 once, at the end

Masks are keep-masks (True = kept) held in one :class:`~obert_train.MaskState`; a method
changes them only through ``MaskState.update``, which refuses regrowth.

Each method owns its settings: a pydantic model (``Settings``) whose field names follow the
SparseML recipes (``num_grads``, ``damp``, ``fisher_block_size``, ``mask_type``,
``global_sparsity``), with the one copy of every default.  Recipes, the CLI and Python callers
all validate through it.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

import obert_core as oc
import obert_core.blocks as ob
from obert_train.errors import ArgumentError, RecipeError, TargetError
from obert_train.fisher.distributed import DistContext
from obert_train.fisher.sampler import GradientSampler, LossFn
from obert_train.pruning.blocks import (
    allocated_block_masks,
    check_latency_table,
    cost_sparsity,
    load_latency_table,
)

if TYPE_CHECKING:
    from obert_train.pruning.masks import MaskState

__all__ = [
    "MethodSettings",
    "PruningMethod",
    "StepContext",
    "block_shape",
    "check_nm_sparsity",
    "nm_pattern",
    "select_masks",
]

logger = logging.getLogger("obert_train")


def nm_pattern(mask_type: str) -> tuple[int, int] | None:
    """The N:M pattern of a mask type, or None for the other mask types.

    ``"2:4"`` -> ``(2, 4)`` (N of every M consecutive weights kept), parsed by
    :func:`obert_core.parse_nm`; ``"unstructured"``, ``"block4"`` and anything else that is not
    two whole numbers joined by ``:`` -> None.

    Args:
        mask_type: A mask type such as ``"unstructured"``, ``"block4"`` or ``"N:M"``.

    Returns:
        ``(N, M)`` for an ``"N:M"`` type, else None.

    Raises:
        ObertError: For an ``"N:M"`` type without ``0 < N < M`` (obert-core's error).
    """
    head, sep, tail = mask_type.partition(":")
    if not sep or not head.isdigit() or not tail.isdigit():
        return None
    return oc.parse_nm(mask_type)


def block_shape(mask_type: str) -> tuple[int, int] | None:
    """The ``(r, c)`` block of an ``"RxC"`` mask type (``"16x16"`` -> ``(16, 16)``), else None.

    Parsed by :func:`obert_core.blocks.parse_block`; ``"unstructured"``, ``"block4"``, ``"N:M"``
    and anything else that is not two whole numbers joined by ``x`` -> None.

    Raises:
        ObertError: For an ``"RxC"`` type with a side of 0 (obert-core's error).
    """
    head, sep, tail = mask_type.lower().partition("x")
    if not sep or not head.isdigit() or not tail.isdigit():
        return None
    return ob.parse_block(mask_type)


class MethodSettings(BaseModel):
    """Settings every pruning method has.

    Attributes:
        mask_type: ``"unstructured"``, ``"block4"`` (groups of 4 consecutive weights of a row),
            ``"N:M"`` (e.g. ``"2:4"``: N of every M consecutive weights kept, so the
            sparsity is ``1 - N/M``) or ``"RxC"`` (e.g. ``"16x16"``: aligned blocks of R rows
            and C columns of each 2-D weight, LPViT's semi-structured pruning, arXiv 2407.02068;
            written back as ``"16x16"``).
        global_sparsity: One threshold over all target tensors (True, the oBERT recipes) or
            one per tensor (False).
        targets: Regexes (``re.search``) of the tensors to prune; None = the six BERT encoder
            Linear weights per layer.
        allocation: RxC masks: how many blocks each tensor loses at a step to sparsity ``s``
            (:mod:`obert_train.pruning.blocks`, docs/math.md §8): ``"global"`` (the blocks'
            scores alone, as ``global_sparsity`` says), ``"uniform"`` (the fraction ``s`` of
            every tensor's blocks), ``"lpvit"`` (LPViT's equal-slope allocation of its distortion
            curves, method ``lpvit``) or ``"obs"`` (equal slopes of the exact OBS loss curves,
            method ``obert``).  With an allocation, ``s`` is the fraction of the targets' dense
            FLOPs removed (the fraction of their weights), or of their measured latency with
            ``latency_table``.
        latency_table: Path of a JSON latency table (layer shape -> latency per fraction of
            blocks kept; :func:`obert_train.pruning.blocks.load_latency_table`): the allocation's
            budget is then latency instead of FLOPs.  Needs an allocation other than
            ``"global"``; every target shape must be in the table.
        allocation_floor: With allocation ``"lpvit"`` or ``"obs"``: every tensor keeps at
            least this fraction (in [0, 1]) of the blocks the uniform allocation keeps it at the
            same step (docs/math.md §8, (B-9)); e.g. 0.5 at sparsity 0.7 keeps at least 15 % of
            each tensor's blocks.  None: only LPViT's minimum density ``min(0.05, (1 − s)/2)``.
            The per-tensor curves ignore how the removals of earlier layers compound; the floor
            bounds how far the allocation trusts them.
        allocation_rounds: With an allocation other than ``"global"``: reach each pruning step's
            target in this many rounds (docs/math.md §8, (B-10)), each with fresh gradients at
            the current pruned weights, new curves of the additional removals and an allocation
            of that round's cumulative budget (the floor relative to uniform at that budget);
            methods ``obert`` (each round a new Fisher and the OBS update, as
            ``num_recomputations`` sub-steps, which it replaces) and ``lpvit``.  1: one round.
        allocation_spacing: How the rounds split the step: ``"equal"`` (equal steps of the cost
            removed) or ``"geometric"`` (the kept cost falls by the same factor every round:
            larger steps first); only with ``allocation_rounds > 1``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    omitted_at_default: ClassVar[tuple[str, ...]] = (
        "allocation",
        "latency_table",
        "allocation_floor",
        "allocation_rounds",
        "allocation_spacing",
    )
    """Settings added after the recipe fingerprint's format was fixed: a recipe's fingerprint
    includes them only when they differ from their default, so runs started before they existed
    still resume (``RecipePruningModifier.content``)."""

    mask_type: str = "unstructured"
    global_sparsity: bool = True
    targets: list[str] | None = None
    allocation: Literal["global", "uniform", "lpvit", "obs"] = "global"
    latency_table: str | None = None
    allocation_floor: float | None = None
    allocation_rounds: int = 1
    allocation_spacing: Literal["equal", "geometric"] = "equal"

    allocates_blocks: ClassVar[bool] = True
    """Whether ``allocation`` is the RxC block allocation (structured pruning has its own)."""

    @field_validator("mask_type")
    @classmethod
    def _check_mask_type(cls, value: str) -> str:
        if value in ("unstructured", "block4"):
            return value
        try:
            block = block_shape(value)
        except oc.ObertError:
            raise ValueError(f"mask_type {value!r}: need blocks of at least 1x1") from None
        if block is not None:
            return f"{block[0]}x{block[1]}"
        try:
            nm = nm_pattern(value)
        except oc.ObertError:
            raise ValueError(f"mask_type {value!r}: need 1 <= N < M") from None
        if nm is None:
            raise ValueError(
                f"mask_type {value!r} unknown; use 'unstructured', 'block4', 'N:M' like '2:4' "
                "or 'RxC' like '16x16'"
            )
        return value

    @field_validator("allocation_floor")
    @classmethod
    def _check_floor(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(
                f"allocation_floor {value!r} must lie in [0, 1]: the fraction of its uniform "
                "share of blocks every tensor keeps at least (e.g. 0.5; 1 = never below uniform)"
            )
        return value

    @field_validator("allocation_rounds")
    @classmethod
    def _check_rounds(cls, value: int) -> int:
        if value < 1:
            raise ValueError(
                f"allocation_rounds {value!r} must be a whole number >= 1: the rounds a pruning "
                "step's allocation takes (1 = all at once; e.g. 3)"
            )
        return value

    @model_validator(mode="after")
    def _check_allocation(self) -> MethodSettings:
        if self.allocation_rounds > 1 and (
            not self.allocates_blocks or self.allocation == "global"
        ):
            raise ValueError(
                f"allocation_rounds {self.allocation_rounds!r} repeats a per-layer allocation of "
                f"RxC blocks, but allocation is {self.allocation!r}; set allocation to "
                "'uniform', 'lpvit' or 'obs' (or drop allocation_rounds)"
            )
        if self.allocation_spacing != "equal" and self.allocation_rounds == 1:
            raise ValueError(
                f"allocation_spacing {self.allocation_spacing!r} spaces the rounds of a step, but "
                "allocation_rounds is 1; set allocation_rounds to 2 or more (or drop "
                "allocation_spacing)"
            )
        if self.allocation_floor is not None and (
            not self.allocates_blocks or self.allocation not in ("lpvit", "obs")
        ):
            raise ValueError(
                f"allocation_floor {self.allocation_floor!r} bounds a per-layer allocation of "
                f"RxC blocks, but allocation is {self.allocation!r}; set allocation to 'lpvit' "
                "or 'obs' (or drop allocation_floor)"
            )
        if not self.allocates_blocks:
            if self.latency_table is not None:
                raise ValueError(
                    f"latency_table {self.latency_table!r}: this method has no block allocation; "
                    "drop latency_table"
                )
            return self
        if self.allocation != "global" and self.block is None:
            raise ValueError(
                f"allocation {self.allocation!r} spreads RxC blocks over the tensors, but "
                f"mask_type is {self.mask_type!r}; use a block mask type like '16x16' or "
                "allocation 'global'"
            )
        if self.latency_table is not None and self.allocation == "global":
            raise ValueError(
                f"latency_table {self.latency_table!r} budgets an allocation; set allocation to "
                "'uniform', 'lpvit' or 'obs' (or drop latency_table)"
            )
        return self

    def resolved_dump(self) -> dict[str, Any]:
        """Every setting as JSON values, defaults that depend on other settings resolved.

        This is what a recipe's fingerprint and ``recipe show`` record.
        """
        return self.model_dump(mode="json")

    @property
    def block_allocation(self) -> str | None:
        """The RxC allocation other than ``"global"``, else None."""
        if not self.allocates_blocks or self.allocation == "global":
            return None
        return self.allocation

    @property
    def group_size(self) -> int:
        """Consecutive weights scored and pruned together (4 for block4, C for RxC, else 1).

        For RxC a group is one row segment of a block; :func:`select_masks` sums a block's R
        segment scores.
        """
        block = self.block
        if block is not None:
            return block[1]
        return 4 if self.mask_type == "block4" else 1

    @property
    def block(self) -> tuple[int, int] | None:
        """``(R, C)`` for RxC block masks, else None."""
        return block_shape(self.mask_type)

    @property
    def nm(self) -> tuple[int, int] | None:
        """``(N, M)`` for N:M masks, else None."""
        return nm_pattern(self.mask_type)

    @property
    def scope(self) -> str:
        """``"global"`` or ``"layer"`` (the ``obert_core.select_mask`` scope)."""
        return "global" if self.global_sparsity else "layer"


@dataclass
class StepContext:
    """Everything a pruning step may need besides the tensors and masks.

    Attributes:
        sampler: What the method's ``gradient_sampler`` returned: a :class:`GradientSampler`
            (oBERT, movement) or the calibration data of structured pruning.
        dist: Process group (Fisher work is sharded by tensor across ranks).
        round_index: Seed offset of the gradient batches; every pruning step (and every
            recomputation within it) uses its own, so each one sees fresh batches.
        timings: Seconds per phase, accumulated by the method.
        stats: Diagnostic sums a method records about the step (e.g. oBERT's predicted loss
            increase and update size with ``diagnostics: true``).
        log: Receives human-readable progress lines (the memory plan, ...).
        fisher_cache: If given, the first round's inverse Fishers and scores are stored here
            and reused by later steps that start from the same weights (one model pruned to
            several target sparsities in one-recomputation runs).
        progress: Whether methods may show progress bars.
        gradual: Whether training follows the step (a recipe's pruning step in a training
            run) rather than a one-shot prune; oBERT's default update rule depends on it
            (``ObertSettings.update_mode``).
    """

    sampler: Any = None
    dist: DistContext = field(default_factory=DistContext)
    round_index: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    log: Callable[[str], None] = logger.info
    fisher_cache: dict[str, dict[str, torch.Tensor]] | None = None
    progress: bool = True
    gradual: bool = False

    @contextmanager
    def sub_round(self, index: int, count: int) -> Iterator[None]:
        """Run round ``index`` of ``count`` within this step on its own gradient batches.

        ``round_index`` is ``base·count + index`` inside (``base`` the step's own), restored on
        leaving, also on an error (oBERT's recomputations, iterative allocation's rounds).
        """
        base = self.round_index
        self.round_index = base * count + index
        try:
            yield
        finally:
            self.round_index = base

    def add_time(self, key: str, seconds: float) -> None:
        """Accumulate ``seconds`` under ``key``."""
        self.timings[key] = self.timings.get(key, 0.0) + seconds

    def add_stat(self, key: str, value: float) -> None:
        """Accumulate ``value`` under ``key`` in :attr:`stats`."""
        self.stats[key] = self.stats.get(key, 0.0) + value


def check_nm_sparsity(settings: MethodSettings, sparsity: float) -> None:
    """An N:M mask fixes the sparsity at ``1 - N/M``; any other target is refused.

    Raises:
        RecipeError: Naming the mask type, the sparsity it implies and the requested one.
    """
    nm = settings.nm
    if nm is None:
        return
    implied = 1.0 - nm[0] / nm[1]
    if abs(sparsity - implied) > 1e-9:
        raise RecipeError(
            f"mask_type {settings.mask_type!r} keeps {nm[0]} of every {nm[1]} weights, i.e. "
            f"sparsity {implied:.4g}, but a step asks for {sparsity:.4g}; use that sparsity "
            f"(init_sparsity = final_sparsity = {implied:.4g}, or --sparsity {implied:.4g})"
        )


def select_masks(
    scores: Mapping[str, torch.Tensor],
    sparsity: float,
    masks: Mapping[str, torch.Tensor],
    settings: MethodSettings,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    *,
    distortion: Mapping[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """New keep-masks from scores via ``obert_core.select_mask`` (already pruned stay pruned).

    With a block allocation (``settings.allocation`` other than ``"global"``) each tensor's
    fraction of blocks comes from :func:`obert_train.pruning.blocks.allocated_block_masks`
    and ``sparsity`` is the fraction of the dense FLOPs (or latency) removed.

    Args:
        scores: ``{name: flat scores}``, one per weight (or per group of ``group_size``).
        sparsity: Target fraction of zeros (over all tensors, or per tensor without
            ``global_sparsity``; N:M masks ignore it).
        masks: Current flat keep-masks (True = kept).
        settings: Supply the mask type, N:M pattern, group size and scope.
        shapes: ``{name: weight shape}``, needed by RxC block masks: the ``R`` row-segment
            scores of a block (one per ``C`` consecutive weights) are summed into its score,
            which for oBERT's saliencies with Fisher blocks inside a row is the block's exact
            OBS saliency (docs/math.md §8, B-3).
        distortion: ``{name: loss curve at 0 … n pruned blocks}`` (sampled at
            ``obert_core.blocks.count_ratios(n)``), needed by the allocations ``"lpvit"`` and
            ``"obs"``.

    Returns:
        ``{name: flat bool keep-mask}`` for every name in ``scores``.
    """
    block = settings.block
    if block is not None:
        if shapes is None:
            raise ArgumentError("select_masks needs the weight shapes for RxC block masks")
        allocation = settings.block_allocation
        if allocation is not None:
            latency = load_latency_table(settings.latency_table) if settings.latency_table else None
            return allocated_block_masks(
                allocation, scores, sparsity, masks, shapes, block,
                distortion=distortion, latency=latency, floor=settings.allocation_floor,
            )  # fmt: skip
        return _select_block_masks(scores, sparsity, masks, settings, shapes)
    check_nm_sparsity(settings, sparsity)
    chosen = oc.select_mask(
        dict(scores),
        sparsity,
        scope=settings.scope,
        current_masks=dict(masks),
        group_size=settings.group_size,
        nm=settings.nm,
    )
    return {name: torch.as_tensor(chosen[name]).to(torch.bool) for name in scores}


def _select_block_masks(
    scores: Mapping[str, torch.Tensor],
    sparsity: float,
    masks: Mapping[str, torch.Tensor],
    settings: MethodSettings,
    shapes: Mapping[str, tuple[int, ...]],
) -> dict[str, torch.Tensor]:
    """:func:`select_masks` for RxC: rank whole blocks (globally or per tensor), no regrowth.

    A block counts as pruned only when all its weights are; weights pruned earlier inside a kept
    block stay pruned (the new mask is the block mask AND the old one).
    """
    block = settings.block
    assert block is not None
    r, c = block
    size = r * c
    block_scores: dict[str, torch.Tensor] = {}
    current: dict[str, torch.Tensor] = {}
    grids: dict[str, tuple[int, int]] = {}
    for name, sc in scores.items():
        rows, cols = (int(d) for d in shapes[name])
        br, bc = rows // r, cols // c
        grids[name] = (br, bc)
        block_scores[name] = sc.detach().double().reshape(br, r, bc).sum(1).reshape(-1)
        old = masks[name].reshape(br, r, bc, c)
        alive = old.any(3).any(1)  # a block with a kept weight is still a block to rank
        current[name] = alive.reshape(-1).repeat_interleave(size)
    chosen = oc.select_mask(
        block_scores, sparsity, scope=settings.scope, current_masks=current, group_size=size
    )
    out = {}
    for name in scores:
        br, bc = grids[name]
        kept = torch.as_tensor(chosen[name]).reshape(-1, size)[:, 0].reshape(br, bc)
        full = kept.repeat_interleave(r, 0).repeat_interleave(c, 1).reshape(-1)
        out[name] = full.to(masks[name].device) & masks[name].to(torch.bool)
    return out


class PruningMethod(abc.ABC):
    """A pruning method and its lifecycle (see the module docstring).

    Subclasses set ``name`` (the registry key), ``Settings`` (their pydantic settings model),
    ``recipe_tags`` (the recipe modifiers that select them, e.g. ``"OBSPruningModifier"``),
    and implement :meth:`prune`.  Register them with :func:`~obert_train.register_method`.

    Args:
        settings: Validated settings; built from ``**kwargs`` when None.
        **kwargs: Setting values (validated by ``Settings``).
    """

    name: ClassVar[str]
    Settings: ClassVar[type[MethodSettings]] = MethodSettings
    recipe_tags: ClassVar[tuple[str, ...]] = ()
    needs_gradients: ClassVar[bool] = False
    """Whether :meth:`prune` needs ``ctx.sampler`` (loss gradients of the training data)."""
    schedules_pruning: ClassVar[bool] = True
    """False for methods that only keep the masks they start with (sparse transfer)."""
    needs_training: ClassVar[bool] = False
    """True for methods whose scores come from training (movement): no one-shot use."""
    allocations: ClassVar[tuple[str, ...]] = ("global", "uniform")
    """The RxC block allocations (``MethodSettings.allocation``) this method can run."""

    def __init__(self, settings: MethodSettings | None = None, **kwargs: Any) -> None:
        if settings is not None and kwargs:
            raise ArgumentError("pass either settings or keyword settings, not both")
        if settings is None:
            settings = self.Settings(**kwargs)
        elif not isinstance(settings, self.Settings):
            raise ArgumentError(
                f"{type(self).__name__} needs {self.Settings.__name__}, got "
                f"{type(settings).__name__}"
            )
        self.settings = settings
        allocation = settings.block_allocation
        if allocation is not None and allocation not in self.allocations:
            raise RecipeError(
                f"method {self.name!r} cannot run allocation {allocation!r}; it runs "
                f"{list(self.allocations)} (allocation 'obs' needs method 'obert', 'lpvit' "
                "method 'lpvit')"
            )

    def check(self, params: Mapping[str, torch.nn.Parameter]) -> None:
        """Refuse tensors the mask type cannot split; drivers call it before anything else.

        Every tensor must hold whole groups (4 for block4) and whole N:M runs of M, and for RxC
        be 2-D with R dividing its rows and C its columns; methods with further needs (oBERT:
        whole Fisher blocks) extend it.

        Raises:
            TargetError: Naming the tensor, its size and the setting to change.
        """
        cfg = self.settings
        block = cfg.block
        if cfg.block_allocation is not None and cfg.latency_table is not None:
            check_latency_table(cfg.latency_table, {n: tuple(p.shape) for n, p in params.items()})
        for name, p in params.items():
            if block is not None:
                try:
                    ob.block_grid(tuple(p.shape), block, name=name)
                except oc.ObertError as exc:
                    raise TargetError(f"mask_type {cfg.mask_type!r}: {exc}") from None
                continue
            d = p.numel()
            if d % cfg.group_size:
                raise TargetError(
                    f"tensor {name!r} has {d} weights, not divisible by the group size "
                    f"{cfg.group_size} of mask_type {cfg.mask_type!r}"
                )
            nm = cfg.nm
            if nm is not None and d % nm[1]:
                raise TargetError(
                    f"tensor {name!r} has {d} weights, not divisible by M={nm[1]} of mask_type "
                    f"{cfg.mask_type!r}"
                )

    def check_model(self, model: torch.nn.Module, params: Mapping[str, torch.nn.Parameter]) -> None:
        """Refuse a model this method cannot prune (e.g. an unknown layout), before any work.

        Drivers call it right after :meth:`check` (default: nothing to check).

        Raises:
            TargetError: Naming what the method expected.
        """
        del model, params

    def check_sparsity(
        self, model: torch.nn.Module, params: Mapping[str, torch.nn.Parameter], sparsity: float
    ) -> None:
        """Refuse a step to ``sparsity`` this model cannot take, before any work (default: none).

        Drivers call it for every scheduled target after :meth:`check_model` (structured
        pruning with ``allocation="uniform"``: a target that would empty every layer).

        Raises:
            TargetError: Naming the target and the largest one that works.
        """
        del model, params, sparsity

    def gradient_sampler(
        self,
        model: torch.nn.Module,
        features: Sequence[Any],
        collate: Callable[[Sequence[Any]], dict[str, torch.Tensor]],
        *,
        loss_fn: LossFn | None = None,
        progress: bool = True,
        dist_ctx: DistContext | None = None,
    ) -> GradientSampler | None:
        """The sampler of the loss gradients ``prune`` needs (None: this method needs none).

        Methods with ``needs_gradients`` build it from their settings.
        """
        del model, features, collate, loss_fn, progress, dist_ctx
        return None

    def prepare(
        self,
        params: Mapping[str, torch.nn.Parameter],
        masks: MaskState,
        ctx: StepContext,
    ) -> None:
        """Called once before training or the one-shot step (checks shapes, allocates state).

        Args:
            params: The target tensors.
            masks: Their keep-masks.
            ctx: Step context.
        """
        del params, masks, ctx

    def current_sparsity(self, masks: MaskState) -> float:
        """The sparsity already reached, in this method's units (drivers refuse lower targets).

        Default: the fraction of zeros over the target tensors (global, or the largest per
        tensor without ``global_sparsity``); with a block allocation, the fraction of the dense
        FLOPs (or latency) the masks remove (:func:`obert_train.pruning.blocks.cost_sparsity`).
        """
        cfg = self.settings
        block = cfg.block
        if cfg.block_allocation is not None and block is not None:
            self.check(masks.params)  # whole blocks, a latency table that covers every shape
            shapes = {n: tuple(p.shape) for n, p in masks.params.items()}
            latency = check_latency_table(cfg.latency_table, shapes) if cfg.latency_table else None
            return cost_sparsity(masks.as_dict(), shapes, block, latency)
        return masks.sparsity() if self.settings.global_sparsity else masks.max_tensor_sparsity()

    def after_backward(self, params: Mapping[str, torch.nn.Parameter], masks: MaskState) -> None:
        """Called at every optimizer step with the accumulated, clipped ``.grad`` (no-op here)."""
        del params, masks

    @abc.abstractmethod
    def prune(
        self,
        params: Mapping[str, torch.nn.Parameter],
        masks: MaskState,
        sparsity: float,
        ctx: StepContext,
    ) -> None:
        """Prune to ``sparsity``: choose new masks (``masks.update``) and update the weights.

        Args:
            params: Target tensors, updated in place (pruned weights end exactly 0).
            masks: Current keep-masks; weights already pruned stay pruned.
            sparsity: Target fraction of zeros (global, or per tensor).
            ctx: Gradient sampler, process group, timings.
        """

    def finalize(self, params: Mapping[str, torch.nn.Parameter], masks: MaskState) -> None:
        """Called once at the end (default: nothing; the driver applies the masks)."""
        del params, masks

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint for resuming (default: none)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (default: nothing to restore)."""
        del state
