"""obert_core.blocks.allocate_ratios against brute force on small separable problems."""

from __future__ import annotations

import itertools
from typing import Any

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


@pytest.mark.parametrize("rule", ["lpvit", "lagrange"])
def test_a_free_layer_is_pruned_to_the_minimum_density(rule: str) -> None:
    ratios = ob.ratio_grid(100)
    dist = {"free": np.zeros(101), "costly": 5 * ratios**2}
    cost = {"free": 10 * (1 - ratios), "costly": 10 * (1 - ratios)}
    res = ob.allocate_ratios(dist, cost, 0.7, ratios=ratios, rule=rule, smooth=None)
    assert res.ratios["free"] == pytest.approx(0.95)
    assert res.cost <= 0.7 * res.dense_cost


def test_uniform_rule_is_the_smallest_common_ratio_meeting_the_budget() -> None:
    ratios = ob.ratio_grid(20)
    cost = {"a": ob.flops_curve((32, 64), "16x16", ratios=ratios), "b": 3 * (1 - ratios)}
    dist = {"a": ratios**2, "b": ratios}
    res = ob.allocate_ratios(dist, cost, 0.62, ratios=ratios, rule="uniform")
    assert res.ratios["a"] == res.ratios["b"]
    a = res.ratios["a"]
    j = int(np.flatnonzero(ratios == a)[0])
    totals = cost["a"] + cost["b"]
    assert totals[j] <= 0.62 * res.dense_cost < totals[j - 1]
    with pytest.raises(oc.ObertError, match="one ratio for every layer"):
        ob.allocate_ratios(dist, cost, 0.01, ratios=ratios, rule="uniform", min_density=0.5)


def _model(seed: int) -> tuple[dict, dict, dict]:
    rng = np.random.default_rng(seed)
    shapes = {"attn.qkv": (48, 16), "mlp.fc1": (32, 16), "mlp.fc2": (16, 32)}
    weights = {n: rng.standard_normal(s) for n, s in shapes.items()}
    grads = {n: rng.standard_normal(s) * rng.uniform(0.1, 3) for n, s in shapes.items()}
    finvs = {
        n: oc.block_fisher_inverse(rng.standard_normal((24, w.size)), 8, 1e-3, backend="numpy")
        for n, w in weights.items()
    }
    return weights, grads, finvs


def test_allocate_blocks_is_the_composition_of_the_curves() -> None:
    weights, grads, finvs = _model(0)
    ratios = ob.ratio_grid(100)
    flops = {n: ob.flops_curve(w.shape, "8x8", ratios=ratios) for n, w in weights.items()}
    power = {n: ob.lpvit_power_curve(w.shape, "8x8", ratios=ratios) for n, w in weights.items()}
    lpvit = {n: ob.taylor_distortion_curve(w, grads[n], "8x8") for n, w in weights.items()}
    obs = {n: ob.obs_distortion_curve(w, finvs[n], "8x8") for n, w in weights.items()}
    got = ob.allocate_blocks(weights, "8x8", 0.5, grads=grads)
    assert got == ob.allocate_ratios(lpvit, flops, 0.5, power=power)
    got = ob.allocate_blocks(weights, "8x8", 0.5, method="obs", finvs=finvs, rule="lagrange")
    assert got == ob.allocate_ratios(obs, flops, 0.5, rule="lagrange")
    got = ob.allocate_blocks(weights, "8x8", 0.5, method="uniform")
    # one ratio; 0.46 already removes half of every layer's blocks (round(0.46 · 12) = 6, ...)
    assert set(got.ratios.values()) == {0.46} and got.cost == pytest.approx(0.5 * got.dense_cost)
    table = {(48, 16): {1.0: 9.0, 0.0: 1.0}, (32, 16): {1.0: 5.0}, (16, 32): {1.0: 5.0, 0.5: 4.0}}
    lat = ob.allocate_blocks(weights, "8x8", 0.7, method="uniform", latency=table)
    assert lat.dense_cost == pytest.approx(19.0) and lat.cost <= 0.7 * 19.0


def test_allocate_blocks_refuses_what_it_cannot_use() -> None:
    weights, grads, finvs = _model(1)
    with pytest.raises(oc.ObertError, match="method='lpvit' needs grads"):
        ob.allocate_blocks(weights, "8x8", 0.5)
    with pytest.raises(oc.ObertError, match=r"finvs has no entry for \['mlp.fc2'\]"):
        ob.allocate_blocks(
            weights, "8x8", 0.5, method="obs", finvs={k: finvs[k] for k in list(finvs)[:2]}
        )
    with pytest.raises(oc.ObertError, match=r"mlp\.fc1 of shape \(32, 16\) is not a whole"):
        ob.allocate_blocks(weights, "24x8", 0.5, grads=grads)
    with pytest.raises(oc.ObertError, match=r"no entry for mlp\.fc1 of shape \(32, 16\)"):
        ob.allocate_blocks(weights, "8x8", 0.5, grads=grads, latency={(48, 16): {1.0: 1.0}})
    with pytest.raises(oc.ObertError, match="unknown method"):
        ob.allocate_blocks(weights, "8x8", 0.5, method="random")
    with pytest.raises(oc.ObertError, match="budget must be in"):
        ob.allocate_blocks(weights, "8x8", 1.0, grads=grads)


@pytest.mark.parametrize("rule", ["lpvit", "lagrange", "uniform"])
def test_blocks_keep_the_minimum_density_after_rounding(rule: str) -> None:
    # 64 blocks: a = 0.95 removes round(60.8) = 61 and keeps 3 < ceil(0.05 · 64) = 4 blocks
    ratios = ob.ratio_grid(100)
    dist = {"free": np.zeros(101), "other": np.zeros(101)}
    cost = {"free": 10 * (1 - ratios), "other": 10 * (1 - ratios)}
    kw: dict[str, Any] = {"ratios": ratios, "rule": rule, "smooth": None, "min_density": 0.05}
    loose = ob.allocate_ratios(dist, cost, 0.05, **kw)
    assert loose.ratios["free"] == pytest.approx(0.95)
    counts = {"free": 64, "other": 64}
    with pytest.raises(oc.ObertError, match="cannot be met"):
        ob.allocate_ratios(dist, cost, 0.05, blocks=counts, **kw)
    res = ob.allocate_ratios(dist, cost, 0.07, blocks=counts, **kw)
    assert res.cost <= 0.07 * res.dense_cost
    for a in res.ratios.values():
        assert 64 - round(a * 64) >= 4
    if rule != "uniform":  # the cheapest allowed point: 0.94 keeps round(60.16) = 60 -> 4 blocks
        assert res.ratios["free"] == pytest.approx(0.94)


def test_blocks_argument_is_checked() -> None:
    ratios = ob.ratio_grid(10)
    dist = {"a": ratios, "b": ratios}
    cost = {"a": 1 - ratios, "b": 1 - ratios}
    with pytest.raises(oc.ObertError, match=r"blocks must name the same layers.*\['b'\]"):
        ob.allocate_ratios(dist, cost, 0.5, ratios=ratios, blocks={"a": 8})
    with pytest.raises(oc.ObertError, match=r"blocks\['b'\] must be a positive integer, got 0"):
        ob.allocate_ratios(dist, cost, 0.5, ratios=ratios, blocks={"a": 8, "b": 0})


def test_allocate_blocks_keeps_ceil_min_density_blocks() -> None:
    rng = np.random.default_rng(3)
    weights = {"q": rng.standard_normal((64, 64)), "fc": rng.standard_normal((256, 64))}
    grads = {n: rng.standard_normal(w.shape) for n, w in weights.items()}
    got = ob.allocate_blocks(weights, "8x8", 0.1, grads=grads, rule="lagrange")
    assert 64 - round(got.ratios["q"] * 64) >= 4
    assert 256 - round(got.ratios["fc"] * 256) >= 13
    assert got.cost <= 0.1 * got.dense_cost
