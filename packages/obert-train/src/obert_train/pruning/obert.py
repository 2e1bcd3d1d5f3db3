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
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator

import obert_core as oc
import obert_core.blocks as ob
from obert_train.errors import DataError, TargetError
from obert_train.fisher.distributed import DistContext, shard_by_size
from obert_train.fisher.memory import MemoryPlan, gram_precision, parse_memory, plan_memory
from obert_train.fisher.sampler import GradientSampler, LossFn
from obert_train.pruning.masks import MaskState
from obert_train.pruning.method import MethodSettings, PruningMethod, StepContext, select_masks
from obert_train.pruning.registry import register_method

__all__ = [
    "ObertPruning",
    "ObertSettings",
    "apply_obs_update",
    "build_inverse_fishers",
    "obert_scores",
    "obs_updated",
]


class ObertSettings(MethodSettings):
    """Settings of the oBERT method (names as in SparseML's ``OBSPruningModifier``).

    Attributes:
        num_grads: m, loss gradients per empirical-Fisher estimate.
        grad_batch_size: Examples per gradient (recipes: ``grad_sampler_kwargs.batch_size``;
            the paper uses 8 for SQuAD, 16 for GLUE and MLM).
        fisher_block_size: Fisher block size B (consecutive weights of one flattened tensor).
        damp: Dampening lambda of ``F = lambda I + (1/m) sum g g^T``.
        mode: OBS update when several weights of one Fisher block are pruned: ``"joint"``
            (exact joint solve), ``"superpose"`` (sum of single-weight updates, as SparseML) or
            ``"auto"`` (joint where the block's joint system is well-posed for ``num_grads``
            gradients, superposed elsewhere; ``obert_core.joint_well_posed``; equal to
            ``"joint"`` when ``num_grads >= fisher_block_size``). ``None`` (the default): the
            rule :meth:`update_mode` gives for the step: ``"superpose"`` in a gradual run (a
            step that training follows) and in any step whose Fisher blocks have rank
            ``num_grads < fisher_block_size`` (docs/math.md §1.1: the joint solve then moves the
            kept weights along the ``B − m`` directions no gradient saw, at the curvature ``λ``
            alone), ``"joint"`` in a one-shot step with full-rank blocks (``num_grads >=
            fisher_block_size``) and wherever ``unseen_curvature="mean"`` fills the blocks.
            Measured in docs/results.md, "Few gradients per Fisher block".
        num_recomputations: Sub-steps per pruning step, each with a new Fisher (Sec. 3.3).
        max_memory: Memory budget in bytes for the Fisher work (``"16GB"`` accepted); None = 80 %
            of the available RAM, shared by the ranks of a host.
        chunk_size: Gradients buffered at once per tensor.
        fisher_method: ``"batched"`` (Gram + Cholesky) or ``"streaming"`` (Sherman-Morrison).
        seed: Seed of the gradient batches.
        unseen_curvature: The curvature the Fisher gives the directions of a block that no
            gradient spans when ``num_grads < fisher_block_size``: ``"damp"`` (``λ`` alone, the
            paper's and SparseML's Fisher) or ``"mean"`` (the block's mean curvature, Eq. U of
            docs/math.md §1.1, ``obert_core.fill_unseen_curvature``). No effect when
            ``num_grads >= fisher_block_size``.
        diagnostics: Record, per pruning step, the quadratic model's predicted loss increase
            ``½ δwᵀF̂δw`` and the size of the update (costs about one extra batched solve per
            Fisher block); the step records carry them under ``diagnostics``.
    """

    num_grads: int = Field(default=1024, ge=1)
    grad_batch_size: int = Field(default=16, ge=1)
    fisher_block_size: int = Field(default=50, ge=1)
    damp: float = Field(default=1e-7, gt=0.0)
    mode: Literal["joint", "superpose", "auto"] | None = Field(
        default=None,
        description=(
            "superpose in gradual steps and below full rank (num_grads < "
            "fisher_block_size); joint in one-shot steps at full rank and below full rank "
            "with unseen_curvature 'mean'"
        ),
    )
    num_recomputations: int = Field(default=1, ge=1)
    max_memory: int | None = Field(default=None, ge=1)
    chunk_size: int = Field(default=32, ge=1)
    fisher_method: Literal["batched", "streaming"] = "batched"
    seed: int = 0
    unseen_curvature: Literal["damp", "mean"] = "damp"
    diagnostics: bool = False

    omitted_at_default: ClassVar[tuple[str, ...]] = (
        *MethodSettings.omitted_at_default,
        "unseen_curvature",
        "diagnostics",
    )

    @field_validator("max_memory", mode="before")
    @classmethod
    def _parse_memory(cls, value: Any) -> Any:
        return parse_memory(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_block4(self) -> ObertSettings:
        if self.mask_type == "block4" and self.fisher_block_size % 4:
            raise ValueError(
                f"mask_type 'block4' needs fisher_block_size divisible by 4, got "
                f"{self.fisher_block_size} (the paper uses 32)"
            )
        if (
            self.unseen_curvature == "mean"
            and self.fisher_method == "streaming"
            and self.num_grads < self.fisher_block_size
        ):
            raise ValueError(
                "unseen_curvature 'mean' fills the Gram of the batched build; with "
                f"fisher_method 'streaming' and num_grads {self.num_grads} < fisher_block_size "
                f"{self.fisher_block_size} use fisher_method 'batched' (or unseen_curvature 'damp')"
            )
        if self.allocation_rounds > 1 and self.num_recomputations > 1:
            raise ValueError(
                f"allocation_rounds {self.allocation_rounds} and num_recomputations "
                f"{self.num_recomputations} both split a step into sub-steps with a new Fisher; "
                "set one of them (allocation_rounds for a block allocation)"
            )
        block = self.block
        if block is not None and self.fisher_block_size % block[1]:
            raise ValueError(
                f"mask_type {self.mask_type!r} needs fisher_block_size divisible by the block "
                f"width {block[1]}, got {self.fisher_block_size}; use k x {block[1]} with k >= 2 "
                f"(e.g. {2 * block[1]}) so each removed block is compensated by the rest of its "
                "rows' Fisher blocks"
            )
        return self

    def update_mode(self, *, gradual: bool) -> str:
        """The OBS update rule of a step.

        ``mode`` when given. By default ``"joint"`` where the Fisher blocks have full rank and
        the step is one-shot (``num_grads >= fisher_block_size``), or where
        ``unseen_curvature="mean"`` fills their null space (``num_grads < fisher_block_size``;
        gradual steps too), else ``"superpose"``: the update SparseML ran the paper's recipes
        with, measured ahead of the joint one in gradual runs at m = 32 and 128 (1.04 ± 0.17
        points over three seeds at m = 128, B = 50; a tie at m = 16; docs/results.md), while
        one-shot steps at m ≥ B favoured the joint update.

        Args:
            gradual: Whether training follows the step (a recipe's pruning step, as
                :class:`StepContext` ``.gradual`` says) rather than a one-shot prune.
        """
        if self.mode is not None:
            return self.mode
        if self.unseen_curvature == "mean" and self.num_grads < self.fisher_block_size:
            return "joint"  # Eq. U filled the blocks (at m >= B it fills nothing)
        one_shot_full_rank = not gradual and self.num_grads >= self.fisher_block_size
        return "joint" if one_shot_full_rank else "superpose"

    def resolved_dump(self) -> dict[str, Any]:
        """Every setting, with ``mode`` as a recipe's gradual steps resolve it.

        A recipe that leaves ``mode`` out has the fingerprint of the update its steps run:
        ``mode: superpose``, or ``mode: joint`` with ``unseen_curvature: mean`` and
        ``num_grads < fisher_block_size``.
        """
        out = super().resolved_dump()
        out["mode"] = self.update_mode(gradual=True)
        return out


Fisher = torch.Tensor | oc.FisherBlocks | oc.LowRankFisher
"""What a step keeps per tensor: the inverse blocks, the damped Fisher blocks un-inverted, or
(m < B) the gradients themselves."""


def lowrank_fisher(settings: ObertSettings) -> bool:
    """Whether a step keeps its ``m < B`` gradients as the Fisher (``obert_core.LowRankFisher``).

    True for the batched build with ``num_grads < fisher_block_size`` and no null-space fill:
    every block is then ``λI + GᵀG`` of rank m, and the scores and the joint update need only
    ``m × m`` systems (docs/math.md §2.2), with the explicit inverse's results to round-off.
    """
    return (
        settings.fisher_method == "batched"
        and settings.num_grads < settings.fisher_block_size
        and settings.unseen_curvature == "damp"
    )


class _GradientRows:
    """Collects a tensor's gradients for :class:`obert_core.LowRankFisher` (the builder's API).

    Each chunk is written straight into the operator's ``(ceil(d/B), m, B)`` block layout (one
    strided copy per chunk; no concatenation of the chunks and no second copy into the layout).
    """

    def __init__(self, settings: ObertSettings) -> None:
        self.settings = settings
        self.blocks: torch.Tensor | None = None
        self.rows = 0
        self.num_weights = 0
        self.timings = {"accumulate_s": 0.0, "invert_s": 0.0}

    def add(self, grads: torch.Tensor) -> None:
        t0 = time.perf_counter()
        grads = grads.detach()
        n, d = int(grads.shape[0]), int(grads.shape[1])
        b = self.settings.fisher_block_size
        nb, full = -(-d // b), d // b
        if self.blocks is None:
            self.num_weights = d
            rows = max(self.settings.num_grads, n)
            self.blocks = torch.zeros((nb, rows, b), dtype=torch.float32, device=grads.device)
        elif self.rows + n > self.blocks.shape[1]:  # more rows than m: grow (not in a step)
            more = torch.zeros((nb, self.rows + n - self.blocks.shape[1], b), dtype=torch.float32)
            self.blocks = torch.cat([self.blocks, more.to(self.blocks.device)], dim=1)
        new = slice(self.rows, self.rows + n)
        self.blocks[:full, new] = grads[:, : full * b].reshape(n, full, b).transpose(0, 1)
        if full < nb:
            self.blocks[full, new, : d - full * b] = grads[:, full * b :]
        self.rows += n
        self.timings["accumulate_s"] += time.perf_counter() - t0

    def finalize(self) -> oc.LowRankFisher:
        if self.blocks is None or self.rows == 0:
            raise oc.ObertError("no gradients were added; the sampler yielded none for a tensor.")
        t0 = time.perf_counter()
        cfg = self.settings
        blocks = self.blocks
        if self.rows < blocks.shape[1]:
            blocks = blocks[:, : self.rows].contiguous()
        self.blocks = None
        fisher = oc.LowRankFisher.from_block_rows(
            blocks, self.num_weights, cfg.damp, num_grads=cfg.num_grads
        )
        fisher.diag()  # the scores' diag(F^-1), timed as the inversion
        self.timings["invert_s"] += time.perf_counter() - t0
        return fisher


def factored_fisher(settings: ObertSettings) -> bool:
    """Whether a step keeps the damped Fisher un-inverted (``obert_core.FisherBlocks``).

    True for the batched build with ``num_grads >= fisher_block_size`` (a float32 Gram, as the
    explicit inverse; the scores need only ``diag(F^-1)`` and the joint update one solve with the
    kept weights' ``F_RR``, docs/math.md §2.1).
    """
    return settings.fisher_method == "batched" and settings.num_grads >= settings.fisher_block_size


def overwrite_gram(settings: ObertSettings, *, gradual: bool, cached: bool) -> bool:
    """Whether a step lets ``diag(F^-1)`` keep its factors in the Gram (``overwrite_gram``).

    Then the superposed update solves with them (``B^2`` flops per block, no factorisation;
    docs/math.md §2.1), and nothing may read the Gram afterwards. True for a factored Fisher
    (:func:`factored_fisher`) whose only use after the scores is the superposed update of
    single weights: not for the joint update, ``block4``, ``block_allocation: obs`` (its loss
    curves), ``diagnostics`` (``F u``), nor a Fisher kept in a cache for other steps
    (``cached``).
    """
    return (
        factored_fisher(settings)
        and settings.update_mode(gradual=gradual) == "superpose"
        and settings.group_size == 1
        and settings.block_allocation is None
        and not settings.diagnostics
        and not cached
    )


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
    settings: ObertSettings,
    ctx: StepContext,
    owners: Mapping[str, int] | None = None,
    *,
    chunk_size: int | None = None,
    overlap: bool = True,
    factored: bool = False,
    overwrite: bool = False,
) -> dict[str, Fisher]:
    """Blocked inverse Fisher of each tensor in ``names`` owned by this rank.

    Gradients are differentiated for all ``names`` (every rank takes part) and each one is
    reduced to its owner, which streams it into its ``BlockFisherBuilder``.

    Args:
        params: All target tensors by name.
        names: The tensors of this pass (gradients are taken for these only).
        masks: Flat keep-masks multiplied into the gradients (None: no masking).
        settings: The Fisher settings (B, damp, m, construction, chunk size).
        ctx: Step context (sampler, process group, timings).
        owners: ``{name: rank}``; None builds every tensor on this rank.
        chunk_size: Gradients buffered per tensor (default ``settings.chunk_size``).
        overlap: Accumulate each chunk in a worker thread while the next chunk's gradients are
            computed (two buffers of ``chunk_size // 2`` gradients); False: one buffer, in turn.
        factored: Return ``obert_core.FisherBlocks`` (the damped Fisher un-inverted, with
            ``diag(F^-1)``; ``BlockFisherBuilder.finalize_fisher``) instead of the explicit
            inverse; batched build only (see :func:`factored_fisher`).
        overwrite: With ``factored``: keep ``diag(F^-1)``'s factors in the Gram
            (``finalize_fisher(overwrite_gram=True)``; see :func:`overwrite_gram`).

    Returns:
        ``{name: (ceil(d/B), B, B) float32 tensor}`` (or ``FisherBlocks`` with ``factored``) for
        this rank's tensors.

    Raises:
        DataError: If ``ctx`` has no gradient sampler.
    """
    if ctx.sampler is None:
        raise DataError("oBERT needs a GradientSampler (StepContext.sampler) for the Fisher")
    cfg = settings
    mine = [n for n in names if owners is None or owners[n] == ctx.dist.rank]
    builders: dict[str, Any] = {
        n: _GradientRows(cfg)
        if lowrank_fisher(cfg)
        else oc.BlockFisherBuilder(
            num_weights=params[n].numel(),
            block_size=cfg.fisher_block_size,
            damp=cfg.damp,
            num_grads=cfg.num_grads,
            method=cfg.fisher_method,
            dtype=torch.float32,
            gram_precision=gram_precision(cfg.num_grads, cfg.fisher_block_size),
            fill_unseen=cfg.unseen_curvature == "mean" and cfg.num_grads < cfg.fisher_block_size,
        )
        for n in mine
    }
    subset = {n: params[n] for n in names}
    sub_masks = {n: masks[n] for n in names} if masks is not None else None
    chunk = chunk_size or cfg.chunk_size
    # Overlap: the Gram (or Sherman-Morrison) work of chunk i runs in a worker thread (torch
    # releases the GIL) while the sampler computes the gradients of chunk i + 1 into a second
    # buffer.  Two buffers of half the chunk keep the planned chunk memory.  Chunks are added in
    # order by one worker, so the result is the same as without overlap.  The last chunk goes to
    # the worker tensor by tensor, and each tensor's Fisher is finalised (inverted, or its
    # diag(F^-1) computed) here as soon as its last gradients are in, while the worker adds the
    # next tensor's: only the last tensor's accumulation is not hidden.
    overlap = overlap and chunk >= 2 and bool(builders)
    chunks = ctx.sampler.chunks(
        subset,
        masks=sub_masks,
        owners=owners,
        chunk_size=chunk // 2 if overlap else chunk,
        round_seed=ctx.round_index,
        desc=f"gradients ({len(names)} tensors)",
        buffers=2 if overlap else 1,
    )

    def add(grads: Mapping[str, torch.Tensor]) -> None:
        for name, g in grads.items():
            builders[name].add(g)

    def finalize(name: str) -> Fisher:
        builder = builders[name]
        out: Fisher = (
            builder.finalize_fisher(overwrite_gram=overwrite) if factored else builder.finalize()
        )
        return out

    start = time.perf_counter()
    fisher_s = 0.0  # Fisher time the step waits for (not hidden behind the gradients)
    finvs: dict[str, Fisher] = {}
    if overlap:
        pending: Future[None] | None = None
        tails: dict[str, Future[None]] = {}
        seen = 0
        # leaving the ``with`` (also on an error) waits for the worker
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="obert-gram") as worker:
            for grads in chunks:
                t0 = time.perf_counter()
                if pending is not None:  # chunk i - 1's buffer is refilled next: wait for it
                    pending.result()
                for task in tails.values():  # (a chunk after the last: never from the sampler)
                    task.result()
                fisher_s += time.perf_counter() - t0
                seen += max((g.shape[0] for g in grads.values()), default=0)
                if seen >= cfg.num_grads:  # the last chunk: one task per tensor, in order
                    tails = {
                        name: worker.submit(builders[name].add, g) for name, g in grads.items()
                    }
                    pending = None
                else:
                    pending = worker.submit(add, grads)
            t0 = time.perf_counter()
            if pending is not None:
                pending.result()
            for name in builders:
                if name in tails:
                    tails[name].result()
                finvs[name] = finalize(name)
    else:
        for grads in chunks:
            t0 = time.perf_counter()
            add(grads)
            fisher_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        finvs = {name: finalize(name) for name in builders}
    fisher_s += time.perf_counter() - t0
    ctx.add_time("fisher_s", fisher_s)
    ctx.add_time("gradients_s", time.perf_counter() - start - fisher_s)
    ctx.add_time("gram_s", sum(b.timings["accumulate_s"] for b in builders.values()))
    ctx.add_time("invert_s", sum(b.timings["invert_s"] for b in builders.values()))
    return finvs


def obert_scores(
    params: Mapping[str, torch.nn.Parameter],
    finvs: Mapping[str, Fisher],
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


def _cache_keys(cfg: ObertSettings, params: Mapping[str, torch.nn.Parameter]) -> tuple[str, str]:
    """Keys of the inverse Fishers and of the scores in a ``fisher_cache``.

    They name every setting the cached values depend on and a fingerprint of the starting
    weights, so one cache shared by runs with other Fisher settings (damp, B, m, ...), another
    mask granularity or other weights never returns stale values.
    """
    finv = (
        f"finv|B={cfg.fisher_block_size}|damp={cfg.damp!r}|m={cfg.num_grads}|bs={cfg.grad_batch_size}"
        f"|seed={cfg.seed}|{cfg.fisher_method}|factored={factored_fisher(cfg)}|targets={cfg.targets}"
        f"|unseen={cfg.unseen_curvature}"
        f"|weights={_weights_fingerprint(params)}"
    )
    return finv, f"scores|group={cfg.group_size}|{finv}"


@register_method
class ObertPruning(PruningMethod):
    """Optimal BERT Surgeon: second-order scores and weight update from the block Fisher.

    ``prune`` splits a step into ``num_recomputations`` sub-steps at linearly spaced
    sparsities, each with fresh gradients and a new inverse Fisher (Kurtic et al. 2022, Sec. 3.3);
    ``ctx.round_index`` offsets the gradient batches of each sub-step.
    """

    name: ClassVar[str] = "obert"
    Settings: ClassVar[type[MethodSettings]] = ObertSettings
    allocations: ClassVar[tuple[str, ...]] = ("global", "uniform", "obs")
    recipe_tags: ClassVar[tuple[str, ...]] = ("OBSPruningModifier",)
    needs_gradients: ClassVar[bool] = True
    settings: ObertSettings

    def check(self, params: Mapping[str, torch.nn.Parameter]) -> None:
        """Whole groups, whole Fisher blocks for block4, Fisher blocks inside a row for RxC.

        See :meth:`PruningMethod.check`; for RxC a Fisher block inside one row makes the summed
        row-segment saliencies the exact OBS saliency of a block (docs/math.md §8).

        Raises:
            TargetError: Naming the tensor, its size and the setting to change.
        """
        super().check(params)
        cfg = self.settings
        for name, p in params.items():
            d = p.numel()
            if cfg.fisher_block_size > d:
                raise TargetError(
                    f"fisher_block_size {cfg.fisher_block_size} exceeds the {d} weights of tensor "
                    f"{name!r}; use a smaller fisher_block_size"
                )
            block = cfg.block
            if block is not None and int(p.shape[-1]) % cfg.fisher_block_size:
                raise TargetError(
                    f"fisher_block_size {cfg.fisher_block_size} does not divide the row length "
                    f"{int(p.shape[-1])} of tensor {name!r} (mask_type {cfg.mask_type!r} needs "
                    "each Fisher block inside one row); pick a multiple of "
                    f"{block[1]} that divides {int(p.shape[-1])}"
                )
            if cfg.mask_type == "block4" and d % cfg.fisher_block_size:
                raise TargetError(
                    f"fisher_block_size {cfg.fisher_block_size} does not divide the {d} weights "
                    f"of tensor {name!r} (block4 needs whole Fisher blocks); pick a divisor such "
                    "as 32"
                )

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
        """M gradients of ``grad_batch_size`` examples each, batches seeded by ``seed``."""
        cfg = self.settings
        return GradientSampler(
            model,
            features,
            collate,
            batch_size=cfg.grad_batch_size,
            num_grads=cfg.num_grads,
            seed=cfg.seed,
            loss_fn=loss_fn,
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
        """Prune to ``sparsity`` in sub-steps (fresh Fisher each).

        ``num_recomputations`` linearly spaced sub-steps, or ``allocation_rounds`` rounds of
        iterative allocation spaced by ``allocation_spacing`` (docs/math.md §8, (B-10)).
        """
        cfg = self.settings
        floor = self.current_sparsity(masks)
        rounds = max(cfg.num_recomputations, cfg.allocation_rounds)
        steps = [
            float(s) for s in ob.round_sparsities(floor, sparsity, rounds, cfg.allocation_spacing)
        ]
        for index, target in enumerate(steps):
            if cfg.global_sparsity and target <= self.current_sparsity(masks):
                continue
            if len(steps) > 1:
                ctx.log(f"recomputation {index + 1}/{len(steps)}: to sparsity {target:.4f}")
            with ctx.sub_round(index, rounds):
                masks.update(self._step(params, masks.as_dict(), target, ctx))

    def _plan(self, params: Mapping[str, torch.nn.Parameter], ctx: StepContext) -> MemoryPlan:
        cfg = self.settings
        numels = {n: p.numel() for n, p in params.items()}
        owners = shard_by_size(numels, ctx.dist.world_size)
        mine = {n: d for n, d in numels.items() if owners[n] == ctx.dist.rank}
        return plan_memory(
            mine,
            cfg.fisher_block_size,
            num_grads=cfg.num_grads,
            chunk_size=cfg.chunk_size,
            budget_bytes=cfg.max_memory,
            fisher_method=cfg.fisher_method,
            overwrite_gram=overwrite_gram(cfg, gradual=ctx.gradual, cached=False),
        )

    def _step(
        self,
        params: Mapping[str, torch.nn.Parameter],
        masks: Mapping[str, torch.Tensor],
        sparsity: float,
        ctx: StepContext,
    ) -> dict[str, torch.Tensor]:
        """One oBERT step to ``sparsity`` (see the module docstring for the phases)."""
        cfg = self.settings
        numels = {n: p.numel() for n, p in params.items()}
        owners = shard_by_size(numels, ctx.dist.world_size)
        plan = self._plan(params, ctx)
        ctx.log(plan.describe())
        passes = _synchronised_passes(plan, owners, params, ctx)
        local = (not cfg.global_sparsity or cfg.nm is not None) and cfg.block_allocation is None
        curves: dict[str, Any] | None = {} if cfg.block_allocation == "obs" else None
        keep_all = len(passes) == 1
        new_masks: dict[str, torch.Tensor] = {}
        scores: dict[str, torch.Tensor] = {}
        kept: dict[str, Fisher] = {}
        # Updated tensors wait here until every pass has collected its gradients: writing them
        # into the model earlier would move the point later passes (and other ranks) see.
        updated: dict[str, torch.Tensor] = {}
        cache = ctx.fisher_cache if ctx.round_index == 0 and keep_all else None
        overwrite = overwrite_gram(cfg, gradual=ctx.gradual, cached=cache is not None)
        finv_key, score_key = _cache_keys(cfg, params) if cache is not None else ("", "")
        for names in passes:
            if cache is not None and finv_key in cache:
                ctx.log("reusing the cached inverse Fisher of the starting weights")
                finvs: dict[str, Fisher] = {
                    n: cache[finv_key][n] for n in names if n in cache[finv_key]
                }
            else:
                finvs = build_inverse_fishers(
                    params, names, masks, cfg, ctx, owners, chunk_size=plan.chunk_size,
                    factored=factored_fisher(cfg), overwrite=overwrite,
                )  # fmt: skip
                if cache is not None:  # holds FisherBlocks too (StepContext types it as tensors)
                    cache.setdefault(finv_key, {}).update(finvs)  # type: ignore[arg-type]
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
                        group_scores,
                        sparsity,
                        {n: masks[n] for n in group_scores},
                        cfg,
                        {n: tuple(params[n].shape) for n in group_scores},
                    )
                new_masks.update(chosen)
                updated.update(_updated(params, finvs, masks, chosen, cfg, ctx))
            else:
                scores.update(group_scores)
                if curves is not None:
                    with _timed(ctx, "curves_s"):
                        curves.update(_obs_curves(params, finvs, group_scores, masks, cfg))
                if keep_all:
                    kept.update(finvs)
            del finvs
        if not local:
            with _timed(ctx, "masks_s"):
                all_scores = _gather(scores, owners, params, cfg.group_size, ctx)
                shapes = {n: tuple(p.shape) for n, p in params.items()}
                if curves is not None:
                    curves = _gather_curves(curves, owners, params, ctx, cfg.block)
                new_masks = select_masks(
                    all_scores, sparsity, masks, cfg, shapes, distortion=curves
                )
            if keep_all:
                updated.update(_updated(params, kept, masks, new_masks, cfg, ctx))
                kept.clear()
            else:
                ctx.log(
                    "global masks chosen; second pass rebuilds each group's Fisher for the update"
                )
                for names in passes:
                    finvs = build_inverse_fishers(
                        params, names, masks, cfg, ctx, owners, chunk_size=plan.chunk_size,
                        factored=factored_fisher(cfg), overwrite=overwrite,
                    )  # fmt: skip
                    updated.update(_updated(params, finvs, masks, new_masks, cfg, ctx))
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
    finvs: Mapping[str, Fisher],
    old_masks: Mapping[str, torch.Tensor],
    new_masks: Mapping[str, torch.Tensor],
    *,
    group_size: int = 1,
    mode: str = "joint",
    num_grads: int | None = None,
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
        mode: ``"joint"``, ``"superpose"`` or ``"auto"`` (see ``obert_core.obs_update``).
        num_grads: m behind ``finvs``; required by ``mode="auto"``.
    """
    with torch.no_grad():
        for name, tensor in obs_updated(
            params,
            finvs,
            old_masks,
            new_masks,
            group_size=group_size,
            mode=mode,
            num_grads=num_grads,
        ).items():
            params[name].copy_(tensor)


def obs_updated(
    params: Mapping[str, torch.nn.Parameter],
    finvs: Mapping[str, Fisher],
    old_masks: Mapping[str, torch.Tensor],
    new_masks: Mapping[str, torch.Tensor],
    *,
    group_size: int = 1,
    mode: str = "joint",
    num_grads: int | None = None,
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
        mode: ``"joint"``, ``"superpose"`` or ``"auto"`` (see ``obert_core.obs_update``).
        num_grads: m behind ``finvs``; required by ``mode="auto"``.

    Returns:
        ``{name: updated tensor}`` with each parameter's shape and dtype.
    """
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, finv in finvs.items():
            p = params[name]
            prune = old_masks[name] & ~new_masks[name]
            w = p.detach().reshape(-1).float()
            new = torch.as_tensor(
                oc.obs_update(w, finv, prune, group_size=group_size, mode=mode, num_grads=num_grads)
            )
            new = new * new_masks[name].to(new.dtype)
            out[name] = new.reshape(p.shape).to(p.dtype)
    return out


def _updated(
    params: Mapping[str, torch.nn.Parameter],
    finvs: Mapping[str, Fisher],
    old: Mapping[str, torch.Tensor],
    new: Mapping[str, torch.Tensor],
    settings: ObertSettings,
    ctx: StepContext,
) -> dict[str, torch.Tensor]:
    with _timed(ctx, "update_s"):
        out = obs_updated(
            params,
            finvs,
            old,
            new,
            group_size=settings.group_size,
            mode=settings.update_mode(gradual=ctx.gradual),
            num_grads=settings.num_grads,
        )
    if settings.diagnostics:
        with _timed(ctx, "diagnostics_s"):
            _record_diagnostics(params, finvs, old, new, out, ctx)
    return out


def _record_diagnostics(
    params: Mapping[str, torch.nn.Parameter],
    finvs: Mapping[str, Fisher],
    old: Mapping[str, torch.Tensor],
    new: Mapping[str, torch.Tensor],
    updated: Mapping[str, torch.Tensor],
    ctx: StepContext,
) -> None:
    """Predicted loss increase and update size of one step (``ObertSettings.diagnostics``)."""
    with torch.no_grad():
        for name, finv in finvs.items():
            w = params[name].detach().reshape(-1).double()
            delta = updated[name].reshape(-1).double() - w
            kept = new[name].reshape(-1)
            removed = old[name].reshape(-1) & ~kept
            ctx.add_stat("predicted_increase", oc.obs_quadratic_increase(delta.float(), finv))
            ctx.add_stat("update_sq", float((delta[kept] ** 2).sum()))
            ctx.add_stat("kept_sq", float((w[kept] ** 2).sum()))
            ctx.add_stat("removed_sq", float((w[removed] ** 2).sum()))


def _obs_curves(
    params: Mapping[str, torch.nn.Parameter],
    finvs: Mapping[str, Fisher],
    scores: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    settings: ObertSettings,
) -> dict[str, Any]:
    """The exact OBS loss of each tensor at every block ratio (B-5, ``allocation="obs"``).

    Blocks leave in the order of their summed row-segment saliencies (the order the masks use),
    earlier-pruned blocks first.
    """
    block = settings.block
    assert block is not None
    r, c = block
    out = {}
    for name, finv in finvs.items():
        w = params[name].detach().float()
        rows, cols = w.shape
        order = scores[name].detach().double().reshape(rows // r, r, cols // c).sum(1)
        out[name] = ob.obs_distortion_curve(
            w, finv, block, scores=order.float().to(w.device),
            ratios=ob.count_ratios((rows // r) * (cols // c)),
            current_mask=masks[name].reshape(rows, cols).to(torch.bool), name=name,
        )  # fmt: skip
    return out


def _gather_curves(
    curves: Mapping[str, Any],
    owners: Mapping[str, int],
    params: Mapping[str, torch.nn.Parameter],
    ctx: StepContext,
    block: tuple[int, int] | None,
) -> dict[str, Any]:
    """Every rank gets every tensor's OBS loss curve (broadcast from the owner)."""
    if not ctx.dist.active:
        return dict(curves)
    assert block is not None
    out: dict[str, Any] = {}
    for name, p in params.items():
        size = p.numel() // (block[0] * block[1]) + 1  # one value per 0 … n pruned blocks
        buf = (
            torch.as_tensor(curves[name], dtype=torch.float64, device=p.device)
            if owners[name] == ctx.dist.rank
            else torch.empty(size, dtype=torch.float64, device=p.device)
        )
        out[name] = ctx.dist.broadcast(buf, owners[name]).cpu().numpy()
    return out


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
