"""Gradient sampler: the m mini-batch loss gradients that define the empirical Fisher.

Following the oBERT reference implementation (Kurtic et al. 2022, Sec. 3; SparseML ``GradSampler``):
each of the m "gradients" is the gradient of the model's own task loss (hard labels) on one
mini-batch, computed with the model in eval mode (dropout off) and multiplied by the current
mask, so pruned coordinates carry no Fisher mass.  Gradients are taken with
``torch.autograd.grad``, so neither ``.grad`` fields nor optimizer state are touched.

Every global mini-batch is collated under a seed derived from (sampler seed, round, gradient
index) with torch's global RNG forked, so random collates (MLM masking) give the same batch in
every pass of a grouped step and on every rank.  Under ``torch.distributed`` each rank collates
the whole global batch and keeps its equal contiguous shard of the rows; the shard gradients are
combined with weights = number of loss terms in each shard (rows, or labelled tokens for MLM), so
the result equals the single-process gradient on the global batch.

In one process the mini-batches of a chunk may instead go through the model together, several
per forward/backward pass, with each one's weight gradients formed from the target Linears'
inputs and output gradients (``grad_batching``; ``obert_train.fisher.group_grads``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from obert_train.errors import DataError, OptionError
from obert_train.fisher.distributed import DistContext
from obert_train.fisher.group_grads import (
    SavedBytes,
    UngroupedError,
    example_length,
    linear_modules,
    packed_group_grads,
)
from obert_train.fisher.memory import grad_batching_bytes, parse_memory

__all__ = ["GRAD_BATCHING", "GradientSampler", "LossFn", "to_device"]

GRAD_BATCHING = ("auto", "batched", "sequential")
"""Ways to take the m gradients: one pass per group, several groups per pass, or pick."""

_CHECK_RTOL = 1e-4  # batched vs sequential, max |difference| / max |gradient|
_ACTIVATION_MARGIN = 1.5  # the dY being consumed, allocator caching, the padded batch itself
_SPAN_LABELS = ("start_positions", "end_positions")  # QA: softmax over all positions
_PASS_POSITIONS = 512  # examples x padded length per batched pass (experiments/grad_groups.py)

LossFn = Callable[[torch.nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]
"""``loss_fn(model, batch) -> scalar loss``; default ``model(**batch).loss``."""


def _hf_loss(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    out = model(**batch)
    loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
    if loss is None:
        raise DataError(
            f"{type(model).__name__} returned no loss; the batches need labels "
            f"(keys given: {sorted(batch)}) or pass loss_fn"
        )
    return loss  # type: ignore[no-any-return]


def to_device(
    batch: Mapping[str, torch.Tensor], device: torch.device | str
) -> dict[str, torch.Tensor]:
    """The batch with every tensor moved to ``device``."""
    return {k: v.to(device) for k, v in batch.items()}


def _rows(batch: Mapping[str, torch.Tensor]) -> int:
    """Number of examples (rows) of a batch."""
    return int(next(iter(batch.values())).shape[0])


def _tokens(batch: Mapping[str, torch.Tensor]) -> int:
    """Real (unpadded) positions of a batch: its attention mask's ones, else rows x length."""
    mask = batch.get("attention_mask")
    if mask is not None and mask.ndim == 2:
        return int(mask.sum())
    return _rows(batch) * example_length(batch)


def _loss_weight(batch: Mapping[str, torch.Tensor]) -> int:
    """Number of terms the batch loss averages over: labelled tokens for token-level labels."""
    labels = batch.get("labels")
    if labels is not None and labels.ndim >= 2:
        return int((labels != -100).sum())
    first = next(iter(batch.values()))
    return int(first.shape[0])


class GradientSampler:
    """Draws m mini-batch gradients of the task loss for chosen parameters.

    Args:
        model: The model; put in eval mode while sampling and restored afterwards.
        features: Training examples (any sequence ``collate`` understands).
        collate: Turns a list of examples into a batch of tensors with labels.
        batch_size: Global mini-batch size per gradient (the paper uses 8 for SQuAD, 16 for
            GLUE/MLM).  Under distribution it must be divisible by the world size.
        num_grads: m, the number of gradients per Fisher estimate.
        seed: Seed of the (epoch-wise reshuffled) batch order.
        loss_fn: Loss of a batch; default ``model(**batch).loss``.
        progress: Show a tqdm bar (rank 0 only).
        dist_ctx: Process group; default :meth:`DistContext.current`.
        grad_batching: How the gradients of a chunk are taken. ``"sequential"``: one
            forward/backward pass per mini-batch.  ``"batched"``: several mini-batches
            ("groups") per pass, their weight gradients formed per group from each target
            Linear's input and output gradient by one batched GEMM (docs/math.md §2.3); needs
            every target to be the weight of a plain ``nn.Linear`` and the loss to be a mean
            over the batch's loss terms, in one process.  ``"auto"`` (default): batched where
            that holds with the default loss, else sequential.  The first batched pass of a
            sampler is checked against a sequential pass of its first group; on a mismatch
            ``"auto"`` goes on sequentially (with a warning) and ``"batched"`` raises.
        batch_memory: Bytes the batched path may hold (``"2GB"`` accepted): half for the
            targets' inputs and output gradients at the real tokens of the groups taken
            together, half for one pass's activations, planned from the bytes autograd saved
            for one measured group.  Default: 1/8 of the machine's RAM, at most 2 GiB
            (:func:`~obert_train.fisher.memory.grad_batching_bytes`; the step's default memory
            budget leaves it out).
        pass_positions: Most positions (examples x padded length) in one batched pass.  The
            examples of the groups taken together are sorted by length and cut into passes of
            at most this many positions, each padded to its own longest example.

    Attributes:
        passes: Forward/backward passes the batched path has run so far.
        fallback: Why this sampler went back to one pass per group (``""`` while it has not).

    Raises:
        OptionError: On a non-positive ``batch_size``/``num_grads``, a batch size not
            divisible by the world size, an unknown ``grad_batching``, a ``batch_memory`` that
            is not a positive size, a ``pass_positions`` below 1, or ``"batched"`` under
            ``torch.distributed``.
        DataError: If there are fewer examples than one batch.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        features: Sequence[Any],
        collate: Callable[[Sequence[Any]], dict[str, torch.Tensor]],
        *,
        batch_size: int = 16,
        num_grads: int = 1024,
        seed: int = 0,
        loss_fn: LossFn | None = None,
        progress: bool = True,
        dist_ctx: DistContext | None = None,
        grad_batching: str = "auto",
        batch_memory: int | str | None = None,
        pass_positions: int = _PASS_POSITIONS,
    ) -> None:
        if grad_batching not in GRAD_BATCHING:
            raise OptionError(
                f"grad_batching must be one of {', '.join(GRAD_BATCHING)}, got {grad_batching!r}"
            )
        if batch_size < 1 or num_grads < 1:
            raise OptionError(f"batch_size ({batch_size}) and num_grads ({num_grads}) must be >= 1")
        if len(features) < batch_size:
            raise DataError(
                f"gradient batch size {batch_size} exceeds the {len(features)} training "
                "examples; lower --grad-batch-size or provide more data"
            )
        self.dist = dist_ctx if dist_ctx is not None else DistContext.current()
        if batch_size % self.dist.world_size:
            raise OptionError(
                f"gradient batch size {batch_size} is not divisible by the world size "
                f"{self.dist.world_size}; every rank needs an equal shard"
            )
        self.model, self.features, self.collate = model, features, collate
        self.batch_size, self.num_grads, self.seed = batch_size, num_grads, seed
        self.loss_fn = loss_fn or _hf_loss
        self.progress = progress
        self.grad_batching = grad_batching
        # the default depends on the machine's total RAM only, not its free RAM, so every run
        # and resume on one machine groups the same batches alike (bit-identical gradients)
        self.batch_memory = (
            grad_batching_bytes() if batch_memory is None else parse_memory(batch_memory)
        )
        if self.batch_memory < 1:
            raise OptionError(f"batch_memory must be a positive size, got {batch_memory!r}")
        if grad_batching == "batched" and self.dist.active:
            raise OptionError(
                "grad_batching='batched' runs in one process only; under torch.distributed use "
                "'auto' or 'sequential'"
            )
        self._checked = False  # the batched path was compared with a sequential pass
        self._reference: dict[str, torch.Tensor] | None = None  # that pass's gradient
        self._store_bytes = 0.0  # the call's token-store bytes per (row x length) position
        self._linear_bytes: dict[torch.nn.Module, float] = {}  # per Linear, measured
        self.fallback = ""
        self._saved: tuple[int, int, int, int] | None = None  # rows, length, linear, quadratic
        if pass_positions < 1:
            raise OptionError(f"pass_positions must be >= 1, got {pass_positions}")
        self.pass_positions = pass_positions
        self.passes = 0

    def _index_batches(self, round_seed: int) -> Iterator[list[int]]:
        """Global mini-batches of example indices, reshuffled every pass over the data."""
        n, epoch = len(self.features), 0
        while True:
            gen = torch.Generator().manual_seed(hash((self.seed, round_seed, epoch)) % 2**62)
            order = torch.randperm(n, generator=gen).tolist()
            for start in range(0, n - self.batch_size + 1, self.batch_size):
                yield order[start : start + self.batch_size]
            epoch += 1

    def _batch_seed(self, round_seed: int, index: int) -> int:
        """Seed of the collate of gradient ``index`` in round ``round_seed``.

        Integer mixing only (no ``hash`` of strings), so every process derives the same value.
        """
        mixed = self.seed * 0x9E3779B1 + round_seed * 0x85EBCA77 + index * 0xC2B2AE3D
        return (mixed + 0x27D4EB2F) % 2**63

    def _batch(self, indices: list[int], round_seed: int, index: int) -> dict[str, torch.Tensor]:
        """Collate one global mini-batch reproducibly and keep this rank's shard of rows."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._batch_seed(round_seed, index))
            batch = self.collate([self.features[i] for i in indices])
        if not self.dist.active:
            return batch
        shard = self.batch_size // self.dist.world_size
        lo = self.dist.rank * shard
        out = {}
        for key, value in batch.items():
            if value.ndim == 0 or value.shape[0] != len(indices):
                raise DataError(
                    f"collate returned {key!r} with shape {tuple(value.shape)}; under "
                    f"torch.distributed every batch tensor needs the {len(indices)} examples "
                    "as its first dimension (the rows are split between ranks)"
                )
            out[key] = value[lo : lo + shard]
        return out

    def chunks(
        self,
        params: Mapping[str, torch.nn.Parameter],
        *,
        masks: Mapping[str, torch.Tensor] | None = None,
        owners: Mapping[str, int] | None = None,
        chunk_size: int = 32,
        round_seed: int = 0,
        desc: str = "gradients",
        buffers: int = 1,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Yield the m flattened gradients in chunks, per parameter.

        Args:
            params: Parameters to differentiate (``{name: parameter}``).
            masks: Keep-masks (True = kept) multiplied into the gradients, same shapes as the
                parameters (flattened masks are accepted too).
            owners: ``{name: rank}``; each gradient is reduced to, and only yielded on, its
                owner (default: every rank gets every gradient).
            chunk_size: Gradients per yielded chunk (memory: ``chunk_size * d * 4`` bytes).
            round_seed: Offsets the batch order (new batches for each recomputation).
            desc: Progress-bar label.
            buffers: Sets of chunk buffers used in turn (memory: ``buffers * chunk_size * d * 4``
                bytes).  With 2, a yielded chunk stays valid while the next one is computed, so a
                consumer may process chunk i in another thread until it asks for chunk i + 2.

        Yields:
            ``{name: float32 tensor (k, numel)}`` for the names owned by this rank, k <= chunk_size;
            the chunks together hold exactly ``num_grads`` gradients per name.  The tensors are
            views of reused buffers: consume (or copy) them before the iterator comes back to the
            same buffer (the next chunk with ``buffers=1``, the one after with ``buffers=2``).
        """
        if chunk_size < 1:
            raise OptionError(f"chunk_size must be >= 1, got {chunk_size}")
        if buffers < 1:
            raise OptionError(f"buffers must be >= 1, got {buffers}")
        names = list(params)
        mine = [n for n in names if owners is None or owners[n] == self.dist.rank]
        flat_masks = {n: masks[n].reshape(-1) for n in names} if masks is not None else {}
        was_training = self.model.training
        self.model.eval()
        cap = min(chunk_size, self.num_grads)
        device = next(iter(params.values())).device
        sets = [
            {n: torch.empty(cap, params[n].numel(), device=params[n].device) for n in mine}
            for _ in range(min(buffers, -(-self.num_grads // cap)))
        ]
        modules = self._batched_modules(params) if cap > 1 else {}
        budget = self.batch_memory if modules else 0
        batches = self._index_batches(round_seed)
        bar = tqdm(
            total=self.num_grads, desc=desc, disable=not self.progress or self.dist.rank != 0
        )
        try:
            current, index = 0, 0
            while index < self.num_grads:
                k = min(cap, self.num_grads - index)
                bufs = {n: b[:k] for n, b in sets[current].items()}
                group_batches = [
                    to_device(self._batch(next(batches), round_seed, index + j), device)
                    for j in range(k)
                ]
                if modules and not self.fallback and self._saved is None:
                    # once per sampler: a sequential pass of the first group of round 0, which
                    # measures the saved activations (they size the batched passes) and, in
                    # round 0, is the reference the first batched result is checked against.
                    # Always that group, so that a fresh sampler (a resumed run) plans a round's
                    # passes as one that ran earlier rounds first (bit-identical gradients).
                    first = group_batches[0] if round_seed == 0 else self._round0_batch(device)
                    self._measure(first, params, modules)
                    if round_seed != 0:
                        self._reference = None
                if modules:  # the targets' store bytes per position (they differ between calls)
                    per_linear = self._linear_bytes
                    self._store_bytes = sum(per_linear.get(m, 0.0) for m in modules.values())
                j = 0
                while j < k:
                    lo, hi = (
                        self._next_pass(group_batches, j, budget, modules)
                        if modules
                        else (j, j + 1)
                    )
                    if hi - lo > 1 and self._batched(
                        group_batches[lo:hi], params, modules, bufs, lo, flat_masks, budget
                    ):
                        bar.update(hi - lo)
                        j = hi
                        continue
                    for i in range(lo, hi):
                        self._sequential(
                            group_batches[i], params, names, bufs, i, flat_masks, owners
                        )
                        bar.update(1)
                    j = hi
                self._reference = None  # it was of this chunk's first group
                index += k
                if bufs:
                    yield bufs
                current = (current + 1) % len(sets)
        finally:
            bar.close()
            self.model.train(was_training)

    def _measure(
        self,
        batch: Mapping[str, torch.Tensor],
        params: Mapping[str, torch.nn.Parameter],
        modules: Mapping[str, torch.nn.Linear],
    ) -> None:
        """One sequential pass of ``batch`` into ``self._reference``, measuring its memory.

        Records the bytes autograd saves (the activations of a pass) and, for every plain
        ``nn.Linear`` of the model, its token-store bytes per position (its input positions x
        (in + out) x itemsize).
        """
        device = next(iter(params.values())).device
        self._reference = {n: torch.empty(1, params[n].numel(), device=device) for n in modules}
        seen: dict[torch.nn.Module, int] = {}

        def count(m: torch.nn.Module, args: tuple[Any, ...], _y: torch.Tensor) -> None:
            assert isinstance(m, torch.nn.Linear)
            if not args:
                return
            width = m.in_features + m.out_features
            nbytes = args[0].numel() // m.in_features * width * m.weight.element_size()
            seen[m] = seen.get(m, 0) + nbytes

        # every plain Linear, not only this call's targets: later calls (the other groups of a
        # memory plan) take other targets, and their token stores must be sized too
        hooks = [
            m.register_forward_hook(count)
            for m in self.model.modules()
            if isinstance(m, torch.nn.Linear) and type(m).forward is torch.nn.Linear.forward
        ]
        try:
            self._sequential(batch, params, list(modules), self._reference, 0, {}, None, True)
        finally:
            for h in hooks:
                h.remove()
        positions = _rows(batch) * example_length(batch)
        self._linear_bytes = {m: b / positions for m, b in seen.items()}

    def _round0_batch(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The first mini-batch of round 0 (the one every sampler measures)."""
        return to_device(self._batch(next(self._index_batches(0)), 0, 0), device)

    def _sequential(
        self,
        batch: Mapping[str, torch.Tensor],
        params: Mapping[str, torch.nn.Parameter],
        names: Sequence[str],
        bufs: Mapping[str, torch.Tensor],
        row: int,
        flat_masks: Mapping[str, torch.Tensor],
        owners: Mapping[str, int] | None,
        measure: bool = False,
    ) -> None:
        """One group's gradient by its own forward/backward pass into row ``row`` of ``bufs``.

        With ``measure``, the bytes autograd saves for the pass are recorded (they size the
        batched passes).
        """
        device = next(iter(params.values())).device
        weight = float(_loss_weight(batch))
        if measure:
            length = example_length(batch)
            with SavedBytes(self.model, length) as saved:
                loss = self.loss_fn(self.model, batch)
            self._saved = (_rows(batch), length, saved.linear, saved.quadratic)
        else:
            loss = self.loss_fn(self.model, batch)
        grads = torch.autograd.grad(loss, [params[n] for n in names])
        total = self.dist.all_reduce_sum(torch.tensor([weight], dtype=torch.float64, device=device))
        for name, grad in zip(names, grads, strict=True):
            g = grad.detach().reshape(-1).float()
            if self.dist.active:
                g = g * (weight / float(total))
                owner = owners[name] if owners is not None else None
                if owner is None:
                    self.dist.all_reduce_sum(g)
                else:
                    self.dist.reduce_sum(g, owner)
            if name in bufs:
                if flat_masks:
                    g = g * flat_masks[name]
                bufs[name][row] = g

    def _batched_modules(
        self, params: Mapping[str, torch.nn.Parameter]
    ) -> dict[str, torch.nn.Linear]:
        """The target Linears when this call may batch groups; {} for one pass per group."""
        if self.grad_batching == "sequential" or self.fallback or self.dist.active:
            return {}
        if self.grad_batching == "auto" and self.loss_fn is not _hf_loss:
            return {}  # a custom loss need not be a mean over _loss_weight terms
        modules, reason = linear_modules(self.model, params)
        if not modules and self.grad_batching == "batched":
            raise OptionError(
                f"grad_batching='batched' needs every target to be an nn.Linear weight: {reason}; "
                "use 'auto' or 'sequential'"
            )
        return modules

    def _estimate(self, rows: int, length: int) -> float:
        """Activation bytes of a pass over ``rows`` examples padded to ``length`` (measured)."""
        if self._saved is None:
            return float("inf")
        rows0, length0, linear, quadratic = self._saved
        r = length / max(length0, 1)
        return _ACTIVATION_MARGIN * rows / rows0 * (linear * r + quadratic * r * r)

    def _next_pass(
        self,
        batches: Sequence[Mapping[str, torch.Tensor]],
        lo: int,
        budget: int,
        modules: Mapping[str, torch.nn.Linear],
    ) -> tuple[int, int]:
        """The groups ``lo:hi`` taken together: as many as their token stores fit.

        Half the budget holds the targets' inputs and output gradients at every real token of
        the groups, half the activations of one pass (:meth:`_fits`).  Until one group's saved
        activations have been measured, a group goes alone.  The budget and the measurement are
        fixed after the first call, so every call groups the same batches the same way (and
        gives bit-identical gradients).
        """
        if self.fallback or self._saved is None or not self._fits(1, 1, budget):
            return lo, lo + 1
        hi, held = lo, 0.0
        while hi < len(batches):
            held += self._store_bytes * _tokens(batches[hi])
            if hi > lo and held > budget // 2:
                break
            hi += 1
        return lo, hi

    def _fits(self, rows: int, length: int, budget: int) -> bool:
        """Whether one pass of ``rows`` examples padded to ``length`` fits half the budget."""
        return self._estimate(rows, length) <= budget // 2

    def _batched(
        self,
        batches: Sequence[Mapping[str, torch.Tensor]],
        params: Mapping[str, torch.nn.Parameter],
        modules: Mapping[str, torch.nn.Linear],
        bufs: Mapping[str, torch.Tensor],
        lo: int,
        flat_masks: Mapping[str, torch.Tensor],
        budget: int,
    ) -> bool:
        """Gradients of several groups, examples regrouped into length-sorted passes.

        Writes rows ``lo...`` of ``bufs``; False: take the groups singly.

        The first batched pass of the sampler is checked against a sequential pass of its first
        group; on a mismatch (groups that interact in eval mode, a loss that is not a mean, a
        layout that is not batch-first) ``"auto"`` falls back to one pass per group for the rest
        of the sampler's life and ``"batched"`` raises.
        """
        spans = [k for k in _SPAN_LABELS if any(k in b for b in batches)]
        if spans:  # known up front: the span softmax covers padded positions (no warning)
            return self._give_up(
                f"the batches carry {', '.join(spans)}: a question-answering loss takes its "
                "softmax over every position, padded ones included",
                warn=False,
            )
        config = getattr(self.model, "config", None)
        pad = getattr(config, "pad_token_id", None)
        device = next(iter(params.values())).device
        hi = lo + len(batches)
        out = {n: bufs[n][lo:hi] for n in modules}
        try:
            self.passes += packed_group_grads(
                self.model, self.loss_fn, batches, modules, out, loss_weight=_loss_weight,
                pad_token_id=int(pad) if pad is not None else 0, max_positions=self.pass_positions,
                fits=lambda rows, length: self._fits(rows, length, budget),
            )  # fmt: skip
        except UngroupedError as err:
            return self._give_up(str(err))
        if not self._checked:
            reference, self._reference = self._reference, None
            if reference is None or lo != 0:  # the measured group is not in this pass
                reference = {n: torch.empty(1, params[n].numel(), device=device) for n in modules}
                self._sequential(batches[0], params, list(modules), reference, 0, {}, None)
            for name in modules:
                ref, got = reference[name][0], out[name][0]
                scale = float(ref.abs().max())
                diff = float((got - ref).abs().max())
                if not diff <= _CHECK_RTOL * scale + 1e-30:
                    return self._give_up(
                        f"the batched gradient of {name!r} differs from a sequential pass by "
                        f"{diff:.3g} (largest entry {scale:.3g}); the groups interact or the "
                        "loss is not a mean over the batch"
                    )
            self._checked = True
        if flat_masks:
            for name in modules:
                out[name].mul_(flat_masks[name])
        return True

    def _give_up(self, reason: str, *, warn: bool = True) -> bool:
        """Turn the batched path off for this sampler (``"auto"``) or raise (``"batched"``).

        ``warn=False`` for cases known from the batch alone (question answering), where going
        one pass per group is the expected way rather than a surprise.
        """
        if self.grad_batching == "batched":
            raise DataError(f"grad_batching='batched' cannot be used here: {reason}")
        if warn:
            warnings.warn(
                f"gradient sampler: one pass per group from now on ({reason})", stacklevel=3
            )
        self.fallback = reason
        return False

    @classmethod
    def from_task(cls, model: torch.nn.Module, task: Any, **kwargs: Any) -> GradientSampler:
        """A sampler over ``task.train_features`` batched with ``task.collate``."""
        return cls(model, task.train_features, task.collate, **kwargs)
