"""torch backend (CPU and CUDA).

Batched GEMM Gram accumulation (on the CPU in float32, the lower triangle by the Numba register
tiles of :mod:`._gram_kernels` when asked) and batched float64 Cholesky inversion, or the
SparseML-style batched Sherman–Morrison updates with ``baddbmm_``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .._arrays import require_torch
from .._errors import ObertError
from ._linalg import _threads

__all__ = ["TorchBackend"]

torch = require_torch()

_CPU_CHUNK = 256  # blocks per Cholesky call on CPU (~5 MB of float64 at B = 50)


def _blocks_of(grads: Any, num_weights: int, block_size: int) -> Any:
    """``(k, d)`` → ``(nb, k, B)`` (zero-padded tail), the layout ``bmm`` wants."""
    nb = -(-num_weights // block_size)
    pad = nb * block_size - num_weights
    if pad:
        grads = torch.nn.functional.pad(grads, (0, pad))
    return grads.reshape(grads.shape[0], nb, block_size).transpose(0, 1)


def _raise_if_not_pd(info: Any, damp: float, offset: int = 0) -> None:
    bad = torch.nonzero(info).flatten()
    if bad.numel():
        raise ObertError(
            f"{bad.numel()} Fisher block(s) (first: block {offset + int(bad[0])}) are not positive "
            f"definite with damp={damp!r}; increase damp."
        )


def _cpu_block_inverse(acc: Any, damp: float, num_grads: int, out_dtype: Any) -> Any:
    """``inv(damp·I + acc/num_grads)`` on CPU: float64 Cholesky + ``cholesky_inverse`` per chunk.

    Twice as fast as the LU inverse of NumPy's gufunc (``potrf``/``potri`` of MKL, half the flops
    of ``getrf``/``getri``); chunks of :data:`_CPU_CHUNK` blocks are converted to float64 one at a
    time (bounded temporaries) and run on all cores (torch releases the GIL). Each block is
    factorised on its own, so the result does not depend on the chunking or the thread count.
    """
    nb = acc.shape[0]
    out = torch.empty(acc.shape, dtype=out_dtype)

    def work(start: int) -> None:
        a = acc[start : start + _CPU_CHUNK].to(torch.float64, copy=True)
        a.mul_(1.0 / num_grads)
        a.diagonal(dim1=-2, dim2=-1).add_(damp)
        chol, info = torch.linalg.cholesky_ex(a)
        _raise_if_not_pd(info, damp, start)
        out[start : start + _CPU_CHUNK] = torch.cholesky_inverse(chol)

    starts = range(0, nb, _CPU_CHUNK)
    workers = min(_threads(), len(starts))
    if workers <= 1:
        for start in starts:
            work(start)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, starts))
    return out


class TorchBackend:
    """torch implementation of :class:`~obert_core.backends.FisherBackend`."""

    name = "torch"

    def new_gram(self, num_blocks: int, block_size: int, like: Any) -> Any:
        # The accumulator takes the dtype of ``like`` (float32 fast path or float64, chosen by the
        # builder), so chunks are added in place by ``baddbmm_`` with no extra conversion pass.
        # Uninitialised: the first chunk's GEMM writes it with beta = 0, which saves a zero-fill
        # pass over the whole stack (0.35 s for the 354 MB of a MiniLM layer at B = 50).
        dtype = like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float64
        shape = (num_blocks, block_size, block_size)
        if like.device.type != "cpu":
            return torch.empty(shape, dtype=dtype, device=like.device)
        # On the CPU the memory comes from NumPy, which asks Linux for transparent huge pages
        # for large arrays: the first chunk's first touch of a MiniLM layer's 354 MB Gram then
        # costs about 0.1 s less (docs/benchmarks.md). (The explicit inverse keeps torch's own
        # memory: writing the float64 inverse into such memory ran several times slower on an
        # earlier machine.)
        return torch.from_numpy(
            np.empty(shape, dtype=np.float32 if dtype == torch.float32 else np.float64)
        )

    def add_gram(
        self,
        acc: Any,
        grads: Any,
        num_weights: int,
        block_size: int,
        *,
        first: bool = False,
        tiles: bool = False,
        tile_order: bool = False,
        untile_after: bool = False,
    ) -> bool | None:
        # One batched GEMM over all full blocks, reading the chunk in place (a strided view: no
        # transpose or padding copy; MKL's strided batched GEMM takes the row stride d as its
        # leading dimension), accumulated in place (beta = 1; beta = 0 for the first chunk, which
        # never reads the uninitialised accumulator), and one small GEMM for the tail block.
        # ``tiles``: the full blocks' lower triangles by the Numba kernel instead (CPU, float32),
        # in tile order (``tile_order``, moved after the chunk with ``untile_after``, or by
        # ``finish_gram``) or in the B x B layout; each block's last row is checked.
        g = grads.detach().to(acc.dtype)
        k = g.shape[0]
        full = num_weights // block_size
        beta = 0.0 if first else 1.0
        finite: bool | None = None
        if full and tiles:
            if acc.device.type != "cpu" or acc.dtype != torch.float32 or not acc.is_contiguous():
                raise ObertError(
                    f"the Gram tiles need a contiguous float32 Gram on the CPU, got {acc.dtype} "
                    f"on {acc.device}; use tiles=False (the batched GEMM)."
                )
            from ._gram_kernels import add_tiles

            flat = acc.numpy().reshape(-1)
            chunk = g.contiguous().numpy()
            finite = add_tiles(
                flat,
                full,
                chunk,
                block_size,
                first=first,
                tile_order=tile_order,
                untile_after=untile_after,
            )
        elif full:
            x = g[:, : full * block_size].reshape(k, full, block_size).transpose(0, 1)
            acc[:full].baddbmm_(x.transpose(1, 2), x, beta=beta)
        rest = num_weights - full * block_size
        if rest:
            if first:
                acc[full].zero_()  # the padded rows and columns stay 0
            t = g[:, full * block_size :]
            acc[full, :rest, :rest].addmm_(t.T, t)
            if finite is not None:  # the tail block's diagonal covers each of its columns
                finite = finite and bool(torch.isfinite(acc[full].diagonal()).all())
        return finite

    def finish_gram(self, acc: Any, num_weights: int, block_size: int) -> None:
        full = num_weights // block_size  # the builder calls it only for the tiles' Gram
        if full:
            from ._gram_kernels import untile

            untile(acc.numpy().reshape(-1), full, block_size)

    def gram_to_inverse(
        self, acc: Any, damp: float, num_grads: int, num_weights: int, out_dtype: Any
    ) -> Any:
        if acc.device.type == "cpu":
            return _cpu_block_inverse(acc, damp, num_grads, out_dtype)
        acc = acc.to(torch.float64)
        acc.div_(num_grads)
        acc.diagonal(dim1=-2, dim2=-1).add_(damp)
        chol, info = torch.linalg.cholesky_ex(acc)
        _raise_if_not_pd(info, damp)
        return torch.cholesky_inverse(chol).to(out_dtype)

    def identity_inverse(
        self, num_blocks: int, block_size: int, damp: float, dtype: Any, like: Any
    ) -> Any:
        eye = torch.eye(block_size, dtype=dtype, device=like.device) / damp
        return eye.repeat(num_blocks, 1, 1)

    def sm_update(
        self, finv: Any, grads: Any, num_weights: int, block_size: int, num_grads: int
    ) -> Any:
        x = _blocks_of(grads.to(finv.dtype), num_weights, block_size)  # (nb, k, B)
        for r in range(x.shape[1]):
            g = x[:, r, :].unsqueeze(-1)  # (nb, B, 1)
            u = torch.bmm(finv, g)  # F⁻¹ g
            alpha = (num_grads + (g * u).sum(dim=(1, 2))).sqrt_()
            u.div_(alpha.view(-1, 1, 1))
            finv.baddbmm_(u, u.transpose(1, 2), alpha=-1)  # F⁻¹ ← F⁻¹ − u uᵀ / (m + gᵀF⁻¹g)
