"""Several groups per forward/backward pass give the sequential per-group gradients.

``GradientSampler(grad_batching="batched")`` concatenates the mini-batches of a chunk (padded to
the longest), runs one pass with every parameter frozen and forms each group's Linear weight
gradient from the captured inputs and output gradients (docs/math.md §2.3).  The oracle is the
sampler's own sequential pass (one ``torch.autograd.grad`` per group) on the same batches.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertTokenizer

from obert_train import GradientSampler, MaskState, load_task, resolve_target_params
from obert_train.errors import DataError, OptionError
from obert_train.fisher.group_grads import concat_groups, linear_modules, plan_passes
from obert_train.pruning.method import StepContext
from obert_train.pruning.obert import ObertPruning


def _grads(sampler: GradientSampler, params: Mapping[str, Any], **kw: Any) -> list[dict[str, Any]]:
    return [{n: g.clone() for n, g in c.items()} for c in sampler.chunks(params, **kw)]


def _assert_same(a: list[dict[str, Any]], b: list[dict[str, Any]], rtol: float = 1e-4) -> None:
    """Equal to float32 round-off, relative to each tensor's largest entry.

    The batched pass sums in another order (padded batches, other GEMM shapes) and the BLAS
    kernels differ by CPU: 1.9e-5 of the largest entry was seen on an AVX2 EPYC, where the
    AVX-512 Xeon stayed under 1e-5. A gradient missing an example is off by far more.
    """
    assert len(a) == len(b)
    for ca, cb in zip(a, b, strict=True):
        assert ca.keys() == cb.keys()
        for name in ca:
            scale = float(ca[name].abs().max())
            torch.testing.assert_close(cb[name], ca[name], rtol=0, atol=rtol * scale)


def _first_group(features: list[Any], **kw: Any) -> set[int]:
    """Indices of the examples in round 0's first mini-batch (the one every sampler measures)."""
    probe = GradientSampler(torch.nn.Linear(1, 1), features, lambda rows: {}, **kw)
    return set(next(probe._index_batches(0)))


def _auto_falls_back_to_sequential(
    model: Any,
    features: list[Any],
    collate: Any,
    params: Mapping[str, Any],
    reason: str,
    chunk_size: int,
    **kw: Any,
) -> None:
    """``"auto"`` warns that it goes one pass per group (``reason`` in the warning) and then
    gives the sequential passes' gradients."""
    seq = GradientSampler(model, features, collate, grad_batching="sequential", **kw)
    want = _grads(seq, params, chunk_size=chunk_size)
    auto = GradientSampler(model, features, collate, grad_batching="auto", **kw)
    with pytest.warns(UserWarning, match=f"one pass per group from now on .*{reason}"):
        got = _grads(auto, params, chunk_size=chunk_size)
    _assert_same(want, got)


def _sampler(model: Any, task: Any, mode: str, **kw: Any) -> GradientSampler:
    kw = {"batch_size": 4, "num_grads": 9, "progress": False, **kw}
    return GradientSampler.from_task(model, task, grad_batching=mode, **kw)


@pytest.mark.parametrize(("chunk", "positions"), [(2, 1024), (3, 16), (9, 24), (9, 1024)])
def test_batched_groups_equal_sequential_passes_with_padding_and_masks(
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
    chunk: int,
    positions: int,
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    params = resolve_target_params(tiny_bert)
    torch.manual_seed(1)
    masks = {n: torch.rand(p.shape) > 0.4 for n, p in params.items()}
    with torch.no_grad():  # a pruned model: masked weights are zero
        for name, p in params.items():
            p.mul_(masks[name])
    tiny_bert.train()  # the sampler must switch dropout off and restore this afterwards
    sequential = _sampler(tiny_bert, task, "sequential", batch_size=2)
    batched = _sampler(tiny_bert, task, "batched", batch_size=2, pass_positions=positions)
    want = _grads(sequential, params, masks=masks, chunk_size=chunk)
    got = _grads(batched, params, masks=masks, chunk_size=chunk)
    assert batched._checked and not batched.fallback  # the groups did go through together
    assert batched.passes > 0
    _assert_same(want, got)
    assert tiny_bert.training
    assert all(p.requires_grad and p.grad is None for p in tiny_bert.parameters())
    for chunk_grads in got:
        for name, g in chunk_grads.items():
            assert torch.all(g[:, ~masks[name].reshape(-1)] == 0)
    widths = set()
    batches = sequential._index_batches(0)
    for i in range(9):
        widths.add(int(sequential._batch(next(batches), 0, i)["input_ids"].shape[1]))
    assert len(widths) > 1


def test_padded_positions_get_a_zero_output_gradient(
    tiny_bert: BertForSequenceClassification, tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    """Why right-padding groups to a common length changes no gradient (exactly, not to 1e-7)."""
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    groups = [task.collate([f]) for f in task.train_features[:12]]
    batch = concat_groups(groups, 0)
    assert batch is not None
    assert len({int(g["input_ids"].shape[1]) for g in groups}) > 1
    captured: list[torch.Tensor] = []

    def keep(_m: Any, _a: Any, y: torch.Tensor) -> None:
        y.register_hook(lambda g: captured.append(g))

    handles = [
        m.register_forward_hook(keep) for m in tiny_bert.modules() if isinstance(m, torch.nn.Linear)
    ]
    try:
        tiny_bert(**batch).loss.backward()
    finally:
        for h in handles:
            h.remove()
    padded = batch["attention_mask"] == 0
    assert int(padded.sum()) > 0
    token_grads = [g for g in captured if g.ndim == 3]
    assert len(token_grads) == 12
    for g in token_grads:
        assert torch.all(g[padded] == 0)
        assert bool((g[~padded] != 0).any())


@pytest.mark.parametrize("positions", [512, 8])
def test_mlm_groups_with_unequal_loss_terms(
    tokenizer: BertTokenizer, mlm_dir: Path, positions: int
) -> None:
    """Token-level labels: each group's gradient is of its own mean over its labelled tokens.

    With 8 positions every pass is one example, and some have no masked token (no loss term).
    """
    task = load_task("mlm", tokenizer, data_dir=mlm_dir, max_seq_length=8)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64,
    )  # fmt: skip
    model = BertForMaskedLM(cfg).eval()
    params = resolve_target_params(model)
    seq = _sampler(model, task, "sequential", num_grads=6)
    bat = _sampler(model, task, "batched", num_grads=6, pass_positions=positions)
    weights = {
        int((seq._batch(b, 0, i)["labels"] != -100).sum())
        for i, b in zip(range(6), seq._index_batches(0), strict=False)
    }
    assert len(weights) > 1  # the groups differ in their number of loss terms
    _assert_same(_grads(seq, params, chunk_size=6), _grads(bat, params, chunk_size=6))
    assert bat._checked and not bat.fallback


def _step(model: Any, task: Any, mode: str) -> tuple[dict[str, Any], dict[str, Any]]:
    params = resolve_target_params(model)
    start = {n: p.detach().clone() for n, p in params.items()}
    masks = MaskState(params)
    sampler = _sampler(model, task, mode, batch_size=2, num_grads=12)
    method = ObertPruning(num_grads=12, grad_batch_size=2, damp=1e-6, chunk_size=8,
                          fisher_block_size=8)  # fmt: skip
    ctx = StepContext(sampler=sampler, log=lambda _line: None, progress=False)
    seen = []
    for sparsity in (0.5, 0.8):  # the second step samples masked gradients of a masked model
        method.prune(params, masks, sparsity, ctx)
        seen.append(masks.as_dict())
    weights = {n: p.detach().clone() for n, p in params.items()}
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(start[name])
    assert sampler._checked == (mode == "batched") and not sampler.fallback
    return weights, {f"{i}:{n}": m for i, s in enumerate(seen) for n, m in s.items()}


def test_a_pruning_step_gives_the_same_masks(
    tiny_bert: BertForSequenceClassification, tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    w_seq, m_seq = _step(tiny_bert, task, "sequential")
    w_bat, m_bat = _step(tiny_bert, task, "batched")
    for key, mask in m_seq.items():
        assert torch.equal(m_bat[key], mask), key
    for name, w in w_seq.items():
        torch.testing.assert_close(w_bat[name], w, rtol=0, atol=2e-5 * float(w.abs().max()))


def test_auto_batches_the_default_loss_only_and_takes_non_linear_targets_singly(
    tiny_bert: BertForSequenceClassification, tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    params = resolve_target_params(tiny_bert)
    auto = _sampler(tiny_bert, task, "auto")
    _assert_same(_grads(_sampler(tiny_bert, task, "sequential"), params, chunk_size=4),
                 _grads(auto, params, chunk_size=4))  # fmt: skip
    assert auto._checked
    custom = _sampler(tiny_bert, task, "auto", loss_fn=lambda m, b: m(**b).loss)
    _grads(custom, params, chunk_size=4)
    assert not custom._checked  # a custom loss need not be a mean: one pass per group
    norms = {n: p for n, p in tiny_bert.named_parameters() if "LayerNorm.weight" in n}
    mixed = {**dict(list(params.items())[:2]), **dict(list(norms.items())[:1])}
    auto = _sampler(tiny_bert, task, "auto")
    _assert_same(_grads(_sampler(tiny_bert, task, "sequential"), mixed, chunk_size=4),
                 _grads(auto, mixed, chunk_size=4))  # fmt: skip
    assert not auto._checked
    with pytest.raises(OptionError, match=r"LayerNorm\.weight' is not the weight of a plain"):
        _grads(_sampler(tiny_bert, task, "batched"), mixed, chunk_size=4)


class _BatchCoupled(torch.nn.Module):
    """Scales its input by the batch size: groups interact even in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (x.shape[0] / 4)


def test_interacting_groups_fall_back_or_raise(
    tiny_bert: BertForSequenceClassification, tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    tiny_bert.bert.embeddings.dropout = _BatchCoupled()  # type: ignore[assignment]
    params = resolve_target_params(tiny_bert)
    want = _grads(_sampler(tiny_bert, task, "sequential"), params, chunk_size=3)
    auto = _sampler(tiny_bert, task, "auto")
    with pytest.warns(UserWarning, match=r"one pass per group from now on .*differs from a seq"):
        got = _grads(auto, params, chunk_size=3)
    assert auto.fallback and not auto._checked
    _assert_same(want, got)
    with pytest.raises(DataError, match="grad_batching='batched' cannot be used here"):
        _grads(_sampler(tiny_bert, task, "batched"), params, chunk_size=3)
    assert all(p.requires_grad for p in tiny_bert.parameters())  # restored after the error


def test_a_small_activation_budget_takes_groups_singly(
    tiny_bert: BertForSequenceClassification, tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    params = resolve_target_params(tiny_bert)
    tight = _sampler(tiny_bert, task, "batched", batch_memory="1KB")
    _assert_same(_grads(_sampler(tiny_bert, task, "sequential"), params, chunk_size=5),
                 _grads(tight, params, chunk_size=5))  # fmt: skip
    assert tight._saved is not None and not tight._checked  # measured, never batched
    rows, length, linear, quadratic = tight._saved
    assert rows == 4 and length > 1 and linear > 0 and quadratic > 0


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 64), min_size=1, max_size=80),
    cap=st.integers(1, 600),
    rows=st.integers(1, 20),
)
def test_passes_partition_the_examples_within_their_bounds(
    lengths: list[int], cap: int, rows: int
) -> None:
    passes = plan_passes(lengths, cap, lambda r, _length: r <= rows)
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))  # each exactly once
    for chosen in passes:
        width = max(lengths[i] for i in chosen)
        assert len(chosen) == 1 or (len(chosen) * width <= cap and len(chosen) <= rows)
    flat = [lengths[i] for p in passes for i in p]
    assert flat == sorted(lengths)  # length-sorted: no pass pads a shorter pass's examples
    for a, b in itertools.pairwise(passes):  # a pass is cut only when full
        n = len(a) + 1
        assert n * lengths[b[0]] > cap or n > rows


def test_passes_are_length_sorted_and_bounded() -> None:
    lengths = [9, 3, 7, 3, 12, 5, 8, 2]
    # sorted: 2 (7), 3 (1), 3 (3), 5 (5), 7 (2), 8 (6), 9 (0), 12 (4); at most 16 positions
    assert plan_passes(lengths, 16, lambda rows, length: True) == [
        [7, 1, 3], [5, 2], [6], [0], [4]
    ]  # fmt: skip
    assert plan_passes(lengths, 100, lambda rows, length: rows <= 3) == [
        [7, 1, 3], [5, 2, 6], [0, 4]
    ]  # fmt: skip
    assert plan_passes([4, 30], 8, lambda rows, length: False) == [[0], [1]]  # one always goes


def test_bad_settings_are_refused(
    tiny_bert: BertForSequenceClassification, tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    with pytest.raises(OptionError, match="grad_batching must be one of auto, batched, sequential"):
        _sampler(tiny_bert, task, "vmap")
    with pytest.raises(OptionError, match="cannot parse memory size 'lots'"):
        _sampler(tiny_bert, task, "auto", batch_memory="lots")
    with pytest.raises(OptionError, match="batch_memory must be a positive size, got 0"):
        _sampler(tiny_bert, task, "auto", batch_memory=0)
    with pytest.raises(OptionError, match="pass_positions must be >= 1, got 0"):
        _sampler(tiny_bert, task, "auto", pass_positions=0)


def test_groups_that_cannot_be_concatenated() -> None:
    ids = torch.tensor([[2, 5, 3, 0], [2, 6, 7, 3]])
    mask = (ids != 0).long()
    longer = torch.tensor([[2, 5, 6, 7, 3]])
    one = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1])}
    two = {
        "input_ids": longer,
        "attention_mask": torch.ones_like(longer),
        "labels": torch.tensor([1]),
    }
    out = concat_groups([one, two], pad_token_id=0)
    assert out is not None
    assert out["input_ids"].tolist() == [[2, 5, 3, 0, 0], [2, 6, 7, 3, 0], [2, 5, 6, 7, 3]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    left = {**one, "attention_mask": mask.flip(1)}  # left padding: the positions would move
    assert concat_groups([left, two], 0) is None
    assert concat_groups([{k: v for k, v in one.items() if k != "attention_mask"},
                          {k: v for k, v in two.items() if k != "attention_mask"}], 0) is None  # fmt: skip
    odd = {**one, "pixel_mask": ids}
    assert concat_groups([odd, {**two, "pixel_mask": longer}], 0) is None  # unknown key
    same = concat_groups([one, one], 0)
    assert same is not None and same["input_ids"].shape == (4, 4)


def test_image_groups_without_a_sequence_dimension() -> None:
    """ViT: no attention mask, every row a whole image; the store counts its patch tokens."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, num_labels=3,
    )  # fmt: skip
    model = ViTForImageClassification(cfg).eval()
    features = [{"pixel_values": torch.randn(3, 8, 8), "labels": i % 3} for i in range(24)]

    def collate(rows: Any) -> dict[str, torch.Tensor]:
        return {
            "pixel_values": torch.stack([r["pixel_values"] for r in rows]),
            "labels": torch.tensor([r["labels"] for r in rows]),
        }

    params = resolve_target_params(model)
    kw: dict[str, Any] = {"batch_size": 3, "num_grads": 6, "progress": False}
    seq = GradientSampler(model, features, collate, grad_batching="sequential", **kw)
    bat = GradientSampler(model, features, collate, grad_batching="batched", **kw)
    _assert_same(_grads(seq, params, chunk_size=6), _grads(bat, params, chunk_size=6))
    assert bat._checked and bat.passes > 0
    modules, _ = linear_modules(model, params)
    per_position = sum((m.in_features + m.out_features) * 4 * 5 for m in modules.values())
    assert bat._store_bytes == per_position  # 4 patches + [CLS] per image


def _stores_per_call(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Records [groups, token-store bytes] of every batched call."""
    import obert_train.fisher.group_grads as gg
    import obert_train.fisher.sampler as sm

    calls: list[list[int]] = []
    store_init, packed = gg._TokenStore.__init__, sm.packed_group_grads

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        store_init(self, *args, **kwargs)
        calls[-1][1] += self.x.nbytes + self.dy.nbytes

    def spy(model: Any, loss_fn: Any, groups: Any, *args: Any, **kwargs: Any) -> int:
        calls.append([len(groups), 0])
        return packed(model, loss_fn, groups, *args, **kwargs)

    monkeypatch.setattr(gg._TokenStore, "__init__", init)
    monkeypatch.setattr(sm, "packed_group_grads", spy)
    return calls


def test_token_stores_stay_within_the_budget_when_the_targets_change(
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A memory plan of several groups calls the sampler with other targets each time."""
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    params = resolve_target_params(tiny_bert)
    calls = _stores_per_call(monkeypatch)
    budget = 800_000
    sampler = _sampler(tiny_bert, task, "batched", batch_memory=budget, pass_positions=4096)
    first = next(iter(params))
    _grads(sampler, {first: params[first]}, chunk_size=9)  # one target: small stores
    calls.clear()
    _grads(sampler, params, chunk_size=9)  # every target
    assert calls and max(groups for groups, _ in calls) > 1  # some groups did go together
    for groups, held in calls:
        assert groups == 1 or held <= budget // 2, calls


def test_a_fresh_sampler_groups_a_round_as_the_one_that_ran_before(
    tiny_bert: BertForSequenceClassification, tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    """Resume: a new sampler's gradients of a round equal, bit for bit, an older sampler's."""
    import random

    words = sorted(tokenizer.vocab)[5:]
    rnd = random.Random(0)
    rows = [
        " ".join(rnd.choice(words) for _ in range(rnd.randint(1, 30))) + f" \t{i % 2}"
        for i in range(12)
    ]
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows * 3) + "\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    task = load_task("sst2", tokenizer, data_dir=tmp_path)
    params = resolve_target_params(tiny_bert)
    for budget, earlier in itertools.product((900_000, 1_300_000), (0, 3)):
        kw: dict[str, Any] = {"batch_memory": budget, "pass_positions": 4096}
        ran = _sampler(tiny_bert, task, "batched", **kw)
        _grads(ran, params, chunk_size=9, round_seed=earlier)  # an earlier pruning step
        want = _grads(ran, params, chunk_size=9, round_seed=1)
        fresh = _sampler(tiny_bert, task, "batched", **kw)  # after a resume
        got = _grads(fresh, params, chunk_size=9, round_seed=1)
        # the passes are planned from the same measurement, whatever ran before
        assert (fresh._saved, fresh._store_bytes) == (ran._saved, ran._store_bytes)
        for a, b in zip(want, got, strict=True):
            for name in a:
                assert torch.equal(a[name], b[name]), (budget, earlier, name)


def test_labels_at_padded_positions_are_not_cut_away(tokenizer: BertTokenizer) -> None:
    """A collate that labels its padded positions (labels = input_ids): those are loss terms.

    Cutting examples to their real length would drop them; the first group, unpadded, passes
    the one check against a sequential pass, so the batched path must refuse such batches.
    """
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64,
    )  # fmt: skip
    model = BertForMaskedLM(cfg).eval()
    features: list[list[int]] = [[2, 7, 8, 9, 3]] * 12

    def collate(rows: Any) -> dict[str, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": ids.clone()}

    kw: dict[str, Any] = {"batch_size": 2, "num_grads": 6, "progress": False}
    first = _first_group(features, **kw)
    features[:] = [f if i in first else [*f[: 2 + i % 3], 3] for i, f in enumerate(features)]
    params = resolve_target_params(model)
    _auto_falls_back_to_sequential(
        model, features, collate, params, "cannot be split", chunk_size=6, **kw
    )


class _MeanPool(torch.nn.Module):
    """Averages every position, padded ones too (it ignores the attention mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(16, 8)
        self.mix = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor) -> dict[str, torch.Tensor]:  # fmt: skip
        del attention_mask
        logits = self.head(torch.tanh(self.mix(self.embed(input_ids))).mean(dim=1))
        return {"loss": torch.nn.functional.cross_entropy(logits, labels)}


def test_a_model_whose_padded_positions_reach_the_loss_is_taken_group_by_group() -> None:
    """Padding changes this model's loss: no pass may pad, even where the first check passes.

    With one example per group the sequential passes never pad, and group 0, the longest of
    its pass, is not padded there either; the passes' other examples are.
    """
    torch.manual_seed(0)
    model = _MeanPool().eval()
    features: list[list[int]] = [[2, 5, 6, 7, 8, 9, 3]] * 8

    def collate(rows: Any) -> dict[str, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        labels = torch.tensor([len(r) % 2 for r in rows])
        return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": labels}

    kw: dict[str, Any] = {"batch_size": 1, "num_grads": 8, "progress": False}
    first = _first_group(features, **kw)
    features[:] = [f if i in first else [*f[: 2 + i % 4], 3] for i, f in enumerate(features)]
    params = {"mix.weight": model.mix.weight}
    _auto_falls_back_to_sequential(
        model, features, collate, params, "padded position", chunk_size=8, **kw
    )


class _TorchEncoder(torch.nn.Module):
    """torch's own encoder layer: its attention uses ``out_proj.weight`` without calling it."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(16, 8)
        self.layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor) -> dict[str, torch.Tensor]:  # fmt: skip
        h = self.layer(self.embed(input_ids), src_key_padding_mask=attention_mask == 0)
        logits = self.head(h[:, 0])
        return {"loss": torch.nn.functional.cross_entropy(logits, labels)}


def test_a_target_used_without_its_module_call_is_taken_group_by_group() -> None:
    torch.manual_seed(0)
    model = _TorchEncoder().eval()
    features = [[2, *range(5, 5 + i % 5), 3] for i in range(16)]

    def collate(rows: Any) -> dict[str, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        labels = torch.tensor([len(r) % 2 for r in rows])
        return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": labels}

    kw: dict[str, Any] = {"batch_size": 2, "num_grads": 6, "progress": False}
    params = {n: p for n, p in model.named_parameters() if n.endswith("proj.weight")}
    params["layer.linear1.weight"] = model.layer.linear1.weight
    assert "layer.self_attn.out_proj.weight" in params
    _auto_falls_back_to_sequential(
        model, features, collate, params, "out_proj.weight", chunk_size=6, **kw
    )


def test_question_answering_groups_are_not_cut_to_their_real_length(
    tokenizer: BertTokenizer, squad_dir: Path
) -> None:
    """The span head's softmax runs over every position, padded ones too.

    Group 0 unpadded would pass the one check against a sequential pass (and the padded groups'
    output gradients at padded positions are not 0); the span labels say so up front, so
    ``"auto"`` goes group by group without a warning and ``"batched"`` refuses.
    """
    from transformers import BertForQuestionAnswering

    from .conftest import tiny_config

    task = load_task("squad", tokenizer, data_dir=squad_dir, max_seq_length=32, doc_stride=8)
    torch.manual_seed(0)
    model = BertForQuestionAnswering(tiny_config(len(tokenizer))).eval()
    params = resolve_target_params(model)
    seq = _sampler(model, task, "sequential", num_grads=8)
    auto = _sampler(model, task, "auto", num_grads=8)
    features = task.train_features
    width = max(len(f["input_ids"]) for f in features)
    first = set(next(seq._index_batches(0)))
    full = [f for f in features if len(f["input_ids"]) == width]
    short = [f for f in features if len(f["input_ids"]) < width]
    assert len(full) >= len(first) and short
    rest = iter(full[len(first) :] + short)
    picked = iter(full)
    features[:] = [next(picked) if i in first else next(rest) for i in range(len(features))]
    want = _grads(seq, params, chunk_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known from the batch's span labels: no warning
        got = _grads(auto, params, chunk_size=8)
    _assert_same(want, got)
    assert "start_positions" in auto.fallback and auto.passes == 0
    with pytest.raises(DataError, match="start_positions"):
        _grads(_sampler(model, task, "batched", num_grads=8), params, chunk_size=8)
