"""One-shot pruning: the pruning lifecycle run once, outside a training loop.

``prepare -> prune(sparsity) -> finalize`` of any registered method, with the masks held in one
:class:`~obert_train.MaskState`.  The same methods run during training through
:class:`~obert_train.ObertPruningCallback`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from obert_train._validate import check_bool, check_mapping, check_number
from obert_train.checks import check_finite_weights, check_model_fits_task, check_tokens_known
from obert_train.errors import ArgumentError, DataError, RecipeError
from obert_train.fisher.distributed import DistContext
from obert_train.fisher.sampler import GradientSampler, LossFn
from obert_train.pruning.masks import MaskState
from obert_train.pruning.method import (
    MethodSettings,
    PruningMethod,
    StepContext,
    check_nm_sparsity,
    logger,
)
from obert_train.pruning.registry import create_method
from obert_train.pruning.targets import resolve_target_params

__all__ = ["PruneResult", "oneshot_prune"]


@dataclass(frozen=True)
class PruneResult:
    """Outcome of :func:`oneshot_prune`.

    Attributes:
        method: Registry name of the method.
        settings: The method's validated settings.
        target_sparsity: The requested sparsity.
        sparsity: Achieved fraction of zeros over all target tensors.
        tensor_sparsity: Achieved sparsity per tensor.
        masks: Final flat keep-masks (True = kept).
        timings: Seconds per phase (``gradients_s``, ``fisher_s``, ``scores_s``, ``masks_s``,
            ``update_s``, ``total_s``).
        log: Lines printed during the run (memory plans).
        atom_sparsity: Structured pruning: the fraction of atoms (neurons, heads) removed, the
            unit of ``target_sparsity``; ``sparsity`` is then the weight sparsity over the
            pruned tensors.  ``None`` for unstructured methods.
        diagnostics: What the method recorded about the step (oBERT with ``diagnostics: true``:
            ``predicted_increase`` = ``½ δwᵀF̂δw`` summed over the tensors, and the squared norms
            ``update_sq`` of the kept weights' change, ``kept_sq`` and ``removed_sq``).
    """

    method: str
    settings: MethodSettings
    target_sparsity: float
    sparsity: float
    tensor_sparsity: dict[str, float]
    masks: dict[str, torch.Tensor] = field(repr=False)
    timings: dict[str, float]
    log: list[str]
    atom_sparsity: float | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _check_sampler(sampler: GradientSampler, settings: MethodSettings) -> None:
    """The Fisher is normalised by ``num_grads``: a sampler must draw exactly that many."""
    num_grads = getattr(settings, "num_grads", sampler.num_grads)
    batch = getattr(settings, "grad_batch_size", sampler.batch_size)
    if sampler.num_grads != num_grads or sampler.batch_size != batch:
        raise RecipeError(
            f"the sampler draws num_grads={sampler.num_grads} gradients of batch_size="
            f"{sampler.batch_size}, but the settings say num_grads={num_grads}, "
            f"grad_batch_size={batch}; build the sampler with the settings' values"
        )


def make_sampler(
    model: torch.nn.Module,
    method: PruningMethod,
    *,
    task: Any = None,
    sampler: GradientSampler | None = None,
    loss_fn: LossFn | None = None,
    progress: bool = True,
    dist_ctx: DistContext | None = None,
) -> GradientSampler | None:
    """The gradient sampler a method needs (None for methods without gradients).

    Raises:
        DataError: If gradients are needed and neither ``task`` nor ``sampler`` is given.
        RecipeError: If ``sampler`` draws another number or size of batches than the settings say.
    """
    if not method.needs_gradients:
        return None
    if sampler is not None:
        _check_sampler(sampler, method.settings)
        return sampler
    if task is None:
        raise DataError(
            f"method {method.name!r} needs gradients: pass task= or sampler= (its loss defines "
            "the Fisher)"
        )
    return method.gradient_sampler(
        model,
        task.train_features,
        task.collate,
        loss_fn=loss_fn,
        progress=progress,
        dist_ctx=dist_ctx,
    )


def oneshot_prune(
    model: torch.nn.Module,
    method: PruningMethod | str,
    sparsity: float,
    *,
    settings: Mapping[str, Any] | None = None,
    task: Any = None,
    sampler: GradientSampler | None = None,
    loss_fn: LossFn | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    dist_ctx: DistContext | None = None,
    fisher_cache: dict[str, dict[str, torch.Tensor]] | None = None,
) -> PruneResult:
    """Prune ``model`` in place to ``sparsity`` with one run of the pruning lifecycle.

    Weights that are already exactly zero count as pruned and stay pruned (so a pruned checkpoint
    can be pruned further).  oBERT with ``num_recomputations = k`` splits the step into k
    sub-steps at linearly spaced sparsities, each with fresh gradients and Fisher (Kurtic et al.
    2022, Sec. 3.3).

    Args:
        model: The model (any ``torch.nn.Module``; HF models give their loss from labels).
        method: A method instance, or a registered name (``"obert"``, ``"magnitude"``, ...).
        sparsity: Target fraction of zeros over the target tensors, in [0, 1).
        settings: Settings of the method named by ``method`` (validated by its ``Settings``).
        task: Source of training batches (a :class:`~obert_train.Task`) for gradient methods.
        sampler: A ready gradient sampler instead of ``task`` (its ``num_grads`` and
            ``batch_size`` must equal the settings' ``num_grads`` and ``grad_batch_size``).
        loss_fn: Custom loss for the sampler built from ``task``.
        progress: Show progress bars.
        log: Receives the memory plan and other progress lines (default: printed to stdout
            on rank 0, nothing on the other ranks).
        dist_ctx: Process group (default: the initialised ``torch.distributed`` group, if any).
        fisher_cache: A dict shared between calls that start from the *same* weights (e.g. one
            checkpoint pruned to several sparsities with one recomputation): the first call
            stores its inverse Fishers and scores there, later calls reuse them.  Entries are
            keyed by every Fisher setting, the mask granularity and a fingerprint of the weights.

    Returns:
        Achieved sparsity, masks and timings.

    Raises:
        RecipeError: If the method is unknown or a setting invalid.
        TargetError: If no tensor matches the target patterns or a tensor does not fit the
            mask type / block size.
        RecipeError: If ``sparsity`` is outside [0, 1) or below the model's current sparsity.
        DataError: If gradients are needed but neither ``task`` nor ``sampler`` is given.
        ModelError: If the model has non-finite weights or the task's sequences do not fit it.
        MemoryPlanError: If the Fisher of one tensor cannot fit in memory.
    """
    start = time.perf_counter()
    if not isinstance(method, str | PruningMethod):
        raise ArgumentError(
            f"oneshot_prune: method={method!r} must be a method name such as 'obert' or a "
            f"PruningMethod, got {type(method).__name__}"
        )
    check_number(sparsity, "sparsity", "oneshot_prune", "a number in [0, 1)")
    check_mapping(settings, "settings", "oneshot_prune")
    check_bool(progress, "progress", "oneshot_prune")
    check_mapping(fisher_cache, "fisher_cache", "oneshot_prune")
    if isinstance(method, str):
        method = create_method(method, **dict(settings or {}))
    elif settings:
        raise ArgumentError(
            "settings apply to a method given by name; pass the instance's settings"
        )
    if not 0.0 <= sparsity < 1.0:
        raise RecipeError(f"sparsity {sparsity!r} is outside [0, 1); use e.g. 0.9")
    lines: list[str] = []
    dist = dist_ctx if dist_ctx is not None else DistContext.current()
    sink = log if log is not None else (_print if dist.rank == 0 else logger.debug)

    def emit(line: str) -> None:
        lines.append(line)
        sink(line)

    check_finite_weights(model)
    if task is not None:
        check_model_fits_task(model, task)
        check_tokens_known(task)
    cfg = method.settings
    params = resolve_target_params(model, cfg.targets)
    masks = MaskState(params)
    floor = method.current_sparsity(masks)
    if sparsity < floor - 1e-9:
        raise RecipeError(
            f"target sparsity {sparsity} is below the model's current {cfg.scope} sparsity "
            f"{floor:.4f}; pruned weights never regrow, so use a sparsity >= {floor:.4f}"
        )
    if not method.schedules_pruning:  # before check: constant masks also refuse a dense model
        raise RecipeError(
            f"method {method.name!r} keeps the masks it starts with and has no pruning step; "
            "prune one-shot with a method that prunes (obert, magnitude, structured)"
        )
    # Shape errors (every method's group / N:M size, oBERT's block size) before gradients are
    # needed; a magnitude or movement step would otherwise fail on a bare reshape.
    method.check(params)
    method.check_model(model, params)
    check_nm_sparsity(cfg, sparsity)
    method.check_sparsity(model, params, sparsity)
    ctx = StepContext(
        sampler=make_sampler(
            model,
            method,
            task=task,
            sampler=sampler,
            loss_fn=loss_fn,
            progress=progress,
            dist_ctx=dist,
        ),
        dist=dist,
        log=emit,
        fisher_cache=fisher_cache,
        progress=progress,
    )
    method.prepare(params, masks, ctx)
    if cfg.global_sparsity and sparsity <= floor:
        emit(f"already at sparsity {floor:.4f}; nothing to prune")
    else:
        emit(f"{method.name} to sparsity {sparsity:.4f}")
        method.prune(params, masks, sparsity, ctx)
    method.finalize(params, masks)
    masks.apply()
    ctx.timings["total_s"] = time.perf_counter() - start
    return PruneResult(
        method=method.name,
        settings=cfg,
        target_sparsity=sparsity,
        sparsity=masks.sparsity(),
        tensor_sparsity=masks.tensor_sparsity(),
        masks=masks.as_dict(),
        timings=dict(ctx.timings),
        log=lines,
        atom_sparsity=getattr(method, "atom_sparsity", None),
        diagnostics=dict(ctx.stats),
    )
