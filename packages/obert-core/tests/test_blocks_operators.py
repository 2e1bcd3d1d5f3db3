"""The OBS distortion curve (B-5) on every Fisher form: explicit inverse, FisherBlocks, LowRankFisher."""

from __future__ import annotations

import numpy as np
import pytest
from core_helpers import HAS_TORCH

import obert_core as oc
from obert_core import blocks as ob


def _gram(g: np.ndarray, block: int) -> np.ndarray:
    m, d = g.shape
    pad = np.zeros((m, -(-d // block) * block))
    pad[:, :d] = g
    gb = pad.reshape(m, -1, block)
    return np.einsum("mbi,mbj->bij", gb, gb)


@pytest.mark.parametrize("m", [6, 40])
def test_obs_curve_is_the_same_on_every_fisher_form(m: int) -> None:
    rng = np.random.default_rng(m)
    rows, cols, block, damp = 8, 16, 16, 1e-3
    w = rng.standard_normal((rows, cols))
    g = rng.standard_normal((m, rows * cols))
    finv = oc.block_fisher_inverse(g, block, damp)
    ref = ob.obs_distortion_curve(w, finv, (2, 4))
    forms = [oc.FisherBlocks(_gram(g, block), damp, m, rows * cols)]
    if m < block:
        forms.append(oc.LowRankFisher(g, block, damp))
    for fisher in forms:
        got = ob.obs_distortion_curve(w, fisher, (2, 4))
        np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-10)


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_obs_curve_on_torch_forms_matches_numpy() -> None:
    import torch

    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 16))
    g = rng.standard_normal((5, 128))
    ref = ob.obs_distortion_curve(w, oc.block_fisher_inverse(g, 16, 1e-3), (2, 4))
    got = ob.obs_distortion_curve(
        torch.from_numpy(w), oc.LowRankFisher(torch.from_numpy(g), 16, 1e-3), (2, 4)
    )
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-10)
    gram = torch.from_numpy(_gram(g, 16))
    got = ob.obs_distortion_curve(torch.from_numpy(w), oc.FisherBlocks(gram, 1e-3, 5, 128), (2, 4))
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-10)
