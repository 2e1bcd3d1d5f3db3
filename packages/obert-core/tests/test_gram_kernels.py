"""The Numba lower-triangle Gram tiles (backends/_gram_kernels.py) against float64 products."""

from __future__ import annotations

import numpy as np
import pytest
from core_helpers import HAS_NUMBA, HAS_TORCH, oracle_blocks
from hypothesis import given, settings
from hypothesis import strategies as st

import obert_core as oc

pytestmark = pytest.mark.skipif(not HAS_NUMBA, reason="numba")


def _lower(x: np.ndarray) -> np.ndarray:
    """The lower triangles (diagonal included) of a ``(nb, B, B)`` stack, flattened per block."""
    b = x.shape[-1]
    return x[:, np.tril(np.ones((b, b), dtype=bool))]


def _check_tiles(bs: int, k: int, nb: int, extra: int, panel: int, chunks: int, seed: int) -> None:
    """The kernel on blocks [lo, hi) of an accumulator full of NaN, against float64."""
    from obert_core.backends._gram_kernels import gram_lower_kernel
    from obert_core.backends._lane_kernels import slp_vectorize

    rng = np.random.default_rng(seed)
    d = nb * bs + extra  # columns after the last full block are never read
    lo, hi = (1, nb - 1) if nb > 2 else (0, nb)
    acc = np.full((nb, bs, bs), np.nan, dtype=np.float32)
    want = np.zeros((nb, bs, bs))
    scale = 0.0
    for c in range(chunks):
        g = rng.standard_normal((k, d)).astype(np.float32)
        with slp_vectorize():
            gram_lower_kernel(lo, hi, acc, g, c == 0, panel)
        x = g[:, : nb * bs].astype(np.float64).reshape(k, nb, bs).transpose(1, 0, 2)
        want += np.einsum("nki,nkj->nij", x, x)
        scale += float((x**2).sum(axis=1).max())
    got = _lower(acc[lo:hi]).astype(np.float64)
    np.testing.assert_allclose(got, _lower(want[lo:hi]), rtol=0, atol=1e-5 * scale)
    assert np.isfinite(acc[lo:hi]).all()  # the first chunk leaves no garbage above the diagonal
    assert np.isnan(acc[:lo]).all() and np.isnan(acc[hi:]).all()


@settings(max_examples=40, deadline=None)
@given(
    bs=st.integers(1, 70),
    k=st.integers(1, 40),
    nb=st.integers(1, 9),
    extra=st.integers(0, 30),
    panel=st.integers(1, 5),
    chunks=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_tiles_give_the_float64_lower_triangle(
    bs: int, k: int, nb: int, extra: int, panel: int, chunks: int, seed: int
) -> None:
    """Any B (edge tiles, half tiles, B < 6), k, panel and block range: the lower triangle of
    Σ_chunks X_bᵀX_b to float32 round-off, finite entries above the diagonal, blocks outside
    [lo, hi) untouched, the first chunk written without reading the accumulator (NaN there)."""
    _check_tiles(bs, k, nb, extra, panel, chunks, seed)


@pytest.mark.parametrize("bs", [1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 22, 23, 50, 51, 64, 65])
def test_tiles_at_the_tile_boundaries(bs: int) -> None:
    """Block sizes around the tile's 6 rows, its 8- and 16-column halves and the padding."""
    _check_tiles(bs, 11, 5, 3, 2, 2, bs)


def test_panel_size_bounds() -> None:
    from obert_core.backends._gram_kernels import panel_blocks

    assert panel_blocks(1, 50) == 16
    assert panel_blocks(64, 50) == 14  # 64 · 72 floats per block, about 256 KiB a panel
    assert panel_blocks(10_000, 50) == 1


@pytest.mark.skipif(not HAS_TORCH, reason="torch")
@pytest.mark.parametrize("finalize", ["inverse", "factored"])
def test_builder_tiles_match_the_batched_gemm_and_never_read_the_upper_triangle(
    finalize: str,
) -> None:
    """gram_kernels='numba' and 'blas' give the same Fisher (an explicit inverse or
    FisherBlocks' diag) to float32 round-off, with a tail block, for the float64 oracle; the
    tiles leave the entries above the diagonal unspecified (NaN here), which no finalisation
    reads."""
    import torch

    torch.manual_seed(0)
    d, bs, m, damp = 7 * 50 + 13, 50, 96, 1e-4
    g = torch.randn(m, d, dtype=torch.float32)
    out = {}
    for kernels in ("blas", "numba"):
        b = oc.BlockFisherBuilder(d, bs, damp, m, backend="torch", gram_kernels=kernels)
        b.add(g[:40])
        if kernels == "numba":
            assert b.uses_gram_tiles
            upper = torch.triu_indices(bs, bs, 1)
            b._state[:-1, upper[0], upper[1]] = float("nan")  # the tail block is a GEMM's
        b.add(g[40:])
        out[kernels] = (
            b.finalize().double().numpy()
            if finalize == "inverse"
            else b.finalize_fisher().diag().numpy()
        )
    ref = oracle_blocks(g.double().numpy(), bs, damp)
    if finalize == "factored":
        ref = ref.diagonal(0, 1, 2).reshape(-1)[:d]
    np.testing.assert_allclose(out["numba"], out["blas"], rtol=1e-4, atol=1e-4 * abs(ref).max())
    np.testing.assert_allclose(out["numba"], ref, rtol=1e-3, atol=1e-3 * abs(ref).max())


@pytest.mark.skipif(not HAS_TORCH, reason="torch")
def test_auto_takes_the_tiles_only_where_they_apply() -> None:
    """'auto': the tiles for a float32 CPU Gram with B >= 16; the batched GEMM for B < 16 and
    for the float64 Gram of m < B."""
    import torch

    g = torch.randn(8, 200)
    cases = {(20, "float32"): True, (8, "float32"): False, (20, "float64"): False}
    for (bs, precision), tiles in cases.items():
        b = oc.BlockFisherBuilder(200, bs, 1e-4, 8, backend="torch", gram_precision=precision)
        b.add(g)
        assert b.uses_gram_tiles is tiles, (bs, precision)


@pytest.mark.skipif(not HAS_TORCH, reason="torch")
def test_non_finite_gradients_are_caught_with_the_tiles() -> None:
    """The row check after each chunk reads row B-1 of every block, which the tiles write."""
    import torch

    g = torch.randn(8, 400)
    g[5, 123] = float("nan")
    b = oc.BlockFisherBuilder(400, 20, 1e-4, 40, backend="torch", gram_kernels="numba")
    with pytest.raises(oc.ObertError, match="NaN or inf"):
        b.add(g)
    assert b.uses_gram_tiles


def test_gram_kernels_bad_values_are_refused() -> None:
    with pytest.raises(oc.ObertError, match="gram_kernels"):
        oc.BlockFisherBuilder(100, 20, 1e-4, 8, gram_kernels="fast")
    with pytest.raises(oc.ObertError, match="backend='numpy'"):
        oc.BlockFisherBuilder(100, 20, 1e-4, 8, backend="numpy", gram_kernels="numba")
    with pytest.raises(oc.ObertError, match="method='streaming'"):
        oc.BlockFisherBuilder(100, 20, 1e-4, 8, method="streaming", gram_kernels="blas")
    b = oc.BlockFisherBuilder(100, 20, 1e-4, 8, gram_kernels="numba")
    with pytest.raises(oc.ObertError, match="numba backend"):
        b.add(np.ones((2, 100), dtype=np.float32))  # NumPy gradients: not the torch backend


@pytest.mark.skipif(not HAS_TORCH, reason="torch")
def test_numba_gram_kernels_refuse_a_float64_gram_and_leave_the_builder_as_it_was() -> None:
    import torch

    b = oc.BlockFisherBuilder(100, 20, 1e-4, 8, gram_kernels="numba", gram_precision="float64")
    for _ in range(2):  # the failed set-up is undone: the same error again, not another one
        with pytest.raises(oc.ObertError, match="float32"):
            b.add(torch.ones(2, 100))
    assert b.num_seen == 0


@pytest.mark.skipif(not HAS_TORCH, reason="torch")
def test_without_numba_auto_takes_the_gemm_and_numba_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from obert_core import fisher

    monkeypatch.setattr(fisher, "_numba_available", lambda: False)
    g = torch.randn(30, 200)
    b = oc.BlockFisherBuilder(200, 20, 1e-4, 30, backend="torch")
    b.add(g)
    assert not b.uses_gram_tiles
    b = oc.BlockFisherBuilder(200, 20, 1e-4, 30, backend="torch", gram_kernels="numba")
    with pytest.raises(oc.ObertError, match=r"obert-core\[numba\]"):
        b.add(g)


@pytest.mark.skipif(not HAS_TORCH, reason="torch")
def test_a_miscompiled_tile_kernel_is_caught_and_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """This build's kernel agrees with float64; a build that does not (simulated: every
    result off by 1e-3) gets a RuntimeWarning and the batched GEMM, with the right Fisher."""
    import torch

    from obert_core.backends import _gram_kernels

    assert _gram_kernels.tiles_agree()
    kernel = _gram_kernels.gram_lower_kernel

    def miscompiled(*args: object) -> None:
        kernel(*args)
        acc = args[2]
        assert isinstance(acc, np.ndarray)
        acc *= 1 + 1e-3

    monkeypatch.setattr(_gram_kernels, "gram_lower_kernel", miscompiled)
    monkeypatch.setattr(_gram_kernels, "_TILES_AGREE", None)
    with pytest.warns(RuntimeWarning, match="Gram tile kernel disagrees"):
        assert not _gram_kernels.tiles_agree()
    g = torch.randn(30, 200, dtype=torch.float32)
    b = oc.BlockFisherBuilder(200, 20, 1e-4, 30, backend="torch")
    b.add(g)
    assert not b.uses_gram_tiles
    ref = oracle_blocks(g.double().numpy(), 20, 1e-4)
    np.testing.assert_allclose(b.finalize().double().numpy(), ref, rtol=1e-3, atol=1e-2)
