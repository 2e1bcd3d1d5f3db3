from __future__ import annotations

import numpy as np
import pytest
from core_helpers import HAS_TORCH, dense_block_fisher, oracle_blocks, to_np

import obert_core as oc


def test_queries_match_explicit_inverse() -> None:
    rng = np.random.default_rng(0)
    g = rng.standard_normal((12, 30))
    mf = oc.MFACInverse(g, 1e-2)  # full, unblocked
    fi = np.linalg.inv(g.T @ g / 12 + 1e-2 * np.eye(30))
    np.testing.assert_allclose(mf.diag(), np.diag(fi), rtol=1e-10)
    x = rng.standard_normal(30)
    y = rng.standard_normal(30)
    np.testing.assert_allclose(mf.matvec(x), fi @ x, rtol=1e-9)
    assert (
        abs(y @ mf.matvec(x) - x @ mf.matvec(y)) < 1e-8 * abs(x @ mf.matvec(y)) + 1e-10
    )  # symmetric
    np.testing.assert_allclose(mf.dense_blocks()[0], fi, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("block", [5, 8, 30])
def test_blocked_mfac_equals_obert_blocks(block: int) -> None:
    rng = np.random.default_rng(block)
    g = rng.standard_normal((10, 30))
    mf = oc.MFACInverse(g, 1e-3, block_size=block)
    np.testing.assert_allclose(
        mf.dense_blocks(), oracle_blocks(g, block, 1e-3), rtol=1e-8, atol=1e-6
    )


@pytest.mark.parametrize("block", [8, 40])  # B ≤ m (dense path) and B > m (Woodbury path)
def test_obs_with_mfac_matches_dense(block: int) -> None:
    rng = np.random.default_rng(3)
    g = rng.standard_normal((16, 40))
    w = rng.standard_normal(40)
    finv = oc.block_fisher_inverse(g, block, 1e-3, backend="numpy")
    mf = oc.MFACInverse(g, 1e-3, block_size=block)
    prune = rng.random(40) < 0.5
    np.testing.assert_allclose(oc.obs_saliency(w, mf), oc.obs_saliency(w, finv), rtol=1e-8)
    np.testing.assert_allclose(
        oc.obs_saliency(w, mf, group_size=4), oc.obs_saliency(w, finv, group_size=4), rtol=1e-8
    )
    for mode in ("joint", "superpose"):
        np.testing.assert_allclose(
            oc.obs_update(w, mf, prune, mode=mode),
            oc.obs_update(w, finv, prune, mode=mode),
            atol=1e-7,
        )
    # joint is the brute-force optimum with the full (B = d) Fisher too
    f = dense_block_fisher(g, block, 1e-3)
    p, fr = np.flatnonzero(prune), np.flatnonzero(~prune)
    dw = np.zeros(40)
    dw[p] = -w[p]
    dw[fr] = np.linalg.solve(f[np.ix_(fr, fr)], -f[np.ix_(fr, p)] @ dw[p])
    np.testing.assert_allclose(oc.obs_update(w, mf, prune), w + dw, atol=1e-7)


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_mfac_torch() -> None:
    import torch

    g = np.random.default_rng(4).standard_normal((6, 20))
    a = oc.MFACInverse(g, 1e-2, block_size=10).diag()
    b = oc.MFACInverse(torch.from_numpy(g), 1e-2, block_size=10).diag()
    np.testing.assert_allclose(to_np(b), a, rtol=1e-12)


def test_mfac_errors() -> None:
    with pytest.raises(oc.ObertError, match="block_size=50 exceeds"):
        oc.MFACInverse(np.ones((2, 10)), 1e-3, block_size=50)
    mf = oc.MFACInverse(np.random.default_rng(0).standard_normal((3, 10)), 1e-3)
    with pytest.raises(oc.ObertError, match="built for 10 weights"):
        oc.obs_saliency(np.ones(12), mf)


@pytest.mark.parametrize("block", [4, 12])  # dense-block path and Woodbury path
def test_mfac_chunked_queries_equal_unchunked(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import obert_core.mfac as mfac_mod

    rng = np.random.default_rng(5)
    g = rng.standard_normal((8, 48))
    w = rng.standard_normal(48)
    prune = rng.random(48) < 0.4
    mf = oc.MFACInverse(g, 1e-3, block_size=block)
    ref = (mf.diag(), oc.obs_saliency(w, mf, group_size=4), oc.obs_update(w, mf, prune))
    monkeypatch.setattr(mfac_mod, "_BUDGET", 1)  # one block per chunk
    got = (mf.diag(), oc.obs_saliency(w, mf, group_size=4), oc.obs_update(w, mf, prune))
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
