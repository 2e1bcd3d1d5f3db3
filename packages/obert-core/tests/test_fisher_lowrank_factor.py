"""LowRankFisher's cached ``(m·K_b)⁻¹`` path (Eq. W-1, W-2) against an explicit float64 oracle.

The oracle builds every block ``F̂_b = λI + G_bᵀG_b / m`` (Eq. F) in float64 and inverts it with
``np.linalg.inv``; the operator never forms a ``B × B`` matrix. Checked for ``diag``,
``matvec_blocks``, ``group_blocks`` and ``restricted_update``, with the factor cached and not,
across chunk boundaries, NumPy and torch.
"""

from __future__ import annotations

import numpy as np
import pytest
from core_helpers import HAS_TORCH, to_np
from hypothesis import given, settings
from hypothesis import strategies as st

import obert_core as oc
from obert_core import fisher_lowrank as fl
from obert_core.fisher_blocks import _numba_available

KERNELS = ["lapack", "numba"] if _numba_available() else ["lapack"]


def _oracle(g: np.ndarray, block: int, damp: float, m: int) -> np.ndarray:
    """The explicit float64 ``F̂_b⁻¹`` of every (zero-padded) block."""
    rows, d = g.shape
    nb = -(-d // block)
    padded = np.zeros((rows, nb * block))
    padded[:, :d] = g
    gb = padded.reshape(rows, nb, block).transpose(1, 0, 2)
    fisher = damp * np.eye(block) + np.einsum("nib,nic->nbc", gb, gb) / m
    return np.linalg.inv(fisher)


def _close(got: np.ndarray, ref: np.ndarray) -> None:
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())


problems = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 10_000),
        "rows": st.integers(1, 9),
        "block": st.sampled_from([4, 8, 12]),
        "d": st.integers(5, 70),
        "damp": st.sampled_from([1e-3, 1e-1, 1.0]),
        "chunk": st.sampled_from([1, 3, 512]),
        "cache": st.booleans(),
        "kernels": st.sampled_from(KERNELS),
        # pruned weights: masked gradients give zero columns, decoupled (Eq. 6c)
        "dead": st.sampled_from([0.0, 0.5, 0.95]),
    }
)


@given(p=problems)
@settings(max_examples=60, deadline=None)
def test_factor_path_equals_the_explicit_float64_inverse(p: dict) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fl, "_CHUNK", p["chunk"])
        _check_against_oracle(p)


def _check_against_oracle(p: dict) -> None:
    rng = np.random.default_rng(p["seed"])
    rows, block, d, damp = p["rows"], p["block"], p["d"], p["damp"]
    g = rng.standard_normal((rows, d)) * rng.uniform(0.2, 2.0, size=d)
    g[:, rng.random(d) < p["dead"]] = 0.0
    op = oc.LowRankFisher(g, block, damp, kernels=p["kernels"])
    op._cache_factor = p["cache"]
    ref = _oracle(g, block, damp, rows)
    nb = ref.shape[0]
    _close(op.diag_blocks(), np.diagonal(ref, axis1=1, axis2=2))
    # the batched path caches K⁻¹ within its bound; the Numba path keeps no factor
    assert (op._kinv is not None) == (p["cache"] and p["kernels"] == "lapack")
    z = rng.standard_normal((nb, block))
    z[rng.random(nb) < 0.3] = 0.0  # blocks with nothing removed
    _close(op.matvec_blocks(z), np.einsum("nbc,nc->nb", ref, z))
    q = block // 4
    groups = np.stack([ref[:, 4 * i : 4 * i + 4, 4 * i : 4 * i + 4] for i in range(q)], axis=1)
    _close(op.group_blocks(4), groups.reshape(nb * q, 4, 4))
    sel = rng.random((nb, block)) < 0.4
    rhs = rng.standard_normal((nb, block))
    want = np.zeros((nb, block))
    for b in range(nb):
        s = np.flatnonzero(sel[b])
        if s.size:
            want[b] = ref[b][:, s] @ np.linalg.solve(ref[b][np.ix_(s, s)], rhs[b, s])
    np.testing.assert_allclose(
        op.restricted_update(sel, rhs), want, rtol=1e-6, atol=1e-8 * np.abs(want).max()
    )


def test_cached_and_recomputed_factor_agree_at_the_papers_damp() -> None:
    rng = np.random.default_rng(0)
    g = rng.standard_normal((16, 1037)).astype(np.float32)
    cached = oc.LowRankFisher(g, 50, 1e-7, kernels="lapack")
    fresh = oc.LowRankFisher(g, 50, 1e-7, kernels="lapack")
    fresh._cache_factor = False
    np.testing.assert_allclose(cached.diag(), fresh.diag(), rtol=1e-12)
    assert cached._kinv is not None and fresh._kinv is None
    z = rng.standard_normal((cached.num_blocks, 50))
    np.testing.assert_allclose(cached.matvec_blocks(z), fresh.matvec_blocks(z), rtol=1e-9)
    # and the explicit inverse (by Cholesky solves, independent of the cached factor)
    inv = cached.inverse()
    np.testing.assert_allclose(cached.diag_blocks(), np.diagonal(inv, axis1=1, axis2=2), rtol=1e-6)


def test_factor_is_cached_within_its_memory_bound() -> None:
    g = np.ones((20, 100), dtype=np.float32)
    assert oc.LowRankFisher(g, 50, 1e-4)._cache_factor  # 8·20² <= 2·4·20·50
    assert not oc.LowRankFisher(g, 10, 1e-4)._cache_factor  # 8·20² > 2·4·20·10
    assert oc.LowRankFisher(g.astype(np.float64), 10, 1e-4)._cache_factor


def test_float64_gradients_are_not_modified_and_stored_contiguous() -> None:
    rng = np.random.default_rng(1)
    g = rng.standard_normal((5, 33))
    before = g.copy()
    op = oc.LowRankFisher(g, 10, 1e-3)
    op.diag()
    op.matvec_blocks(np.ones((op.num_blocks, 10)))
    np.testing.assert_array_equal(g, before)
    assert op.grads.flags["C_CONTIGUOUS"] and op.grads.shape == (4, 5, 10)
    np.testing.assert_array_equal(op.grads[3, :, 3:], 0.0)  # the padded tail


def test_subset_keeps_the_cached_factor() -> None:
    rng = np.random.default_rng(2)
    g = rng.standard_normal((6, 120))
    op = oc.LowRankFisher(g, 20, 1e-3, kernels="lapack")
    op.diag()
    blocks = np.array([1, 4])
    sub = op._subset(blocks)
    np.testing.assert_array_equal(sub._kinv, op._kinv[blocks])
    np.testing.assert_allclose(sub.diag_blocks(), op.diag_blocks()[blocks], rtol=1e-12)


@pytest.mark.skipif(not _numba_available(), reason="numba not installed")
def test_numba_kernels_agree_with_the_batched_path_at_the_papers_damp() -> None:
    """Eq. W-5 (Numba) against Eq. W-4 (batched LAPACK) at λ = 1e-7, cached and not."""
    rng = np.random.default_rng(4)
    g = rng.standard_normal((16, 1037)).astype(np.float32) * rng.uniform(0.01, 3.0, 1037)
    g = g.astype(np.float32)
    lapack = oc.LowRankFisher(g, 50, 1e-7, kernels="lapack")
    z = rng.standard_normal((lapack.num_blocks, 50))
    for cache in (True, False):
        op = oc.LowRankFisher(g, 50, 1e-7, kernels="numba")
        op._cache_factor = cache
        np.testing.assert_allclose(op.diag(), lapack.diag(), rtol=1e-9)
        assert op._kinv is None  # the Numba path keeps no factor (Eq. W-5)
        np.testing.assert_allclose(op.matvec_blocks(z), lapack.matvec_blocks(z), rtol=1e-8)
        sub = op._subset(np.array([0, 5]))
        np.testing.assert_allclose(sub.diag_blocks(), lapack.diag_blocks()[[0, 5]], rtol=1e-9)


@pytest.mark.skipif(not _numba_available(), reason="numba not installed")
@pytest.mark.parametrize("dead", [0.6, 0.9])
def test_numba_kernels_factor_the_live_block_when_it_is_smaller(dead: float) -> None:
    """Masked gradients at λ = 1e-7: blocks with fewer live columns than gradients (c < m).

    The kernels factor the live ``c × c`` block (Eq. 6c) and match the explicit float64 inverse;
    the Woodbury form ``(1 − g̃ᵀK̃⁻¹g̃)/λ`` of the batched path cancels there (every live column
    lies in the gradients' span, so the leverage is ``1 − O(λ)``) and is off by percents.
    """
    rng = np.random.default_rng(4)
    g = rng.standard_normal((16, 1037)).astype(np.float32) * rng.uniform(0.01, 3.0, 1037)
    g[:, rng.random(1037) < dead] = 0.0
    g = g.astype(np.float32)
    ref = _oracle(g.astype(np.float64), 50, 1e-7, 16)
    op = oc.LowRankFisher(g, 50, 1e-7, kernels="numba")
    want = np.diagonal(ref, axis1=1, axis2=2)
    np.testing.assert_allclose(op.diag_blocks(), want, rtol=1e-7)
    assert op.kernels == "numba"
    z = rng.standard_normal((op.num_blocks, 50))
    z[::3] = 0.0
    want_z = np.einsum("nbc,nc->nb", ref, z)
    np.testing.assert_allclose(
        op.matvec_blocks(z), want_z, rtol=1e-6, atol=1e-9 * np.abs(want_z).max()
    )
    lapack = oc.LowRankFisher(g, 50, 1e-7, kernels="lapack").diag_blocks()
    assert np.max(np.abs(lapack - want) / want) > 1e-3  # the cancellation the kernels avoid


@pytest.mark.skipif(not _numba_available(), reason="numba not installed")
def test_numba_path_hands_a_block_without_a_factor_to_the_pseudo_inverse() -> None:
    """Duplicate gradients at a damp below their round-off: the batched path's pinv takes over."""
    rng = np.random.default_rng(5)
    row = rng.standard_normal(40) * 1e4
    g = np.stack([row, row, row])
    numba_op = oc.LowRankFisher(g, 20, 1e-30, kernels="numba")
    lapack_op = oc.LowRankFisher(g, 20, 1e-30, kernels="lapack")
    np.testing.assert_allclose(numba_op.diag(), lapack_op.diag(), rtol=1e-9)
    assert numba_op.kernels == "lapack"


def test_kernels_choice_is_checked() -> None:
    with pytest.raises(oc.ObertError, match="kernels"):
        oc.LowRankFisher(np.ones((2, 10)), 5, 1e-3, kernels="fast")


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("chunk", [2, 512])
@pytest.mark.parametrize("kernels", KERNELS)
def test_torch_factor_path_matches_the_oracle(
    chunk: int, kernels: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(fl, "_CHUNK", chunk)
    rng = np.random.default_rng(3)
    g = rng.standard_normal((7, 95))
    op = oc.LowRankFisher(torch.from_numpy(g), 20, 1e-2, kernels=kernels)
    ref = _oracle(g, 20, 1e-2, 7)
    _close(to_np(op.diag_blocks()), np.diagonal(ref, axis1=1, axis2=2))
    z = rng.standard_normal((5, 20))
    _close(to_np(op.matvec_blocks(torch.from_numpy(z))), np.einsum("nbc,nc->nb", ref, z))


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_duplicate_gradients_fall_back_to_the_pseudo_inverse() -> None:
    import torch

    g = np.ones((4, 30)) * 1e4  # K = λI + rank-1 with λ below round-off: not PD in float64
    for grads in (g, torch.from_numpy(g)):
        op = oc.LowRankFisher(grads, 10, 1e-12)
        diag = to_np(op.diag())
        assert np.isfinite(diag).all()
        # the Woodbury limit: a column of the rank-1 direction keeps 1 − 1/B of 1/λ
        np.testing.assert_allclose(diag, 0.9e12, rtol=1e-3)


@pytest.mark.parametrize("kernels", KERNELS)
def test_from_block_rows_is_the_same_operator_without_a_copy(kernels: str) -> None:
    rng = np.random.default_rng(6)
    g = rng.standard_normal((6, 107)).astype(np.float32)
    ref = oc.LowRankFisher(g, 20, 1e-3, kernels=kernels)
    blocks = fl._block_rows(g, 6, 20)
    op = oc.LowRankFisher.from_block_rows(blocks, 107, 1e-3, kernels=kernels)
    assert op.grads is blocks and op.num_blocks == 6 and op.num_weights == 107
    np.testing.assert_array_equal(op.diag(), ref.diag())
    z = rng.standard_normal((6, 20))
    np.testing.assert_array_equal(op.matvec_blocks(z), ref.matvec_blocks(z))


def test_from_block_rows_refuses_a_bad_layout() -> None:
    blocks = fl._block_rows(np.ones((3, 25)), 3, 10)
    with pytest.raises(oc.ObertError, match=r"ceil\(d/B\)"):
        oc.LowRankFisher.from_block_rows(blocks, 31, 1e-3)  # 31 weights need 4 blocks of 10
    with pytest.raises(oc.ObertError, match="contiguous"):
        oc.LowRankFisher.from_block_rows(np.swapaxes(blocks, 0, 1).copy().swapaxes(0, 1), 25, 1e-3)
    blocks[-1, 0, 7] = 1.0
    with pytest.raises(oc.ObertError, match=r"blocks\[-1, :, 5:\]"):
        oc.LowRankFisher.from_block_rows(blocks, 25, 1e-3)


def _unreadable_by_the_kernels() -> list[tuple[str, object]]:
    """Gradients the lapack path takes but the Numba kernels cannot read (dtype, byte order)."""
    rng = np.random.default_rng(7)
    g = rng.standard_normal((5, 63)).astype(np.float32)
    cases: list[tuple[str, object]] = [
        ("float16", g.astype(np.float16)),
        (">f4", g.astype(">f4")),
    ]
    if HAS_TORCH:
        import torch

        cases += [
            ("torch.float16", torch.from_numpy(g).half()),
            ("torch.bfloat16", torch.from_numpy(g).bfloat16()),
        ]
    return cases


@pytest.mark.skipif(not _numba_available(), reason="numba not installed")
@pytest.mark.parametrize(("name", "grads"), _unreadable_by_the_kernels())
def test_gradients_the_kernels_cannot_read_take_the_batched_path(name: str, grads: object) -> None:
    """``kernels="auto"`` (the default) must not crash where ``"lapack"`` works; ``"numba"``
    refuses such gradients up front, naming the dtype."""
    lapack = oc.LowRankFisher(grads, 20, 1e-3, kernels="lapack")
    auto = oc.LowRankFisher(grads, 20, 1e-3)
    assert auto.kernels == "lapack"
    np.testing.assert_array_equal(to_np(auto.diag()), to_np(lapack.diag()))
    with pytest.raises(oc.ObertError, match="float32 or float64") as info:
        oc.LowRankFisher(grads, 20, 1e-3, kernels="numba")
    assert name.removeprefix("torch.") in str(info.value)
    blocks = fl._block_rows(grads, 4, 20)
    assert oc.LowRankFisher.from_block_rows(blocks, 63, 1e-3).kernels == "lapack"


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("shape", [(3, 20), (6, 19), (6, 21), (120,)])
def test_matvec_refuses_a_z_of_the_wrong_shape(kernels: str, shape: tuple[int, ...]) -> None:
    """The Numba kernel reads ``z[b, q]`` unchecked: a short ``z`` must be an error, not garbage."""
    op = oc.LowRankFisher(
        np.random.default_rng(8).standard_normal((4, 107)), 20, 1e-3, kernels=kernels
    )
    with pytest.raises(oc.ObertError, match=r"z must have shape \(6, 20\)"):
        op.matvec_blocks(np.ones(shape))


@pytest.mark.skipif(not _numba_available(), reason="numba not installed")
def test_numba_kernels_split_over_threads_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranges of blocks on 3 worker threads (tests run with one thread, so force the split)."""
    from obert_core.backends import _block_kernels

    monkeypatch.setattr(_block_kernels, "_threads", lambda: 3)
    rng = np.random.default_rng(9)
    g = rng.standard_normal((6, 200 * 10 - 3)).astype(np.float32)
    lapack = oc.LowRankFisher(g, 10, 1e-3, kernels="lapack")
    z = rng.standard_normal((200, 10))
    for cache in (True, False):
        op = oc.LowRankFisher(g, 10, 1e-3, kernels="numba")
        op._cache_factor = cache
        np.testing.assert_allclose(op.matvec_blocks(z), lapack.matvec_blocks(z), rtol=1e-9)
        np.testing.assert_allclose(op.diag(), lapack.diag(), rtol=1e-9)
        assert op.kernels == "numba" and op._kinv is None


@pytest.mark.skipif(not _numba_available(), reason="numba not installed")
@pytest.mark.parametrize("cache", [True, False])
def test_numba_matvec_first_falls_back_with_a_consistent_state(cache: bool) -> None:
    """``F̂⁻¹z`` before ``diag``, a block without a factor: the batched path's answers after."""
    rng = np.random.default_rng(10)
    row = rng.standard_normal(40) * 1e4
    g = np.stack([row, row, row])
    op = oc.LowRankFisher(g, 20, 1e-30, kernels="numba")
    ref = oc.LowRankFisher(g, 20, 1e-30, kernels="lapack")
    op._cache_factor = ref._cache_factor = cache
    z = rng.standard_normal((2, 20))
    np.testing.assert_allclose(op.matvec_blocks(z), ref.matvec_blocks(z), rtol=1e-9)
    assert op.kernels == "lapack"
    assert (op._kinv is not None) == cache
    np.testing.assert_allclose(op.diag(), ref.diag(), rtol=1e-9)
    np.testing.assert_allclose(op.group_blocks(4), ref.group_blocks(4), rtol=1e-9)


@pytest.mark.skipif(not _numba_available(), reason="numba not installed")
def test_numba_sub_operator_is_the_operator_of_its_blocks() -> None:
    """``_subset`` of the Numba operator: ``diag`` and ``F̂⁻¹z`` of its blocks are the parent's."""
    rng = np.random.default_rng(11)
    g = rng.standard_normal((6, 120))
    op = oc.LowRankFisher(g, 20, 1e-3, kernels="numba")
    op.diag()
    blocks = np.array([4, 1])
    sub = op._subset(blocks)
    z = rng.standard_normal((6, 20))
    np.testing.assert_allclose(
        sub.matvec_blocks(z[blocks]), op.matvec_blocks(z)[blocks], rtol=1e-12
    )
    np.testing.assert_allclose(sub.diag_blocks(), op.diag_blocks()[blocks], rtol=1e-12)
    assert sub.kernels == "numba"


_ZERO_PIVOTS = [(27, "numpy"), (180, "numpy"), (284, "numpy")]  # LU inv raised after Cholesky
_ZERO_PIVOTS += [(32, "torch"), (54, "torch")] if HAS_TORCH else []  # cholesky_inverse raised


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize(("seed", "framework"), _ZERO_PIVOTS)
def test_equal_gradients_with_a_zero_pivot_get_the_pseudo_inverse(
    seed: int, framework: str, kernels: str
) -> None:
    """``m`` equal gradients at a small damp: ``K̃_b`` has a pivot of exactly 0.

    The batched path (and the Numba path, which hands such a block to it) must take the
    pseudo-inverse, not raise (NumPy's LU ``inv`` after a Cholesky that passed; torch's
    ``cholesky_inverse`` of a failed factor). The exact diagonal of ``λI + rrᵀ`` is
    ``(λ + ‖r‖² − r_q²) / ((λ + ‖r‖²) λ)``.
    """
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 6))
    r = rng.standard_normal(20) * 10 ** rng.uniform(-2, 4)
    damp = 10 ** rng.uniform(-10, -3)
    g = np.tile(r, (m, 1))
    if framework == "torch":
        import torch

        g = torch.from_numpy(g)
    op = oc.LowRankFisher(g, 20, damp, kernels=kernels)
    nr = float((r**2).sum())
    exact = (damp + nr - r**2) / ((damp + nr) * damp)
    np.testing.assert_allclose(to_np(op.diag()), exact, rtol=1e-6)
    z = np.ones((1, 20))
    want = (z[0] - r * (r @ z[0]) / (damp + nr)) / damp
    zz = z if framework == "numpy" else g.new_tensor(z)
    np.testing.assert_allclose(to_np(op.matvec_blocks(zz))[0], want, rtol=1e-6)


@pytest.mark.parametrize("framework", ["numpy", "torch"] if HAS_TORCH else ["numpy"])
@pytest.mark.parametrize("seed", [3, 27, 32, 75, 160, 180, 284])
def test_equal_gradients_with_a_zero_pivot_solve_by_the_pseudo_inverse(
    seed: int, framework: str
) -> None:
    """The joint update (W-3) and ``inverse()`` on blocks whose ``K`` is singular in float64.

    ``F̂ = λI + rrᵀ``: ``F̂⁻¹ = (I − rrᵀ/(λ + ‖r‖²))/λ`` and, with ``F̂_RS = r_R r_Sᵀ``,
    ``δw_R = F̂_RR⁻¹F̂_RS w_S = (r_S·w_S) r_R / (λ + ‖r_R‖²)`` (Sherman-Morrison). The batched
    solves raised (LU after a failed Cholesky) before taking the pseudo-inverse.
    """
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 6))
    r = rng.standard_normal(20) * 10 ** rng.uniform(-2, 4)
    damp = 10 ** rng.uniform(-10, -3)
    sel = rng.random((1, 20)) < 0.3
    sel[0, :2] = [True, False]
    rhs = rng.standard_normal((1, 20))
    args = [np.tile(r, (m, 1)), sel, rhs]
    if framework == "torch":
        import torch

        args = [torch.from_numpy(a) for a in args]
    op = oc.LowRankFisher(args[0], 20, damp)
    s, w = sel[0], rhs[0]
    want = np.where(s, w, -(r[s] @ w[s]) * r / (damp + (r[~s] ** 2).sum()))
    got = to_np(op.restricted_update(args[1], args[2]))[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9 * np.abs(want).max())
    inv = (np.eye(20) - np.outer(r, r) / (damp + r @ r)) / damp
    np.testing.assert_allclose(to_np(op.inverse())[0], inv, rtol=1e-6, atol=1e-9 / damp)


@pytest.mark.skipif(not _numba_available(), reason="numba not installed")
@pytest.mark.parametrize("fw", ["numpy", "torch"] if HAS_TORCH else ["numpy"])
def test_fused_superposed_update_equals_the_unfused_one(fw: str) -> None:
    """``superposed_update`` (one kernel pass) gives the weights of ``z`` then ``F̂⁻¹z``, bitwise.

    Masked gradients (earlier pruning), blocks with nothing newly pruned, a padded tail block.
    """
    rng = np.random.default_rng(11)
    d = 50 * 7 + 13
    current = rng.random(d) > 0.4
    g = (rng.standard_normal((16, d)) * current).astype(np.float32)
    w = (rng.standard_normal(d) * current).astype(np.float32)
    prune = current & (rng.random(d) < 0.3)
    prune[50:150] = False  # two blocks lose nothing
    if fw == "torch":
        import torch

        g, w, prune, current = (torch.from_numpy(x) for x in (g, w, prune, current))
    fused = oc.LowRankFisher(g, 50, 1e-7, kernels="numba")
    unfused = oc.LowRankFisher(g, 50, 1e-7, kernels="numba")
    unfused.superposed_update = lambda *a: None  # type: ignore[method-assign]
    got = oc.obs_update(w, fused, prune, current_mask=current, mode="superpose")
    want = oc.obs_update(w, unfused, prune, current_mask=current, mode="superpose")
    np.testing.assert_array_equal(to_np(got), to_np(want))
    assert to_np(got).dtype == np.float32
    np.testing.assert_array_equal(to_np(got)[50:150], to_np(w)[50:150])
    assert np.all(to_np(got)[to_np(prune) | ~to_np(current)] == 0.0)


@pytest.mark.skipif(not _numba_available(), reason="numba not installed")
def test_fused_superposed_update_falls_back_on_a_block_without_a_factor() -> None:
    """Duplicate gradients at λ = 1e-30: None from the kernel, the batched path's update after."""
    rng = np.random.default_rng(12)
    row = rng.standard_normal(40) * 1e4
    g = np.stack([row, row, row])
    w = rng.standard_normal(40)
    prune = rng.random(40) < 0.5
    op = oc.LowRankFisher(g, 20, 1e-30, kernels="numba")
    ref = oc.LowRankFisher(g, 20, 1e-30, kernels="lapack")
    got = oc.obs_update(w, op, prune, mode="superpose")
    np.testing.assert_allclose(got, oc.obs_update(w, ref, prune, mode="superpose"), rtol=1e-9)
    assert op.kernels == "lapack"


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("dead", [0.0, 0.8])
def test_num_grads_other_than_the_rows_normalises_every_path(kernels: str, dead: float) -> None:
    """``num_grads=M`` ≠ rows: ``F̂ = λI + GᵀG/M`` on the dual and the primal (few live) systems.

    With 80 % masked columns most blocks have ``c ≤ 5m/4`` live columns and take the primal
    ``c × c`` system, whose Gram is scaled by ``1/M`` as the Woodbury one is.
    """
    rng = np.random.default_rng(21)
    rows, block, d, damp, num_grads = 8, 10, 47, 1e-2, 32
    g = rng.standard_normal((rows, d))
    g[:, rng.random(d) < dead] = 0.0
    ref = _oracle(g, block, damp, num_grads)
    op = oc.LowRankFisher(g, block, damp, num_grads=num_grads, kernels=kernels)
    _close(op.diag_blocks(), np.diagonal(ref, axis1=1, axis2=2))
    z = rng.standard_normal((op.num_blocks, block))
    _close(op.matvec_blocks(z), np.einsum("nbc,nc->nb", ref, z))
    w = rng.standard_normal(d) * (g != 0).any(0)
    prune = (w != 0) & (rng.random(d) < 0.4)
    for mode in ("superpose", "joint"):
        want = oc.obs_update(w, ref, prune, current_mask=w != 0, mode=mode)
        got = oc.obs_update(w, op, prune, current_mask=w != 0, mode=mode)
        _close(to_np(got), want)
    assert op.kernels == kernels


@pytest.mark.parametrize("kernels", KERNELS)
def test_superposed_update_refuses_arrays_of_another_layout(kernels: str) -> None:
    """``superposed_update`` checks the ``(num_blocks, B)`` layout as ``matvec_blocks`` does.

    The kernel indexes without bounds checks: a missing tail block or a short row would be read
    past its end (garbage weights, no error).
    """
    rng = np.random.default_rng(5)
    op = oc.LowRankFisher(rng.standard_normal((4, 45)), 10, 1e-2, kernels=kernels)
    ok_w, ok_m = np.zeros((5, 10)), np.ones((5, 10), dtype=bool)
    for wb, newly, zero in (
        (np.zeros((4, 10)), ok_m, ok_m),  # the padded tail block left out
        (ok_w, np.ones((5, 9), dtype=bool), ok_m),
        (ok_w, ok_m, np.ones(50, dtype=bool)),
    ):
        with pytest.raises(oc.ObertError, match=r"must have shape \(5, 10\)"):
            op.superposed_update(wb, newly, zero)
