"""What the RxC block-allocation tests share: the block shape, small method settings, counts."""

from __future__ import annotations

import torch

from obert_train import resolve_target_params

R, C = 8, 8
OBERT = {"num_grads": 8, "grad_batch_size": 4, "fisher_block_size": 16, "damp": 1e-4}
LPVIT = {"num_grads": 4, "grad_batch_size": 4}


def block_counts(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """``{name: (pruned R×C blocks, blocks)}``; every mask must be block-aligned."""
    out = {}
    for name, p in resolve_target_params(model).items():
        rows, cols = p.shape
        blocks = (p.detach() != 0).reshape(rows // R, R, cols // C, C)
        alive = blocks.any(3).any(1)
        assert torch.all(blocks.all(3).all(1) | ~alive), name  # whole blocks only
        out[name] = (int((~alive).sum()), alive.numel())
    return out
