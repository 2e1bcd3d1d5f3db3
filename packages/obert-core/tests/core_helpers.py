"""Oracles and fixtures' data for the obert-core tests (importable as ``core_helpers``)."""

from __future__ import annotations

import importlib.util

import numpy as np

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_NUMBA = importlib.util.find_spec("numba") is not None

AVAILABLE_BACKENDS = ["numpy"] + (["numba"] if HAS_NUMBA else []) + (["torch"] if HAS_TORCH else [])


def dense_block_fisher(
    grads: np.ndarray, block_size: int, damp: float, num_grads: int | None = None
) -> np.ndarray:
    """Brute-force oracle: the block-diagonal damped empirical Fisher as a dense d×d float64 matrix."""
    g = np.asarray(grads, dtype=np.float64)
    m = g.shape[0] if num_grads is None else num_grads
    d = g.shape[1]
    f = np.zeros((d, d))
    for s in range(0, d, block_size):
        sl = slice(s, min(s + block_size, d))
        f[sl, sl] = g[:, sl].T @ g[:, sl] / m + damp * np.eye(sl.stop - sl.start)
    return f


def oracle_blocks(
    grads: np.ndarray, block_size: int, damp: float, num_grads: int | None = None
) -> np.ndarray:
    """The expected (nb, B, B) output: explicit inverse of each block, padding → (1/λ)·I."""
    d = grads.shape[1]
    nb = -(-d // block_size)
    inv = np.linalg.inv(dense_block_fisher(grads, block_size, damp, num_grads))
    out = np.zeros((nb, block_size, block_size))
    for b in range(nb):
        s, e = b * block_size, min((b + 1) * block_size, d)
        out[b, : e - s, : e - s] = inv[s:e, s:e]
        for i in range(e - s, block_size):
            out[b, i, i] = 1.0 / damp
    return out


def to_np(x: object) -> np.ndarray:
    if HAS_TORCH:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
    return np.asarray(x)
