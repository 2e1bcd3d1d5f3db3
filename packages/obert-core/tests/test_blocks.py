"""obert_core.blocks: r×c block masks, block scores, the OBS block saliency/update, curves.

References: NumPy float64 brute force (explicit loops over blocks, the dense block-diagonal Fisher,
constrained least squares by the Schur complement) and the torch path against NumPy.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from core_helpers import HAS_TORCH, dense_block_fisher
from hypothesis import given, settings
from hypothesis import strategies as st

import obert_core as oc
from obert_core import blocks as ob


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


@st.composite
def _grid(draw: st.DrawFn) -> tuple[int, int, int, int]:
    r = draw(st.integers(1, 4))
    c = draw(st.integers(1, 4))
    return r, c, r * draw(st.integers(1, 4)), c * draw(st.integers(1, 4))


# --- parsing and alignment ---------------------------------------------------------------------


def test_parse_block_forms() -> None:
    assert ob.parse_block("16x16") == (16, 16)
    assert ob.parse_block("32X8") == (32, 8)
    assert ob.parse_block((4, 2)) == (4, 2)
    assert ob.parse_block(8) == (8, 8)
    for bad in ("16", "0x4", "4x", "ax4", 0, True, (1, 2, 3), 2.5):
        with pytest.raises(oc.ObertError):
            ob.parse_block(bad)


def test_block_grid_names_tensor_and_shape() -> None:
    assert ob.block_grid((32, 48), "16x16") == (2, 3)
    with pytest.raises(oc.ObertError, match=r"blocks\.0\.fc1\.weight of shape \(30, 48\)"):
        ob.block_grid((30, 48), "16x16", name="blocks.0.fc1.weight")
    with pytest.raises(oc.ObertError, match="2-D"):
        ob.block_grid((4, 4, 4), "2x2")


@settings(max_examples=60, deadline=None)
@given(grid=_grid(), seed=st.integers(0, 2**16), ratio=st.floats(0.0, 1.0))
def test_block_keep_mask_is_aligned_exact_and_keeps_the_best(
    grid: tuple[int, int, int, int], seed: int, ratio: float
) -> None:
    r, c, rows, cols = grid
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(rows // r, cols // c)).astype(float)  # ties on purpose
    keep = ob.block_keep_mask(scores, ratio, (r, c))
    assert keep.shape == (rows, cols) and keep.dtype == bool
    # exactly aligned: constant over every block
    for i, j in itertools.product(range(rows // r), range(cols // c)):
        blk = keep[i * r : (i + 1) * r, j * c : (j + 1) * c]
        assert blk.all() or not blk.any()
    per_block = keep[::r, ::c]
    n = scores.size
    assert int((~per_block).sum()) == round(ratio * n)
    assert abs(ob.block_ratio(keep, (r, c)) - ratio) <= 0.5 / n + 1e-12  # within one block
    # brute force: the kept blocks are the best (ties broken by position, row-major)
    order = sorted(range(n), key=lambda q: (scores.reshape(-1)[q], q))
    expect = np.ones(n, bool)
    expect[order[: round(ratio * n)]] = False
    np.testing.assert_array_equal(per_block.reshape(-1), expect)


def test_block_keep_mask_never_regrows_and_refuses_bad_input() -> None:
    scores = np.arange(8.0).reshape(2, 4)
    first = ob.block_keep_mask(scores, 0.25, "2x2")
    # raise the best block's score: it stays pruned only if it was pruned earlier
    later = ob.block_keep_mask(scores[::-1, ::-1].copy(), 0.5, "2x2", current_mask=first)
    assert not (later & ~first).any()
    with pytest.raises(oc.ObertError, match="never regrow"):
        ob.block_keep_mask(scores, 0.0, "2x2", current_mask=first)
    with pytest.raises(oc.ObertError, match=r"ratio must be in \[0, 1\]"):
        ob.block_keep_mask(scores, 1.5, "2x2")
    torn = first.copy()
    torn[0, 0] = not torn[0, 0]
    with pytest.raises(oc.ObertError, match="not aligned"):
        ob.block_keep_mask(scores, 0.5, "2x2", current_mask=torn)
    with pytest.raises(oc.ObertError, match="NaN or inf"):
        ob.block_keep_mask(np.full((2, 4), np.nan), 0.5, "2x2")


# --- scores ------------------------------------------------------------------------------------


def _loop_block_mean(x: np.ndarray, r: int, c: int) -> np.ndarray:
    out = np.zeros((x.shape[0] // r, x.shape[1] // c))
    for i, j in itertools.product(range(out.shape[0]), range(out.shape[1])):
        out[i, j] = np.mean(x[i * r : (i + 1) * r, j * c : (j + 1) * c])
    return out


@settings(max_examples=30, deadline=None)
@given(grid=_grid(), seed=st.integers(0, 2**16))
def test_taylor_and_magnitude_scores_are_block_means(
    grid: tuple[int, int, int, int], seed: int
) -> None:
    r, c, rows, cols = grid
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    g = rng.standard_normal((rows, cols)).astype(np.float32)
    np.testing.assert_allclose(
        ob.taylor_block_scores(w, g, (r, c)),
        _loop_block_mean(np.abs(w.astype(float) * g.astype(float)), r, c),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        ob.magnitude_block_scores(w, (r, c)), _loop_block_mean(np.abs(w.astype(float)), r, c)
    )


def _obs_problem(seed: int, rows: int, cols: int, bsz: int, m: int = 40, damp: float = 1e-3):
    rng = np.random.default_rng(seed)
    grads = rng.standard_normal((m, rows * cols))
    w = rng.standard_normal((rows, cols))
    finv = oc.block_fisher_inverse(grads, bsz, damp, backend="numpy")
    return rng, w, finv, dense_block_fisher(grads, bsz, damp)


def _schur_loss(f: np.ndarray, w: np.ndarray, removed: np.ndarray) -> float:
    """Brute force: min ½δwᵀFδw s.t. (w + δw)_removed = 0, by eliminating the free coordinates."""
    p, fr = np.flatnonzero(removed), np.flatnonzero(~removed)
    wp = w[p]
    schur = f[np.ix_(p, p)] - f[np.ix_(p, fr)] @ np.linalg.solve(
        f[np.ix_(fr, fr)], f[np.ix_(fr, p)]
    )
    return float(0.5 * wp @ schur @ wp)


def _block_set(rows: int, cols: int, r: int, c: int, i: int, j: int) -> np.ndarray:
    m = np.zeros((rows, cols), bool)
    m[i * r : (i + 1) * r, j * c : (j + 1) * c] = True
    return m.reshape(-1)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    r=st.integers(1, 3),
    c=st.sampled_from([1, 2, 3]),
    k=st.sampled_from([1, 2, 3]),
    per_row=st.integers(1, 2),
)
def test_obs_block_saliency_is_the_constrained_quadratic_minimum(
    seed: int, r: int, c: int, k: int, per_row: int
) -> None:
    bsz = k * c
    rows, cols = 2 * r, bsz * per_row
    _, w, finv, f = _obs_problem(seed, rows, cols, bsz)
    sal = ob.obs_block_saliency(w, finv, (r, c))
    assert sal.shape == (rows // r, cols // c)
    for i, j in itertools.product(range(rows // r), range(cols // c)):
        expect = _schur_loss(f, w.reshape(-1), _block_set(rows, cols, r, c, i, j))
        np.testing.assert_allclose(sal[i, j], expect, rtol=1e-7)


def test_obs_block_saliency_needs_fisher_blocks_inside_rows() -> None:
    _, w, finv, _ = _obs_problem(0, 4, 6, 4)
    with pytest.raises(oc.ObertError, match="Fisher block size 4"):
        ob.obs_block_saliency(w, finv, "2x2")  # 4 does not divide the row length 6
    _, w, finv, _ = _obs_problem(0, 4, 8, 4)
    with pytest.raises(oc.ObertError, match="multiple of the block width 8"):
        ob.obs_block_saliency(w, finv, "2x8")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), frac=st.floats(0.1, 0.9), bsz=st.sampled_from([2, 4, 8, 16]))
def test_obs_block_update_is_the_joint_optimum_and_its_loss_is_the_curve(
    seed: int, frac: float, bsz: int
) -> None:
    """Any Fisher block size, also B = 16 > C = 8 (Fisher blocks spanning two rows)."""
    r, c, rows, cols = 2, 2, 4, 8
    rng, w, finv, f = _obs_problem(seed, rows, cols, bsz)
    w[0, 0:2] = 0.0  # earlier pruning, part of one block: the update keeps it at 0
    earlier = w != 0
    keep = ob.block_keep_mask(rng.random((rows // r, cols // c)), frac, (r, c))
    new = ob.obs_block_update(w, finv, keep, (r, c))
    removed = (~keep | ~earlier).reshape(-1)
    # brute force: minimise ½δwᵀFδw with every removed weight at 0
    p, fr = np.flatnonzero(removed), np.flatnonzero(~removed)
    dw = np.zeros(w.size)
    dw[p] = -w.reshape(-1)[p]
    dw[fr] = np.linalg.solve(f[np.ix_(fr, fr)], -f[np.ix_(fr, p)] @ dw[p])
    np.testing.assert_allclose(new.reshape(-1), w.reshape(-1) + dw, atol=1e-9)
    assert (new[~keep] == 0).all()
    # the OBS distortion curve at a ratio is exactly this loss
    scores = rng.random((rows // r, cols // c))
    ratios = np.linspace(0, 1, 9)
    curve = ob.obs_distortion_curve(w, finv, (r, c), ratios=ratios, scores=scores)
    for a, value in zip(ratios, curve, strict=True):
        kp = ob.block_keep_mask(scores, float(a), (r, c))
        rem = (~kp | ~earlier).reshape(-1)
        expect = _schur_loss(f, w.reshape(-1), rem) if rem.any() else 0.0
        np.testing.assert_allclose(value, expect, rtol=1e-7, atol=1e-12)


def test_obs_block_update_refuses_unaligned_keep() -> None:
    _, w, finv, _ = _obs_problem(1, 4, 8, 4)
    keep = np.ones((4, 8), bool)
    keep[0, 0] = False
    with pytest.raises(oc.ObertError, match="not aligned to 2x2"):
        ob.obs_block_update(w, finv, keep, "2x2")


def test_block_size_one_fisher_has_nothing_to_update() -> None:
    """k = 1 (Fisher block = one row segment): the saliency is the OBS loss, the update only zeroes."""
    _, w, finv, _ = _obs_problem(3, 4, 4, 2)
    keep = ob.block_keep_mask(np.arange(4.0).reshape(2, 2), 0.5, "2x2")
    new = ob.obs_block_update(w, finv, keep, "2x2")
    np.testing.assert_allclose(new, np.where(keep, w, 0.0), atol=1e-12)


# --- curves ------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(grid=_grid(), seed=st.integers(0, 2**16))
def test_taylor_distortion_curve_matches_the_explicit_formula(
    grid: tuple[int, int, int, int], seed: int
) -> None:
    r, c, rows, cols = grid
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols))
    g = rng.standard_normal((rows, cols))
    ratios = ob.ratio_grid(20)
    lam = 1e-3
    curve = ob.taylor_distortion_curve(w, g, (r, c), ratios=ratios, damp=lam)
    scores = ob.taylor_block_scores(w, g, (r, c))
    for a, value in zip(ratios, curve, strict=True):
        keep = ob.block_keep_mask(scores, float(a), (r, c))
        dw = np.where(keep, 0.0, -w).reshape(-1)
        gf = g.reshape(-1)
        hess = np.outer(gf, gf) + lam * np.eye(gf.size)
        expect = np.mean((dw * gf) ** 2) + 0.5 * dw @ hess @ dw
        np.testing.assert_allclose(value, expect, rtol=1e-9, atol=1e-14)
    assert curve[0] == 0.0


def test_cost_curves() -> None:
    ratios = np.array([0.0, 0.25, 0.5, 1.0])
    np.testing.assert_array_equal(ob.pruned_blocks(6, ratios), [0, 2, 3, 6])  # round(1.5) = 2
    flops = ob.flops_curve((32, 48), "16x16", ratios=ratios)
    np.testing.assert_array_equal(flops, 2 * 256 * np.array([6, 4, 3, 0]))
    power = ob.lpvit_power_curve((32, 48), "16x16", ratios=ratios)
    np.testing.assert_array_equal(power, np.array([0, 2, 3, 6]) * 3)


def test_latency_curve_interpolates_and_names_missing_shapes() -> None:
    table = {(32, 48): {1.0: 10.0, 0.5: 6.0, 0.25: 5.0}}
    ratios = np.array([0.0, 0.5, 1.0])
    out = ob.latency_curve(table, (32, 48), "16x16", ratios=ratios)
    np.testing.assert_allclose(out, [10.0, 6.0, 5.0])  # density 0 clamps to the lowest measured
    with pytest.raises(oc.ObertError, match=r"no entry for blocks\.3\.fc2 of shape \(48, 32\)"):
        ob.latency_curve(table, (48, 32), "16x16", name="blocks.3.fc2")
    with pytest.raises(oc.ObertError, match="add the dense latency"):
        ob.latency_curve({(32, 48): {0.5: 1.0}}, (32, 48), "16x16")
    with pytest.raises(oc.ObertError, match="density 2"):
        ob.latency_curve({(32, 48): {2: 1.0}}, (32, 48), "16x16")


def test_ema_is_bias_corrected() -> None:
    np.testing.assert_allclose(ob.ema(np.full(7, 3.0), 0.9), 3.0)
    np.testing.assert_array_equal(ob.ema([1.0, 5.0, 2.0], 0.0), [1.0, 5.0, 2.0])
    y = np.array([1.0, 3.0, 2.0])
    m1 = 0.5 * 1.0
    m2 = 0.5 * m1 + 0.5 * 3.0
    m3 = 0.5 * m2 + 0.5 * 2.0
    np.testing.assert_allclose(ob.ema(y, 0.5), [m1 / 0.5, m2 / 0.75, m3 / 0.875])
    with pytest.raises(oc.ObertError, match="EMA weight"):
        ob.ema(y, 1.0)


@settings(max_examples=30, deadline=None)
@given(coef=st.lists(st.floats(-3, 3), min_size=5, max_size=5), h=st.sampled_from([2, 4, 6]))
def test_stencil_is_exact_for_quartics_inside(coef: list[float], h: int) -> None:
    x = np.linspace(0, 1, 41)
    p = np.polynomial.Polynomial(coef)
    slopes = ob.stencil_slopes(x, p(x), h)
    inner = slice(2, 39)  # every point with k ≥ 1
    np.testing.assert_allclose(slopes[inner], p.deriv()(x)[inner], atol=1e-9)
    q = np.polynomial.Polynomial(coef[:3])  # central / one-sided: exact for quadratics / lines
    s2 = ob.stencil_slopes(x, q(x), h)
    np.testing.assert_allclose(s2[1:-1], q.deriv()(x)[1:-1], atol=1e-9)
    with pytest.raises(oc.ObertError, match="even"):
        ob.stencil_slopes(x, p(x), 3)


# --- torch path --------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_torch_path_matches_numpy() -> None:
    import torch

    rng, w, finv, _ = _obs_problem(5, 8, 16, 8)
    g = rng.standard_normal(w.shape)
    wt, gt, ft = torch.from_numpy(w), torch.from_numpy(g), torch.from_numpy(finv)
    for fn_np, fn_t in (
        (
            lambda: ob.taylor_block_scores(w, g, "2x4"),
            lambda: ob.taylor_block_scores(wt, gt, "2x4"),
        ),
        (lambda: ob.magnitude_block_scores(w, "2x4"), lambda: ob.magnitude_block_scores(wt, "2x4")),
        (
            lambda: ob.obs_block_saliency(w, finv, "2x4"),
            lambda: ob.obs_block_saliency(wt, ft, "2x4"),
        ),
    ):
        got = fn_t()
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), fn_np(), rtol=1e-10)
    scores = ob.obs_block_saliency(w, finv, "2x4")
    keep = ob.block_keep_mask(scores, 0.5, "2x4")
    keep_t = ob.block_keep_mask(torch.from_numpy(scores), 0.5, "2x4")
    np.testing.assert_array_equal(keep_t.numpy(), keep)
    np.testing.assert_allclose(
        ob.obs_block_update(wt, ft, keep_t, "2x4").numpy(),
        ob.obs_block_update(w, finv, keep, "2x4"),
        atol=1e-10,
    )
    np.testing.assert_allclose(
        ob.obs_distortion_curve(wt, ft, "2x4", ratios=ob.ratio_grid(10)),
        ob.obs_distortion_curve(w, finv, "2x4", ratios=ob.ratio_grid(10)),
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        ob.taylor_distortion_curve(wt, gt, "2x4"), ob.taylor_distortion_curve(w, g, "2x4")
    )


def test_mfac_inverse_gives_the_same_saliency_and_curve() -> None:
    rng = np.random.default_rng(2)
    grads = rng.standard_normal((6, 32))
    w = rng.standard_normal((4, 8))
    finv = oc.block_fisher_inverse(grads, 4, 1e-2, backend="numpy")
    mfac = oc.MFACInverse(grads, 1e-2, block_size=4)
    np.testing.assert_allclose(
        ob.obs_block_saliency(w, mfac, "2x2"), ob.obs_block_saliency(w, finv, "2x2"), rtol=1e-8
    )
    np.testing.assert_allclose(
        ob.obs_distortion_curve(w, mfac, "2x2", ratios=ob.ratio_grid(8)),
        ob.obs_distortion_curve(w, finv, "2x2", ratios=ob.ratio_grid(8)),
        rtol=1e-8,
    )
