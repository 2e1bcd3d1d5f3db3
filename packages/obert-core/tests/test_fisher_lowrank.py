"""LowRankFisher (Eq. W-1..3) against the explicit blocked inverse."""

from __future__ import annotations

import numpy as np
import pytest
from core_helpers import HAS_TORCH, to_np
from hypothesis import given, settings
from hypothesis import strategies as st

import obert_core as oc


def _problem(seed: int, m: int, d: int, block: int, damp: float = 1e-4):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((m, d)) * rng.uniform(0.2, 2.0, size=d)
    w = rng.standard_normal(d)
    return rng, g, w, oc.LowRankFisher(g, block, damp), oc.block_fisher_inverse(g, block, damp)


@given(seed=st.integers(0, 10_000), m=st.integers(1, 9), frac=st.floats(0.05, 0.95))
@settings(max_examples=30, deadline=None)
def test_lowrank_equals_the_explicit_inverse_everywhere(seed: int, m: int, frac: float) -> None:
    block, d = 10, 37  # padded tail block
    rng, _, w, lr, finv = _problem(seed, m, d, block)
    np.testing.assert_allclose(lr.inverse(), finv, rtol=1e-6, atol=1e-6 * np.abs(finv).max())
    np.testing.assert_allclose(
        oc.obs_saliency(w, lr), oc.obs_saliency(w, finv), rtol=1e-6, atol=1e-12
    )
    prune = rng.random(d) < frac
    for mode in ("joint", "superpose", "auto"):
        got = oc.obs_update(w, lr, prune, mode=mode, num_grads=m)
        ref = oc.obs_update(w, finv, prune, mode=mode, num_grads=m)
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-8 * np.abs(ref).max())
    delta = oc.obs_update(w, finv, prune) - w
    assert oc.obs_quadratic_increase(delta, lr) == pytest.approx(
        oc.obs_quadratic_increase(delta, finv), rel=1e-6
    )


def test_lowrank_group_blocks_and_block4_saliency() -> None:
    *_, w, lr, finv = _problem(3, 6, 40, 20)
    np.testing.assert_allclose(
        oc.obs_saliency(w, lr, group_size=4), oc.obs_saliency(w, finv, group_size=4), rtol=1e-6
    )


def test_lowrank_bad_input() -> None:
    with pytest.raises(oc.ObertError, match="2-D"):
        oc.LowRankFisher(np.zeros(5), 2, 1e-4)
    with pytest.raises(oc.ObertError, match="damp"):
        oc.LowRankFisher(np.ones((2, 5)), 2, 0.0)
    with pytest.raises(oc.ObertError, match="finite"):
        oc.LowRankFisher(np.full((2, 5), np.nan), 2, 1e-4)


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_lowrank_torch_matches_numpy() -> None:
    import torch

    rng, g, w, lr, _ = _problem(5, 4, 60, 12)
    prune = rng.random(60) < 0.6
    lt = oc.LowRankFisher(torch.from_numpy(g).float(), 12, 1e-4)
    got = oc.obs_update(torch.from_numpy(w).float(), lt, torch.from_numpy(prune))
    ref = oc.obs_update(w, lr, prune)
    np.testing.assert_allclose(to_np(got), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(to_np(lt.diag()), lr.diag(), rtol=1e-4)
