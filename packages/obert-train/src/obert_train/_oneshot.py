"""One-shot pruning of a model to a target sparsity, in one or several recomputation steps."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

import obert_core as oc
from obert_train._config import OneShotConfig
from obert_train._distributed import DistContext
from obert_train._grads import GradientSampler, LossFn
from obert_train._methods import MagnitudePruning, PruningMethod, StepContext, logger
from obert_train._obert import ObertPruning
from obert_train._params import TargetError, resolve_target_params

__all__ = ["METHODS", "PruneResult", "current_masks", "oneshot_prune", "register_method"]

METHODS: dict[str, Callable[[], PruningMethod]] = {
    "magnitude": MagnitudePruning,
    "obert": ObertPruning,
}
"""Pruning methods by name (``OneShotConfig.method``)."""


def register_method(name: str, factory: Callable[[], PruningMethod]) -> None:
    """Register a pruning method under ``name`` (e.g. a movement-pruning implementation).

    Args:
        name: The ``OneShotConfig.method`` value that selects it.
        factory: Builds a fresh :class:`PruningMethod` for each :func:`oneshot_prune` call.

    Raises:
        ValueError: If ``name`` is taken.
    """
    if name in METHODS:
        raise ValueError(f"pruning method {name!r} is already registered")
    METHODS[name] = factory


@dataclass(frozen=True)
class PruneResult:
    """Outcome of :func:`oneshot_prune`.

    Attributes:
        config: The settings used.
        step_sparsities: Target sparsity of each recomputation sub-step.
        sparsity: Achieved fraction of zeros over all target tensors.
        tensor_sparsity: Achieved sparsity per tensor.
        masks: Final flat keep-masks (True = kept).
        timings: Seconds per phase (``gradients_s``, ``fisher_s``, ``scores_s``, ``masks_s``,
            ``update_s``, ``total_s``).
        log: Lines printed during the run (memory plans).
    """

    config: OneShotConfig
    step_sparsities: list[float]
    sparsity: float
    tensor_sparsity: dict[str, float]
    masks: dict[str, torch.Tensor] = field(repr=False)
    timings: dict[str, float]
    log: list[str]


def current_masks(params: Mapping[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """Flat keep-masks of the present model: a weight is pruned iff it is exactly zero."""
    return {name: (p.detach() != 0).reshape(-1) for name, p in params.items()}


def _check_shapes(params: Mapping[str, torch.nn.Parameter], config: OneShotConfig) -> None:
    for name, p in params.items():
        d = p.numel()
        if d % config.group_size:
            raise TargetError(
                f"tensor {name!r} has {d} weights, not divisible by the group size "
                f"{config.group_size} of mask_type {config.mask_type!r}"
            )
        nm = config.nm
        if nm is not None and d % nm[1]:
            raise TargetError(
                f"tensor {name!r} has {d} weights, not divisible by M={nm[1]} of mask_type "
                f"{config.mask_type!r}"
            )
        if config.method != "obert":
            continue
        if config.block_size > d:
            raise TargetError(
                f"block_size {config.block_size} exceeds the {d} weights of tensor {name!r}; "
                "use a smaller --block-size"
            )
        if config.mask_type == "block4" and d % config.block_size:
            raise TargetError(
                f"block_size {config.block_size} does not divide the {d} weights of tensor "
                f"{name!r} (block4 needs whole Fisher blocks); pick a divisor such as 32"
            )


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _check_sampler(sampler: GradientSampler, config: OneShotConfig) -> None:
    """The Fisher is normalised by ``config.num_grads``: a sampler must draw exactly that many."""
    if sampler.num_grads != config.num_grads or sampler.batch_size != config.grad_batch_size:
        raise ValueError(
            f"the sampler draws num_grads={sampler.num_grads} gradients of batch_size="
            f"{sampler.batch_size}, but the config says num_grads={config.num_grads}, "
            f"grad_batch_size={config.grad_batch_size}; build the sampler with the config's "
            "values (or set the config to the sampler's)"
        )


def _sparsity(masks: Mapping[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
    per = {n: 1.0 - float(m.float().mean()) for n, m in masks.items()}
    total = sum(m.numel() for m in masks.values())
    zeros = sum(int((~m).sum()) for m in masks.values())
    return zeros / total, per


def oneshot_prune(
    model: torch.nn.Module,
    config: OneShotConfig,
    *,
    task: Any = None,
    sampler: GradientSampler | None = None,
    loss_fn: LossFn | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    dist_ctx: DistContext | None = None,
    fisher_cache: dict[str, dict[str, torch.Tensor]] | None = None,
) -> PruneResult:
    """Prune ``model`` in place to ``config.sparsity``.

    Weights that are already exactly zero count as pruned and stay pruned (so a pruned checkpoint
    can be pruned further).  With ``num_recomputations = k`` the step is split into k sub-steps at
    linearly spaced sparsities, each with fresh gradients and Fisher (Kurtic et al. 2022, Sec. 3.3).

    Args:
        model: The model (any ``torch.nn.Module``; HF models give their loss from labels).
        config: The settings.
        task: Source of training batches (a :class:`~obert_train.Task`) for gradient methods.
        sampler: A ready gradient sampler instead of ``task`` (its ``num_grads`` and
            ``batch_size`` must equal the config's ``num_grads`` and ``grad_batch_size``).
        loss_fn: Custom loss for the sampler built from ``task``.
        progress: Show progress bars.
        log: Receives the memory plan and other progress lines (default: printed to stdout
            on rank 0, nothing on the other ranks).
        dist_ctx: Process group (default: the initialised ``torch.distributed`` group, if any).
        fisher_cache: A dict shared between calls that start from the *same* weights (e.g. one
            checkpoint pruned to several sparsities with one recomputation): the first call
            stores its inverse Fishers and scores there, later calls reuse them instead of
            collecting gradients again.  Entries are keyed by the Fisher settings (B, damp, m,
            sampler batch size, seed, targets) and scores also by the mask granularity, so runs
            with other settings add their own entries.  Used only when the Fisher fits in
            memory at once.

    Returns:
        Achieved sparsity, masks and timings.

    Raises:
        TargetError: If no tensor matches the target patterns or a tensor does not fit the
            mask type / block size.
        ValueError: If the model is already sparser than the target, gradients are needed
            but neither ``task`` nor ``sampler`` is given, or ``sampler``'s ``num_grads`` or
            ``batch_size`` differ from the config's.
        MemoryPlanError: If the Fisher of one tensor cannot fit in memory.
    """
    start = time.perf_counter()
    lines: list[str] = []
    dist = dist_ctx if dist_ctx is not None else DistContext.current()
    sink = log if log is not None else (_print if dist.rank == 0 else logger.debug)

    def emit(line: str) -> None:
        lines.append(line)
        sink(line)

    params = resolve_target_params(model, config.targets)
    _check_shapes(params, config)
    masks = current_masks(params)
    current, per_tensor = _sparsity(masks)
    floor = max(per_tensor.values()) if config.scope == "layer" else current
    if config.sparsity < floor - 1e-9:
        raise ValueError(
            f"target sparsity {config.sparsity} is below the model's current "
            f"{config.scope} sparsity {floor:.4f}; pruned weights never regrow, so use "
            f"--sparsity >= {floor:.4f}"
        )
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; expected one of {sorted(METHODS)}")
    method = METHODS[config.method]()
    if method.needs_gradients and sampler is not None:
        _check_sampler(sampler, config)
    if method.needs_gradients and sampler is None:
        if task is None:
            raise ValueError(f"method {config.method!r} needs gradients: pass task or sampler")
        sampler = GradientSampler.from_task(
            model,
            task,
            batch_size=config.grad_batch_size,
            num_grads=config.num_grads,
            seed=config.seed,
            loss_fn=loss_fn,
            progress=progress,
            dist_ctx=dist,
        )
    steps = [
        float(s)
        for s in oc.recomputation_sparsities(floor, config.sparsity, config.num_recomputations)
    ]
    timings: dict[str, float] = {}
    for index, target in enumerate(steps):
        if target <= _sparsity(masks)[0] and config.scope == "global":
            emit(f"step {index + 1}/{len(steps)}: already at sparsity {target:.4f}, skipped")
            continue
        emit(f"step {index + 1}/{len(steps)}: {config.method} to sparsity {target:.4f}")
        ctx = StepContext(config, sampler, dist, index, timings, emit, fisher_cache)
        masks = method.step(params, masks, target, ctx)
    achieved, per = _sparsity(masks)
    timings["total_s"] = time.perf_counter() - start
    return PruneResult(config, steps, achieved, per, masks, timings, lines)
