from __future__ import annotations

import functools

import numpy as np
import pytest
from core_helpers import AVAILABLE_BACKENDS, HAS_TORCH, oracle_blocks, to_np
from hypothesis import given, settings
from hypothesis import strategies as st

import obert_core as oc


def _as(backend: str, x: np.ndarray) -> object:
    if backend == "torch":
        import torch

        return torch.from_numpy(x)
    return x


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.linalg.norm(a - b, axis=(1, 2)) / np.linalg.norm(b, axis=(1, 2))))


@settings(max_examples=25, deadline=None)
@given(
    d=st.integers(1, 60),
    block=st.integers(1, 16),
    m=st.integers(1, 20),
    damp=st.sampled_from([1e-1, 1e-3, 1e-5]),
    seed=st.integers(0, 2**16),
)
def test_matches_explicit_block_inverse(d: int, block: int, m: int, damp: float, seed: int) -> None:
    block = min(block, d)
    g = np.random.default_rng(seed).standard_normal((m, d))
    ref = oracle_blocks(g, block, damp)
    for method in ("batched", "streaming"):
        out = oc.block_fisher_inverse(g, block, damp, backend="numpy", method=method)
        assert out.shape == (-(-d // block), block, block)
        np.testing.assert_allclose(out, ref, rtol=1e-7, atol=1e-9 / damp)


@pytest.mark.parametrize("method", ["batched", "streaming"])
def test_backends_agree_with_reference(backend: str, method: str) -> None:
    rng = np.random.default_rng(0)
    g = rng.standard_normal((37, 203))  # d % B != 0, m not a multiple of 4
    ref = oracle_blocks(g, 16, 1e-3)
    out = to_np(
        oc.block_fisher_inverse(
            _as(backend, g), 16, 1e-3, backend=backend, method=method, chunk_size=10
        )
    )
    assert _rel(out, ref) < 1e-10


def test_padded_tail_is_decoupled_and_equals_smaller_block() -> None:
    rng = np.random.default_rng(1)
    g = rng.standard_normal((12, 23))
    out = oc.block_fisher_inverse(g, 10, 1e-2, backend="numpy")
    tail = oc.block_fisher_inverse(g[:, 20:], 3, 1e-2, backend="numpy")[0]
    np.testing.assert_allclose(out[2, :3, :3], tail, rtol=1e-10)
    np.testing.assert_allclose(out[2, 3:, 3:], np.eye(7) / 1e-2)
    assert not out[2, :3, 3:].any() and not out[2, 3:, :3].any()


def test_streaming_builder_equals_one_shot_and_is_chunk_invariant(backend: str) -> None:
    rng = np.random.default_rng(2)
    g = rng.standard_normal((20, 90)).astype(np.float32)
    ref = oracle_blocks(g, 9, 1e-4)
    for method in ("batched", "streaming"):
        b = oc.BlockFisherBuilder(90, 9, 1e-4, 20, method=method, backend=backend, dtype=np.float64)
        for chunk in (g[:3], g[3:4], g[4:17], g[17:]):
            b.add(_as(backend, chunk))
        assert b.num_seen == 20
        assert _rel(to_np(b.finalize()), ref) < 1e-8


def test_gradient_order_does_not_matter() -> None:
    rng = np.random.default_rng(3)
    g = rng.standard_normal((15, 40))
    a = oc.block_fisher_inverse(g, 8, 1e-3, backend="numpy", method="streaming")
    b = oc.block_fisher_inverse(g[::-1].copy(), 8, 1e-3, backend="numpy", method="streaming")
    np.testing.assert_allclose(a, b, rtol=1e-8)


def test_inverse_is_spd_with_bounded_spectrum() -> None:
    g = np.random.default_rng(4).standard_normal((6, 50))
    damp = 1e-2
    out = oc.block_fisher_inverse(g, 10, damp, backend="numpy")
    np.testing.assert_allclose(out, np.swapaxes(out, 1, 2), atol=1e-9)
    ev = np.linalg.eigvalsh(out)
    assert (ev > 0).all() and (ev <= 1 / damp * (1 + 1e-9)).all()


def test_scaling_gradients_scales_the_data_term() -> None:
    g = np.random.default_rng(5).standard_normal((9, 30))
    c = 3.0
    a = oc.block_fisher_inverse(c * g, 10, 1e-3, backend="numpy")
    ref = oracle_blocks(g, 10, 1e-3 / c**2) / c**2  # λI + c²GᵀG/m = c²(λ/c² I + GᵀG/m)
    np.testing.assert_allclose(a, ref, rtol=1e-8)


@functools.cache
def _masked_case() -> tuple[np.ndarray, np.ndarray]:
    """Gradients with masked columns and their oracle (a 5000 x 5000 inverse: ~11 s, so once)."""
    rng = np.random.default_rng(6)
    m, d = 24, 5000
    g = rng.standard_normal((m, d)).astype(np.float32)
    g = (g + 0.5 * np.outer(rng.standard_normal(m), rng.standard_normal(d))).astype(np.float32)
    g[:, rng.random(d) < 0.5] = 0.0
    g.flags.writeable = False  # shared by the backends' tests: each gets a copy
    ref = oracle_blocks(g.astype(np.float64), 50, 1e-7)
    ref.flags.writeable = False
    return g, ref


@pytest.mark.slow
@pytest.mark.xdist_group("fisher-masked-oracle")  # one worker computes the oracle once
def test_masked_coordinates_at_tiny_damp_float32(backend: str) -> None:
    """The numerically hard case of the issue: damp=1e-7, zero-gradient (masked) columns, m < B,
    float32 gradients. A naive float32 Gram + Cholesky fails here; we must match float64."""
    bsz, damp = 50, 1e-7
    g, ref = _masked_case()
    out = to_np(oc.block_fisher_inverse(_as(backend, g.copy()), bsz, damp, backend=backend))
    assert out.dtype == np.float32
    assert _rel(out.astype(np.float64), ref) <= 1e-4
    diag_err = np.abs(np.diagonal(out, 0, 1, 2) - np.diagonal(ref, 0, 1, 2)) / np.diagonal(
        ref, 0, 1, 2
    )
    assert diag_err.max() <= 1e-4
    # masked rows are exactly (1/λ)·e_i
    masked = np.flatnonzero(~g.any(0))
    flat_diag = np.diagonal(out, 0, 1, 2).reshape(-1)
    np.testing.assert_allclose(flat_diag[masked], 1 / damp, rtol=1e-6)


def test_realistic_scale_float32_gram_fast_path_is_accurate() -> None:
    pytest.importorskip("torch")
    import torch

    rng = np.random.default_rng(7)
    g = (rng.standard_normal((256, 3000)) * 1e-3).astype(np.float32)  # m >= B → float32 GEMM
    g[:, rng.random(3000) < 0.3] = 0
    ref = oracle_blocks(g.astype(np.float64), 50, 1e-7)
    out = oc.block_fisher_inverse(torch.from_numpy(g), 50, 1e-7, gram_precision="float32").numpy()
    assert _rel(out.astype(np.float64), ref) <= 1e-4


def test_torch_in_torch_out_numpy_in_numpy_out() -> None:
    g = np.random.default_rng(8).standard_normal((4, 12)).astype(np.float32)
    assert isinstance(oc.block_fisher_inverse(g, 4, 1e-2), np.ndarray)
    if HAS_TORCH:
        import torch

        t = oc.block_fisher_inverse(torch.from_numpy(g), 4, 1e-2)
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
        t2 = oc.block_fisher_inverse(torch.from_numpy(g), 4, 1e-2, backend="numpy")
        assert isinstance(t2, torch.Tensor)
        a = oc.block_fisher_inverse(g, 4, 1e-2, backend="torch")
        assert isinstance(a, np.ndarray)


def test_fewer_gradients_than_num_grads_warns_and_uses_configured_m() -> None:
    g = np.random.default_rng(9).standard_normal((5, 20))
    b = oc.BlockFisherBuilder(20, 5, 1e-3, 8, backend="numpy")
    b.add(g)
    with pytest.warns(UserWarning, match="only 5 of num_grads=8"):
        out = b.finalize()
    np.testing.assert_allclose(out, oracle_blocks(g, 5, 1e-3, num_grads=8), rtol=1e-9)


def test_memory_estimate() -> None:
    assert oc.fisher_memory_bytes(1_769_472, 50) == 4 * 35390 * 2500
    assert oc.fisher_memory_bytes(84_934_656, 50) == 4 * -(-84_934_656 // 50) * 2500  # ~17 GB
    assert oc.fisher_memory_bytes(100, 10, method="batched") == 10 * 100 * (4 + 8)


@settings(max_examples=15, deadline=None)
@given(
    d=st.integers(1, 80),
    block=st.integers(1, 20),
    m=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    f32=st.booleans(),
)
def test_fast_backends_agree_with_reference_property(
    d: int, block: int, m: int, seed: int, f32: bool
) -> None:
    from core_helpers import AVAILABLE_BACKENDS

    block = min(block, d)
    g = np.random.default_rng(seed).standard_normal((m, d))
    g[:, ::3] = 0.0  # masked coordinates
    g = g.astype(np.float32) if f32 else g
    ref = oracle_blocks(g.astype(np.float64), block, 1e-2)
    for backend in AVAILABLE_BACKENDS[1:]:
        for method in ("batched", "streaming"):
            out = to_np(
                oc.block_fisher_inverse(
                    _as(backend, g), block, 1e-2, backend=backend, method=method
                )
            )
            # float32 Sherman–Morrison (the reference's update) cancels in F⁻¹ − uuᵀ/α: looser
            tol = 1e-10 if not f32 else (1e-5 if method == "batched" else 1e-3)
            assert _rel(out.astype(np.float64), ref) < tol, (backend, method)


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_torch_cpu_cholesky_inverse_over_many_chunks_matches_reference() -> None:
    import torch

    from obert_core.backends import _torch

    rng = np.random.default_rng(3)
    g = rng.standard_normal((12, 4 * (_torch._CPU_CHUNK + 3) + 2))  # > 4 chunks, padded tail
    g[:, ::5] = 0.0  # masked coordinates at tiny damp
    ref = oracle_blocks(g, 4, 1e-7)
    out = oc.block_fisher_inverse(torch.from_numpy(g), 4, 1e-7, backend="torch")
    assert out.dtype == torch.float64
    assert _rel(to_np(out), ref) < 1e-9


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_torch_cpu_inverse_names_the_first_block_that_is_not_positive_definite() -> None:
    import torch

    from obert_core.backends import _torch

    acc = torch.zeros((_torch._CPU_CHUNK + 5, 3, 3), dtype=torch.float64)
    acc[_torch._CPU_CHUNK + 2] = -torch.eye(3)
    with pytest.raises(oc.ObertError, match=rf"block {_torch._CPU_CHUNK + 2}\)"):
        _torch._cpu_block_inverse(acc, 1e-3, 1, torch.float32)


# --- non-finite gradients are found from the Gram (docs/math.md §2) ---------------------------


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
@settings(max_examples=20, deadline=None)
@given(
    d=st.integers(2, 40),
    block=st.integers(1, 12),
    chunks=st.lists(st.integers(1, 7), min_size=1, max_size=5),
    bad=st.sampled_from([None, np.nan, np.inf, -np.inf]),
    where=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6)),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_non_finite_chunk_is_found_from_the_gram(
    backend: str,
    d: int,
    block: int,
    chunks: list[int],
    bad: float | None,
    where: tuple[int, int, int],
    dtype: type,
    seed: int,
) -> None:
    """A NaN/inf anywhere in a chunk is refused by that chunk's add(), which names it; the
    chunks before it are accepted; finite chunks build the float64 reference's inverse."""
    block = min(block, d)
    m = sum(chunks)
    g = (np.random.default_rng(seed).standard_normal((m, d)) * 1e-2).astype(dtype)
    bad_chunk = where[0] % len(chunks)
    start = sum(chunks[:bad_chunk])
    if bad is not None:
        g[start + where[1] % chunks[bad_chunk], where[2] % d] = bad
    # float64 Gram on every backend (gram_precision) so that the reference tolerance is tight
    b = oc.BlockFisherBuilder(d, block, 1e-3, m, backend=backend, gram_precision="float64")
    lo = 0
    for i, k in enumerate(chunks):
        part = _as(backend, g[lo : lo + k])
        if bad is not None and i == bad_chunk:
            msg = rf"add\(\) call {i + 1} \(gradients {lo}\.\.{lo + k - 1}, .*NaN or inf"
            with pytest.raises(oc.ObertError, match=msg):
                b.add(part)
            with pytest.raises(oc.ObertError, match=rf"refused add\(\) call {i + 1} "):
                b.add(part[:1])
            with pytest.raises(oc.ObertError, match="create a new one"):
                b.finalize()
            return
        b.add(part)
        lo += k
    out = to_np(b.finalize())
    ref = oracle_blocks(g.astype(np.float64), block, 1e-3)
    assert _rel(out, ref) < (1e-5 if dtype == np.float32 else 1e-10)


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_gram_overflow_is_named_and_the_builder_refuses_further_use() -> None:
    """Finite gradients whose squares overflow a float32 Gram are refused with that reason."""
    import torch

    gen = torch.Generator().manual_seed(0)
    ok = torch.randn((4, 12), generator=gen)
    big = torch.randn((4, 12), generator=gen) * 1e20  # finite; squares ~1e40 > 3.4e38
    b = oc.BlockFisherBuilder(12, 4, 1e-3, 12, backend="torch", gram_precision="float32")
    b.add(ok)
    with pytest.raises(oc.ObertError, match=r"add\(\) call 2 \(gradients 4\.\.7.*overflow"):
        b.add(big)
    with pytest.raises(oc.ObertError, match=r"refused add\(\) call 2"):
        b.finalize_fisher()
    # in float64 the same gradients are fine
    b64 = oc.BlockFisherBuilder(12, 4, 1e-3, 12, backend="torch", gram_precision="float64")
    for part in (ok, big, ok):
        b64.add(part)
    assert torch.isfinite(b64.finalize()).all()


def test_streaming_build_still_scans_the_gradients() -> None:
    """The streaming build has no Gram: it refuses a non-finite chunk before touching its state."""
    b = oc.BlockFisherBuilder(10, 5, 1e-3, 4, method="streaming", backend="numpy")
    with pytest.raises(oc.ObertError, match="NaN or inf"):
        b.add(np.full((2, 10), np.nan))
    b.add(np.ones((4, 10)))  # still usable
    assert np.isfinite(b.finalize()).all()


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch (the float32 Gram)")
def test_overflow_the_row_check_cannot_see_is_refused_at_finalize_naming_the_weight() -> None:
    """Finite squares that overflow one column of a float32 Gram while the block's last row
    stays finite pass the per-chunk check; the diagonal check of the finalisation refuses them."""
    import torch

    g = torch.randn((8, 12), generator=torch.Generator().manual_seed(0))
    g[:, 5] = 1e20  # block 1 (weights 4..7): (5, 5) overflows
    g[:, 7] = 0.0  # ... while its last row (7, ·) is exactly 0
    for finalize in ("finalize", "finalize_fisher"):
        b = oc.BlockFisherBuilder(12, 4, 1e-3, 8, backend="torch", gram_precision="float32")
        b.add(g)
        with pytest.raises(oc.ObertError, match=r"non-finite diagonal entries \(first: weight 5\)"):
            getattr(b, finalize)()


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
@pytest.mark.parametrize("d", [12, 14])  # without and with a padded tail block
def test_first_chunk_overwrites_the_uninitialised_torch_gram(d: int) -> None:
    """``add_gram(first=True)`` never reads the accumulator (GEMM with beta = 0)."""
    import torch

    from obert_core.backends import get_backend

    be = get_backend("torch")
    g = torch.from_numpy(np.random.default_rng(0).standard_normal((6, d)).astype(np.float32))
    acc = be.new_gram(-(-d // 4), 4, g)
    acc.fill_(float("nan"))  # what uninitialised memory may hold
    be.add_gram(acc, g, d, 4, first=True)
    be.add_gram(acc, g, d, 4)
    gp = np.zeros((6, acc.shape[0] * 4))
    gp[:, :d] = g.double().numpy()
    x = gp.reshape(6, -1, 4).transpose(1, 0, 2)
    np.testing.assert_allclose(acc.double().numpy(), 2 * x.transpose(0, 2, 1) @ x, rtol=1e-5)
