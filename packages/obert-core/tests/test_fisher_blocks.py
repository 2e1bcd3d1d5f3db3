"""FisherBlocks (the damped Fisher kept un-inverted) against the float64 NumPy reference path.

The reference is today's path: ``block_fisher_inverse(backend="numpy")`` (float64 explicit
inverse) into ``obs_saliency`` / ``obs_update``; the brute-force oracle is the constrained
minimiser of the quadratic model on the dense block-diagonal Fisher.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from core_helpers import HAS_NUMBA, HAS_TORCH, dense_block_fisher, oracle_blocks, to_np
from hypothesis import given, settings
from hypothesis import strategies as st

import obert_core as oc

KERNELS = (["numba"] if HAS_NUMBA else []) + ["lapack"]
FRAMEWORKS = ["numpy"] + (["torch"] if HAS_TORCH else [])


def _as(fw: str, x: np.ndarray) -> object:
    if fw == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(x))
    return x


def _gram(g: np.ndarray, block: int) -> np.ndarray:
    """Σ g gᵀ per block (float64, tail zero-padded), the batched build's accumulator."""
    m, d = g.shape
    nb = -(-d // block)
    x = np.zeros((m, nb * block))
    x[:, :d] = g
    x = x.reshape(m, nb, block)
    return np.einsum("kni,knj->nij", x, x)


def _problem(seed: int, d: int, block: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.standard_normal(d))  # coordinates of very different gradient scales
    return rng.standard_normal((m, d)) * scale, rng.standard_normal(d)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_scores_updates_and_inverse_match_the_reference(kernels: str, fw: str) -> None:
    d, block, m, damp = 50 * 6 + 17, 50, 80, 1e-7
    g, w = _problem(0, d, block, m)
    ref = oc.block_fisher_inverse(g, block, damp, backend="numpy")
    fb = oc.FisherBlocks(_as(fw, _gram(g, block)), damp, m, d, kernels=kernels)
    assert fb.kernels == kernels
    np.testing.assert_allclose(to_np(fb.inverse()), ref, rtol=1e-8, atol=1e-8 * np.abs(ref).max())
    np.testing.assert_allclose(to_np(fb.diag()), ref.diagonal(0, 1, 2).reshape(-1)[:d], rtol=1e-9)
    np.testing.assert_allclose(
        to_np(oc.obs_saliency(_as(fw, w), fb)), oc.obs_saliency(w, ref), rtol=1e-9
    )
    rng = np.random.default_rng(1)
    for frac in (0.0, 0.3, 0.5, 0.9, 1.0):
        prune = rng.random(d) < frac
        current = rng.random(d) > 0.1  # earlier pruning: stays 0, constrains the update too
        w0 = np.where(current, w, 0.0)
        for mode in ("joint", "superpose"):
            want = oc.obs_update(w0, ref, prune, current_mask=current, mode=mode)
            got = oc.obs_update(
                _as(fw, w0), fb, _as(fw, prune), current_mask=_as(fw, current), mode=mode
            )
            np.testing.assert_allclose(to_np(got), want, rtol=1e-8, atol=1e-9 * np.abs(want).max())
            assert np.all(to_np(got)[prune | ~current] == 0.0)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("dead", [0.5, 0.9, 1.0])
def test_masked_gradients_decouple_their_coordinates(kernels: str, dead: float) -> None:
    """Eq. 6c: pruned weights (zero gradient columns) give ``1/λ`` and are left out of the factor.

    Against the float64 explicit inverse of the same blocks: scores, both update modes (with
    blocks where nothing is removed, which the kernels do not factor) and ``F̂⁻¹z``.
    """
    d, block, m, damp = 50 * 5 + 9, 50, 70, 1e-7
    g, w = _problem(6, d, block, m)
    rng = np.random.default_rng(7)
    current = rng.random(d) >= dead  # kept before this step
    g[:, ~current] = 0.0  # the sampler masks the gradients of pruned weights
    w0 = np.where(current, w, 0.0)
    ref = oc.block_fisher_inverse(g, block, damp, backend="numpy")
    fb = oc.FisherBlocks(_gram(g, block), damp, m, d, kernels=kernels)
    np.testing.assert_allclose(to_np(fb.diag()), ref.diagonal(0, 1, 2).reshape(-1)[:d], rtol=1e-9)
    assert np.all(to_np(fb.diag())[~current] == 1.0 / damp)
    prune = current & (rng.random(d) < 0.3)
    prune[:block] = False  # the first block loses nothing
    for mode in ("joint", "superpose"):
        want = oc.obs_update(w0, ref, prune, current_mask=current, mode=mode)
        got = oc.obs_update(w0, fb, prune, current_mask=current, mode=mode)
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-9 * max(1.0, np.abs(want).max()))
        np.testing.assert_array_equal(got[:block], w0[:block])
    op = fb._as_operator()
    z = rng.standard_normal((op.num_blocks, block))
    z[1] = 0.0
    want_z = np.einsum("nbc,nc->nb", ref, z)
    np.testing.assert_allclose(
        op.matvec_blocks(z), want_z, rtol=1e-8, atol=1e-9 * np.abs(want_z).max()
    )
    assert np.all(op.matvec_blocks(z)[1] == 0.0)


@pytest.mark.parametrize("kernels", KERNELS)
def test_block4_scores_and_superposed_update(kernels: str) -> None:
    d, block, m, damp = 32 * 5, 32, 40, 1e-5
    g, w = _problem(2, d, block, m)
    ref = oc.block_fisher_inverse(g, block, damp, backend="numpy")
    fb = oc.FisherBlocks(_gram(g, block), damp, m, d, kernels=kernels)
    np.testing.assert_allclose(
        oc.obs_saliency(w, fb, group_size=4), oc.obs_saliency(w, ref, group_size=4), rtol=1e-9
    )
    prune = np.repeat(np.random.default_rng(3).random(d // 4) < 0.5, 4)
    np.testing.assert_allclose(
        oc.obs_update(w, fb, prune, group_size=4, mode="superpose"),
        oc.obs_update(w, ref, prune, group_size=4, mode="superpose"),
        rtol=1e-8,
        atol=1e-10,
    )


@pytest.mark.parametrize("kernels", KERNELS)
def test_operator_methods_match_dense_blocks(kernels: str) -> None:
    from obert_core._operators import DenseBlocks

    d, block, m, damp = 50 * 4, 50, 60, 1e-6
    g, _ = _problem(4, d, block, m)
    ref = DenseBlocks(oc.block_fisher_inverse(g, block, damp, backend="numpy"), d)
    op = oc.FisherBlocks(_gram(g, block), damp, m, d, kernels=kernels)._as_operator()
    rng = np.random.default_rng(5)
    z = rng.standard_normal((4, block))
    sel = rng.random((4, block)) < 0.4
    sel[0] = True  # a block with nothing kept
    sel[1] = False  # a block with nothing removed
    for got, want in (
        (op.matvec_blocks(z), ref.matvec_blocks(z)),
        (op.restricted_update(sel, z), ref.restricted_update(sel, z)),
        (op.restricted_solve(sel, z), ref.restricted_solve(sel, z)),
        (op.group_blocks(5), ref.group_blocks(5)),
    ):
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-8 * np.abs(want).max())


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    d=st.integers(2, 40),
    block=st.integers(1, 12),
    frac=st.floats(0.05, 0.95),
    kernels=st.sampled_from(KERNELS),
)
def test_joint_update_is_the_constrained_optimum(
    seed: int, d: int, block: int, frac: float, kernels: str
) -> None:
    """Brute-force oracle: minimise ½δwᵀF̂δw subject to (w + δw)_Z = 0, on the dense Fisher."""
    block = min(block, d)
    m, damp = block + 3, 1e-3
    g, w = _problem(seed, d, block, m)
    prune = np.random.default_rng(seed + 1).random(d) < frac
    fb = oc.FisherBlocks(_gram(g, block), damp, m, d, kernels=kernels)
    got = oc.obs_update(w, fb, prune)
    f = dense_block_fisher(g, block, damp)
    keep = ~prune
    want = np.zeros(d)
    if keep.any():
        # δw_R = F_RR⁻¹ F_RS w_S, δw_S = −w_S
        want[keep] = w[keep] + np.linalg.solve(
            f[np.ix_(keep, keep)], f[np.ix_(keep, prune)] @ w[prune]
        )
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9 * max(1.0, np.abs(want).max()))


@pytest.mark.skipif(not HAS_TORCH, reason="torch")
@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_finalize_fisher_gives_todays_masks_and_weights(sparsity: float) -> None:
    """m ≥ B, float32 torch build: same masks and float32-close weights as the explicit inverse."""
    import torch

    d, block, m, damp = 50 * 40, 50, 64, 1e-7
    g, w = _problem(6, d, block, m)
    grads = torch.from_numpy(g.astype(np.float32))
    weights = torch.from_numpy(w.astype(np.float32))
    builders = [
        oc.BlockFisherBuilder(d, block, damp, m, dtype=torch.float32, gram_precision="float32")
        for _ in range(2)
    ]
    for b in builders:
        for s in range(0, m, 16):
            b.add(grads[s : s + 16])
    finv, fb = builders[0].finalize(), builders[1].finalize_fisher()
    assert isinstance(fb, oc.FisherBlocks) and fb.gram.dtype == torch.float32
    ref = oc.block_fisher_inverse(g.astype(np.float32).astype(np.float64), block, damp)
    masks = []
    for inverse in (finv, fb, ref):
        wi = weights if not isinstance(inverse, np.ndarray) else w.astype(np.float32)
        scores = to_np(oc.obs_saliency(wi, inverse))
        keep = to_np(oc.select_mask({"w": scores}, sparsity)["w"])
        masks.append(keep)
    np.testing.assert_array_equal(masks[1], masks[0])
    np.testing.assert_array_equal(masks[1], masks[2])
    prune = torch.from_numpy(~masks[1])
    old = to_np(oc.obs_update(weights, finv, prune))
    new = to_np(oc.obs_update(weights, fb, prune))
    exact = oc.obs_update(w.astype(np.float32).astype(np.float64), ref, ~masks[1])
    scale = np.abs(exact).max()
    np.testing.assert_allclose(new, exact, rtol=0, atol=1e-5 * scale)  # float32 round-off
    np.testing.assert_allclose(old, exact, rtol=0, atol=1e-4 * scale)
    assert np.abs(new - exact).max() <= np.abs(old - exact).max() + 1e-6 * scale


def test_finalize_fisher_refusals_and_timing() -> None:
    g, _ = _problem(7, 60, 10, 12)
    b = oc.BlockFisherBuilder(60, 10, 1e-4, 12, method="streaming", backend="numpy")
    b.add(g)
    with pytest.raises(oc.ObertError, match="method='batched'"):
        b.finalize_fisher()
    b = oc.BlockFisherBuilder(60, 10, 1e-4, 12, backend="numpy")
    with pytest.raises(oc.ObertError, match="no gradients"):
        b.finalize_fisher()
    b.add(g)
    fb = b.finalize_fisher()
    assert b.timings["invert_s"] > 0.0
    np.testing.assert_allclose(fb.inverse(), oracle_blocks(g, 10, 1e-4), rtol=1e-7)
    with pytest.raises(oc.ObertError, match="already finalized"):
        b.finalize_fisher()
    b = oc.BlockFisherBuilder(60, 10, 1e-4, 24, backend="numpy")
    b.add(g)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b.finalize_fisher()
    assert any("only 12 of num_grads=24" in str(c.message) for c in caught)


@pytest.mark.parametrize("kernels", KERNELS)
def test_bad_input_is_named(kernels: str) -> None:
    gram = _gram(_problem(8, 30, 10, 12)[0], 10)
    with pytest.raises(oc.ObertError, match=r"shape \(num_blocks, B, B\)"):
        oc.FisherBlocks(gram[:, :, :5], 1e-3, 12, 30)
    with pytest.raises(oc.ObertError, match="ceil"):
        oc.FisherBlocks(gram, 1e-3, 12, 45)
    with pytest.raises(oc.ObertError, match="damp"):
        oc.FisherBlocks(gram, 0.0, 12, 30)
    with pytest.raises(oc.ObertError, match="kernels"):
        oc.FisherBlocks(gram, 1e-3, 12, 30, kernels="fast")
    with pytest.raises(oc.ObertError, match="float32 or float64"):
        oc.FisherBlocks(gram.astype(np.int64), 1e-3, 12, 30)
    bad = gram.copy()
    bad[1] = -np.eye(10)  # not positive definite
    fb = oc.FisherBlocks(bad, 1e-3, 12, 30, kernels=kernels)
    with pytest.raises(oc.ObertError, match=r"block 1\) are not positive definite"):
        fb.diag()
    bad[1] = np.inf  # overflowed float32 Gram, not scanned (check=False)
    fb = oc.FisherBlocks(bad, 1e-3, 12, 30, kernels=kernels, check=False)
    with pytest.raises(oc.ObertError, match=r"block 1\) are not positive definite"):
        fb.diag()
    with pytest.raises(oc.ObertError, match="gram contains NaN or inf"):
        oc.FisherBlocks(bad, 1e-3, 12, 30, kernels=kernels)
    with pytest.raises(oc.ObertError, match="built for 30 weights"):
        oc.obs_saliency(np.ones(20), oc.FisherBlocks(gram, 1e-3, 12, 30, kernels=kernels))


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("where", ["row", "block"])
def test_unscanned_nan_gram_rows_are_not_decoupled(kernels: str, where: str) -> None:
    """A NaN row (``check=False``) is not a zero row: not positive definite, not ``1/λ`` (Eq. 6c).

    Only a row of exact zeros decouples; NaN entries must reach the factorisation and fail it.
    """
    rng = np.random.default_rng(3)
    gram = _gram(rng.standard_normal((12, 30)), 10)
    if where == "row":
        gram[1, 3, :] = np.nan
        gram[1, :, 3] = np.nan
    else:
        gram[1] = np.nan
    fb = oc.FisherBlocks(gram, 1e-3, 12, 30, kernels=kernels, check=False)
    with pytest.raises(oc.ObertError, match=r"block 1\) are not positive definite"):
        fb.diag()
    if kernels == "numba":  # the batched solve has no check of its own
        op = oc.FisherBlocks(gram, 1e-3, 12, 30, kernels=kernels, check=False)._as_operator()
        with pytest.raises(oc.ObertError, match=r"block 1\) are not positive definite"):
            op.matvec_blocks(np.ones((3, 10)))


def test_block_kernels_use_no_more_threads_than_torch() -> None:
    """``torch.set_num_threads(1)`` (``--threads 1``) keeps the Numba block kernels on one core."""
    torch = pytest.importorskip("torch")
    from obert_core.backends._linalg import _threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert _threads() == 1
    finally:
        torch.set_num_threads(before)
    assert 1 <= _threads() <= before


@pytest.mark.skipif(not HAS_NUMBA, reason="numba")
@pytest.mark.parametrize(("workers", "block"), [(1, 6), (3, 6), (1, 7), (1, 2), (1, 1)])
def test_groups_of_fully_live_blocks_give_the_reference(
    workers: int, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Groups of eight fully live blocks are factored together (``_lane_kernels``): with blocks
    between them that have decoupled coordinates, the zero-padded tail block and ranges per
    thread that do not split into groups of eight, ``diag(F̂⁻¹)`` is the float64 reference's.
    The kernel takes rows in pairs: block sizes 1, 2, 6 and 7 give columns and recurrences with
    and without a row left over."""
    from obert_core.backends import _block_kernels

    assert _block_kernels.kernels_agree() == "lanes"  # the lanes are what runs below
    monkeypatch.setattr(_block_kernels, "_threads", lambda: workers)
    d, m, damp = block * 200 + 1, 10, 1e-4  # 201 blocks, m >= B: full rank
    g, _ = _problem(11, d, block, m)
    # blocks 9, 70, 71 have a decoupled coordinate
    g[:, [block * 9 + block // 2, block * 70, block * 71 + block - 1]] = 0.0
    ref = oc.block_fisher_inverse(g, block, damp, backend="numpy").diagonal(0, 1, 2)
    fb = oc.FisherBlocks(_gram(g, block), damp, m, d, kernels="numba")
    np.testing.assert_allclose(to_np(fb.diag()), ref.reshape(-1)[:d], rtol=1e-10)


@pytest.mark.skipif(not HAS_NUMBA, reason="numba")
@pytest.mark.parametrize("fault", ["nan", "indefinite"])
def test_a_bad_lane_fails_only_its_own_block(fault: str) -> None:
    """A group of eight fully live blocks with one not positive definite (a NaN, a negative
    eigenvalue) marks that block bad and gives the other seven their reference values."""
    from obert_core.backends import _block_kernels
    from obert_core.backends._block_kernels import diag_inverse_kernel
    from obert_core.backends._lane_kernels import slp_vectorize

    rng = np.random.default_rng(3)
    nb, block, m, damp = 24, 10, 16, 1e-3
    g = rng.standard_normal((nb, m, block))
    gram = np.einsum("nki,nkj->nij", g, g)
    if fault == "nan":
        gram[13, 4, 4] = np.nan
    else:
        gram[13] = -np.eye(block)
    out, bad = np.empty((nb, block)), np.zeros(nb, dtype=bool)
    with slp_vectorize():  # as FisherBlocks compiles it
        diag_inverse_kernel(0, nb, gram, damp, 1.0 / m, out, bad, True, *_block_kernels._NO_FACTORS)
    assert np.flatnonzero(bad).tolist() == [13]
    for b in range(nb):
        if b != 13:
            want = np.linalg.inv(gram[b] / m + damp * np.eye(block)).diagonal()
            np.testing.assert_allclose(out[b], want, rtol=1e-10)


@pytest.mark.skipif(not HAS_NUMBA, reason="numba")
def test_diag_does_not_depend_on_the_number_of_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each block's ``diag(F̂⁻¹)`` is the same to the bit on 1, 2 or 3 threads: whether a block is
    factored in a group of eight (another round-off than alone) must not depend on where the
    ranges of ``run_on_blocks`` start, nor on where a decoupled block before it shifted groups."""
    from obert_core.backends import _block_kernels

    d, block, m, damp = 6 * 200 + 1, 6, 10, 1e-4
    g, _ = _problem(12, d, block, m)
    g[:, [6 * 3 + 1, 6 * 70, 6 * 131 + 5]] = 0.0  # blocks 3, 70, 131 have a decoupled coordinate
    gram = _gram(g, block)
    diags = []
    for workers in (1, 2, 3):
        monkeypatch.setattr(_block_kernels, "_threads", lambda w=workers: w)
        diags.append(to_np(oc.FisherBlocks(gram, damp, m, d, kernels="numba").diag()))
    np.testing.assert_array_equal(diags[1], diags[0])
    np.testing.assert_array_equal(diags[2], diags[0])


@pytest.mark.skipif(not HAS_NUMBA, reason="numba")
@pytest.mark.parametrize(
    ("workers", "block", "dtype"),
    [(1, 8, "float32"), (3, 8, "float32"), (2, 7, "float32"), (2, 7, "float64")],
)
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_factors_kept_in_the_gram_solve_as_the_reference(
    workers: int, block: int, dtype: str, fw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``overwrite_gram``: ``F̂⁻¹z = XᵀXz`` from the factors ``diag()`` kept in the Gram's memory
    equals the float64 explicit inverse's product — in groups of eight fully live blocks and
    alone (decoupled coordinates, the tail block), odd B with a float32 Gram (blocks that do not
    start on 8 bytes), zero right-hand sides and a non-zero ``z`` on a decoupled coordinate; the
    superposed update through it is the reference's too, and the diag is unchanged."""
    from obert_core.backends import _block_kernels

    monkeypatch.setattr(_block_kernels, "_threads", lambda: workers)
    d, m, damp = block * 40 + 3, 12, 1e-6  # 41 blocks, the last one partial
    g, w = _problem(21, d, block, m)
    g[:, [block * 9 + 2, block * 17, block * 17 + 5, block * 30 + 6]] = 0.0  # decoupled in part
    gram = _gram(g, block).astype(dtype)
    ref = np.linalg.inv(gram.astype(np.float64) / m + damp * np.eye(block))  # of the same Gram
    plain = oc.FisherBlocks(_as(fw, gram.copy()), damp, m, d, kernels="numba")
    fb = oc.FisherBlocks(_as(fw, gram), damp, m, d, kernels="numba", overwrite_gram=True)
    assert fb.overwrite_gram and fb._factors is None  # kept by diag(), not before
    np.testing.assert_array_equal(to_np(fb.diag()), to_np(plain.diag()))
    assert fb._factors is not None
    assert not np.array_equal(gram, _gram(g, block).astype(dtype))  # written in place
    side = sum(a.nbytes for a in fb._factors[2:])
    assert side == oc.FisherBlocks.factor_bytes(d, block)
    rng = np.random.default_rng(5)
    z = rng.standard_normal((fb.num_blocks, block))
    z[4] = 0.0
    want = np.einsum("nbc,nc->nb", ref, z)
    got = to_np(fb._as_operator().matvec_blocks(_as(fw, z)))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11 * np.abs(want).max())
    assert np.all(got[4] == 0.0)
    assert got[17, 5] == z[17, 5] / damp  # a decoupled coordinate: z_q / λ (Eq. 6c)
    prune = rng.random(d) < 0.5
    np.testing.assert_allclose(
        to_np(oc.obs_update(_as(fw, w), fb, _as(fw, prune), mode="superpose")),
        oc.obs_update(w, ref, prune, mode="superpose"),
        rtol=1e-8,
        atol=1e-10 * np.abs(w).max(),
    )
    for call, what in [
        (fb.inverse, "explicit Fisher blocks"),
        (lambda: oc.obs_update(_as(fw, w), fb, _as(fw, prune), mode="joint"), "joint update"),
    ]:
        with pytest.raises(oc.ObertError, match=f"{what}.*overwrite_gram"):
            call()


def test_gram_kept_where_it_cannot_be_overwritten() -> None:
    """LAPACK kernels, a read-only or non-contiguous Gram: nothing is kept, nothing written,
    and every operation still works."""
    d, block, m, damp = 50 * 2, 50, 60, 1e-5
    g, _ = _problem(4, d, block, m)
    gram = _gram(g, block)
    fb = oc.FisherBlocks(gram, damp, m, d, kernels="lapack", overwrite_gram=True)
    assert not fb.overwrite_gram
    fb.diag()
    assert fb._factors is None
    fb.inverse()
    if HAS_NUMBA:
        frozen = gram.copy()
        frozen.flags.writeable = False
        strided = np.zeros((2, block, 2 * block))
        strided[:, :, ::2] = gram
        for arr in (frozen, strided[:, :, ::2]):
            nb = oc.FisherBlocks(arr, damp, m, d, kernels="numba", overwrite_gram=True)
            nb.diag()
            assert nb._factors is None
            np.testing.assert_array_equal(arr, gram)
            nb.inverse()
    assert oc.FisherBlocks.factor_bytes(d, block) == 2 * (10 * 50 + 4)
    with pytest.raises(oc.ObertError, match="num_weights"):
        oc.FisherBlocks.factor_bytes(0, block)


@pytest.mark.skipif(not HAS_NUMBA, reason="numba")
@settings(max_examples=40, deadline=None)
@given(
    block=st.integers(1, 12),
    nb=st.integers(1, 20),
    m=st.integers(1, 30),
    dead=st.floats(0.0, 1.0),
    wide=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_factors_kept_in_the_gram_against_the_explicit_inverse(
    block: int, nb: int, m: int, dead: float, wide: bool, seed: int
) -> None:
    """Property: for any block size (odd too), number of blocks, rank (m < B too), share of
    decoupled coordinates and Gram dtype, ``XᵀXz`` from the factors kept in the Gram is the
    float64 explicit inverse's ``F̂⁻¹z``."""
    d = block * nb
    g, _ = _problem(seed, d, block, m)
    rng = np.random.default_rng(seed + 1)
    g[:, rng.random(d) < dead] = 0.0
    damp = 1e-3
    gram = _gram(g, block).astype(np.float64 if wide else np.float32)
    ref = np.linalg.inv(gram.astype(np.float64) / m + damp * np.eye(block))  # of the same Gram
    fb = oc.FisherBlocks(gram, damp, m, d, kernels="numba", overwrite_gram=True)
    fb.diag()
    assert fb._factors is not None
    z = rng.standard_normal((nb, block)) * (rng.random((nb, 1)) < 0.8)
    want = np.einsum("nbc,nc->nb", ref, z)
    got = to_np(fb._as_operator().matvec_blocks(z))
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("kernels", KERNELS)
def test_fused_superposed_update_checks_its_layout(kernels: str) -> None:
    """The fused update names an input of the wrong layout; the LAPACK kernels leave it to the
    caller (None), whose result is the same."""
    d, block, m, damp = 50 * 3, 50, 60, 1e-5
    g, w = _problem(8, d, block, m)
    fb = oc.FisherBlocks(_gram(g, block), damp, m, d, kernels=kernels)
    op = fb._as_operator()
    wb = w.reshape(3, block)
    newly = np.random.default_rng(0).random((3, block)) < 0.4
    with pytest.raises(oc.ObertError, match=r"newly must have shape \(3, 50\)"):
        op.superposed_update(wb, newly.reshape(-1), newly)
    got = op.superposed_update(wb, newly, newly)
    if kernels == "lapack":
        assert got is None
        return
    ref = oc.block_fisher_inverse(g, block, damp, backend="numpy")
    want = oc.obs_update(w, ref, newly.reshape(-1), mode="superpose")
    np.testing.assert_allclose(got.reshape(-1), want, rtol=1e-8, atol=1e-10 * np.abs(w).max())


@pytest.mark.skipif(not HAS_NUMBA, reason="numba")
@pytest.mark.parametrize("broken", ["lanes", "all"])
def test_compiled_kernels_are_checked_and_left_out_where_they_disagree(
    monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    """This build's SLP-compiled kernels agree with numpy.linalg; where a build does not
    (simulated: the lanes, or every diag, off by 1e-6), a RuntimeWarning names it and
    diag(F̂⁻¹) runs without the lanes, or on the LAPACK path, with the reference's values."""
    import numba

    from obert_core.backends import _block_kernels

    before = numba.config.SLP_VECTORIZE
    assert _block_kernels.kernels_agree() == "lanes"
    assert before == numba.config.SLP_VECTORIZE  # the switch is restored
    kernel = _block_kernels.diag_inverse_kernel
    used: list[bool] = []

    def miscompiled(*args: object) -> None:
        kernel(*args)
        used.append(bool(args[7]))
        if args[7] or broken == "all":
            out = args[5]
            assert isinstance(out, np.ndarray)
            out *= 1 + 1e-6

    monkeypatch.setattr(_block_kernels, "diag_inverse_kernel", miscompiled)
    monkeypatch.setattr(_block_kernels, "_KERNELS_AGREE", None)
    with pytest.warns(RuntimeWarning, match="disagree with numpy.linalg"):
        state = _block_kernels.kernels_agree()
    assert state == ("blocks" if broken == "lanes" else "none")
    d, block, m, damp = 6 * 32, 6, 10, 1e-4
    g, _ = _problem(13, d, block, m)
    ref = oc.block_fisher_inverse(g, block, damp, backend="numpy").diagonal(0, 1, 2)
    used.clear()
    fb = oc.FisherBlocks(_gram(g, block), damp, m, d, kernels="auto", overwrite_gram=True)
    np.testing.assert_allclose(to_np(fb.diag()), ref.reshape(-1)[:d], rtol=1e-10)
    if broken == "lanes":
        assert used and not any(used) and fb.kernels == "numba"
    else:
        assert not used and fb.kernels == "lapack" and fb._factors is None
        fb.inverse()  # the Gram was not overwritten


@pytest.mark.skipif(not HAS_NUMBA, reason="numba")
def test_an_overwritten_gram_is_never_read_again() -> None:
    """With overwrite_gram, a diag() that fails (a block not positive definite) leaves the
    Gram gone: a retry with a larger damp raises instead of factoring the factors; reading
    ``gram`` raises; two threads asking for diag() at once get the same, correct values."""
    from concurrent.futures import ThreadPoolExecutor

    d, block, m, damp = 8 * 20, 8, 12, 1e-6
    g, _ = _problem(31, d, block, m)
    gram = _gram(g, block).astype(np.float32)
    gram[3] = -np.eye(block)  # not positive definite
    fb = oc.FisherBlocks(gram, damp, m, d, kernels="numba", overwrite_gram=True, check=False)
    with pytest.raises(oc.ObertError, match="not positive definite"):
        fb.diag()
    fb.damp = 10.0  # what the message suggests, on the same object
    with pytest.raises(oc.ObertError, match=r"diag\(F̂⁻¹\) reads the Gram.*overwrite_gram"):
        fb.diag()
    with pytest.raises(oc.ObertError, match=r"FisherBlocks\.gram"):
        _ = fb.gram
    good = _gram(g, block).astype(np.float32)
    ref = np.linalg.inv(good.astype(np.float64) / m + damp * np.eye(block)).diagonal(0, 1, 2)
    shared = oc.FisherBlocks(good, damp, m, d, kernels="numba", overwrite_gram=True)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _i: to_np(shared.diag()), range(4)))
    for out in outs:
        np.testing.assert_allclose(out, ref.reshape(-1), rtol=1e-9)
