"""The speed-ups of a pruning step keep its results: double-buffered chunks, overlapped Gram."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertForSequenceClassification, BertTokenizer

from obert_train import GradientSampler, load_task, resolve_target_params
from obert_train.pruning.method import StepContext
from obert_train.pruning.obert import ObertSettings, build_inverse_fishers


def _sampler(model: BertForSequenceClassification, tokenizer: BertTokenizer, data: Path,
             num_grads: int) -> GradientSampler:  # fmt: skip
    task = load_task("sst2", tokenizer, data_dir=data)
    return GradientSampler.from_task(model, task, batch_size=4, num_grads=num_grads, progress=False)


def test_two_buffers_keep_the_previous_chunk_valid_and_give_the_same_gradients(
    tiny_bert: BertForSequenceClassification, tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    sampler = _sampler(tiny_bert, tokenizer, sst2_dir, num_grads=7)
    params = dict(list(resolve_target_params(tiny_bert).items())[:2])
    one = [{n: g.clone() for n, g in c.items()} for c in sampler.chunks(params, chunk_size=2)]
    previous: dict[str, torch.Tensor] | None = None
    for i, chunk in enumerate(sampler.chunks(params, chunk_size=2, buffers=2)):
        for name, g in chunk.items():
            assert torch.equal(g, one[i][name])
            if previous is not None:  # chunk i - 1 is untouched while chunk i is computed
                assert torch.equal(previous[name], one[i - 1][name])
        previous = chunk
    assert [c[next(iter(params))].shape[0] for c in one] == [2, 2, 2, 1]


@pytest.mark.parametrize("factored", [False, True])
def test_overlapped_gram_equals_the_sequential_build(
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
    factored: bool,
) -> None:
    """Chunks added by the worker (the last one tensor by tensor, each tensor finalised as soon
    as its gradients are in) give the sequential build's Fisher, to the bit."""
    sampler = _sampler(tiny_bert, tokenizer, sst2_dir, num_grads=9)
    params = resolve_target_params(tiny_bert)
    names = list(params)[:3]
    masks = {n: (torch.rand(params[n].shape) > 0.3).reshape(-1) for n in names}
    cfg = ObertSettings(num_grads=9, grad_batch_size=4, fisher_block_size=8, damp=1e-4)

    def build(chunk: int, overlap: bool) -> dict[str, torch.Tensor]:
        ctx = StepContext(sampler=sampler, log=lambda _line: None, progress=False)
        out = build_inverse_fishers(params, names, masks, cfg, ctx, chunk_size=chunk,
                                    overlap=overlap, factored=factored)  # fmt: skip
        assert {"fisher_s", "gradients_s", "gram_s", "invert_s"} <= set(ctx.timings)
        assert list(out) == names
        if factored:  # the Gram and diag(F^-1) of obert_core.FisherBlocks
            return {n: torch.cat([f.gram.reshape(-1), f.diag().float()]) for n, f in out.items()}
        return out

    overlapped = build(4, overlap=True)  # two buffers of 2 gradients
    same_chunks = build(2, overlap=False)
    one_buffer = build(4, overlap=False)
    for name in names:
        # the same chunks added in the same order: bit-identical
        assert torch.equal(overlapped[name], same_chunks[name])
        # other chunk boundaries: equal up to float rounding
        torch.testing.assert_close(overlapped[name], one_buffer[name], rtol=1e-4, atol=1e-3)
