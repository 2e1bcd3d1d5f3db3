"""Curvature for the directions no gradient saw (m < B; docs/math.md §1.1).

With ``m`` gradients the data part ``S_b = G_bᵀG_b / m`` of a ``B×B`` Fisher block has rank at
most ``m``. When ``m < B`` the quadratic model ``½ δwᵀ(λI + S_b)δw`` gives the ``B − m``
directions orthogonal to every gradient the curvature ``λ`` alone: a joint OBS update is then
free to move the kept weights along them, and the loss it predicts is far below the measured one
(docs/results.md, "Few gradients per block"). :func:`fill_unseen_curvature` gives those
directions the mean curvature of the block instead,

    F̃_b = λI + S_b + μ_b (I − P_b),     μ_b = tr(S_b) / n_b,                              (Eq. U)

with ``P_b`` the orthogonal projector on the range of ``S_b`` (the span of the gradients) and
``n_b`` the block's live coordinates (those with a non-zero gradient: pruned weights, whose
gradients are masked to 0, and the zero padding of a tail block do not count): the curvature seen
along the gradients is kept as it is, the unseen directions get the average over the live
directions of what was seen (the isotropic estimate; ``μ_b`` is what a random unit direction
``u`` among the live coordinates has in expectation, ``E[uᵀS_b u] = tr(S_b)/n_b``). For ``m ≥ B``
there is no unseen direction and the Fisher is returned unchanged, bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import check_finite, framework_of, is_torch
from ._errors import ObertError
from ._validate import check_positive_int

__all__ = ["fill_unseen_curvature"]

_CHUNK = 8192  # blocks per batched eigendecomposition (bounds the float64 temporaries)


def fill_unseen_curvature(gram: Any, num_grads: int) -> Any:
    """The Gram blocks of Eq. U: ``G_bᵀG_b + m·μ_b (I − P_b)`` for every block (``m < B``).

    The ``B − m`` directions of each block orthogonal to its gradients are the eigenvectors of
    the ``B − m`` smallest eigenvalues of ``G_bᵀG_b`` (it has rank ≤ m). If the gradients span
    fewer than ``m`` directions (e.g. weights pruned before, whose gradients are 0), the extra
    null directions keep the curvature ``λ``, as without the fill.

    Args:
        gram: ``(num_blocks, B, B)`` Gram blocks ``Σ_i g_i g_iᵀ`` (NumPy or torch, float32 or
            float64; only the lower triangle is read), as
            :class:`~obert_core.BlockFisherBuilder` accumulates them.
        num_grads: ``m``, the number of gradients summed in ``gram``.

    Returns:
        The filled blocks, symmetric, in float64 of the input's framework (``gram`` itself,
        unchanged, when ``m ≥ B``). Use them in place of the Gram: ``λI + result / m`` is ``F̃_b``.

    Raises:
        ObertError: on a shape that is not ``(n, B, B)`` or non-finite entries.
    """
    framework_of(gram, names=("gram",))
    shape = tuple(gram.shape)
    if len(shape) != 3 or shape[1] != shape[2] or 0 in shape:
        raise ObertError(f"gram must have shape (num_blocks, B, B) with B >= 1, got {shape}.")
    m = check_positive_int(num_grads, "num_grads")
    b = shape[1]
    if m >= b:
        return gram
    check_finite(gram, "gram")
    unseen = b - m
    if is_torch(gram):
        import torch

        out = gram.to(torch.float64).clone()
        for s in range(0, shape[0], _CHUNK):
            a = out[s : s + _CHUNK]
            a = a.tril() + a.tril(-1).mT
            _, vecs = torch.linalg.eigh(a)  # ascending eigenvalues
            null = vecs[:, :, :unseen]
            diag = a.diagonal(dim1=1, dim2=2)
            live = (diag > 0).sum(-1).clamp(min=1)
            mu = diag.sum(-1) / live  # m·μ_b = tr(G_bᵀG_b)/n_b
            out[s : s + _CHUNK] = a + mu[:, None, None] * (null @ null.mT)
        return out
    out_np = np.array(gram, dtype=np.float64)
    for s in range(0, shape[0], _CHUNK):
        a = out_np[s : s + _CHUNK]
        a = np.tril(a) + np.swapaxes(np.tril(a, -1), 1, 2)
        _, vecs = np.linalg.eigh(a)
        null = vecs[:, :, :unseen]
        diag_np = np.diagonal(a, axis1=1, axis2=2)
        mu = diag_np.sum(-1) / np.maximum((diag_np > 0).sum(-1), 1)
        out_np[s : s + _CHUNK] = a + mu[:, None, None] * (null @ np.swapaxes(null, 1, 2))
    return out_np
