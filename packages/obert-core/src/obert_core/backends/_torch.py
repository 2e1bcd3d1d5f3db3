"""torch backend (CPU and CUDA).

Batched GEMM Gram accumulation and batched float64 inversion, or the SparseML-style batched
Sherman–Morrison updates with ``baddbmm_``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._arrays import require_torch
from .._errors import ObertError
from ._linalg import damped_block_inverse

__all__ = ["TorchBackend"]

torch = require_torch()


def _blocks_of(grads: Any, num_weights: int, block_size: int) -> Any:
    """``(k, d)`` → ``(nb, k, B)`` (zero-padded tail), the layout ``bmm`` wants."""
    nb = -(-num_weights // block_size)
    pad = nb * block_size - num_weights
    if pad:
        grads = torch.nn.functional.pad(grads, (0, pad))
    return grads.reshape(grads.shape[0], nb, block_size).transpose(0, 1)


class TorchBackend:
    """torch implementation of :class:`~obert_core.backends.FisherBackend`."""

    name = "torch"

    def zeros_gram(self, num_blocks: int, block_size: int, like: Any) -> Any:
        # The accumulator takes the dtype of ``like`` (float32 fast path or float64, chosen by the
        # builder), so chunks are added in place by ``baddbmm_`` with no extra conversion pass.
        dtype = like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float64
        return torch.zeros((num_blocks, block_size, block_size), dtype=dtype, device=like.device)

    def add_gram(self, acc: Any, grads: Any, num_weights: int, block_size: int) -> None:
        # One batched GEMM over all full blocks (a strided view: no padding copy), one small GEMM
        # for the tail block.
        g = grads.to(acc.dtype)
        k = g.shape[0]
        full = num_weights // block_size
        if full:
            x = g[:, : full * block_size].reshape(k, full, block_size).transpose(0, 1)
            acc[:full].baddbmm_(x.transpose(1, 2), x)
        rest = num_weights - full * block_size
        if rest:
            t = g[:, full * block_size :]
            acc[full, :rest, :rest].addmm_(t.T, t)

    def gram_to_inverse(
        self, acc: Any, damp: float, num_grads: int, num_weights: int, out_dtype: Any
    ) -> Any:
        if acc.device.type == "cpu":  # batched float64 LAPACK beats torch's batched Cholesky on CPU
            np_out = np.dtype(str(out_dtype).removeprefix("torch."))
            return torch.from_numpy(damped_block_inverse(acc.numpy(), damp, num_grads, np_out))
        acc = acc.to(torch.float64)
        acc.div_(num_grads)
        acc.diagonal(dim1=-2, dim2=-1).add_(damp)
        chol, info = torch.linalg.cholesky_ex(acc)
        bad = torch.nonzero(info).flatten()
        if bad.numel():
            raise ObertError(
                f"{bad.numel()} Fisher block(s) (first: block {int(bad[0])}) are not positive "
                f"definite with damp={damp!r}; increase damp."
            )
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
