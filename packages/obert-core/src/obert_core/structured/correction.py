"""Second-order correction after removing groups of input columns (OBS on the layer-input Hessian).

For a layer ``y = W a`` (``W`` of shape ``(d, m)``) and its calibration inputs, the reconstruction
error of new weights ``W'`` is

    E(W') = (1/N) Σ_t ‖(W − W') a_t‖² = tr((W − W') H (W − W')ᵀ),   H = E[a aᵀ] + λ·mean(diag)·I

(``λ`` = ``damp``, a fraction of the mean diagonal, default 0.01 as in OBC/GPTQ). Removing a set
``S`` of columns (``W'[:, S] = 0``) and re-fitting the rest is a least-squares problem, the same
for every output row, with the closed-form (OBS) optimum and cost

    ΔW = −W_S (H⁻¹_SS)⁻¹ H⁻¹_{S,:}                                                   (C-1)
    E_S = tr( W_S (H⁻¹_SS)⁻¹ W_Sᵀ )                                                  (C-2)

(``W_S = W[:, S]``; for one column ``k``: ``‖W[:, k]‖² / [H⁻¹]_kk``). Groups are column blocks: an
FFN atom is one column (``group_size=1``), an attention head ``dh`` columns (``group_size=dh``), so
``H⁻¹_qq`` is a ``g×g`` block. Greedy selection (ZipLM style) removes the group of least (C-2) cost,
applies (C-1), and downdates ``H⁻¹`` exactly to the inverse over the remaining columns,

    H⁻¹ ← H⁻¹ − H⁻¹_{:,q} (H⁻¹_qq)⁻¹ H⁻¹_{q,:}                                        (C-3)

repeating until the requested number is gone; the step costs add up to (C-2) of the final set.
Unlike the output-space saliency these costs are in units of the layer's output (not of the loss),
so rank them within a layer, or rank atoms globally by :func:`~obert_core.output_saliency` and
correct each layer with :func:`obs_group_correction`.

With ``bias`` given, the bias is one more column whose input is the constant 1 (never removed), so
the correction also re-fits the bias; ``hessian`` is then the ``(m+1)×(m+1)`` statistic of
``[a; 1]`` (:meth:`~obert_core.StructuredStats.input_hessian` with ``bias=True``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._arrays import check_finite, framework_of, to_numpy
from .._errors import ObertError
from .._validate import check_count
from .._xp import Xp
from ._common import (
    check_damp_fraction,
    check_groups,
    damped_inverse,
    group_blocks,
    group_columns,
    to_index,
    weight_matrix,
)

__all__ = [
    "DEFAULT_DAMP",
    "StructuredPruneResult",
    "obs_group_correction",
    "obs_group_prune",
    "obs_group_saliency",
]

DEFAULT_DAMP = 0.01


class StructuredPruneResult(NamedTuple):
    """What a structured correction returns.

    Attributes:
        removed: int64 NumPy array of removed group indices — in removal order for
            :func:`obs_group_prune`, ascending for :func:`obs_group_correction`.
        weight: the corrected ``(d, m)`` weight, removed columns exactly 0 (dtype, framework and
            device of the input weight). Shrink it with ``weight[:, keep_columns]``.
        bias: the corrected bias (only when a bias was passed), else ``None``.
        error: predicted reconstruction error ``E_S`` (C-2) of the result, with the damped ``H``.
        costs: :func:`obs_group_prune` only: the cost of each greedy step (its cumulative sum is
            the error after each step); ``None`` for :func:`obs_group_correction`.
    """

    removed: np.ndarray
    weight: Any
    bias: Any
    error: float
    costs: np.ndarray | None


class _Problem:
    """Validated float64 working copies: ``W`` (with the bias as a last column) and ``H⁻¹``."""

    def __init__(self, weight: Any, hessian: Any, group_size: int, damp: float, bias: Any) -> None:
        framework_of(weight, hessian, bias, names=("weight", "hessian", "bias"))
        xp, w = weight_matrix(weight)
        self.xp: Xp = xp
        self.like_w, self.like_b = weight, bias
        d, m = int(w.shape[0]), int(w.shape[1])
        self.d, self.m = d, m
        self.g, self.n = check_groups(m, group_size)
        lam = check_damp_fraction(damp)
        size = m + (bias is not None)
        shape = tuple(getattr(hessian, "shape", ()))
        if shape != (size, size):
            extra = (
                " (with bias: the statistic of [a; 1], input_hessian(bias=True))"
                if (bias is not None)
                else ""
            )
            raise ObertError(
                f"hessian must have shape ({size}, {size}) for a weight of shape {(d, m)}{extra}, "
                f"got shape {shape}; it is E[a aᵀ] of the layer inputs "
                "(StructuredStats.input_hessian())."
            )
        check_finite(hessian, "hessian")
        if bias is not None:
            if tuple(getattr(bias, "shape", ())) != (d,):
                raise ObertError(
                    f"bias must have shape ({d},) (one entry per output row of the weight), got "
                    f"shape {tuple(getattr(bias, 'shape', ()))}."
                )
            check_finite(bias, "bias")
            b = bias.detach() if xp.torch else bias
            b = xp.f64(b).reshape(d, 1)
            w = xp._t.cat([w, b], 1) if xp.torch else np.concatenate([w, b], 1)
        h = hessian.detach().to(w.device) if xp.torch else hessian
        self.w = w
        self.hinv = damped_inverse(xp, h, m, lam)

    def index(self, cols: np.ndarray) -> Any:
        """Column indices for the working arrays' framework and device."""
        if self.xp.torch:
            return self.xp._t.as_tensor(cols, device=self.w.device)
        return cols

    def solve(self, a: Any, b: Any) -> Any:
        if self.xp.torch:
            return self.xp._t.linalg.solve(a, b)
        return np.linalg.solve(a, b)

    def inv(self, a: Any) -> Any:
        if self.xp.torch:
            return self.xp._t.linalg.inv(a)
        return np.linalg.inv(a)

    def result(
        self, removed: np.ndarray, error: float, costs: np.ndarray | None
    ) -> StructuredPruneResult:
        xp, m = self.xp, self.m
        w = xp.astype(self.w[:, :m], self.like_w)
        b = None if self.like_b is None else xp.astype(self.w[:, m], self.like_b)
        if xp.torch:
            w = w.contiguous()
        return StructuredPruneResult(removed, w, b, float(error), costs)

    def scores(self, alive: Any) -> Any:
        """(C-2) of each group alone, ``+inf`` where ``alive`` is False."""
        return _scores(self.xp, self.w, self.hinv, self.n, self.g, alive)


def _scores(xp: Xp, w: Any, hinv: Any, n: int, g: int, alive: Any) -> Any:
    """(C-2) of the ``n`` leading groups of the working ``w``/``hinv``; ``+inf`` where not alive."""
    m = n * g
    wm = w[:, :m]
    if g == 1:
        diag = hinv.diagonal()[:m]
        safe = xp.where(alive, diag, 1.0 + 0 * diag)
        s = xp.einsum("dk,dk->k", wm, wm) / safe
    else:
        blocks = group_blocks(xp, hinv, n, g)
        blocks = xp.where(alive[:, None, None], blocks, xp.eye(g) + 0 * blocks)
        w3 = wm.reshape(w.shape[0], n, g)
        gram = xp.einsum("dqi,dqj->qij", w3, w3)  # W_qᵀ W_q
        inv = xp._t.linalg.inv(blocks) if xp.torch else np.linalg.inv(blocks)
        s = (inv * gram).sum(-1).sum(-1)
    return xp.where(alive, s, float("inf") + 0 * s)


_ROWS = 1 << 16  # elements per temporary of the NumPy rank-g downdate (cache-sized chunks)


def _copy(xp: Xp, x: Any) -> Any:
    return x.clone() if xp.torch else x.copy()


def _sub_product(xp: Xp, target: Any, left: Any, right: Any) -> None:
    """``target -= left @ right`` in place, without a full-size temporary."""
    if xp.torch:
        target.addmm_(left, right, alpha=-1.0)
        return
    step = max(1, _ROWS // max(1, target.shape[1]))
    for r in range(0, target.shape[0], step):
        target[r : r + step] -= left[r : r + step] @ right


def obs_group_saliency(
    weight: Any, hessian: Any, *, group_size: int = 1, damp: float = DEFAULT_DAMP, bias: Any = None
) -> Any:
    """Cost (C-2) of removing each group alone with the optimal correction (C-1).

    Args:
        weight: ``(d, m)`` weight (torch ``Linear`` layout), NumPy or torch.
        hessian: ``(m, m)`` ``E[a aᵀ]`` of the layer inputs (undamped; see
            :meth:`~obert_core.StructuredStats.input_hessian`), or ``(m+1, m+1)`` with ``bias``.
        group_size: 1 for FFN neurons, the head dimension for heads.
        damp: ``λ``, fraction of the mean diagonal of ``H`` added to it (default 0.01).
        bias: ``(d,)`` layer bias, re-fitted by the correction (optional).

    Returns:
        ``(m // group_size,)`` float64 reconstruction-error increases, framework of ``weight``.
    """
    p = _Problem(weight, hessian, group_size, damp, bias)
    alive = ~p.xp.zeros((p.n,), dtype="bool")
    return p.scores(alive)


def obs_group_correction(
    weight: Any,
    hessian: Any,
    remove: Any,
    *,
    group_size: int = 1,
    damp: float = DEFAULT_DAMP,
    bias: Any = None,
) -> StructuredPruneResult:
    """Remove the given groups and re-fit the remaining columns optimally (C-1), in one solve.

    The result is the least-squares optimum ``argmin E(W')`` over ``W'`` with ``W'[:, S] = 0``
    (and over the bias, if given), whatever chose ``S`` (e.g. HEAPr's global ranking).

    Args:
        weight: ``(d, m)`` weight (torch ``Linear`` layout).
        hessian: ``(m, m)`` ``E[a aᵀ]`` (``(m+1, m+1)`` with ``bias``).
        remove: group indices to remove (ints; NumPy, torch or a list), each at most once.
        group_size: columns per group (1: FFN neurons; head dimension: heads).
        damp: fraction of the mean diagonal of ``H`` (default 0.01).
        bias: ``(d,)`` bias to re-fit (optional).

    Returns:
        :class:`StructuredPruneResult` (``costs`` is ``None``).
    """
    p = _Problem(weight, hessian, group_size, damp, bias)
    idx = to_index(remove, p.n)
    if idx.size == 0:
        return p.result(idx, 0.0, None)
    cols = p.index(group_columns(idx, p.g))
    hs = p.hinv[cols][:, cols]
    ws = p.w[:, cols]
    z = p.solve(hs, p.hinv[cols, :])  # (H⁻¹_SS)⁻¹ H⁻¹_{S,:}
    error = float((ws * p.solve(hs, ws.T).T).sum())
    p.w = p.w - ws @ z
    p.w[:, cols] = 0.0
    return p.result(idx, error, None)


def obs_group_prune(
    weight: Any,
    hessian: Any,
    num_remove: int,
    *,
    group_size: int = 1,
    damp: float = DEFAULT_DAMP,
    bias: Any = None,
) -> StructuredPruneResult:
    """Greedy OBS: remove ``num_remove`` groups one at a time by least cost (C-2), correcting each.

    Each step picks the live group of least cost given the weights corrected so far (ties: the
    lowest index), applies (C-1) for it and downdates ``H⁻¹`` (C-3). Groups whose columns are
    already zero cost 0 and go first, so pass the total number of removed groups wanted.

    Cost: ``O(num_remove · m · (m + d))`` (one rank-``g`` update of ``H⁻¹`` and ``W`` per step;
    removed groups are dropped from the working arrays as they accumulate). For a BERT-base FFN
    (``m = 3072``) prefer torch tensors (in-place BLAS updates; a GPU if there is one).

    Args:
        weight: ``(d, m)`` weight (torch ``Linear`` layout).
        hessian: ``(m, m)`` ``E[a aᵀ]`` (``(m+1, m+1)`` with ``bias``).
        num_remove: how many groups to remove, ``0 … m // group_size``.
        group_size: columns per group (1: FFN neurons; head dimension: heads).
        damp: fraction of the mean diagonal of ``H`` (default 0.01).
        bias: ``(d,)`` bias to re-fit (optional).

    Returns:
        :class:`StructuredPruneResult` with ``removed`` in removal order and the per-step ``costs``.
    """
    p = _Problem(weight, hessian, group_size, damp, bias)
    k = check_count(num_remove, "num_remove")
    if k > p.n:
        raise ObertError(
            f"num_remove={k} is more than the {p.n} groups of the layer (width {p.m}, group_size="
            f"{p.g}); a layer cannot lose more atoms than it has."
        )
    xp, g = p.xp, p.g
    extra = np.arange(p.m, p.w.shape[1])  # the bias column: never removed, kept last
    w, hinv = p.w, p.hinv
    pos = np.arange(p.n)  # original index of each group of the working arrays
    alive = ~xp.zeros((p.n,), dtype="bool")
    dead = 0
    removed: list[int] = []
    costs: list[float] = []

    def working_columns(local: np.ndarray) -> np.ndarray:
        return np.concatenate([group_columns(local, g), pos.shape[0] * g + extra - p.m])

    for _ in range(k):
        s = _scores(xp, w, hinv, pos.shape[0], g, alive)
        j = int(s.argmin())
        costs.append(float(s[j]))
        removed.append(int(pos[j]))
        sl = slice(j * g, (j + 1) * g)
        z = p.solve(hinv[sl, sl], hinv[sl, :])  # (H⁻¹_qq)⁻¹ H⁻¹_{q,:}: (C-1) and (C-3)
        _sub_product(xp, w, _copy(xp, w[:, sl]), z)
        _sub_product(xp, hinv, _copy(xp, hinv[:, sl]), z)
        w[:, sl] = 0.0
        hinv[sl, :] = 0.0
        hinv[:, sl] = 0.0
        alive[j] = False
        dead += 1
        if dead >= max(8, pos.shape[0] // 4):  # drop removed groups from the working arrays
            live = np.flatnonzero(to_numpy(alive))
            idx = p.index(working_columns(live))
            w, hinv = w[:, idx], hinv[idx][:, idx]
            pos, alive, dead = pos[live], alive[alive], 0
    live = np.flatnonzero(to_numpy(alive))
    p.w = xp.zeros(tuple(p.w.shape))
    p.w[:, p.index(np.concatenate([group_columns(pos[live], g), extra]))] = w[
        :, p.index(working_columns(live))
    ]
    cost_arr = np.asarray(costs, dtype=np.float64)
    return p.result(np.asarray(removed, dtype=np.int64), float(cost_arr.sum()), cost_arr)
