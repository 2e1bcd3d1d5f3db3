"""The Optimal BERT Surgeon pruning step (Kurtic et al. 2022, Sec. 3), memory-planned and sharded.

One step, for target sparsity s:

1. Plan memory (:func:`~obert_train.plan_memory`) over the tensors this rank owns.
2. Per group: stream m masked loss gradients into ``obert_core.BlockFisherBuilder`` (one per
   tensor) to get the blocked inverse Fisher ``F^-1``; score every weight (or group of 4) with
   ``obert_core.obs_saliency``.
3. Choose masks.  Local choices (``scope="layer"`` or N:M) are made per tensor right away;
   global masks need every score: scores are gathered on all ranks, ``select_mask`` picks
   exactly ``round(s N)`` zeros, and, if the Fisher did not fit at once, a second pass rebuilds
   each group's inverse (same gradient batches, same result).
4. Compute the OBS update ``obert_core.obs_update`` (``joint`` or ``superpose``) of each tensor
   into a separate copy; only after the last pass are the copies written into the model and
   broadcast from their owners.  So every gradient of the step (all passes, all ranks) is taken
   at the same starting weights and the result does not depend on the memory budget.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import ClassVar

import torch

import obert_core as oc
from obert_train._config import OneShotConfig
from obert_train._distributed import shard_by_size
from obert_train._memory import MemoryPlan, gram_precision, plan_memory
from obert_train._methods import PruningMethod, StepContext, select_masks

__all__ = [
    "ObertPruning",
    "apply_obs_update",
    "build_inverse_fishers",
    "obert_scores",
    "obs_updated",
]


@contextmanager
def _timed(ctx: StepContext, key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        ctx.add_time(key, time.perf_counter() - start)


def build_inverse_fishers(
    params: Mapping[str, torch.nn.Parameter],
    names: Sequence[str],
    masks: Mapping[str, torch.Tensor] | None,
    ctx: StepContext,
    owners: Mapping[str, int] | None = None,
    *,
    chunk_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Blocked inverse Fisher of each tensor in ``names`` owned by this rank.

    Gradients are differentiated for all ``names`` (every rank takes part) and each one is
    reduced to its owner, which streams it into its ``BlockFisherBuilder``.

    Args:
        params: All target tensors by name.
        names: The tensors of this pass (gradients are taken for these only).
        masks: Flat keep-masks multiplied into the gradients (None: no masking).
        ctx: Step context (config, sampler, process group, timings).
        owners: ``{name: rank}``; None builds every tensor on this rank.
        chunk_size: Gradients per chunk (default ``ctx.config.chunk_size``).

    Returns:
        ``{name: (ceil(d/B), B, B) float32 tensor}`` for this rank's tensors.

    Raises:
        ValueError: If ``ctx`` has no gradient sampler.
    """
    if ctx.sampler is None:
        raise ValueError("oBERT needs a GradientSampler (StepContext.sampler) for the Fisher")
    cfg = ctx.config
    mine = [n for n in names if owners is None or owners[n] == ctx.dist.rank]
    builders = {
        n: oc.BlockFisherBuilder(
            num_weights=params[n].numel(),
            block_size=cfg.block_size,
            damp=cfg.damp,
            num_grads=cfg.num_grads,
            method=cfg.fisher_method,
            dtype=torch.float32,
            gram_precision=gram_precision(cfg.num_grads, cfg.block_size),
        )
        for n in mine
    }
    subset = {n: params[n] for n in names}
    sub_masks = {n: masks[n] for n in names} if masks is not None else None
    chunks = ctx.sampler.chunks(
        subset,
        masks=sub_masks,
        owners=owners,
        chunk_size=chunk_size or cfg.chunk_size,
        round_seed=ctx.round_index,
        desc=f"gradients ({len(names)} tensors)",
    )
    start = time.perf_counter()
    fisher_s = 0.0
    for chunk in chunks:
        t0 = time.perf_counter()
        for name, grads in chunk.items():
            builders[name].add(grads)
        fisher_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    finvs = {name: builder.finalize() for name, builder in builders.items()}
    fisher_s += time.perf_counter() - t0
    ctx.add_time("fisher_s", fisher_s)
    ctx.add_time("gradients_s", time.perf_counter() - start - fisher_s)
    return finvs


def obert_scores(
    params: Mapping[str, torch.nn.Parameter],
    finvs: Mapping[str, torch.Tensor],
    group_size: int,
) -> dict[str, torch.Tensor]:
    """OBS saliency ``rho_Q = 1/2 w_Q^T ([F^-1]_QQ)^-1 w_Q`` per weight or group (Eq. 3 / 4).

    Args:
        params: Tensors by name (read only).
        finvs: ``{name: (ceil(d/B), B, B)}`` inverse-Fisher blocks; only these are scored.
        group_size: 1 (per weight) or 4 (block4: one score per 4 consecutive weights).

    Returns:
        ``{name: flat float32 scores}`` of length ``d / group_size``.
    """
    return {
        name: torch.as_tensor(
            oc.obs_saliency(params[name].detach().reshape(-1).float(), finv, group_size=group_size)
        ).float()  # fp32 halves the resident scores of a large model
        for name, finv in finvs.items()
    }


def _weights_fingerprint(params: Mapping[str, torch.nn.Parameter]) -> str:
    """A cheap digest of the target weights: per tensor its zero count and float64 sum of |w|.

    Pruning (or any update) changes it, so a cache shared by calls that re-prune the same model
    object in place never hands back the Fisher or scores of the earlier weights.
    """
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, p in params.items():
            w = p.detach()
            zeros = int((w == 0).sum())
            total = float(w.abs().sum(dtype=torch.float64))
            digest.update(f"{name}:{tuple(w.shape)}:{zeros}:{total!r};".encode())
    return digest.hexdigest()[:16]


def _cache_keys(cfg: OneShotConfig, params: Mapping[str, torch.nn.Parameter]) -> tuple[str, str]:
    """Keys of the inverse Fishers and of the scores in a ``fisher_cache``.

    They name every setting the cached values depend on and a fingerprint of the starting
    weights, so one cache shared by runs with other Fisher settings (damp, B, m, ...), another
    mask granularity or other weights never returns stale values.
    """
    finv = (
        f"finv|B={cfg.block_size}|damp={cfg.damp!r}|m={cfg.num_grads}|bs={cfg.grad_batch_size}"
        f"|seed={cfg.seed}|{cfg.fisher_method}|targets={cfg.targets}"
        f"|weights={_weights_fingerprint(params)}"
    )
    return finv, f"scores|group={cfg.group_size}|{finv}"


class ObertPruning(PruningMethod):
    """Optimal BERT Surgeon: second-order scores and weight update from the block Fisher."""

    name: ClassVar[str] = "obert"
    needs_gradients: ClassVar[bool] = True

    def _plan(self, params: Mapping[str, torch.nn.Parameter], ctx: StepContext) -> MemoryPlan:
        cfg = ctx.config
        numels = {n: p.numel() for n, p in params.items()}
        owners = shard_by_size(numels, ctx.dist.world_size)
        mine = {n: d for n, d in numels.items() if owners[n] == ctx.dist.rank}
        return plan_memory(
            mine,
            cfg.block_size,
            num_grads=cfg.num_grads,
            chunk_size=cfg.chunk_size,
            budget_bytes=cfg.max_memory,
            fisher_method=cfg.fisher_method,
        )

    def step(
        self,
        params: Mapping[str, torch.nn.Parameter],
        masks: Mapping[str, torch.Tensor],
        sparsity: float,
        ctx: StepContext,
    ) -> dict[str, torch.Tensor]:
        """One oBERT step to ``sparsity`` (see the module docstring for the phases)."""
        cfg = ctx.config
        numels = {n: p.numel() for n, p in params.items()}
        owners = shard_by_size(numels, ctx.dist.world_size)
        plan = self._plan(params, ctx)
        ctx.log(plan.describe())
        passes = _synchronised_passes(plan, owners, params, ctx)
        local = cfg.scope == "layer" or cfg.nm is not None
        keep_all = len(passes) == 1
        new_masks: dict[str, torch.Tensor] = {}
        scores: dict[str, torch.Tensor] = {}
        kept: dict[str, torch.Tensor] = {}
        # Updated tensors wait here until every pass has collected its gradients: writing them
        # into the model earlier would move the point later passes (and other ranks) see.
        updated: dict[str, torch.Tensor] = {}
        cache = ctx.fisher_cache if ctx.round_index == 0 and keep_all else None
        finv_key, score_key = _cache_keys(cfg, params) if cache is not None else ("", "")
        for names in passes:
            if cache is not None and finv_key in cache:
                ctx.log("reusing the cached inverse Fisher of the starting weights")
                finvs = {n: cache[finv_key][n] for n in names if n in cache[finv_key]}
            else:
                finvs = build_inverse_fishers(
                    params, names, masks, ctx, owners, chunk_size=plan.chunk_size
                )
                if cache is not None:
                    cache.setdefault(finv_key, {}).update(finvs)
            if cache is not None and score_key in cache:
                group_scores = {n: cache[score_key][n] for n in finvs}
            else:
                with _timed(ctx, "scores_s"):
                    group_scores = obert_scores(params, finvs, cfg.group_size)
                if cache is not None:
                    cache.setdefault(score_key, {}).update(group_scores)
            if local:
                with _timed(ctx, "masks_s"):
                    chosen = select_masks(
                        group_scores, sparsity, {n: masks[n] for n in group_scores}, cfg
                    )
                new_masks.update(chosen)
                updated.update(_updated(params, finvs, masks, chosen, ctx))
            else:
                scores.update(group_scores)
                if keep_all:
                    kept.update(finvs)
            del finvs
        if not local:
            with _timed(ctx, "masks_s"):
                all_scores = _gather(scores, owners, params, cfg.group_size, ctx)
                new_masks = select_masks(all_scores, sparsity, masks, cfg)
            if keep_all:
                updated.update(_updated(params, kept, masks, new_masks, ctx))
                kept.clear()
            else:
                ctx.log(
                    "global masks chosen; second pass rebuilds each group's Fisher for the update"
                )
                for names in passes:
                    finvs = build_inverse_fishers(
                        params, names, masks, ctx, owners, chunk_size=plan.chunk_size
                    )
                    updated.update(_updated(params, finvs, masks, new_masks, ctx))
                    del finvs
        else:
            new_masks = _gather_masks(new_masks, owners, params, ctx)
        with torch.no_grad():
            for name, tensor in updated.items():
                params[name].copy_(tensor)
        del updated
        with _timed(ctx, "broadcast_s"):
            for name, p in params.items():
                ctx.dist.broadcast(p.data, owners[name])
        return new_masks


def apply_obs_update(
    params: Mapping[str, torch.nn.Parameter],
    finvs: Mapping[str, torch.Tensor],
    old_masks: Mapping[str, torch.Tensor],
    new_masks: Mapping[str, torch.Tensor],
    *,
    group_size: int = 1,
    mode: str = "joint",
) -> None:
    """OBS update of every tensor in ``finvs`` for the weights that go from kept to pruned.

    ``dw = -F^-1 E_Q ([F^-1]_QQ)^-1 w_Q`` (Kurtic et al. 2022, Eq. 2) via
    ``obert_core.obs_update``; pruned weights end exactly 0, already-pruned ones stay 0.

    Args:
        params: Tensors, updated in place.
        finvs: ``{name: (ceil(d/B), B, B)}`` inverse-Fisher blocks (only these are updated).
        old_masks: Flat keep-masks before the step.
        new_masks: Flat keep-masks after the step.
        group_size: 4 for block4 (joint 4x4 solves), else 1.
        mode: ``"joint"`` or ``"superpose"``.
    """
    with torch.no_grad():
        for name, tensor in obs_updated(
            params, finvs, old_masks, new_masks, group_size=group_size, mode=mode
        ).items():
            params[name].copy_(tensor)


def obs_updated(
    params: Mapping[str, torch.nn.Parameter],
    finvs: Mapping[str, torch.Tensor],
    old_masks: Mapping[str, torch.Tensor],
    new_masks: Mapping[str, torch.Tensor],
    *,
    group_size: int = 1,
    mode: str = "joint",
) -> dict[str, torch.Tensor]:
    """The OBS-updated copies of the tensors in ``finvs``; ``params`` is left untouched.

    Same update as :func:`apply_obs_update`, returned instead of written, so that a step made of
    several passes can take all its gradients at the starting weights.

    Args:
        params: Current tensors (read only).
        finvs: ``{name: (ceil(d/B), B, B)}`` inverse-Fisher blocks (only these are updated).
        old_masks: Flat keep-masks before the step.
        new_masks: Flat keep-masks after the step.
        group_size: 4 for block4 (joint 4x4 solves), else 1.
        mode: ``"joint"`` or ``"superpose"``.

    Returns:
        ``{name: updated tensor}`` with each parameter's shape and dtype.
    """
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, finv in finvs.items():
            p = params[name]
            prune = old_masks[name] & ~new_masks[name]
            w = p.detach().reshape(-1).float()
            new = torch.as_tensor(oc.obs_update(w, finv, prune, group_size=group_size, mode=mode))
            new = new * new_masks[name].to(new.dtype)
            out[name] = new.reshape(p.shape).to(p.dtype)
    return out


def _updated(
    params: Mapping[str, torch.nn.Parameter],
    finvs: Mapping[str, torch.Tensor],
    old: Mapping[str, torch.Tensor],
    new: Mapping[str, torch.Tensor],
    ctx: StepContext,
) -> dict[str, torch.Tensor]:
    with _timed(ctx, "update_s"):
        return obs_updated(
            params, finvs, old, new, group_size=ctx.config.group_size, mode=ctx.config.mode
        )


def _synchronised_passes(
    plan: MemoryPlan,
    owners: Mapping[str, int],
    params: Mapping[str, torch.nn.Parameter],
    ctx: StepContext,
) -> list[list[str]]:
    """Group lists every rank agrees on: pass i = union over ranks of their i-th group.

    Each rank plans only its own tensors; the number of passes is the maximum over ranks and
    every rank must differentiate the same tensors in the same pass, so group membership is
    exchanged as a tensor of group indices.
    """
    names = list(params)
    index = {n: i for i, n in enumerate(names)}
    device = next(iter(params.values())).device
    group_of = torch.full((len(names),), -1, dtype=torch.int64, device=device)
    for g, group in enumerate(plan.groups):
        for name in group:
            if name in index and owners[name] == ctx.dist.rank:
                group_of[index[name]] = g
    if ctx.dist.active:
        # Each rank fills only its own entries; the others stay -1, so a max-reduction merges.
        torch.distributed.all_reduce(group_of, op=torch.distributed.ReduceOp.MAX)
    num_passes = int(group_of.max()) + 1
    passes = [[n for n in names if int(group_of[index[n]]) == g] for g in range(num_passes)]
    return [p for p in passes if p]


def _gather(
    scores: Mapping[str, torch.Tensor],
    owners: Mapping[str, int],
    params: Mapping[str, torch.nn.Parameter],
    group_size: int,
    ctx: StepContext,
) -> dict[str, torch.Tensor]:
    """Every rank gets every tensor's scores (broadcast from the owner)."""
    if not ctx.dist.active:
        return dict(scores)
    out: dict[str, torch.Tensor] = {}
    for name, p in params.items():
        buf = (
            scores[name].float().contiguous().to(p.device)
            if owners[name] == ctx.dist.rank
            else torch.empty(p.numel() // group_size, dtype=torch.float32, device=p.device)
        )
        out[name] = ctx.dist.broadcast(buf, owners[name])
    return out


def _gather_masks(
    masks: Mapping[str, torch.Tensor],
    owners: Mapping[str, int],
    params: Mapping[str, torch.nn.Parameter],
    ctx: StepContext,
) -> dict[str, torch.Tensor]:
    """Every rank gets every tensor's new mask (broadcast from the owner)."""
    if not ctx.dist.active:
        return dict(masks)
    out: dict[str, torch.Tensor] = {}
    for name, p in params.items():
        buf = (
            masks[name].to(torch.uint8)
            if owners[name] == ctx.dist.rank
            else torch.empty(p.numel(), dtype=torch.uint8, device=p.device)
        )
        out[name] = ctx.dist.broadcast(buf, owners[name]).bool()
    return out
