"""obert_core.blocks.allocate_ratios against brute force on small separable problems."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import obert_core as oc
from obert_core import blocks as ob


def _convex_problem(seed: int, layers: int, points: int) -> tuple[np.ndarray, dict, dict]:
    """Increasing convex distortions and linearly falling costs of different layer sizes."""
    rng = np.random.default_rng(seed)
    ratios = np.linspace(0, 1, points)
    dist, cost = {}, {}
    for i in range(layers):
        steps = np.sort(rng.random(points - 1) * rng.uniform(0.1, 10))  # increasing increments
        dist[f"l{i}"] = np.concatenate([[0.0], np.cumsum(steps)])
        cost[f"l{i}"] = rng.integers(1, 5) * 16.0 * (1 - ratios)
    return ratios, dist, cost


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    layers=st.integers(1, 3),
    points=st.integers(3, 6),
    budget=st.floats(0.05, 0.95),
)
def test_lagrange_rule_is_optimal_among_allocations_costing_no_more(
    seed: int, layers: int, points: int, budget: float
) -> None:
    ratios, dist, cost = _convex_problem(seed, layers, points)
    res = ob.allocate_ratios(
        dist, cost, budget, ratios=ratios, rule="lagrange", smooth=None, min_density=0.0
    )
    names = list(dist)
    assert res.cost <= budget * res.dense_cost * (1 + 1e-12)
    pick = [int(np.flatnonzero(ratios == res.ratios[n])[0]) for n in names]
    got_d = sum(dist[n][j] for n, j in zip(names, pick, strict=True))
    got_c = sum(cost[n][j] for n, j in zip(names, pick, strict=True))
    assert got_c == pytest.approx(res.cost)
    # brute force over every allocation on the grid
    for combo in itertools.product(range(points), repeat=layers):
        c = sum(cost[n][j] for n, j in zip(names, combo, strict=True))
        if c <= got_c + 1e-9:
            d = sum(dist[n][j] for n, j in zip(names, combo, strict=True))
            assert d >= got_d - 1e-9


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), layers=st.integers(1, 4), budget=st.floats(0.1, 0.9))
def test_budget_met_within_one_block_per_layer(seed: int, layers: int, budget: float) -> None:
    """On the per-block grid (n + 1 ratios for n blocks) the total lands within one block."""
    rng = np.random.default_rng(seed)
    n = 8
    ratios = np.arange(n + 1) / n
    dist, cost, one_block = {}, {}, []
    for i in range(layers):
        shape = (16 * int(rng.integers(1, 3)), 16 * int(rng.integers(1, 5)))
        block = (shape[0] // 2, shape[1] // 4)  # 8 blocks per layer
        dist[f"l{i}"] = np.concatenate([[0.0], np.cumsum(np.sort(rng.random(n)))])
        cost[f"l{i}"] = ob.flops_curve(shape, block, ratios=ratios)
        one_block.append(cost[f"l{i}"][0] / n)
    res = ob.allocate_ratios(
        dist, cost, budget, ratios=ratios, rule="lagrange", smooth=None, min_density=0.0
    )
    target = budget * res.dense_cost
    assert res.cost <= target * (1 + 1e-12)
    assert target - res.cost <= max(one_block) + 1e-9
    # the masks realise the ratios exactly (whole blocks)
    for a in res.ratios.values():
        keep = ob.block_keep_mask(rng.random((2, 4)), a, (1, 1))
        assert ob.block_ratio(keep, (1, 1)) == pytest.approx(a)


def test_lpvit_rule_equalises_slopes() -> None:
    """D_l = k_l a²: every layer ends where its slope 2 k_l a is closest to the common 2^s."""
    ratios = ob.ratio_grid(100)
    ks = {"a": 1.0, "b": 2.0, "c": 4.0}
    dist = {n: k * ratios**2 for n, k in ks.items()}
    cost = dict.fromkeys(ks, 100.0 * (1 - ratios))
    res = ob.allocate_ratios(dist, cost, 0.6, ratios=ratios, smooth=None)
    assert res.cost <= 0.6 * res.dense_cost
    target = 2.0**res.exponent
    for n, k in ks.items():
        assert abs(2 * k * res.ratios[n] - target) <= 2 * k * 0.01 + 1e-9
    # a flatter layer is pruned more
    assert res.ratios["a"] > res.ratios["b"] > res.ratios["c"]
    # the continuous optimum a_l ∝ 1/k_l with Σ (1 − a_l) = 3 · 0.6: within two grid steps
    mu = 1.2 / sum(1 / k for k in ks.values())
    for n, k in ks.items():
        assert abs(res.ratios[n] - mu / k) <= 0.02 + 1e-9


def test_power_curves_and_beta() -> None:
    ratios = ob.ratio_grid(20)
    dist = {"a": ratios**2, "b": 3 * ratios**2}
    power = {
        "a": ob.lpvit_power_curve((32, 64), "16x16", ratios=ratios),
        "b": ob.lpvit_power_curve((32, 32), "16x16", ratios=ratios),
    }
    cost = {
        "a": ob.flops_curve((32, 64), "16x16", ratios=ratios),
        "b": ob.flops_curve((32, 32), "16x16", ratios=ratios),
    }
    res = ob.allocate_ratios(dist, cost, 0.5, ratios=ratios, power=power, smooth=None)
    d_max = np.mean([ob.stencil_slopes(ratios, v).max() for v in dist.values()])
    p_max = np.mean([ob.stencil_slopes(ratios, v).max() for v in power.values()])
    assert res.beta == pytest.approx(d_max / p_max)
    fixed = ob.allocate_ratios(dist, cost, 0.5, ratios=ratios, power=power, beta=0.0, smooth=None)
    plain = ob.allocate_ratios(dist, cost, 0.5, ratios=ratios, smooth=None)
    assert fixed.ratios == plain.ratios
    with pytest.raises(oc.ObertError, match="beta weighs the power curves"):
        ob.allocate_ratios(dist, cost, 0.5, ratios=ratios, beta=1.0)


def test_min_density_and_bad_input() -> None:
    ratios = ob.ratio_grid(100)
    dist = {"a": ratios**2, "b": 50 * ratios**2}
    cost = {"a": 10 * (1 - ratios), "b": 10 * (1 - ratios)}
    res = ob.allocate_ratios(dist, cost, 0.04, ratios=ratios, rule="lagrange", smooth=None)
    assert res.min_density == pytest.approx(0.02)
    assert max(res.ratios.values()) <= 0.98 + 1e-12
    for bad in (0, 1, 1.5, -0.1, True, "0.5", float("nan")):
        with pytest.raises(oc.ObertError, match="budget must be"):
            ob.allocate_ratios(dist, cost, bad, ratios=ratios)  # type: ignore[arg-type]
    with pytest.raises(oc.ObertError, match="cannot be met"):
        ob.allocate_ratios(dist, cost, 0.1, ratios=ratios, min_density=0.5)
    with pytest.raises(oc.ObertError, match=r"missing \['b'\]"):
        ob.allocate_ratios(dist, {"a": cost["a"]}, 0.5, ratios=ratios)
    with pytest.raises(oc.ObertError, match="one value per ratio"):
        ob.allocate_ratios({"a": ratios[:5]}, {"a": cost["a"]}, 0.5, ratios=ratios)
    with pytest.raises(oc.ObertError, match="unknown rule"):
        ob.allocate_ratios(dist, cost, 0.5, rule="greedy")
    with pytest.raises(oc.ObertError, match="start at 0"):
        ob.allocate_ratios({"a": ratios[1:]}, {"a": cost["a"][1:]}, 0.5, ratios=ratios[1:])


def test_default_smoothing_and_grid_run_end_to_end() -> None:
    """Curves from real block scores through the default (LPViT) settings."""
    rng = np.random.default_rng(0)
    shapes = {"fc1": (64, 32), "fc2": (32, 64), "qkv": (96, 32)}
    dist, cost = {}, {}
    for name, shape in shapes.items():
        w = rng.standard_normal(shape)
        g = rng.standard_normal(shape) * rng.uniform(0.1, 2)
        dist[name] = ob.taylor_distortion_curve(w, g, "16x16")
        cost[name] = ob.flops_curve(shape, "16x16")
    res = ob.allocate_ratios(dist, cost, 0.5)
    assert res.cost <= 0.5 * res.dense_cost
    assert set(res.ratios) == set(shapes)
    assert all(0.0 <= a <= 0.95 for a in res.ratios.values())


@pytest.mark.parametrize("rule", ob.RULES)
def test_a_free_layer_is_pruned_to_the_minimum_density(rule: str) -> None:
    ratios = ob.ratio_grid(100)
    dist = {"free": np.zeros(101), "costly": 5 * ratios**2}
    cost = {"free": 10 * (1 - ratios), "costly": 10 * (1 - ratios)}
    res = ob.allocate_ratios(dist, cost, 0.7, ratios=ratios, rule=rule, smooth=None)
    assert res.ratios["free"] == pytest.approx(0.95)
    assert res.cost <= 0.7 * res.dense_cost
