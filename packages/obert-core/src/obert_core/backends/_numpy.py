"""NumPy float64 reference backend: readable, paper-shaped, slow is fine."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import ObertError

__all__ = ["NumpyBackend", "blocks_of"]


def blocks_of(grads: np.ndarray, num_weights: int, block_size: int) -> np.ndarray:
    """View a ``(k, d)`` gradient chunk as ``(k, nb, B)``, zero-padding the tail block."""
    k = grads.shape[0]
    nb = -(-num_weights // block_size)
    pad = nb * block_size - num_weights
    if pad:
        grads = np.concatenate([grads, np.zeros((k, pad), dtype=grads.dtype)], axis=1)
    return grads.reshape(k, nb, block_size)


class NumpyBackend:
    """Reference implementation of :class:`~obert_core.backends.FisherBackend` in float64."""

    name = "numpy"

    def new_gram(self, num_blocks: int, block_size: int, like: Any) -> np.ndarray:
        # zeros: ``first`` is then the same as adding (the Numba kernel relies on it too)
        return np.zeros((num_blocks, block_size, block_size), dtype=np.float64)

    def add_gram(
        self,
        acc: np.ndarray,
        grads: np.ndarray,
        num_weights: int,
        block_size: int,
        *,
        first: bool = False,
        tiles: bool = False,
        tile_order: bool = False,
        untile_after: bool = False,
    ) -> bool | None:
        x = blocks_of(grads.astype(np.float64, copy=False), num_weights, block_size)
        acc += np.einsum("kni,knj->nij", x, x)
        return None  # the builder checks the Gram

    def finish_gram(self, acc: Any, num_weights: int, block_size: int) -> None:
        return None  # already (num_blocks, B, B)

    def gram_to_inverse(
        self, acc: np.ndarray, damp: float, num_grads: int, num_weights: int, out_dtype: Any
    ) -> np.ndarray:
        fisher = acc / num_grads + damp * np.eye(acc.shape[-1])  # F_b = λI + (1/m) G_bᵀ G_b
        try:
            np.linalg.cholesky(fisher)  # certifies positive definiteness
        except np.linalg.LinAlgError as exc:
            raise ObertError(
                f"a Fisher block is not positive definite with damp={damp!r}; increase damp."
            ) from exc
        return np.linalg.inv(fisher).astype(out_dtype, copy=False)

    def identity_inverse(
        self, num_blocks: int, block_size: int, damp: float, dtype: Any, like: Any
    ) -> np.ndarray:
        eye = np.eye(block_size, dtype=dtype) / dtype.type(damp)
        return np.repeat(eye[None], num_blocks, axis=0)

    def sm_update(
        self,
        finv: np.ndarray,
        grads: np.ndarray,
        num_weights: int,
        block_size: int,
        num_grads: int,
    ) -> None:
        x = blocks_of(grads.astype(finv.dtype, copy=False), num_weights, block_size)
        for g in x:  # one rank-1 update per gradient, parallel over blocks
            u = np.einsum("nij,nj->ni", finv, g)  # u = F⁻¹ g
            alpha = num_grads + np.einsum("ni,ni->n", g, u)  # m + gᵀ F⁻¹ g
            finv -= np.einsum("ni,nj->nij", u, u) / alpha[:, None, None]
