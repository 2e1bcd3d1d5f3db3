from __future__ import annotations

import numpy as np
import pytest
from core_helpers import HAS_TORCH
from hypothesis import given, settings
from hypothesis import strategies as st

import obert_core as oc


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=4),
    s=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**16),
    ties=st.booleans(),
)
def test_exact_counts_global_and_layer(sizes: list[int], s: float, seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    scores = {
        f"t{i}": (rng.integers(0, 3, n).astype(float) if ties else rng.standard_normal(n))
        for i, n in enumerate(sizes)
    }
    n_total = sum(sizes)
    glob = oc.select_mask(scores, s)
    assert sum(int((~m).sum()) for m in glob.values()) == round(s * n_total)
    layer = oc.select_mask(scores, s, scope="layer")
    for name, m in layer.items():
        assert int((~m).sum()) == round(s * scores[name].size)
    # deterministic, including ties
    again = oc.select_mask(scores, s)
    assert all((again[k] == glob[k]).all() for k in glob)
    # the pruned set holds the lowest scores
    allsc = np.concatenate([scores[k] for k in scores])
    allm = np.concatenate([glob[k] for k in scores])
    if (~allm).any() and allm.any():
        assert allsc[~allm].max() <= allsc[allm].min()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), s1=st.floats(0.0, 0.6), ds=st.floats(0.0, 0.39))
def test_masks_never_regrow(seed: int, s1: float, ds: float) -> None:
    rng = np.random.default_rng(seed)
    scores = {"a": rng.standard_normal(40), "b": rng.standard_normal(24)}
    m1 = oc.select_mask(scores, s1)
    new_scores = {k: rng.standard_normal(v.size) * 100 for k, v in scores.items()}  # very different
    m2 = oc.select_mask(new_scores, s1 + ds, current_masks=m1)
    for k in m1:
        assert not (m2[k] & ~m1[k]).any()
    assert sum(int((~m).sum()) for m in m2.values()) == round((s1 + ds) * 64)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    gone=st.floats(0.0, 0.95),
    extra=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
    ties=st.booleans(),
    scope=st.sampled_from(["global", "layer"]),
)
def test_selection_with_earlier_pruning_equals_a_stable_sort(
    sizes: list[int], gone: float, extra: float, seed: int, ties: bool, scope: str
) -> None:
    """Brute-force oracle: earlier-pruned first, then the lowest scores, ties by position."""
    rng = np.random.default_rng(seed)
    scores = {
        f"t{i}": (rng.integers(0, 3, n).astype(float) if ties else rng.standard_normal(n))
        for i, n in enumerate(sizes)
    }
    current = {k: rng.random(v.size) >= gone for k, v in scores.items()}

    def oracle(names: list[str], s: float) -> dict[str, np.ndarray]:
        key = np.concatenate([np.where(current[n], scores[n], -np.inf) for n in names])
        pruned = np.zeros(key.size, dtype=bool)
        pruned[np.argsort(key, kind="stable")[: round(s * key.size)]] = True
        out, start = {}, 0
        for n in names:
            out[n] = ~pruned[start : start + scores[n].size]
            start += scores[n].size
        return out

    groups = [list(scores)] if scope == "global" else [[n] for n in scores]
    # the smallest sparsity every group can reach without regrowth, then part of the rest
    low = max(1.0 - sum(int(current[n].sum()) for n in g) / sum(scores[n].size for n in g)
              for g in groups)  # fmt: skip
    s = min(0.99, low + extra * (1.0 - low))
    if any(
        round(s * sum(scores[n].size for n in g)) < sum(int((~current[n]).sum()) for n in g)
        for g in groups
    ):
        return  # rounding below what is already pruned: refused, checked elsewhere
    got = oc.select_mask(scores, s, scope=scope, current_masks=current)
    for g in groups:
        want = oracle(g, s)
        for n in g:
            np.testing.assert_array_equal(got[n], want[n])


def test_ties_broken_by_position() -> None:
    m = oc.select_mask({"a": np.zeros(4), "b": np.zeros(4)}, 0.25)
    np.testing.assert_array_equal(m["a"], [False, False, True, True])
    np.testing.assert_array_equal(m["b"], [True] * 4)


def test_global_can_be_non_uniform_and_layer_is_uniform() -> None:
    scores = {"small": np.linspace(0, 1, 10), "large": np.linspace(10, 11, 10)}
    g = oc.select_mask(scores, 0.5)
    assert (~g["small"]).sum() == 10 and (~g["large"]).sum() == 0
    lw = oc.select_mask(scores, 0.5, scope="layer")
    assert (~lw["small"]).sum() == 5 and (~lw["large"]).sum() == 5
    same = {"x": np.arange(10.0), "y": np.arange(10.0) + 0.5}
    np.testing.assert_array_equal(
        np.concatenate(list(oc.select_mask(same, 0.3).values())),
        np.concatenate(list(oc.select_mask(same, 0.3, scope="layer").values())),
    )


def test_group_masks_are_constant_over_groups() -> None:
    rng = np.random.default_rng(1)
    scores = {"w": rng.standard_normal(16)}  # 16 groups of 4 → 64 weights
    m = oc.select_mask(scores, 0.5, group_size=4)["w"]
    assert m.shape == (64,) and (~m).sum() == 32
    g = m.reshape(-1, 4)
    assert (g.all(1) | ~g.any(1)).all()
    with pytest.raises(oc.ObertError, match="not constant over groups"):
        oc.select_mask(scores, 0.6, group_size=4, current_masks={"w": np.arange(64) % 3 != 0})


def test_nm_pattern() -> None:
    rng = np.random.default_rng(2)
    sc = rng.standard_normal(32)
    m = oc.select_mask({"w": sc}, None, nm="2:4")["w"].reshape(-1, 4)
    assert (m.sum(1) == 2).all()
    blocks = sc.reshape(-1, 4)
    for row, keep in zip(blocks, m, strict=True):
        assert row[keep].min() >= row[~keep].max()
    with pytest.raises(oc.ObertError, match="contradicts"):
        oc.select_mask({"w": sc}, 0.3, nm="2:4")
    with pytest.raises(oc.ObertError, match="N:M pattern"):
        oc.select_mask({"w": sc}, None, nm="4:2")


def test_errors_name_the_value() -> None:
    with pytest.raises(oc.ObertError, match=r"\[0, 1\)"):
        oc.select_mask({"w": np.ones(4)}, 1.0)
    with pytest.raises(oc.ObertError, match="unknown scope 'model'"):
        oc.select_mask({"w": np.ones(4)}, 0.5, scope="model")
    with pytest.raises(oc.ObertError, match="NaN or inf"):
        oc.select_mask({"w": np.array([1.0, np.nan])}, 0.5)
    with pytest.raises(oc.ObertError, match="never regrow"):
        oc.select_mask(
            {"w": np.ones(4)}, 0.25, current_masks={"w": np.array([False, False, True, True])}
        )


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_torch_scores_give_torch_masks() -> None:
    import torch

    m = oc.select_mask({"w": torch.arange(10.0)}, 0.3)["w"]
    assert isinstance(m, torch.Tensor) and m.dtype == torch.bool and int((~m).sum()) == 3
