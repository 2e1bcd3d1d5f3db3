from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import BertForSequenceClassification, BertTokenizer

from obert_train import GradientSampler, load_task, resolve_target_params


def _recording_collate(task: Any, seen: list[list[Any]]) -> Any:
    def collate(features: Sequence[Any]) -> dict[str, torch.Tensor]:
        seen.append(list(features))
        return task.collate(features)  # type: ignore[no-any-return]

    return collate


def test_gradients_match_autograd_on_the_same_batches(
    tiny_bert: BertForSequenceClassification, tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    params = resolve_target_params(tiny_bert)
    names = list(params)[:3]
    sub = {n: params[n] for n in names}
    masks = {n: torch.rand(params[n].shape) > 0.3 for n in names}
    seen: list[list[Any]] = []
    tiny_bert.train()  # the sampler must switch dropout off and restore this afterwards
    sampler = GradientSampler(
        tiny_bert,
        task.train_features,
        _recording_collate(task, seen),
        batch_size=4,
        num_grads=7,
        progress=False,
    )
    chunks = [
        {n: g.clone() for n, g in c.items()} for c in sampler.chunks(sub, masks=masks, chunk_size=3)
    ]
    assert [c[names[0]].shape[0] for c in chunks] == [3, 3, 1]
    assert tiny_bert.training
    assert all(p.grad is None for p in tiny_bert.parameters())
    tiny_bert.eval()
    for i, batch_features in enumerate(seen):
        loss = tiny_bert(**task.collate(batch_features)).loss
        grads = torch.autograd.grad(loss, [sub[n] for n in names])
        for name, grad in zip(names, grads, strict=True):
            got = chunks[i // 3][name][i % 3]
            expected = (grad * masks[name]).reshape(-1)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
            assert torch.all(got[~masks[name].reshape(-1)] == 0)


def test_new_batches_per_round_and_epoch_reshuffle(
    tiny_bert: BertForSequenceClassification, tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    sampler = GradientSampler.from_task(tiny_bert, task, batch_size=6, num_grads=1, progress=False)
    it0, it1 = sampler._index_batches(0), sampler._index_batches(1)
    first = [next(it0) for _ in range(12)]  # 36 examples / 6 = 6 batches per pass, two passes
    assert sorted(i for b in first[:6] for i in b) == list(range(36))
    assert first[:6] != first[6:]
    assert [next(it1) for _ in range(6)] != first[:6]


def test_sampler_rejects_bad_sizes(
    tiny_bert: BertForSequenceClassification, tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    with pytest.raises(ValueError, match="exceeds the 36 training examples"):
        GradientSampler.from_task(tiny_bert, task, batch_size=64)
    with pytest.raises(ValueError, match="must be >= 1"):
        GradientSampler.from_task(tiny_bert, task, num_grads=0)


def test_missing_labels_give_a_clear_error(
    tiny_bert: BertForSequenceClassification, tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    features = [{k: v for k, v in f.items() if k != "labels"} for f in task.train_features]
    sampler = GradientSampler(tiny_bert, features, task.collate, batch_size=2, num_grads=1)
    with pytest.raises(ValueError, match="returned no loss"):
        next(iter(sampler.chunks(resolve_target_params(tiny_bert))))


def test_mlm_batches_are_reproducible_across_passes_and_ranks(
    tokenizer: BertTokenizer, mlm_dir: Path
) -> None:
    """Random MLM masking is seeded per batch: every pass and every rank sees the same masks."""
    from transformers import BertConfig, BertForMaskedLM

    from obert_train.fisher.distributed import DistContext

    task = load_task("mlm", tokenizer, data_dir=mlm_dir, max_seq_length=8)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    model = BertForMaskedLM(cfg).eval()
    params = dict(list(resolve_target_params(model).items())[:2])
    sampler = GradientSampler.from_task(model, task, batch_size=4, num_grads=6, progress=False)

    def grads(round_seed: int) -> dict[str, torch.Tensor]:
        (chunk,) = sampler.chunks(params, chunk_size=6, round_seed=round_seed)
        return {n: g.clone() for n, g in chunk.items()}

    first = grads(0)
    state = torch.random.get_rng_state()
    torch.rand(100)  # the global RNG moves on between the two passes
    second = grads(0)
    for name, g in first.items():
        assert torch.equal(g, second[name])  # same masks in a second pass
    assert not torch.equal(first[next(iter(first))], grads(1)[next(iter(first))])  # new round
    torch.random.set_rng_state(state)

    indices = [0, 1, 2, 3]
    whole = sampler._batch(indices, 0, 0)
    shards = [
        GradientSampler.from_task(
            model, task, batch_size=4, num_grads=6, progress=False, dist_ctx=DistContext(r, 2)
        )._batch(indices, 0, 0)
        for r in range(2)
    ]
    assert int((whole["labels"] != -100).sum()) > 0
    for key, value in whole.items():  # the ranks' rows together are the single-process batch
        assert torch.equal(torch.cat([s[key] for s in shards]), value)
