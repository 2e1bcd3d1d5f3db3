"""OBS saliency and weight update (oBERT paper §3.1–3.2; docs/math.md §1, §3).

For a set ``Q`` of weights to remove, the quadratic model ``δL ≈ ½ δwᵀ F̂ δw`` under the constraint
``(w + δw)_Q = 0`` has the closed-form optimum

    δw* = −F̂⁻¹ E_Q ([F̂⁻¹]_QQ)⁻¹ w_Q                                                 (Eq. 3)
    ρ_Q = ½ w_Qᵀ ([F̂⁻¹]_QQ)⁻¹ w_Q,     single weight: ρ_i = w_i² / (2 [F̂⁻¹]_ii)      (Eq. 4)

With the block-diagonal ``F̂⁻¹`` this decouples per Fisher block. :func:`obs_update` solves Eq. 3
exactly for *all* weights removed inside each block (``mode="joint"``), or reproduces the reference
implementation, which sums the single-group updates and then zeroes the pruned entries
(``mode="superpose"``), or chooses per block between the two by whether the joint system is
well-posed (``mode="auto"``, docs/math.md §1.1): with m gradients the data part of a block's Fisher
has rank ≤ m, so the joint solve for the kept weights R, ``F_RR δw_R = F_RS w_S``, is a
least-squares fit of |R| unknowns to m per-gradient equations; it is well-posed when m ≥ B (the
whole block has full rank) or |R| ≤ m/2, and near |R| ≈ m it interpolates the m gradients with an
update of unbounded size (the double-descent peak of ridge regression at λ → 0).
"""

from __future__ import annotations

from typing import Any

from ._arrays import check_finite, framework_of
from ._errors import ObertError
from ._operators import InverseOperator, as_operator
from ._validate import check_choice, check_positive_int

__all__ = [
    "check_mask_shape",
    "group_shape",
    "joint_well_posed",
    "obs_quadratic_increase",
    "obs_saliency",
    "obs_update",
]

MODES = ("joint", "superpose", "auto")
AUTO_RATIO = 0.5
"""``mode="auto"`` solves a block jointly when it keeps at most ``AUTO_RATIO · m`` weights."""


def _flat(x: Any) -> Any:
    return x.reshape(-1)


def group_shape(shape: tuple[int, ...], group_size: int) -> tuple[int, ...]:
    """Shape of one score per group of ``group_size`` consecutive weights of a ``shape`` tensor.

    Groups run along the last axis: ``(r, c)`` gives ``(r, c // g)``. When the last axis is not a
    multiple of ``g`` (groups would straddle rows) the scores are flat, ``(size // g,)``.
    """
    if group_size == 1:
        return tuple(shape)
    if len(shape) >= 1 and shape[-1] % group_size == 0:
        return (*shape[:-1], shape[-1] // group_size)
    size = 1
    for dim in shape:
        size *= int(dim)
    return (size // group_size,)


def _prepare(weights: Any, finv: Any, group_size: int) -> tuple[Any, InverseOperator, int]:
    framework_of(weights, names=("weights",))
    w = _flat(weights)
    if w.shape[0] == 0:
        raise ObertError("weights is empty; pass the tensor to prune.")
    check_finite(w, "weights")
    op = as_operator(finv, w)
    g = check_positive_int(group_size, "group_size")
    if op.block_size % g != 0:
        raise ObertError(
            f"group_size={g} does not divide the Fisher block size {op.block_size}; groups may not "
            f"straddle Fisher blocks — use a block size that is a multiple of {g} (e.g. 32 for 4)."
        )
    if w.shape[0] % g != 0:
        raise ObertError(
            f"group_size={g} does not divide the number of weights {w.shape[0]}; pad the tensor "
            "or use unstructured pruning (group_size=1)."
        )
    return w, op, g


def _blocks(op: InverseOperator, v: Any) -> Any:
    """A flat length-d vector in the padded ``(num_blocks, B)`` layout (float64)."""
    xp = op.xp
    return xp.pad(xp.f64(v), op.num_blocks * op.block_size).reshape(op.num_blocks, op.block_size)


def obs_saliency(weights: Any, finv: Any, *, group_size: int = 1) -> Any:
    """OBS saliency ρ_Q (Eq. 4) of every group of ``group_size`` consecutive flattened weights.

    Args:
        weights: the tensor (any shape; flattened row-major), NumPy or torch.
        finv: ``(ceil(d/B), B, B)`` from :func:`~obert_core.block_fisher_inverse`, or an
            :class:`~obert_core.MFACInverse` of the same framework.
        group_size: ``1`` (unstructured) or e.g. ``4`` (4-block: 4 consecutive input-channel
            weights of a Linear row). Must divide the Fisher block size.

    Returns:
        float64 scores, one per group, in the weights' shape with the last axis divided by
        ``group_size`` (``(r, c)`` → ``(r, c // g)``; flat weights give ``(d // g,)``; see
        :func:`group_shape`): the predicted loss increase of removing each group alone.
        Already-zero groups score 0.
    """
    w, op, g = _prepare(weights, finv, group_size)
    xp = op.xp
    d = w.shape[0]
    shape = group_shape(tuple(weights.shape), g)
    wb = _blocks(op, w)
    if g == 1:
        rho = 0.5 * wb * wb / op.diag_blocks()
        return rho.reshape(-1)[:d].reshape(shape)
    wq = wb.reshape(-1, g)
    x = xp.solve(op.group_blocks(g), wq)  # ([F⁻¹]_QQ)⁻¹ w_Q, one g×g solve per group
    rho = 0.5 * (wq * x).sum(-1)
    return rho[: d // g].reshape(shape)


def obs_update(
    weights: Any,
    finv: Any,
    prune: Any,
    *,
    group_size: int = 1,
    mode: str = "joint",
    current_mask: Any = None,
    num_grads: int | None = None,
) -> Any:
    """Remove the weights where ``prune`` is True and update the rest optimally (Eq. 3).

    Args:
        weights: the tensor (any shape; flattened row-major), NumPy or torch.
        finv: inverse-Fisher blocks or an :class:`~obert_core.MFACInverse` (as in
            :func:`obs_saliency`).
        prune: boolean, the shape of ``weights`` or flat ``(d,)``: True where a weight is removed
            *now*. With ``group_size > 1`` it must be constant over each group.
        group_size: the group of the superposed solve (``mode="superpose"``): each group of
            ``group_size`` weights is solved jointly, groups are summed (SparseML's block4).
        mode: ``"joint"`` — the exact OBS optimum for all removed weights of each Fisher block at
            once, keeping earlier-pruned weights at zero as constraints too; ``"superpose"`` — the
            reference behaviour: sum of single-group updates, then zero the pruned entries;
            ``"auto"`` — ``"joint"`` in every block where :func:`joint_well_posed` holds,
            ``"superpose"`` in the others (identical to ``"joint"`` when ``num_grads >= B``).
        current_mask: boolean keep-mask of earlier pruning (True = kept; the shape of ``weights``
            or flat); default ``weights != 0``. Entries it marks as pruned stay exactly 0.
        num_grads: m, the number of gradients behind ``finv``; required by ``mode="auto"``.

    Returns:
        The new weights, in the shape, dtype and framework of ``weights``; every pruned entry is
        exactly 0.

    Raises:
        ObertError: on a mode outside ``("joint", "superpose", "auto")``, ``"auto"`` without
            ``num_grads``, or masks of the wrong shape or dtype.
    """
    new = _obs_update_flat(weights, finv, prune, group_size, mode, current_mask, num_grads)
    return new.reshape(tuple(weights.shape))  # weights was validated by _obs_update_flat


def check_mask_shape(mask: Any, shape: tuple[int, ...], name: str) -> None:
    """Raise :class:`ObertError` unless ``mask`` is flat or has exactly ``shape``.

    A mask with the right number of entries in another shape (typically a transposed weight)
    would silently select the wrong weights.
    """
    got = tuple(mask.shape)
    if len(got) > 1 and got != shape:
        raise ObertError(
            f"{name} has shape {got} but the weights have shape {shape}; pass a mask of the "
            f"weights' shape (or flattened with .reshape(-1)); a transposed mask (e.g. of "
            "weight.T) selects the wrong weights."
        )


def joint_well_posed(kept: Any, num_grads: int, block_size: int) -> Any:
    """Whether the joint OBS solve of a block is well-posed (``mode="auto"``, docs/math.md §1.1).

    Args:
        kept: the number of weights each block keeps after the step (array of ints).
        num_grads: m, the gradients behind the empirical Fisher ``λI + (1/m) Σ gᵢgᵢᵀ``.
        block_size: B.

    Returns:
        Boolean array: True where ``m ≥ B`` (every block's Fisher has full rank) or
        ``kept ≤ AUTO_RATIO · m`` (the joint fit of the kept weights to the m gradients is
        overdetermined by a factor of at least 2).
    """
    m = check_positive_int(num_grads, "num_grads")
    if m >= block_size:
        return kept >= 0
    return kept <= AUTO_RATIO * m


def obs_quadratic_increase(delta: Any, finv: Any) -> float:
    """The quadratic model's loss increase ``½ δwᵀ F̂ δw`` of a weight change (oBERT Eq. 2).

    The prediction OBS minimises: for the update of :func:`obs_update` with ``mode="joint"`` it
    equals the summed saliency ``ρ_Q`` of Eq. 4 over the blocks. Comparing it with the measured
    loss change tells how far the quadratic model can be trusted (docs/math.md §1.1).

    Args:
        delta: the change ``new − old`` of one tensor (any shape; NumPy or torch).
        finv: its inverse-Fisher blocks ``(ceil(d/B), B, B)`` or
            :class:`~obert_core.FisherBlocks` (an M-FAC inverse has no cheap ``F̂``).

    Returns:
        The predicted increase, a Python float (float64 arithmetic).

    Raises:
        ObertError: on an M-FAC inverse, a shape mismatch or non-finite input.
    """
    w, op, _ = _prepare(delta, finv, 1)
    xp = op.xp
    db = _blocks(op, w)
    apply_fisher = getattr(op, "_apply_fisher", None)
    if apply_fisher is not None:  # FisherBlocks: F̂ itself is stored
        return 0.5 * float((db * apply_fisher(db)).sum())
    if hasattr(finv, "_as_operator"):
        raise ObertError(
            "obs_quadratic_increase needs the Fisher blocks (block_fisher_inverse or "
            "FisherBlocks); an M-FAC inverse does not store F̂."
        )
    total = 0.0
    step = 4096
    for s in range(0, op.num_blocks, step):
        x = xp.solve(xp.f64(finv[s : s + step]), db[s : s + step])
        total += float((db[s : s + step] * x).sum())
    return 0.5 * total


def _obs_update_flat(
    weights: Any,
    finv: Any,
    prune: Any,
    group_size: int,
    mode: str,
    current_mask: Any,
    num_grads: int | None = None,
) -> Any:
    """:func:`obs_update` on the flattened weights; returns the flat ``(d,)`` result."""
    w, op, g = _prepare(weights, finv, group_size)
    check_choice(mode, "mode", MODES)
    if mode == "auto" and num_grads is None:
        raise ObertError(
            'mode="auto" decides per Fisher block from the number of gradients; pass '
            "num_grads=m (the m the inverse Fisher was built from)."
        )
    xp = op.xp
    d = w.shape[0]
    framework_of(w, prune, current_mask, names=("weights", "prune", "current_mask"))
    check_mask_shape(prune, tuple(weights.shape), "prune")
    if current_mask is not None:
        check_mask_shape(current_mask, tuple(weights.shape), "current_mask")
    p = _flat(prune)
    if p.shape[0] != d or str(p.dtype) not in ("bool", "torch.bool"):
        raise ObertError(
            f"prune must be a boolean array with {d} entries (one per weight), got dtype "
            f"{p.dtype} and {p.shape[0]} entries."
        )
    keep = (w != 0) if current_mask is None else _flat(current_mask)
    if keep.shape[0] != d or str(keep.dtype) not in ("bool", "torch.bool"):
        raise ObertError(
            f"current_mask must be a boolean keep-mask with {d} entries, got dtype {keep.dtype} "
            f"and {keep.shape[0]} entries."
        )
    total = op.num_blocks * op.block_size
    zero = ~keep | p  # everything that must be exactly 0 afterwards
    if not xp.any(p & keep):
        return xp.where(zero, 0 * w, w)  # nothing newly pruned: weights unchanged (but masked)
    wb = _blocks(op, w)
    sel = _pad_bool(xp, zero, total).reshape(op.num_blocks, op.block_size)
    newly = _pad_bool(xp, p & keep, total).reshape(op.num_blocks, op.block_size)
    if mode == "auto":
        assert num_grads is not None  # checked above
        kept = op.block_size - sel.sum(-1)
        kept[-1] -= total - d  # the tail block's zero padding is not a kept weight
        joint = joint_well_posed(kept, num_grads, op.block_size)
        if not xp.any(~joint):
            mode = "joint"
        elif not xp.any(joint & newly.any(-1)):
            mode = "superpose"
        else:
            both = sel & joint[:, None]
            dw = _joint_delta(xp, op, both, wb) + _superpose_delta(
                xp, op, newly & ~joint[:, None], wb, g
            )
            new = (wb + dw).reshape(-1)[:d]
            return xp.astype(xp.where(zero, 0 * new, new), w)
    if mode == "superpose" and g == 1:
        fused = getattr(op, "superposed_update", None)  # LowRankFisher's kernels: one pass
        done = fused(wb, newly, sel) if fused is not None else None
        if done is not None:
            return xp.astype(done.reshape(-1)[:d], w)
    if mode == "joint":
        dw = _joint_delta(xp, op, sel, wb)
    else:
        dw = _superpose_delta(xp, op, newly, wb, g)
    new = (wb + dw).reshape(-1)[:d]
    return xp.astype(xp.where(zero, 0 * new, new), w)


def _joint_delta(xp: Any, op: InverseOperator, sel: Any, wb: Any) -> Any:
    """``δw = −F̂⁻¹ E_S ([F̂⁻¹]_SS)⁻¹ w_S`` per block for the zero set ``sel`` (Eq. 3)."""
    fused = getattr(op, "restricted_update", None)
    if fused is not None:  # dense blocks: compressed |S|×|S| solves, only the S columns
        return -fused(sel, wb)
    return -op.matvec_blocks(op.restricted_solve(sel, wb))


def _superpose_delta(xp: Any, op: InverseOperator, newly: Any, wb: Any, g: int) -> Any:
    """The sum of the single-group updates of the newly pruned groups (the reference update)."""
    if g == 1:
        z = xp.where(newly, wb / op.diag_blocks(), 0 * wb)
    else:
        ng = newly.reshape(-1, g)
        if xp.any(ng.any(-1) & ~ng.all(-1)):
            raise ObertError(
                f"prune is not constant over groups of group_size={g}; select masks with "
                f"select_mask(..., group_size={g})."
            )
        zq = xp.solve(op.group_blocks(g), wb.reshape(-1, g))
        z = xp.where(ng, zq, 0 * zq).reshape(op.num_blocks, op.block_size)
    return -op.matvec_blocks(z)


def _pad_bool(xp: Any, m: Any, total: int) -> Any:
    extra = total - m.shape[0]
    if extra == 0:
        return m
    return _cat_bool(xp, m, xp.zeros((extra,), dtype="bool"))


def _cat_bool(xp: Any, a: Any, b: Any) -> Any:
    if xp.torch:
        return xp._t.cat([a, b])
    import numpy as np

    return np.concatenate([a, b])
