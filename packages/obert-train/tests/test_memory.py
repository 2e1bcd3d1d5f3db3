from __future__ import annotations

import pytest

from obert_train import MemoryPlanError
from obert_train.fisher import memory as _memory
from obert_train.fisher.memory import (
    fisher_bytes,
    format_bytes,
    gram_precision,
    group_peak_bytes,
    plan_memory,
)

BERT_BASE = {
    f"layer{i}.{kind}": d
    for i in range(12)
    for kind, d in (
        ("query", 768 * 768),
        ("key", 768 * 768),
        ("value", 768 * 768),
        ("attn_out", 768 * 768),
        ("intermediate", 768 * 3072),
        ("output", 3072 * 768),
    )
}


def test_fisher_bytes_formula() -> None:
    assert fisher_bytes(100, 50) == 4 * 2 * 50 * 50
    assert fisher_bytes(101, 50) == 4 * 3 * 50 * 50  # zero-padded tail block
    total = sum(fisher_bytes(d, 50) for d in BERT_BASE.values())
    assert sum(BERT_BASE.values()) == 84_934_656
    assert 16.9e9 < total < 17.1e9  # the paper's "about 17 GB" at B = 50


def test_everything_fits_in_one_group() -> None:
    plan = plan_memory({"a": 1000, "b": 2000}, 50, num_grads=64, budget_bytes=10**9)
    assert plan.groups == [["a", "b"]]
    assert plan.chunk_size == 32
    assert "one group" in plan.describe()


def test_groups_when_the_whole_does_not_fit() -> None:
    budget = 10 * 2**30
    plan = plan_memory(
        BERT_BASE, 50, num_grads=1024, budget_bytes=budget, fisher_method="streaming"
    )
    assert len(plan.groups) > 1
    assert [n for g in plan.groups for n in g] == list(BERT_BASE)  # order kept, nothing lost
    assert max(plan.group_peak_bytes) <= budget
    assert f"{len(plan.groups)} groups" in plan.describe()
    few = plan_memory(BERT_BASE, 50, num_grads=32, budget_bytes=budget)
    assert len(few.groups) > len(plan.groups)  # m < B: float64 Gram accumulators need more room


def test_gram_precision_follows_the_rank_of_the_gram() -> None:
    assert gram_precision(32, 50) == "float64"
    assert gram_precision(64, 50) == "float32"
    d = [768 * 3072]
    assert group_peak_bytes(d, 50, 1, "batched", 32) > group_peak_bytes(d, 50, 1, "batched", 64)


def test_chunk_size_shrinks_before_refusing() -> None:
    d = 1_000_000
    need_1 = int(1.1 * group_peak_bytes([d], 10, 1, "streaming")) + 10 * d + 1
    plan = plan_memory({"w": d}, 10, num_grads=64, budget_bytes=need_1, fisher_method="streaming")
    assert plan.chunk_size == 1


def test_refuses_with_a_block_size_that_fits() -> None:
    d = 3072 * 768
    budget = 2 * 2**30
    with pytest.raises(MemoryPlanError, match="--block-size") as info:
        plan_memory({"big": d}, 1000, num_grads=64, budget_bytes=budget)
    message = str(info.value)
    assert "'big'" in message
    suggested = int(message.split("--block-size ")[1].split()[0])
    plan_memory({"big": d}, suggested, num_grads=64, budget_bytes=budget)  # the hint works
    with pytest.raises(MemoryPlanError, match=r"free memory"):
        plan_memory({"big": d}, 50, num_grads=64, budget_bytes=1000)


def test_empty_plan_for_a_rank_without_tensors() -> None:
    plan = plan_memory({}, 50, num_grads=8, budget_bytes=10**9)
    assert plan.groups == []
    assert "no tensors" in plan.describe()


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1.5 * 2**30) == "1.50 GiB"


def test_default_budget_is_shared_by_the_ranks_of_a_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_memory, "available_bytes", lambda fraction=0.8: 8 * 10**9)
    monkeypatch.setattr(_memory, "grad_batching_bytes", lambda: 2 * 10**9)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    # one process: the sampler's batched passes (grad_batching_bytes) are left out
    assert _memory.default_budget_bytes() == 6 * 10**9
    assert plan_memory({"a": 1000}, 50, num_grads=8).budget_bytes == 6 * 10**9
    monkeypatch.setattr(_memory, "grad_batching_bytes", lambda: 7 * 10**9)
    assert _memory.default_budget_bytes() == 4 * 10**9  # never below half the 80 %
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert _memory.default_budget_bytes() == 2 * 10**9
    assert plan_memory({"a": 1000}, 50, num_grads=8).budget_bytes == 2 * 10**9
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "zero")
    with pytest.raises(ValueError, match="LOCAL_WORLD_SIZE='zero'"):
        _memory.default_budget_bytes()


def test_resident_bytes_include_the_updated_copies() -> None:
    plan = plan_memory({"a": 1000, "b": 2000}, 50, num_grads=64, budget_bytes=10**9)
    assert plan.resident_bytes == 10 * 3000  # score 4 + masks 2 + updated weights 4


def test_grad_batching_default_depends_on_total_ram_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batched passes' default memory must not follow the free RAM (same passes on resume)."""
    from types import SimpleNamespace

    from obert_train.fisher import sampler as _sampler

    def fake(total: int, available: int) -> None:
        monkeypatch.setattr(
            _memory.psutil,
            "virtual_memory",
            lambda: SimpleNamespace(total=total, available=available),
        )

    fake(8 * 2**30, 1 * 2**30)
    small = _memory.grad_batching_bytes()
    fake(8 * 2**30, 7 * 2**30)
    assert _memory.grad_batching_bytes() == small == 2**30  # 1/8 of 8 GiB, whatever is free
    fake(64 * 2**30, 3 * 2**30)
    assert _memory.grad_batching_bytes() == 2 * 2**30  # at most 2 GiB
    assert _sampler.grad_batching_bytes is _memory.grad_batching_bytes


def test_factors_kept_in_the_gram_add_only_their_side_arrays() -> None:
    """overwrite_gram: the factors take the Gram's own memory; the plan adds the side arrays
    (about 10 bytes per weight) to the inversion phase, never a second Gram."""
    import obert_core as oc

    sizes = [768 * 3072, 768 * 768]
    args = (sizes, 50, 1, "batched", 128)
    plain, kept = group_peak_bytes(*args), group_peak_bytes(*args, overwrite_gram=True)
    side = sum(oc.FisherBlocks.factor_bytes(d, 50) for d in sizes)
    assert kept - plain in (0, side)  # the gradient phase may be the peak either way
    one = ([768 * 768 * 8], 50, 1, "batched", 128)  # one big tensor: the inversion is the peak
    grown = group_peak_bytes(*one, overwrite_gram=True) - group_peak_bytes(*one)
    assert grown == oc.FisherBlocks.factor_bytes(768 * 768 * 8, 50)
    assert grown < 0.06 * fisher_bytes(768 * 768 * 8, 50)
