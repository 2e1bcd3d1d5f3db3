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


def _check_tiles(
    bs: int, k: int, nb: int, extra: int, panel: int, chunks: int, seed: int, last: bool = False
) -> None:
    """The chunks' lower triangles in a Gram full of NaN, against float64.

    ``last``: through ``add_tiles`` as the builder calls it: moved into the B x B layout after
    the last but one chunk, the last chunk added there (``gram_block_kernel``); otherwise the
    tile kernel on blocks [lo, hi) only, then ``untile``.
    """
    from obert_core.backends._gram_kernels import (
        add_tiles,
        gram_lower_kernel,
        tiled_offset,
        tiled_size,
        untile,
    )
    from obert_core.backends._lane_kernels import slp_vectorize

    rng = np.random.default_rng(seed)
    d = nb * bs + extra  # columns after the last full block are never read
    lo, hi = (1, nb - 1) if nb > 2 and not last else (0, nb)
    flat = np.full(nb * bs * bs + 7, np.nan, dtype=np.float32)  # 7 floats after the Gram
    assert nb * bs * bs - tiled_offset(nb, bs) == nb * tiled_size(bs)
    bad = np.zeros(nb, dtype=np.uint8)
    want = np.zeros((nb, bs, bs))
    scale = 0.0
    tiled = True
    for c in range(chunks):
        g = rng.standard_normal((k, d)).astype(np.float32)
        if last:  # out of the tile order after the last but one chunk, as the builder does
            move = tiled and c >= chunks - 2
            rows = add_tiles(flat, nb, g, bs, first=c == 0, tile_order=tiled, untile_after=move)
            assert rows is (True if tiled else None)  # B x B: the builder checks the rows
            tiled = tiled and not move
        else:
            with slp_vectorize():
                tiled = flat[tiled_offset(nb, bs) : nb * bs * bs]
                gram_lower_kernel(lo, hi, tiled, g, bs, c == 0, panel, bad)
        x = g[:, : nb * bs].astype(np.float64).reshape(k, nb, bs).transpose(1, 0, 2)
        want += np.einsum("nki,nkj->nij", x, x)
        scale += float((x**2).sum(axis=1).max())
    assert not bad.any()
    if not last:
        untile(flat, nb, bs)
    acc = flat[: nb * bs * bs].reshape(nb, bs, bs)
    got = _lower(acc[lo:hi]).astype(np.float64)
    np.testing.assert_allclose(got, _lower(want[lo:hi]), rtol=0, atol=1e-5 * scale)
    if last:  # the last chunk's tiles may add partial sums above the diagonal: finite
        assert np.isfinite(acc).all()
    else:
        assert not np.triu(acc, 1).any()  # zeros above the diagonal, in every block
    assert np.isnan(_lower(acc[:lo])).all() and np.isnan(_lower(acc[hi:])).all()
    assert np.isnan(flat[nb * bs * bs :]).all()  # nothing written after the Gram


@settings(max_examples=40, deadline=None)
@given(
    bs=st.integers(15, 70).filter(lambda b: b not in (16, 17, 21)),
    k=st.integers(1, 40),
    nb=st.integers(1, 9),
    extra=st.integers(0, 30),
    panel=st.integers(1, 5),
    chunks=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    last=st.booleans(),
)
def test_tiles_give_the_float64_lower_triangle(
    bs: int, k: int, nb: int, extra: int, panel: int, chunks: int, seed: int, last: bool
) -> None:
    """Any B (edge tiles, half tiles, B < 5), k (odd and even: the half tiles take two at a
    time), panel and block range: after ``untile`` (in place, any number of blocks), the lower
    triangle of Σ_chunks X_bᵀX_b to float32 round-off and zeros above it; blocks outside
    [lo, hi) untouched (NaN from the tile order); the first chunk written without reading the
    accumulator (NaN there); no row reported non-finite. Or (``last``) ``add_tiles`` moving the
    blocks into the B x B layout, in place, before the last chunk."""
    _check_tiles(bs, k, nb, extra, panel, chunks, seed, last)


@pytest.mark.parametrize("bs", [15, 18, 19, 20, 22, 23, 24, 25, 31, 32, 33, 50, 51, 64, 65])
def test_tiles_at_the_tile_boundaries(bs: int) -> None:
    """Block sizes around the tile's 5 rows, its 8- and 16-column halves and the padding, down
    to the smallest whose tile order fits in the block."""
    _check_tiles(bs, 11, 5, 3, 2, 2, bs)
    _check_tiles(bs, 12, 5, 3, 2, 2, bs, last=True)


@pytest.mark.parametrize("nb", [1, 2, 3, 40, 200, 1000])
@pytest.mark.parametrize("last", [False, True])
def test_untile_in_place_for_any_number_of_blocks(nb: int, last: bool) -> None:
    """``untile`` (alone, or after the last chunk) in rounds of several threads' blocks (from 128 blocks a
    round: at nb = 1000) and then on one thread, down to one block whose tile order lies under
    its own B x B entries: every block right."""
    _check_tiles(50, 9, nb, 0, 3, 2, nb, last)


def test_tiled_sizes() -> None:
    from obert_core.backends._gram_kernels import tiled_offset, tiled_size

    assert tiled_size(50) == 1560  # ten row groups of 5: 38 % fewer floats than 2,500
    assert tiled_size(16) == 5 * (8 + 16 + 16 + 24) == 320  # > 256: the tiles refuse B=16
    assert tiled_offset(3, 50) == 3 * (2500 - 1560)
    fits = [b for b in range(1, 200) if tiled_size(b) <= b * b]
    assert fits[:6] == [15, 18, 19, 20, 22, 23] and fits[-1] == 199 and len(fits) == 182


@settings(max_examples=30, deadline=None)
@given(
    bs=st.integers(1, 60),  # the kernel itself runs at any B (the builder needs the fit)
    row=st.integers(0, 9),
    col=st.integers(0, 10_000),
    value=st.sampled_from([float("nan"), float("inf"), -float("inf")]),
)
def test_a_non_finite_gradient_entry_marks_its_block(
    bs: int, row: int, col: int, value: float
) -> None:
    """NaN or ±inf anywhere in a block's gradients sets that block's flag, and no other."""
    from obert_core.backends._gram_kernels import gram_lower_kernel, tiled_size

    nb, k = 4, 10
    g = np.random.default_rng(bs).standard_normal((k, nb * bs)).astype(np.float32)
    col %= nb * bs
    g[row, col] = value
    tiled = np.empty(nb * tiled_size(bs), dtype=np.float32)
    bad = np.zeros(nb, dtype=np.uint8)
    gram_lower_kernel(0, nb, tiled, g, bs, True, 2, bad)
    assert bad.tolist() == [int(b == col // bs) for b in range(nb)]


def test_panel_size_bounds() -> None:
    from obert_core.backends._gram_kernels import panel_blocks

    assert panel_blocks(1, 50) == 16
    assert panel_blocks(64, 50) == 14  # 64 · 72 floats per block, about 256 KiB a panel
    assert panel_blocks(10_000, 50) == 1


@pytest.mark.skipif(not HAS_TORCH, reason="torch")
@pytest.mark.parametrize("finalize", ["inverse", "factored"])
def test_builder_tiles_match_the_batched_gemm(finalize: str) -> None:
    """gram_kernels='numba' and 'blas' give the same Fisher (an explicit inverse or
    FisherBlocks' diag) to float32 round-off, with a tail block, for the float64 oracle."""
    import torch

    torch.manual_seed(0)
    d, bs, m, damp = 7 * 50 + 13, 50, 96, 1e-4
    g = torch.randn(m, d, dtype=torch.float32)
    out = {}
    for kernels in ("blas", "numba"):
        b = oc.BlockFisherBuilder(d, bs, damp, m, backend="torch", gram_kernels=kernels)
        b.add(g[:40])
        assert b.uses_gram_tiles is (kernels == "numba")
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
def test_torch_backend_tiles_then_finish_give_the_lower_gram_and_zeros_above() -> None:
    """``add_gram(tiles=True)`` keeps the full blocks in tile order and checks their rows;
    ``finish_gram`` gives the ``(nb, B, B)`` lower triangles (the tail block's GEMM included)
    and zeros above the diagonal of every full block."""
    import torch

    from obert_core.backends import get_backend

    be = get_backend("torch")
    d, bs = 6 * 20 + 7, 20
    g = torch.randn(30, d)
    acc = be.new_gram(7, bs, g[:0])
    assert be.add_gram(acc, g[:13], d, bs, first=True, tiles=True, tile_order=True) is True
    assert be.add_gram(acc, g[13:], d, bs, tiles=True, tile_order=True) is True
    be.finish_gram(acc, d, bs)
    x = np.zeros((30, 7 * bs))
    x[:, :d] = g.double().numpy()
    x = x.reshape(30, 7, bs).transpose(1, 0, 2)
    want = np.einsum("nki,nkj->nij", x, x)  # the tail block zero-padded
    low = np.tril(np.ones((bs, bs), dtype=bool))
    np.testing.assert_allclose(acc.double().numpy()[:, low], want[:, low], rtol=1e-5, atol=1e-4)
    assert not torch.triu(acc[:6], 1).any()
    g[3, d - 2] = float("inf")  # in the tail block: its diagonal is checked
    acc = be.new_gram(7, bs, g[:0])
    assert be.add_gram(acc, g, d, bs, first=True, tiles=True, tile_order=True) is False


@pytest.mark.skipif(not HAS_TORCH, reason="torch")
def test_auto_takes_the_tiles_only_where_they_apply() -> None:
    """'auto': the tiles for a float32 CPU Gram with B >= 16 whose tile order fits in the
    block; the batched GEMM for B < 16, for B = 16, 17, 21 and for the float64 Gram of m < B."""
    import torch

    g = torch.randn(8, 200)
    cases = {(20, "float32"): True, (8, "float32"): False, (20, "float64"): False}
    cases.update({(bs, "float32"): bs not in (16, 17, 21) for bs in range(15, 26)})
    cases[(15, "float32")] = False  # fits, but below 16
    for (bs, precision), tiles in cases.items():
        b = oc.BlockFisherBuilder(200, bs, 1e-4, 8, backend="torch", gram_precision=precision)
        b.add(g)
        assert b.uses_gram_tiles is tiles, (bs, precision)


@pytest.mark.skipif(not HAS_TORCH, reason="torch")
def test_non_finite_gradients_are_caught_with_the_tiles() -> None:
    """The tiles check row B-1 of every block after each chunk."""
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
        acc = args[2]  # the tile order
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


@pytest.mark.skipif(not HAS_TORCH, reason="torch")
def test_numba_gram_kernels_refuse_a_block_whose_tile_order_does_not_fit() -> None:
    import torch

    b = oc.BlockFisherBuilder(160, 16, 1e-4, 32, backend="torch", gram_kernels="numba")
    with pytest.raises(oc.ObertError, match=r"tile order of a 16 × 16 block \(320 floats\)"):
        b.add(torch.ones(2, 160))
    assert b.num_seen == 0


def test_tiled_offset_refuses_a_block_whose_tile_order_does_not_fit() -> None:
    from obert_core.backends._gram_kernels import tiled_offset

    with pytest.raises(oc.ObertError, match="16 × 16"):
        tiled_offset(10, 16)


@pytest.mark.skipif(not HAS_TORCH, reason="torch")
def test_fewer_gradients_than_announced_still_give_the_blas_fisher() -> None:
    """No chunk completes num_grads, so finalisation moves the tile order itself (untile)."""
    import torch

    torch.manual_seed(1)
    d, bs, m = 9 * 50, 50, 96
    g = torch.randn(60, d)
    out = []
    for kernels in ("blas", "numba"):
        b = oc.BlockFisherBuilder(d, bs, 1e-4, m, backend="torch", gram_kernels=kernels)
        b.add(g[:32])
        b.add(g[32:])
        with pytest.warns(UserWarning, match="only 60 of num_grads=96"):
            out.append(b.finalize_fisher().diag().numpy())
    np.testing.assert_allclose(out[1], out[0], rtol=1e-4)


@pytest.mark.skipif(not HAS_TORCH, reason="torch")
def test_a_nan_in_the_chunk_added_in_the_b_x_b_layout_is_caught() -> None:
    """The chunk after the move out of the tile order is checked by the builder's row probe."""
    import torch

    g = torch.randn(24, 400)
    g[20, 123] = float("nan")
    b = oc.BlockFisherBuilder(400, 20, 1e-4, 24, backend="torch", gram_kernels="numba")
    b.add(g[:8])
    b.add(g[8:16])  # at most one chunk of 8 left: the blocks leave the tile order after it
    with pytest.raises(oc.ObertError, match="NaN or inf"):
        b.add(g[16:])


def test_a_first_chunk_outside_the_tile_order_is_refused() -> None:
    """The B x B layout only takes chunks after the move: it never writes a first chunk."""
    from obert_core.backends._gram_kernels import add_tiles

    flat = np.zeros(4 * 20 * 20, dtype=np.float32)
    g = np.ones((8, 80), dtype=np.float32)
    with pytest.raises(oc.ObertError, match="first chunk in tile order"):
        add_tiles(flat, 4, g, 20, first=True, tile_order=False, untile_after=False)
    assert not flat.any()  # nothing written
