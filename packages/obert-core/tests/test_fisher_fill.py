"""fill_unseen_curvature (Eq. U, docs/math.md §1.1) against its definition."""

from __future__ import annotations

import numpy as np
import pytest
from core_helpers import HAS_TORCH
from hypothesis import given, settings
from hypothesis import strategies as st

import obert_core as oc


def _gram(rng: np.random.Generator, n: int, b: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    g = rng.standard_normal((n, m, b)) * rng.uniform(0.1, 3.0, size=(n, 1, b))
    return g, np.einsum("nmi,nmj->nij", g, g)


@given(seed=st.integers(0, 10_000), b=st.integers(2, 12), m=st.integers(1, 14))
@settings(max_examples=40, deadline=None)
def test_fill_keeps_seen_curvature_and_gives_unseen_the_mean(seed: int, b: int, m: int) -> None:
    rng = np.random.default_rng(seed)
    g, gram = _gram(rng, 3, b, m)
    lower = np.tril(gram)  # only the lower triangle is read
    out = oc.fill_unseen_curvature(lower, m)
    if m >= b:
        assert out is lower  # nothing unseen: unchanged, bit for bit
        return
    del lower
    if m >= b:
        assert out is gram  # nothing unseen: unchanged, bit for bit
        return
    for k in range(3):
        mu = np.trace(gram[k]) / b  # every coordinate live here
        # along every gradient (the seen span) the curvature is unchanged ...
        for v in g[k]:
            np.testing.assert_allclose(out[k] @ v, gram[k] @ v, rtol=1e-8, atol=1e-8 * mu)
        # ... and every direction orthogonal to all gradients gets the mean curvature
        _, _, vt = np.linalg.svd(g[k])
        for u in vt[m:]:
            np.testing.assert_allclose(out[k] @ u, mu * u, rtol=1e-8, atol=1e-8 * mu)
        np.testing.assert_allclose(out[k], out[k].T, atol=1e-10 * mu)


def test_fill_with_dependent_gradients_leaves_extra_null_directions_unfilled() -> None:
    rng = np.random.default_rng(1)
    base = rng.standard_normal((2, 6))
    g = np.concatenate([base, base[:1] * 2.0])[None]  # m = 3 gradients spanning 2 directions
    gram = np.einsum("nmi,nmj->nij", g, g)
    out = oc.fill_unseen_curvature(gram, 3)
    eig = np.linalg.eigvalsh(out[0])
    mu = np.trace(gram[0]) / 6  # all 6 coordinates live
    assert (eig < 1e-9).sum() == 1  # 6 - 3 = 3 filled, one of the 4 null directions stays at 0
    assert (np.abs(eig - mu) < 1e-8 * mu).sum() == 3


def test_fill_bad_input() -> None:
    with pytest.raises(oc.ObertError, match="shape"):
        oc.fill_unseen_curvature(np.zeros((4, 4)), 2)
    with pytest.raises(oc.ObertError, match="num_grads"):
        oc.fill_unseen_curvature(np.zeros((1, 4, 4)), 0)
    with pytest.raises(oc.ObertError, match="finite"):
        oc.fill_unseen_curvature(np.full((1, 4, 4), np.nan), 2)


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_fill_torch_matches_numpy() -> None:
    import torch

    rng = np.random.default_rng(3)
    _, gram = _gram(rng, 5, 10, 4)
    ref = oc.fill_unseen_curvature(gram, 4)
    got = oc.fill_unseen_curvature(torch.from_numpy(gram).float(), 4)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_builder_fill_unseen_equals_the_filled_gram_inverse(backend: str) -> None:
    if backend == "torch" and not HAS_TORCH:
        pytest.skip("torch not installed")
    rng = np.random.default_rng(4)
    m, d, b, damp = 4, 23, 10, 1e-6
    g = rng.standard_normal((m, d))
    pad = np.zeros((m, 30))
    pad[:, :d] = g
    gb = pad.reshape(m, 3, b)
    gram = np.einsum("mbi,mbj->bij", gb, gb)
    filled = oc.fill_unseen_curvature(gram, m)
    expected = np.linalg.inv(filled / m + damp * np.eye(b))
    grads = g if backend == "numpy" else __import__("torch").from_numpy(g)
    got = oc.block_fisher_inverse(grads, b, damp, backend=backend, fill_unseen=True)
    got = np.asarray(got)
    # the padded tail coordinates decouple; compare the real ones
    np.testing.assert_allclose(got[:2], expected[:2], rtol=1e-6)
    np.testing.assert_allclose(got[2][:3, :3], expected[2][:3, :3], rtol=1e-6)
    fb = oc.BlockFisherBuilder(d, b, damp, m, backend=backend, fill_unseen=True)
    fb.add(grads)
    blocks = fb.finalize_fisher()
    np.testing.assert_allclose(
        np.asarray(blocks.diag())[:20],
        np.diagonal(expected[:2], axis1=1, axis2=2).reshape(-1),
        rtol=1e-6,
    )
    with pytest.raises(oc.ObertError, match="batched"):
        oc.BlockFisherBuilder(d, b, damp, m, method="streaming", fill_unseen=True)
    same = oc.block_fisher_inverse(g, b, damp, num_grads=m, fill_unseen=False)
    assert not np.allclose(same[:2], expected[:2], rtol=1e-3)


def test_fill_mean_counts_only_live_coordinates() -> None:
    """Masked (pruned) and padded coordinates have zero gradients: they do not dilute μ."""
    rng = np.random.default_rng(9)
    g = rng.standard_normal((1, 2, 8))
    g[..., 5:] = 0.0  # 3 coordinates without gradient (pruned or padding)
    gram = np.einsum("nmi,nmj->nij", g, g)
    out = oc.fill_unseen_curvature(gram, 2)
    mu = np.trace(gram[0]) / 5
    _, _, vt = np.linalg.svd(g[0])
    live_unseen = [u for u in vt[2:] if np.allclose(u[5:], 0)]
    assert live_unseen
    for u in live_unseen:
        np.testing.assert_allclose(out[0] @ u, mu * u, rtol=1e-8, atol=1e-10)
