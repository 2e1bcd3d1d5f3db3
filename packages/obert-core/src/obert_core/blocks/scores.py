"""Scores of ``r×c`` weight blocks and the OBS update that removes them (docs/math.md §8).

Three scores, higher = more important (kept first by :func:`~obert_core.blocks.block_keep_mask`):

* :func:`taylor_block_scores` — LPViT's first-order score (arXiv 2407.02068 §3.2), the block mean
  of ``|w ⊙ g|`` with ``g`` the mean gradient of a label-free loss over a calibration set;
* :func:`magnitude_block_scores` — the block mean of ``|w|`` (the reference code's ``l1`` ranking);
* :func:`obs_block_saliency` — the OBS loss increase ``ρ_Q`` (oBERT Eq. 4) of removing the block
  ``Q`` alone with the blocked empirical Fisher, the rest of the Fisher blocks it touches
  re-fitted optimally.

A block ``Q`` is ``r`` row segments of ``c`` consecutive flattened weights. With a Fisher block size
``B = k·c`` that divides the row length ``C``, each segment lies in its own Fisher block, the
blocked ``F̂⁻¹`` decouples them, and

    ρ_Q = Σ_{u<r} ½ w_{Q_u}ᵀ ([F̂⁻¹]_{Q_u Q_u})⁻¹ w_{Q_u}                         (docs/math.md §8)

— the sum of the ``r`` group saliencies of :func:`~obert_core.obs_saliency` with
``group_size=c``. The matching weight update is :func:`~obert_core.obs_update` with
``mode="joint"`` (every Fisher block solved exactly for all its removed weights), which
:func:`obs_block_update` calls after checking the mask is block-aligned. With ``k = 1`` a Fisher
block holds only the segment being removed: the saliency is still the OBS loss of removing it, but
nothing is left in the block to compensate, so the "update" only zeroes the block.
"""

from __future__ import annotations

from typing import Any

from .._arrays import check_finite, framework_of, is_torch
from .._errors import ObertError
from .._operators import as_operator
from ..obs import obs_saliency, obs_update
from .grid import _block_states, block_grid, parse_block, reduce_blocks

__all__ = [
    "magnitude_block_scores",
    "obs_block_saliency",
    "obs_block_update",
    "taylor_block_scores",
]


def _check_weight(weights: Any, name: str) -> None:
    framework_of(weights, names=(name,))
    if len(tuple(weights.shape)) != 2:
        raise ObertError(
            f"{name} has shape {tuple(weights.shape)}; r×c blocks need a 2-D weight "
            "(out_features, in_features)."
        )
    check_finite(weights, name)


def taylor_block_scores(
    weights: Any, grad: Any, block: str | int | tuple[int, int], *, name: str = "weight"
) -> Any:
    """LPViT's block score: the mean of ``|w ⊙ g|`` over each ``r×c`` block.

    Args:
        weights: ``(R, C)`` weight, NumPy or torch.
        grad: ``(R, C)`` gradient, the mean over a calibration set of the gradient of a label-free
            loss such as ``mean(f(x)²)`` (arXiv 2407.02068 §3.2), same framework.
        block: the block shape, e.g. ``"16x16"``.
        name: the tensor's name, for error messages.

    Returns:
        ``(R/r, C/c)`` float64 scores in the framework of ``weights``.
    """
    _check_weight(weights, name)
    framework_of(weights, grad, names=(name, "grad"))
    if tuple(grad.shape) != tuple(weights.shape):
        raise ObertError(
            f"grad has shape {tuple(grad.shape)} but {name} has {tuple(weights.shape)}; pass the "
            "gradient of this weight."
        )
    check_finite(grad, f"grad of {name}")
    return reduce_blocks(abs(weights * grad), block, name=name)


def magnitude_block_scores(
    weights: Any, block: str | int | tuple[int, int], *, name: str = "weight"
) -> Any:
    """The mean of ``|w|`` over each ``r×c`` block (the magnitude baseline), ``(R/r, C/c)``."""
    _check_weight(weights, name)
    return reduce_blocks(abs(weights), block, name=name)


def _fisher_block_size(finv: Any, weights: Any) -> int:
    return int(as_operator(finv, weights.reshape(-1)).block_size)


def obs_block_saliency(
    weights: Any, finv: Any, block: str | int | tuple[int, int], *, name: str = "weight"
) -> Any:
    """OBS saliency ``ρ_Q`` of removing each ``r×c`` block alone (docs/math.md §8, oBERT Eq. 4).

    Args:
        weights: ``(R, C)`` weight, NumPy or torch.
        finv: the blocked inverse Fisher of the flattened weight,
            ``(R·C/B, B, B)`` from :func:`~obert_core.block_fisher_inverse`, or an
            :class:`~obert_core.MFACInverse`; ``B`` must be a multiple of ``c`` that divides ``C``
            (each row segment of a block inside one Fisher block, each Fisher block inside one
            row). ``B ≥ 2c`` leaves weights to compensate; ``B = c`` is allowed (no update).
        block: the block shape, e.g. ``"16x16"``.
        name: the tensor's name, for error messages.

    Returns:
        ``(R/r, C/c)`` float64 saliencies (the predicted loss increase, higher = kept first) in the
        framework of ``weights``.

    Raises:
        ObertError: a shape that is not a whole number of blocks, or a Fisher block size that is
            not a multiple of ``c`` dividing ``C``.
    """
    r, c = parse_block(block)
    _check_weight(weights, name)
    br, bc = block_grid(tuple(weights.shape), (r, c), name=name)
    cols = int(weights.shape[1])
    b = _fisher_block_size(finv, weights)
    if b % c or cols % b:
        raise ObertError(
            f"the Fisher block size {b} of {name} must be a multiple of the block width {c} that "
            f"divides the row length {cols} (so each {r}x{c} block is {r} whole segments of "
            f"{r} different Fisher blocks); build the inverse Fisher with e.g. block_size="
            f"{_suggest(c, cols)}."
        )
    groups = obs_saliency(weights, finv, group_size=c)  # (R, C/c): one score per row segment
    return groups.reshape(br, r, bc).sum(1)


def _suggest(c: int, cols: int) -> int:
    for k in (4, 2, 3, 1):
        if cols % (k * c) == 0:
            return k * c
    return c


def obs_block_update(
    weights: Any,
    finv: Any,
    keep: Any,
    block: str | int | tuple[int, int],
    *,
    current_mask: Any = None,
    name: str = "weight",
) -> Any:
    """Remove the blocks ``keep`` prunes and re-fit the rest optimally (oBERT Eq. 3, joint).

    :func:`~obert_core.obs_update` with ``mode="joint"``: every Fisher block is solved exactly for
    all the weights removed in it (the new blocks and those pruned earlier, which stay 0), so
    removing several blocks together costs their joint OBS loss, not the sum of their saliencies.

    Args:
        weights: ``(R, C)`` weight, NumPy or torch.
        finv: the blocked inverse Fisher (any block size; see :func:`obs_block_saliency` for the
            sizes that leave weights to compensate).
        keep: the new ``(R, C)`` block-aligned keep-mask, e.g. from
            :func:`~obert_core.blocks.block_keep_mask`.
        block: the block shape.
        current_mask: keep-mask of earlier pruning (default ``weights != 0``).
        name: the tensor's name, for error messages.

    Returns:
        The new weights, in the shape, dtype and framework of ``weights``; pruned entries are
        exactly 0.
    """
    r, c = parse_block(block)
    _check_weight(weights, name)
    block_grid(tuple(weights.shape), (r, c), name=name)
    framework_of(weights, keep, names=(name, "keep"))
    if tuple(keep.shape) != tuple(weights.shape):
        raise ObertError(
            f"keep has shape {tuple(keep.shape)} but {name} has {tuple(weights.shape)}; pass the "
            "keep-mask of this weight."
        )
    _block_states(keep, (r, c), f"keep for {name}")
    prune = ~keep if not is_torch(keep) else keep.logical_not()
    return obs_update(weights, finv, prune, mode="joint", current_mask=current_mask)
