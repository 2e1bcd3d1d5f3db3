"""Iterative allocation (docs/math.md §8, (B-10)): round budgets and ``start`` of allocate_ratios."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import obert_core as oc
from obert_core import blocks as ob


def _problem(seed: int, layers: int) -> tuple[dict, dict, dict, dict]:
    """Layers of 1–8 blocks of 4×4 or 8×4: FLOPs costs at 0 … n pruned blocks."""
    rng = np.random.default_rng(seed)
    cost, counts, blocks = {}, {}, {}
    for i in range(layers):
        br, bc = int(rng.integers(1, 3)), int(rng.integers(1, 5))
        block = (4 * int(rng.integers(1, 3)), 4)
        n = br * bc
        name = f"l{i}"
        counts[name], blocks[name] = n, block
        cost[name] = ob.flops_curve((br * block[0], bc * block[1]), block,
                                    ratios=ob.count_ratios(n))  # fmt: skip
    return cost, counts, blocks, {"rng": rng}


def _additional(rng: np.random.Generator, n: int, gone: int) -> np.ndarray:
    """A curve of the removals beyond the ``gone`` blocks already removed: 0 up to ``gone``."""
    steps = np.sort(rng.random(n - gone) * rng.uniform(0.1, 10))
    return np.concatenate([np.zeros(gone + 1), np.cumsum(steps)])


def _uniform_kept(cost: dict, counts: dict, budget: float) -> dict[str, int]:
    zero = {n: np.zeros(counts[n] + 1) for n in counts}
    res = ob.allocate_ratios(zero, cost, budget, blocks=counts, rule="uniform", min_density=0.0)
    return {n: counts[n] - res.pruned[n] for n in counts}


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    layers=st.integers(1, 4),
    sparsity=st.floats(0.1, 0.9),
    rounds=st.integers(1, 4),
    spacing=st.sampled_from(ob.SPACINGS),
    floor=st.sampled_from([None, 0.25, 0.75]),
    rule=st.sampled_from(["lagrange", "lpvit", "uniform"]),
)
@example(
    seed=11, layers=3, sparsity=0.78125, rounds=2, spacing="geometric", floor=0.25, rule="lagrange"
)
def test_rounds_meet_the_final_budget_within_one_block_and_keep_the_floors(
    seed: int,
    layers: int,
    sparsity: float,
    rounds: int,
    spacing: str,
    floor: float | None,
    rule: str,
) -> None:
    """K rounds, fresh curves of the additional removals each: masks never regrow, every round
    within its budget, the last within one block of it, and every layer above its final floor.

    LPViT's slope rule is not guaranteed to reach a budget under a floor (math §8: only the
    Lagrangian rule is), so it runs without one.
    """
    assume(not (rule == "lpvit" and floor is not None))
    cost, counts, blocks, extra = _problem(seed, layers)
    rng = extra["rng"]
    gone = dict.fromkeys(counts, 0)
    for s in ob.round_sparsities(0.0, sparsity, rounds, spacing):
        before = dict(gone)  # what the last round starts from
        dist = {n: _additional(rng, counts[n], gone[n]) for n in counts}
        res = ob.allocate_ratios(
            dist, cost, 1.0 - s, blocks=counts, rule=rule, smooth=None, min_density=0.0,
            floor=None if rule == "uniform" else floor, start=gone,
        )  # fmt: skip
        target = (1.0 - s) * res.dense_cost
        assert res.cost <= target * (1 + 1e-12)
        assert all(res.pruned[n] >= gone[n] for n in counts)  # never regrow
        # within one block: no layer that lost a block this round could take it back
        for n, k in res.pruned.items():
            if k > gone[n]:
                assert target - res.cost < 2.0 * blocks[n][0] * blocks[n][1]
        gone = dict(res.pruned)
    if floor is not None and rule != "uniform":
        # the floor of the final budget, unless earlier rounds already removed more (masks never
        # regrow; uniform's block counts are not monotone in the budget on tiny layers: hypothesis
        # found uniform keeping 0 of 1 block at round 1's budget and 1 at the final one)
        uniform = _uniform_kept(cost, counts, 1.0 - sparsity)
        for n, k in gone.items():
            want = math.ceil(floor * uniform[n] - 1e-9)
            assert counts[n] - k >= min(want, counts[n] - before[n])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), layers=st.integers(1, 3), budget=st.floats(0.1, 0.9))
def test_with_start_the_choice_is_the_best_allocation_that_never_regrows(
    seed: int, layers: int, budget: float
) -> None:
    """Equal block costs: brute force over every allocation with ``k_l ≥ start_l`` in budget."""
    rng = np.random.default_rng(seed)
    cost, counts = {}, {}
    for i in range(layers):
        n = int(rng.integers(1, 6))
        cost[f"l{i}"] = ob.flops_curve((4, 4 * n), (4, 4), ratios=ob.count_ratios(n))
        counts[f"l{i}"] = n
    names = list(counts)
    start = {n: int(rng.integers(0, counts[n] + 1)) for n in names}
    dense = sum(float(cost[n][0]) for n in names)
    if sum(float(cost[n][start[n]]) for n in names) > budget * dense:
        budget = min(0.95, sum(float(cost[n][start[n]]) for n in names) / dense + 0.01)
    dist = {n: _additional(rng, counts[n], start[n]) for n in names}
    res = ob.allocate_ratios(dist, cost, budget, blocks=counts, rule="lagrange", smooth=None,
                             min_density=0.0, start=start)  # fmt: skip
    target = budget * dense * (1 + 1e-12)
    combos = [
        c
        for c in itertools.product(*(range(start[n], counts[n] + 1) for n in names))
        if sum(float(cost[n][k]) for n, k in zip(names, c, strict=True)) <= target
    ]
    if not combos:
        return
    best = min(sum(float(dist[n][k]) for n, k in zip(names, c, strict=True)) for c in combos)
    got = sum(float(dist[n][res.pruned[n]]) for n in names)
    assert got == pytest.approx(best, abs=1e-9)


def test_round_sparsities_equal_and_geometric() -> None:
    assert ob.round_sparsities(0.0, 0.6, 3) == pytest.approx([0.2, 0.4, 0.6])
    assert ob.round_sparsities(0.2, 0.6, 1) == [0.6]
    geo = ob.round_sparsities(0.0, 0.75, 2, "geometric")
    assert geo == pytest.approx([0.5, 0.75])  # kept 1 → 0.5 → 0.25: halved each round
    assert geo[-1] == 0.75
    # equal ratios of kept cost, and the equal steps match oBERT's recomputation sparsities
    kept = 1.0 - np.array([0.1, *ob.round_sparsities(0.1, 0.9, 4, "geometric")])
    assert kept[1:] / kept[:-1] == pytest.approx(np.full(4, (0.1 / 0.9) ** 0.25))
    assert ob.round_sparsities(0.1, 0.9, 4) == pytest.approx(
        oc.recomputation_sparsities(0.1, 0.9, 4)
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0.5, 0.3, 2), "below current 0.5"),
        ((0.0, 1.0, 2), "target must be in"),
        ((-0.1, 0.5, 2), "current must be in"),
        ((0.0, 0.5, 0), "rounds"),
        ((0.0, 0.5, 2, "log"), "unknown spacing 'log'"),
        (("a", 0.5, 2), "current must be a number"),
    ],
)
def test_round_sparsities_bad_input(args: tuple, match: str) -> None:
    with pytest.raises(oc.ObertError, match=match):
        ob.round_sparsities(*args)


def test_start_is_checked_and_a_layer_past_its_cap_stays() -> None:
    counts = {"a": 4, "b": 4}
    cost = {n: ob.flops_curve((4, 16), (4, 4), ratios=ob.count_ratios(4)) for n in counts}
    dist = {n: np.arange(5, dtype=float) for n in counts}
    with pytest.raises(oc.ObertError, match="needs the block counts"):
        ob.allocate_ratios(dist, cost, 0.5, ratios=np.linspace(0, 1, 5), start={"a": 0, "b": 0})
    with pytest.raises(oc.ObertError, match=r"start\['a'\] = 5"):
        ob.allocate_ratios(dist, cost, 0.5, blocks=counts, start={"a": 5, "b": 0})
    with pytest.raises(oc.ObertError, match="every layer"):
        ob.allocate_ratios(dist, cost, 0.5, blocks=counts, start={"a": 1})
    # 'a' already lost every block (past its minimum density): it stays, 'b' keeps the rest
    res = ob.allocate_ratios(dist, cost, 0.5, blocks=counts, rule="lagrange", smooth=None,
                             start={"a": 4, "b": 0})  # fmt: skip
    assert res.pruned == {"a": 4, "b": 0}
    res = ob.allocate_ratios(dist, cost, 0.25, blocks=counts, rule="uniform",
                             start={"a": 4, "b": 0})  # fmt: skip
    assert res.pruned["a"] == 4 and res.pruned["b"] == 2
