"""N:M masks chosen by the joint OBS saliency of the pruned set (an extension of Eq. 4).

In every group of ``M`` consecutive flattened weights, ``M − N`` must go. Instead of ranking the
weights one by one, every candidate pruned set ``P`` (``C(M, M−N)`` of them, 6 for 2:4) is scored
with its exact joint saliency ``ρ_P = ½ w_Pᵀ ([F̂⁻¹]_PP)⁻¹ w_P`` and the cheapest one is chosen,
which accounts for the correlation between the weights removed together.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from ._arrays import check_finite, framework_of, is_torch, to_numpy
from ._errors import ObertError
from ._operators import as_operator
from .masks import parse_nm
from .obs import check_mask_shape

__all__ = ["obs_nm_mask"]


def obs_nm_mask(
    weights: Any, finv: Any, nm: str | tuple[int, int], *, current_mask: Any = None
) -> Any:
    """Keep-mask with at most N nonzeros in every M consecutive weights, by joint OBS saliency.

    Args:
        weights: the tensor (any shape; flattened row-major), NumPy or torch.
        finv: inverse-Fisher blocks or an :class:`~obert_core.MFACInverse`; ``M`` must divide the
            Fisher block size so a group never straddles two blocks.
        nm: the pattern, e.g. ``"2:4"``.
        current_mask: keep-mask of earlier pruning (default ``weights != 0``): those weights stay
            pruned, and are part of every candidate set of their group.

    Returns:
        Boolean keep-mask in the shape (and framework) of ``weights``; pass ``~mask`` to
        :func:`~obert_core.obs_update` to prune.
    """
    n, m = parse_nm(nm)
    framework_of(weights, current_mask, names=("weights", "current_mask"))
    w = weights.reshape(-1)
    if w.shape[0] == 0:
        raise ObertError("weights is empty; pass the tensor to prune.")
    check_finite(w, "weights")
    op = as_operator(finv, w)
    d = int(w.shape[0])
    if op.block_size % m or d % m:
        raise ObertError(
            f"M={m} of the {n}:{m} pattern must divide the Fisher block size ({op.block_size}) and "
            f"the number of weights ({d}); use e.g. block_size=32 for 2:4."
        )
    sub = to_numpy(op.group_blocks(m))[: d // m]  # (groups, M, M) float64
    wg = to_numpy(op.xp.f64(w)).reshape(-1, m)
    if current_mask is not None:
        check_mask_shape(current_mask, tuple(weights.shape), "current_mask")
    keep0 = (wg != 0) if current_mask is None else to_numpy(current_mask)
    if keep0.dtype != bool or keep0.size != d:
        raise ObertError(
            f"current_mask must be a boolean keep-mask with {d} entries (one per weight), got "
            f"dtype {keep0.dtype} and {keep0.size} entries."
        )
    keep0 = keep0.reshape(-1, m)
    k = m - n
    best = np.full(wg.shape[0], np.inf)
    choice = np.zeros(wg.shape[0], dtype=np.int64)
    subsets = list(combinations(range(m), k))
    for idx, p in enumerate(subsets):
        pi = list(p)
        wp = wg[:, pi]
        a = sub[:, pi][:, :, pi]
        rho = 0.5 * np.einsum("gi,gi->g", wp, np.linalg.solve(a, wp[..., None])[..., 0])
        outside = np.ones(m, dtype=bool)
        outside[pi] = False
        # earlier-pruned weights must be inside P (masks never regrow)
        rho = np.where((~keep0[:, outside]).any(axis=1), np.inf, rho)
        better = rho < best
        best[better] = rho[better]
        choice[better] = idx
    pruned = np.zeros_like(wg, dtype=bool)
    for idx, p in enumerate(subsets):
        rows = choice == idx
        pruned[np.ix_(rows, list(p))] = True
    pruned |= ~keep0  # groups with more than M−N earlier-pruned weights keep all of them pruned
    keep = ~pruned.reshape(tuple(weights.shape))
    if is_torch(weights):
        import torch

        return torch.from_numpy(keep).to(weights.device)
    return keep
