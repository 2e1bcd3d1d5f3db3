from __future__ import annotations

import numpy as np
import pytest
from core_helpers import HAS_TORCH, dense_block_fisher, to_np
from hypothesis import given, settings
from hypothesis import strategies as st

import obert_core as oc


def _problem(seed: int, d: int = 24, block: int = 8, m: int = 30, damp: float = 1e-3):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((m, d))
    w = rng.standard_normal(d)
    finv = oc.block_fisher_inverse(g, block, damp, backend="numpy")
    return rng, g, w, finv, dense_block_fisher(g, block, damp)


def _constrained_optimum(f: np.ndarray, w: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """Brute force: argmin ½δwᵀFδw s.t. (w+δw)_fixed = 0 — solve for the free coordinates."""
    p, fr = np.flatnonzero(fixed), np.flatnonzero(~fixed)
    dw = np.zeros_like(w)
    dw[p] = -w[p]
    dw[fr] = np.linalg.solve(f[np.ix_(fr, fr)], -f[np.ix_(fr, p)] @ dw[p])
    return dw


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), frac=st.floats(0.05, 0.9))
def test_joint_update_is_the_constrained_least_squares_optimum(seed: int, frac: float) -> None:
    rng, _, w, finv, f = _problem(seed)
    prune = rng.random(w.size) < frac
    if not prune.any():
        prune[0] = True
    dw = _constrained_optimum(f, w, prune)
    out = oc.obs_update(w, finv, prune, mode="joint")
    np.testing.assert_allclose(out, w + dw, atol=1e-9)
    assert (out[prune] == 0).all()
    # the loss increase on the quadratic model equals the joint saliency, and is minimal
    rho = 0.5 * dw @ f @ dw
    wp = np.where(prune, w, 0)
    z = np.linalg.solve(np.linalg.inv(f)[np.ix_(prune, prune)], w[prune])
    np.testing.assert_allclose(rho, 0.5 * wp[prune] @ z, rtol=1e-8)
    other = dw + np.where(prune, 0, rng.standard_normal(w.size) * 0.1)
    assert 0.5 * other @ f @ other >= rho - 1e-12


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), idx=st.integers(0, 23))
def test_single_weight_saliency_and_update(seed: int, idx: int) -> None:
    _, _, w, finv, f = _problem(seed)
    finv_dense = np.linalg.inv(f)
    rho = oc.obs_saliency(w, finv)
    np.testing.assert_allclose(rho[idx], w[idx] ** 2 / (2 * finv_dense[idx, idx]), rtol=1e-10)
    # δw* = −(w_i/[F⁻¹]_ii) F⁻¹ e_i zeroes w_i before any explicit zeroing, and ρ = ½δwᵀFδw
    dw = -(w[idx] / finv_dense[idx, idx]) * finv_dense[:, idx]
    assert abs(w[idx] + dw[idx]) < 1e-12
    np.testing.assert_allclose(0.5 * dw @ f @ dw, rho[idx], rtol=1e-8)
    prune = np.zeros(w.size, bool)
    prune[idx] = True
    for mode in ("joint", "superpose"):
        np.testing.assert_allclose(
            oc.obs_update(w, finv, prune, mode=mode), np.where(prune, 0, w + dw), atol=1e-10
        )


def test_quadratic_loss_increase_equals_saliency() -> None:
    """On L(w) = ½(w − w*)ᵀF(w − w*) at w = w*, pruning Q costs exactly ρ_Q (single and group)."""
    _, _, w, finv, f = _problem(11)
    loss = lambda v: 0.5 * (v - w) @ f @ (v - w)
    for g in (1, 4):
        rho = oc.obs_saliency(w, finv, group_size=g)
        for q in range(0, 24 // g, 3):
            prune = np.zeros(24, bool)
            prune[q * g : (q + 1) * g] = True
            new = oc.obs_update(w, finv, prune, group_size=g, mode="superpose")
            np.testing.assert_allclose(loss(new), rho[q], rtol=1e-8)


def test_group_saliency_is_the_group_solve() -> None:
    _, _, w, finv, f = _problem(12)
    fi = np.linalg.inv(f)
    rho = oc.obs_saliency(w, finv, group_size=4)
    ref = [
        0.5 * w[q : q + 4] @ np.linalg.solve(fi[q : q + 4, q : q + 4], w[q : q + 4])
        for q in range(0, 24, 4)
    ]
    np.testing.assert_allclose(rho, ref, rtol=1e-10)


def test_superpose_is_sum_of_single_updates_then_zeroing() -> None:
    _, _, w, finv, f = _problem(13)
    fi = np.linalg.inv(f)
    prune = np.zeros(24, bool)
    prune[[1, 2, 5, 9, 20]] = True
    dw = sum(-(w[i] / fi[i, i]) * fi[:, i] for i in np.flatnonzero(prune))
    ref = np.where(prune, 0.0, w + dw)
    np.testing.assert_allclose(oc.obs_update(w, finv, prune, mode="superpose"), ref, atol=1e-10)
    joint = oc.obs_update(w, finv, prune, mode="joint")
    assert np.abs(joint - ref).max() > 1e-6  # coupled weights in one block: the modes differ


def test_joint_equals_superpose_across_blocks_and_for_block_size_one() -> None:
    _, g, w, finv, _ = _problem(14)
    prune = np.zeros(24, bool)
    prune[[1, 9, 17]] = True  # one per Fisher block of 8
    np.testing.assert_allclose(
        oc.obs_update(w, finv, prune, mode="joint"),
        oc.obs_update(w, finv, prune, mode="superpose"),
        atol=1e-10,
    )
    f1 = oc.block_fisher_inverse(g, 1, 1e-3, backend="numpy")
    prune = np.random.default_rng(0).random(24) < 0.5
    for mode in ("joint", "superpose"):
        out = oc.obs_update(w, f1, prune, mode=mode)
        np.testing.assert_allclose(
            out, np.where(prune, 0, w), atol=1e-12
        )  # B = 1: others untouched


def test_masked_weights_stay_zero_and_unchanged_mask_is_a_no_op() -> None:
    rng = np.random.default_rng(15)
    g = rng.standard_normal((30, 24))
    w = rng.standard_normal(24)
    keep = rng.random(24) > 0.3
    w = np.where(keep, w, 0.0)
    g = g * keep  # gradients multiplied by the mask, as the sampler does
    finv = oc.block_fisher_inverse(g, 8, 1e-3, backend="numpy")
    flat_diag = np.diagonal(finv, 0, 1, 2).reshape(-1)
    np.testing.assert_allclose(flat_diag[~keep], 1e3)  # rows of masked coordinates: (1/λ)e_i
    prune = keep & (rng.random(24) < 0.3)
    for mode in ("joint", "superpose"):
        out = oc.obs_update(w, finv, prune, mode=mode)
        assert (out[~keep] == 0).all() and (out[prune] == 0).all()
        same = oc.obs_update(w, finv, np.zeros(24, bool), mode=mode)
        np.testing.assert_array_equal(same, w)


def test_joint_respects_earlier_mask_even_without_masked_gradients() -> None:
    _, _, w, finv, f = _problem(16)
    earlier = np.zeros(24, bool)
    earlier[[0, 6]] = True
    w = np.where(earlier, 0.0, w)
    prune = np.zeros(24, bool)
    prune[[3, 4, 12]] = True
    out = oc.obs_update(w, finv, prune, mode="joint")
    ref = w + _constrained_optimum(f, w, earlier | prune)
    np.testing.assert_allclose(out, ref, atol=1e-9)


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_torch_matches_numpy() -> None:
    import torch

    rng, _, w, finv, _ = _problem(17, d=40, block=8)
    prune = rng.random(40) < 0.4
    for g in (1, 4):
        a = oc.obs_saliency(w, finv, group_size=g)
        b = oc.obs_saliency(torch.from_numpy(w), torch.from_numpy(finv), group_size=g)
        np.testing.assert_allclose(to_np(b), a, rtol=1e-12)
    pg = np.repeat(prune[::4], 4)
    for mode in ("joint", "superpose"):
        a = oc.obs_update(w, finv, pg, mode=mode, group_size=4)
        b = oc.obs_update(
            torch.from_numpy(w),
            torch.from_numpy(finv),
            torch.from_numpy(pg),
            mode=mode,
            group_size=4,
        )
        assert isinstance(b, torch.Tensor) and b.dtype == torch.float64
        np.testing.assert_allclose(to_np(b), a, atol=1e-10)


def test_float32_weights_keep_dtype_and_pruned_are_exact_zero() -> None:
    rng, g, w, _, _ = _problem(18)
    finv = oc.block_fisher_inverse(g.astype(np.float32), 8, 1e-3)
    prune = rng.random(24) < 0.5
    out = oc.obs_update(w.astype(np.float32), finv, prune)
    assert out.dtype == np.float32 and (out[prune] == 0).all()


def test_nm_mask_by_joint_saliency_is_the_brute_force_best() -> None:
    _, _, w, finv, f = _problem(19, d=32, block=8)
    fi = np.linalg.inv(f)
    keep = oc.obs_nm_mask(w, finv, "2:4")
    assert keep.shape == (32,)
    assert (keep.reshape(-1, 4).sum(1) == 2).all()
    from itertools import combinations

    for q in range(0, 32, 4):
        costs = {}
        for p in combinations(range(q, q + 4), 2):
            pi = list(p)
            costs[p] = 0.5 * w[pi] @ np.linalg.solve(fi[np.ix_(pi, pi)], w[pi])
        chosen = tuple(int(i) for i in np.flatnonzero(~keep[q : q + 4]) + q)
        assert costs[chosen] == pytest.approx(min(costs.values()), rel=1e-9)
    # earlier-pruned weights stay pruned and are part of the chosen set
    w2 = w.copy()
    w2[[0, 5, 9, 10, 11]] = 0.0
    keep2 = oc.obs_nm_mask(w2, finv, "2:4")
    assert not keep2[[0, 5, 9, 10, 11]].any()
    assert (keep2.reshape(-1, 4).sum(1) <= 2).all()
    with pytest.raises(oc.ObertError, match="must divide the Fisher block size"):
        oc.obs_nm_mask(w, finv, "1:3")


@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_compressed_joint_update_equals_padded_solve_and_brute_force(framework: str) -> None:
    """Blocks with no, some and all weights selected, and a padded tail block."""
    from obert_core._operators import DenseBlocks

    if framework == "torch" and not HAS_TORCH:
        pytest.skip("needs torch")
    rng, _, w, finv, f = _problem(5, d=45, block=8, m=30)
    sel = rng.random((6, 8)) < 0.5
    sel[0] = False
    sel[1] = True
    sel[5, 5:] = False  # the padded coordinates are never selected
    w_pad = np.concatenate([w, np.zeros(3)]).reshape(6, 8)
    dw_true = _constrained_optimum(f, w, sel.reshape(-1)[:45])
    if framework == "torch":
        import torch

        op = DenseBlocks(torch.from_numpy(finv), 45)
        sel_x, w_x = torch.from_numpy(sel), torch.from_numpy(w_pad)
    else:
        op, sel_x, w_x = DenseBlocks(finv, 45), sel, w_pad
    fused = to_np(op.restricted_update(sel_x, w_x))
    padded = to_np(op.matvec_blocks(op.restricted_solve(sel_x, w_x)))
    np.testing.assert_allclose(fused, padded, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(fused[0], 0.0)
    np.testing.assert_allclose(-fused.reshape(-1)[:45], dw_true, rtol=1e-8, atol=1e-10)
    new = to_np(oc.obs_update(w_x.reshape(-1)[:45], op.finv, sel_x.reshape(-1)[:45]))
    np.testing.assert_allclose(new, w + dw_true, rtol=1e-8, atol=1e-10)


def _rank_deficient(seed: int, d: int = 40, block: int = 10, m: int = 4, damp: float = 1e-4):
    """Weights and the inverse Fisher of ``m < B`` gradients (every block has rank ≤ m)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(d)
    g = rng.standard_normal((m, d))
    return w, dense_block_fisher(g, block, damp), oc.block_fisher_inverse(g, block, damp)


@pytest.mark.parametrize("seed", range(4))
def test_auto_equals_joint_when_m_at_least_block(seed: int) -> None:
    rng, _, w, finv, _ = _problem(seed)  # m = 30 ≥ B = 8
    prune = rng.random(w.shape) < 0.6
    joint = oc.obs_update(w, finv, prune, mode="joint")
    auto = oc.obs_update(w, finv, prune, mode="auto", num_grads=30)
    np.testing.assert_array_equal(auto, joint)


@given(seed=st.integers(0, 10_000), frac=st.floats(0.1, 0.95))
@settings(max_examples=30, deadline=None)
def test_auto_is_joint_or_superpose_block_by_block(seed: int, frac: float) -> None:
    m, block = 4, 10
    w, _, finv = _rank_deficient(seed, block=block, m=m)
    prune = np.random.default_rng(seed + 1).random(w.shape) < frac
    joint = oc.obs_update(w, finv, prune, mode="joint")
    sup = oc.obs_update(w, finv, prune, mode="superpose")
    auto = oc.obs_update(w, finv, prune, mode="auto", num_grads=m)
    kept = (~prune).reshape(-1, block).sum(-1)
    well = oc.joint_well_posed(kept, m, block)
    np.testing.assert_array_equal(well, kept <= m // 2)
    for b in range(w.size // block):
        ref = joint if well[b] else sup
        np.testing.assert_allclose(
            auto.reshape(-1, block)[b], ref.reshape(-1, block)[b], rtol=1e-10, atol=1e-12
        )


def test_auto_needs_num_grads_and_well_posed_checks_m() -> None:
    _, _, w, finv, _ = _problem(0)
    with pytest.raises(oc.ObertError, match="num_grads"):
        oc.obs_update(w, finv, w > 0, mode="auto")
    with pytest.raises(oc.ObertError, match="num_grads"):
        oc.joint_well_posed(np.array([3]), 0, 8)


def test_quadratic_increase_is_half_delta_f_delta_and_the_joint_saliency() -> None:
    w, f, finv = _rank_deficient(3, d=37, block=10, m=6)  # last block padded
    prune = np.random.default_rng(0).random(w.shape) < 0.5
    for mode in ("joint", "superpose"):
        delta = oc.obs_update(w, finv, prune, mode=mode) - w
        expected = 0.5 * delta @ f @ delta
        got = oc.obs_quadratic_increase(delta, finv)
        assert got == pytest.approx(expected, rel=1e-8)
    # the joint update attains the summed joint saliency rho_Q of Eq. 4 (its minimum)
    joint = oc.obs_update(w, finv, prune, mode="joint") - w
    wp = np.where(prune, w, 0.0)
    pad = np.zeros(finv.shape[0] * finv.shape[1])
    pad[: w.size] = wp
    sel = np.zeros(pad.size, bool)
    sel[: w.size] = prune
    rho = 0.0
    for b, (wb, sb) in enumerate(zip(pad.reshape(-1, 10), sel.reshape(-1, 10), strict=True)):
        if sb.any():
            sub = finv[b][np.ix_(sb, sb)]
            rho += 0.5 * wb[sb] @ np.linalg.solve(sub, wb[sb])
    assert oc.obs_quadratic_increase(joint, finv) == pytest.approx(rho, rel=1e-8)
    sup = oc.obs_update(w, finv, prune, mode="superpose") - w
    assert oc.obs_quadratic_increase(sup, finv) >= rho * (1 - 1e-9)


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_auto_and_quadratic_increase_torch_match_numpy() -> None:
    import torch

    w, _, finv = _rank_deficient(5, d=60, block=10, m=6)
    prune = np.random.default_rng(2).random(w.shape) < 0.7
    ref = oc.obs_update(w, finv, prune, mode="auto", num_grads=6)
    got = oc.obs_update(
        torch.from_numpy(w),
        torch.from_numpy(finv),
        torch.from_numpy(prune),
        mode="auto",
        num_grads=6,
    )
    np.testing.assert_allclose(to_np(got), ref, rtol=1e-10, atol=1e-12)
    assert oc.obs_quadratic_increase(
        torch.from_numpy(ref - w), torch.from_numpy(finv)
    ) == pytest.approx(oc.obs_quadratic_increase(ref - w, finv), rel=1e-10)


def test_quadratic_increase_from_fisher_blocks_equals_the_inverse_path() -> None:
    rng = np.random.default_rng(7)
    d, block, m, damp = 37, 10, 6, 1e-4
    g = rng.standard_normal((m, d))
    w = rng.standard_normal(d)
    pad = np.zeros((m, -(-d // block) * block))
    pad[:, :d] = g
    gb = pad.reshape(m, -1, block)
    gram = np.einsum("mbi,mbj->bij", gb, gb)
    fb = oc.FisherBlocks(gram, damp, m, d)
    finv = oc.block_fisher_inverse(g, block, damp)
    delta = oc.obs_update(w, finv, rng.random(d) < 0.5, mode="joint") - w
    assert oc.obs_quadratic_increase(delta, fb) == pytest.approx(
        oc.obs_quadratic_increase(delta, finv), rel=1e-9
    )


def test_auto_counts_only_real_weights_of_the_padded_tail_block() -> None:
    """A tail block with r < B real weights keeps what its real weights keep, not its padding."""
    m, block, d = 4, 10, 23  # tail block: 3 real weights, 7 padding
    w, _, finv = _rank_deficient(11, d=d, block=block, m=m)
    prune = np.zeros(d, dtype=bool)
    prune[20] = True  # the tail keeps 2 <= m/2 weights: well-posed, so joint
    prune[:8] = True  # the first block keeps 2 as well
    joint = oc.obs_update(w, finv, prune, mode="joint")
    auto = oc.obs_update(w, finv, prune, mode="auto", num_grads=m)
    np.testing.assert_allclose(auto[20:], joint[20:], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(auto[:10], joint[:10], rtol=1e-10, atol=1e-12)
