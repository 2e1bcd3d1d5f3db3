"""Aligned ``r×c`` blocks of a 2-D weight and keep-masks over them (LPViT, arXiv 2407.02068 §3.1).

A weight ``W ∈ R^{R×C}`` (torch ``Linear`` layout: ``R`` outputs, ``C`` inputs) is cut into the
``(R/r)·(C/c)`` blocks ``W[i·r:(i+1)·r, j·c:(j+1)·c]`` of its grid; ``r`` must divide ``R`` and
``c`` must divide ``C`` (no padding, no partial blocks). Block ``(i, j)`` is the flattened index set

    Q_ij = { (i·r + u)·C + j·c + v : 0 ≤ u < r, 0 ≤ v < c }                   (docs/math.md, B-1)

— ``r`` row segments of ``c`` consecutive flattened weights, which is why the OBS block scores
reuse the group machinery of :func:`~obert_core.obs_saliency`.

A layer at pruning ratio ``a`` keeps its ``n − round(a·n)`` best-scored blocks (of ``n`` blocks);
ties are broken by position, blocks pruned earlier stay pruned (masks never regrow). Keep-masks are
``True`` = kept, as everywhere in the project.
"""

from __future__ import annotations

import numbers
import re
from typing import Any

import numpy as np

from .._arrays import check_finite, framework_of, is_torch, to_numpy
from .._errors import ObertError
from .._validate import check_positive_int

__all__ = [
    "block_grid",
    "block_keep_mask",
    "block_ratio",
    "expand_blocks",
    "parse_block",
    "reduce_blocks",
]

_BLOCK_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def parse_block(block: object) -> tuple[int, int]:
    """Parse a block shape: ``"16x16"``, ``(32, 32)`` or ``16`` (square), as ``(r, c)``.

    Raises:
        ObertError: not of that form, or a side < 1.
    """
    if isinstance(block, str):
        found = _BLOCK_RE.match(block)
        if found is None:
            raise ObertError(f"block shape must look like '16x16' (rows x columns), got {block!r}.")
        r, c = int(found.group(1)), int(found.group(2))
    elif _is_int(block):
        r = c = int(block)  # type: ignore[call-overload]
    elif isinstance(block, tuple | list) and len(block) == 2:
        r = check_positive_int(block[0], "block rows")
        c = check_positive_int(block[1], "block columns")
    else:
        raise ObertError(
            f"block shape must be 'RxC' such as '16x16', a pair (16, 16) or one int, got {block!r}."
        )
    if r < 1 or c < 1:
        raise ObertError(f"block shape needs rows and columns ≥ 1, got {r}x{c}; e.g. '16x16'.")
    return r, c


def block_grid(
    shape: tuple[int, ...], block: str | int | tuple[int, int], *, name: str = "weight"
) -> tuple[int, int]:
    """The number of block rows and columns ``(R/r, C/c)`` of a 2-D ``shape``.

    Args:
        shape: the weight's shape ``(R, C)``.
        block: the block shape (see :func:`parse_block`).
        name: the tensor's name, for the error message.

    Raises:
        ObertError: ``shape`` is not 2-D or ``r`` / ``c`` does not divide it (naming ``name``, its
            shape and the block).
    """
    r, c = parse_block(block)
    dims = tuple(int(d) for d in shape)
    if len(dims) != 2:
        raise ObertError(
            f"{name} has shape {dims}; r×c blocks need a 2-D weight (out_features, in_features)."
        )
    rows, cols = dims
    if rows % r or cols % c:
        raise ObertError(
            f"{name} of shape {dims} is not a whole number of {r}x{c} blocks "
            f"({rows} % {r} = {rows % r}, {cols} % {c} = {cols % c}); choose a block shape whose "
            f"rows divide {rows} and columns divide {cols}, or leave {name} out of the targets."
        )
    return rows // r, cols // c


def reduce_blocks(x: Any, block: str | int | tuple[int, int], *, name: str = "weight") -> Any:
    """The float64 mean of a 2-D array over each ``r×c`` block, shape ``(R/r, C/c)``.

    NumPy or torch in, the same framework (and device) out.
    """
    r, c = parse_block(block)
    br, bc = block_grid(tuple(x.shape), (r, c), name=name)
    x64 = x.double() if is_torch(x) else np.asarray(x, dtype=np.float64)
    return x64.reshape(br, r, bc, c).mean((1, 3))


def expand_blocks(block_mask: Any, block: str | int | tuple[int, int]) -> Any:
    """A per-block boolean ``(R/r, C/c)`` mask repeated to the weight's ``(R, C)``."""
    r, c = parse_block(block)
    if is_torch(block_mask):
        return block_mask.repeat_interleave(r, 0).repeat_interleave(c, 1)
    return np.repeat(np.repeat(np.asarray(block_mask), r, 0), c, 1)


def block_ratio(mask: Any, block: str | int | tuple[int, int], *, name: str = "mask") -> float:
    """The fraction of ``r×c`` blocks a keep-mask prunes entirely.

    Raises:
        ObertError: the mask is not boolean, does not fit the grid, or is not constant over a
            block (not block-aligned).
    """
    m = _block_states(mask, block, name)
    return float((~m).mean()) if m.size else 0.0


def _block_states(mask: Any, block: str | int | tuple[int, int], name: str) -> np.ndarray:
    """Per-block keep state of a block-aligned boolean keep-mask (``(R/r, C/c)``, NumPy)."""
    r, c = parse_block(block)
    m = to_numpy(mask)
    if m.dtype != bool:
        raise ObertError(f"{name} must be a boolean keep-mask (True = kept), got dtype {m.dtype}.")
    br, bc = block_grid(m.shape, (r, c), name=name)
    blocks = m.reshape(br, r, bc, c)
    kept = blocks.all((1, 3))
    if (blocks.any((1, 3)) & ~kept).any():
        i, j = (int(v) for v in np.argwhere(blocks.any((1, 3)) & ~kept)[0])
        raise ObertError(
            f"{name} is not aligned to {r}x{c} blocks: block ({i}, {j}) (rows "
            f"{i * r}..{i * r + r - 1}, columns {j * c}..{j * c + c - 1}) is partly pruned; "
            "earlier pruning must use the same block shape."
        )
    return np.asarray(kept)


def block_keep_mask(
    scores: Any,
    ratio: float,
    block: str | int | tuple[int, int],
    *,
    current_mask: Any = None,
    name: str = "weight",
) -> Any:
    """Keep-mask of a weight that keeps its best-scored ``r×c`` blocks at pruning ratio ``ratio``.

    Exactly ``round(ratio · n)`` of the ``n`` blocks are pruned, those with the lowest scores (ties
    broken by position, row-major over the block grid); blocks that ``current_mask`` prunes always
    come first, so masks never regrow (LPViT's top-``(1 − a)`` blocks, arXiv 2407.02068 §3.1).

    Args:
        scores: ``(R/r, C/c)`` block scores, higher = more important (e.g.
            :func:`~obert_core.blocks.taylor_block_scores`,
            :func:`~obert_core.blocks.obs_block_saliency`), NumPy or torch.
        ratio: fraction of blocks to prune, in [0, 1].
        block: the block shape ``(r, c)`` or ``"16x16"``.
        current_mask: ``(R, C)`` block-aligned keep-mask of earlier pruning, or ``None``.
        name: the tensor's name, for error messages.

    Returns:
        Boolean ``(R, C)`` keep-mask, constant over every block, in the framework of ``scores``.

    Raises:
        ObertError: a ratio outside [0, 1], non-finite scores, a ``current_mask`` that does not fit
            or is not aligned, or one that already prunes more blocks than ``ratio`` allows.
    """
    r, c = parse_block(block)
    framework_of(scores, current_mask, names=("scores", "current_mask"))
    a = _check_ratio(ratio)
    if len(tuple(scores.shape)) != 2:
        raise ObertError(
            f"scores for {name} must be 2-D, one per {r}x{c} block (R/r, C/c), got shape "
            f"{tuple(scores.shape)}."
        )
    check_finite(scores, f"scores for {name}")
    br, bc = (int(d) for d in scores.shape)
    key = to_numpy(scores).astype(np.float64).reshape(-1)
    if current_mask is not None:
        if tuple(current_mask.shape) != (br * r, bc * c):
            raise ObertError(
                f"current_mask for {name} has shape {tuple(current_mask.shape)} but {br}x{bc} "
                f"blocks of {r}x{c} make ({br * r}, {bc * c}); pass the keep-mask of this weight."
            )
        key[~_block_states(current_mask, (r, c), f"current_mask for {name}").reshape(-1)] = -np.inf
    n = key.shape[0]
    k = round(a * n)
    already = int(np.isneginf(key).sum())
    if already > k:
        raise ObertError(
            f"{already} of the {n} blocks of {name} are already pruned, more than ratio={a:.4g} "
            f"allows ({k}); masks never regrow — raise the ratio to at least {already / n:.4g}."
        )
    order = np.argsort(key, kind="stable")  # ties by position
    pruned = np.zeros(n, dtype=bool)
    pruned[order[:k]] = True
    keep = expand_blocks((~pruned).reshape(br, bc), (r, c))
    if is_torch(scores):
        import torch

        return torch.from_numpy(keep).to(scores.device)
    return keep


def _check_ratio(
    value: object, name: str = "ratio", meaning: str = "the fraction of blocks pruned"
) -> float:
    """A fraction in [0, 1]; ``meaning`` says in the error what the fraction is."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ObertError(f"{name} must be a number in [0, 1], got {value!r}.")
    a = float(value)
    if not (0.0 <= a <= 1.0):
        raise ObertError(f"{name} must be in [0, 1] ({meaning}), got {value!r}.")
    return a
