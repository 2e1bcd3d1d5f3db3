"""The torch backend on CUDA agrees with the float64 NumPy reference (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
from core_helpers import HAS_TORCH, oracle_blocks

import obert_core as oc

torch = pytest.importorskip("torch") if HAS_TORCH else None
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not HAS_TORCH or not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("method", ["batched", "streaming"])
def test_cuda_fisher_matches_reference(method: str) -> None:
    rng = np.random.default_rng(0)
    g = rng.standard_normal((40, 1003)).astype(np.float32)
    g[:, rng.random(1003) < 0.3] = 0
    ref = oracle_blocks(g.astype(np.float64), 50, 1e-7 if method == "batched" else 1e-3)
    damp = 1e-7 if method == "batched" else 1e-3
    out = oc.block_fisher_inverse(
        torch.from_numpy(g).cuda(), 50, damp, method=method, dtype=torch.float64
    )
    assert out.device.type == "cuda"
    rel = np.linalg.norm(out.cpu().numpy() - ref, axis=(1, 2)) / np.linalg.norm(ref, axis=(1, 2))
    assert rel.max() < 1e-6


def test_cuda_obs_and_masks_match_numpy() -> None:
    rng = np.random.default_rng(1)
    g = rng.standard_normal((30, 64))
    w = rng.standard_normal(64)
    finv = oc.block_fisher_inverse(g, 16, 1e-3, backend="numpy")
    tf, tw = torch.from_numpy(finv).cuda(), torch.from_numpy(w).cuda()
    for gs in (1, 4):
        np.testing.assert_allclose(
            oc.obs_saliency(tw, tf, group_size=gs).cpu().numpy(),
            oc.obs_saliency(w, finv, group_size=gs),
            rtol=1e-10,
        )
    keep = oc.select_mask({"w": torch.from_numpy(oc.obs_saliency(w, finv)).cuda()}, 0.5)["w"]
    assert keep.device.type == "cuda" and int((~keep).sum()) == 32
    for mode in ("joint", "superpose"):
        out = oc.obs_update(tw, tf, ~keep, mode=mode)
        np.testing.assert_allclose(
            out.cpu().numpy(), oc.obs_update(w, finv, ~keep.cpu().numpy(), mode=mode), atol=1e-9
        )
    mf = oc.MFACInverse(torch.from_numpy(g).cuda(), 1e-3, block_size=16)
    np.testing.assert_allclose(
        oc.obs_saliency(tw, mf).cpu().numpy(), oc.obs_saliency(w, finv), rtol=1e-8
    )


def test_cuda_structured_matches_numpy() -> None:
    rng = np.random.default_rng(2)
    w, a, g = (
        rng.standard_normal((16, 48)),
        rng.standard_normal((200, 48)),
        rng.standard_normal((200, 16)),
    )
    for gs in (1, 8):
        s_np = oc.StructuredStats(w, group_size=gs)
        s_np.add(a, g)
        s_t = oc.StructuredStats(torch.from_numpy(w).cuda(), group_size=gs)
        s_t.add(torch.from_numpy(a).cuda(), torch.from_numpy(g).cuda())
        for kind in ("factorised", "unfactorised"):
            out = s_t.saliency(kind)
            assert out.device.type == "cuda"
            np.testing.assert_allclose(out.cpu().numpy(), s_np.saliency(kind), rtol=1e-9)
        h = s_np.input_hessian()
        ref = oc.obs_group_prune(w, h, 40 // gs, group_size=gs)
        got = oc.obs_group_prune(
            torch.from_numpy(w).cuda(), s_t.input_hessian(), 40 // gs, group_size=gs
        )
        assert got.weight.device.type == "cuda" and got.removed.tolist() == ref.removed.tolist()
        np.testing.assert_allclose(got.weight.cpu().numpy(), ref.weight, atol=1e-8)
