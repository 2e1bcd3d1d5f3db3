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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from obert_train.errors import DataError, OptionError
from obert_train.fisher.distributed import DistContext

__all__ = ["GradientSampler", "LossFn", "to_device"]

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

    Raises:
        OptionError: On a non-positive ``batch_size``/``num_grads``, or a batch size not
            divisible by the world size.
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
    ) -> None:
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
        current = 0
        bufs = sets[current]
        filled = 0
        batches = self._index_batches(round_seed)
        bar = tqdm(
            total=self.num_grads, desc=desc, disable=not self.progress or self.dist.rank != 0
        )
        try:
            for index in range(self.num_grads):
                batch = to_device(self._batch(next(batches), round_seed, index), device)
                weight = float(_loss_weight(batch))
                loss = self.loss_fn(self.model, batch)
                grads = torch.autograd.grad(loss, [params[n] for n in names])
                total = self.dist.all_reduce_sum(
                    torch.tensor([weight], dtype=torch.float64, device=device)
                )
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
                        bufs[name][filled] = g
                filled += 1
                bar.update(1)
                if filled == cap:
                    if bufs:
                        yield {n: b[:filled] for n, b in bufs.items()}
                    filled = 0
                    current = (current + 1) % len(sets)
                    bufs = sets[current]
            if filled and bufs:
                yield {n: b[:filled] for n, b in bufs.items()}
        finally:
            bar.close()
            self.model.train(was_training)

    @classmethod
    def from_task(cls, model: torch.nn.Module, task: Any, **kwargs: Any) -> GradientSampler:
        """A sampler over ``task.train_features`` batched with ``task.collate``."""
        return cls(model, task.train_features, task.collate, **kwargs)
