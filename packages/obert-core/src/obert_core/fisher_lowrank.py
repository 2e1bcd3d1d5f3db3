"""The blocked Fisher of m < B gradients, kept as its gradients (Woodbury; docs/math.md §2.2).

With ``m`` gradients and Fisher blocks of ``B > m`` weights, each block is a damped rank-``m``
matrix,

    F̂_b = λI_B + G_bᵀG_b,     G_b = [g_1,b … g_m,b]ᵀ / √m   (m × B)                        (Eq. F)

and every quantity OBS needs follows from ``m × m`` systems instead of ``B × B`` ones:

    F̂_b⁻¹ = (I − G_bᵀ K_b⁻¹ G_b) / λ,      K_b = λI_m + G_b G_bᵀ          (Woodbury)       (W-1)
    diag(F̂_b⁻¹) = (1 − ‖L_b⁻¹ G_b e_q‖²) / λ,   K_b = L_b L_bᵀ                              (W-2)
    δw_R = (λI + G_RᵀG_R)⁻¹ G_RᵀG_S w_S = G_Rᵀ (λI_m + G_R G_Rᵀ)⁻¹ G_S w_S,  δw_S = −w_S   (W-3)

(W-3) is the joint OBS update (Eq. 3) written as the solve with the kept weights ``R`` of the block
(``F̂_RR δw_R = F̂_RS w_S``) and the push-through identity: one ``m × m`` solve per block,
whatever ``|S|``, batched over all blocks at once. Memory is ``m·B`` numbers per block instead
of ``B²``; the work ``O(m²B)`` instead of ``O(B³)``. This is what SparseML-era recipes
(``num_grads: 16`` or ``32`` with ``B = 50``) need.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import check_finite, framework_of, is_torch
from ._errors import ObertError
from ._validate import check_damp, check_positive_int
from ._xp import Xp, xp_of

__all__ = ["LowRankFisher"]

_CHUNK = 8192  # blocks per batched call (bounds the float64 temporaries)


class LowRankFisher:
    """The damped Fisher blocks of ``m < B`` gradients, stored as the gradients (Eq. W-1..3).

    Accepted in place of the ``(ceil(d/B), B, B)`` inverse by :func:`~obert_core.obs_saliency`,
    :func:`~obert_core.obs_update` (every mode) and :func:`~obert_core.obs_quadratic_increase`,
    with the same results to float64 round-off; ``inverse()`` gives the explicit blocks.

    Args:
        grads: ``(m, d)`` gradients, one flattened gradient per row (NumPy or torch, float32 or
            float64). Kept (padded into ``(ceil(d/B), m, B)``), in the input's dtype.
        block_size: ``B``.
        damp: ``λ`` > 0.
        num_grads: ``m``, the normaliser of Eq. F (default: the number of rows).

    Raises:
        ObertError: on a bad shape, value or non-finite gradients.
    """

    def __init__(
        self, grads: Any, block_size: int, damp: float, *, num_grads: int | None = None
    ) -> None:
        framework_of(grads, names=("grads",))
        shape = tuple(grads.shape)
        if len(shape) != 2 or 0 in shape:
            raise ObertError(
                f"grads must be a non-empty 2-D array (num_grads, num_weights), got {shape}."
            )
        check_finite(grads, "grads")
        self.block_size = check_positive_int(block_size, "block_size")
        self.damp = check_damp(damp)
        rows, d = int(shape[0]), int(shape[1])
        self.num_grads = rows if num_grads is None else check_positive_int(num_grads, "num_grads")
        self.num_weights = d
        self.num_blocks = -(-d // self.block_size)
        total = self.num_blocks * self.block_size
        self.xp: Xp = xp_of(grads)
        padded: Any
        if is_torch(grads):
            import torch

            padded = torch.nn.functional.pad(grads, (0, total - d))
        else:
            padded = np.pad(np.asarray(grads), ((0, 0), (0, total - d)))
        # (num_blocks, rows, B): block b's gradients, as G_b of Eq. F without the 1/√m
        self.grads = padded.reshape(rows, self.num_blocks, self.block_size).swapaxes(0, 1)
        self.xp_like = grads[:0, 0]
        self._diag: Any = None

    # -- float64 building blocks -----------------------------------------------------------

    def _g(self, start: int) -> Any:
        """``G_b`` of blocks ``start:start+_CHUNK`` in float64, scaled by ``1/√m`` (Eq. F)."""
        return self.xp.f64(self.grads[start : start + _CHUNK]) * (1.0 / self.num_grads) ** 0.5

    def _chunks(self) -> range:
        return range(0, self.num_blocks, _CHUNK)

    def _solve(self, k: Any, rhs: Any) -> Any:
        """Batched ``k x = rhs``, ``k`` symmetric positive definite, ``rhs`` (n, m) or (n, m, B)."""
        vec = rhs.ndim == 2
        if self.xp.torch:
            t = self.xp._t
            chol, info = t.linalg.cholesky_ex(k)
            if bool((info != 0).any()):
                return self.xp.solve(k, rhs) if vec else t.linalg.solve(k, rhs)
            return t.cholesky_solve(rhs.unsqueeze(-1) if vec else rhs, chol).reshape(rhs.shape)
        return np.linalg.solve(k, rhs[..., None])[..., 0] if vec else np.linalg.solve(k, rhs)

    def _leverage(self, k: Any, g: Any) -> Any:
        """``g_qᵀ K⁻¹ g_q`` for every column q of every block: ``‖L⁻¹ g_q‖²`` with ``K = LLᵀ``."""
        if self.xp.torch:
            t = self.xp._t
            chol, info = t.linalg.cholesky_ex(k)
            if not bool((info != 0).any()):
                y = t.linalg.solve_triangular(chol, g, upper=False)
                return (y * y).sum(1)
        return (g * self._solve(k, g)).sum(1)

    def _kernel(self, g: Any, keep: Any = None) -> Any:
        """``K = λI_m + G diag(keep) Gᵀ`` per block (``keep`` None: all columns)."""
        xp = self.xp
        gk = g if keep is None else g * keep[:, None, :]
        k = xp.einsum("nib,njb->nij", gk, g)
        return k + xp.eye(g.shape[1]) * self.damp

    # -- what OBS needs (the InverseOperator protocol of _operators.py) ---------------------

    def diag(self) -> Any:
        """``diag(F̂⁻¹)``, float64, flat ``(d,)`` (Eq. W-2; computed once, then cached)."""
        return self.diag_blocks().reshape(-1)[: self.num_weights]

    def diag_blocks(self) -> Any:
        """``diag(F̂⁻¹)`` as ``(num_blocks, B)`` float64."""
        if self._diag is None:
            xp = self.xp
            parts = []
            for s in self._chunks():
                g = self._g(s)
                lev = self._leverage(self._kernel(g), g)  # g_qᵀ K⁻¹ g_q per column
                parts.append((1.0 - lev) / self.damp)
            self._diag = _cat(xp, parts)
        return self._diag

    def matvec_blocks(self, z: Any) -> Any:
        """``F̂⁻¹ z`` for ``z`` of shape ``(num_blocks, B)`` (Eq. W-1)."""
        xp = self.xp
        parts = []
        for s in self._chunks():
            g = self._g(s)
            zc = z[s : s + _CHUNK]
            gz = xp.einsum("nib,nb->ni", g, zc)
            x = self._solve(self._kernel(g), gz)
            parts.append((zc - xp.einsum("nib,ni->nb", g, x)) / self.damp)
        return _cat(xp, parts)

    def group_blocks(self, group_size: int) -> Any:
        """The ``g×g`` diagonal sub-blocks ``[F̂⁻¹]_QQ``, ``(num_blocks·B/g, g, g)`` float64."""
        xp = self.xp
        nb, bs, gs = self.num_blocks, self.block_size, group_size
        q = bs // gs
        parts = []
        for s in self._chunks():
            g = self._g(s)
            n = g.shape[0]
            y = self._solve(self._kernel(g), g)  # K⁻¹G
            gq = g.reshape(n, g.shape[1], q, gs)
            yq = y.reshape(n, g.shape[1], q, gs)
            inner = xp.einsum("niqa,niqb->nqab", gq, yq)  # G_Qᵀ K⁻¹ G_Q
            parts.append(((xp.eye(gs) - inner) / self.damp).reshape(n * q, gs, gs))
        del nb
        return _cat(xp, parts)

    def restricted_update(self, sel: Any, rhs: Any) -> Any:
        """``F̂⁻¹ E_S ([F̂⁻¹]_SS)⁻¹ rhs_S`` per block, as ``−δw`` of Eq. W-3.

        Equal to the Lagrangian form (Eq. 3) by the block-inverse identity: the optimum with
        ``δw_S = −rhs_S`` minimises ``½δwᵀF̂δw``, i.e. ``F̂_RR δw_R = −F̂_RS δw_S``.
        """
        xp = self.xp
        parts = []
        for s in self._chunks():
            g = self._g(s)
            m = sel[s : s + _CHUNK]
            w = xp.where(m, rhs[s : s + _CHUNK], 0.0 * rhs[s : s + _CHUNK])  # rhs_S, 0 on R
            keep = xp.f64(~m)
            r = xp.einsum("nib,nb->ni", g, w)  # G_S w_S
            x = self._solve(self._kernel(g, keep), r)
            dw_r = xp.einsum("nib,ni->nb", g, x) * keep  # G_Rᵀ K_R⁻¹ G_S w_S
            parts.append(w - dw_r)  # = −δw (δw_S = −w_S, δw_R as above)
        return _cat(xp, parts)

    def restricted_solve(self, sel: Any, rhs: Any) -> Any:
        """``z`` with ``z_S = ([F̂⁻¹]_SS)⁻¹ rhs_S`` and 0 off ``S``: ``F̂ (F̂⁻¹ z)`` restricted."""
        return self._apply_fisher(self.restricted_update(sel, rhs))

    def _apply_fisher(self, u: Any) -> Any:
        """``F̂ u = λu + Gᵀ(G u)`` per block (float64)."""
        xp = self.xp
        parts = []
        for s in self._chunks():
            g = self._g(s)
            uc = u[s : s + _CHUNK]
            parts.append(
                uc * self.damp + xp.einsum("nib,ni->nb", g, xp.einsum("nib,nb->ni", g, uc))
            )
        return _cat(xp, parts)

    def inverse(self) -> Any:
        """The explicit ``(num_blocks, B, B)`` float64 inverse (Eq. W-1), for checks."""
        xp = self.xp
        parts = []
        for s in self._chunks():
            g = self._g(s)
            y = self._solve(self._kernel(g), g)
            parts.append((xp.eye(self.block_size) - xp.einsum("nib,nic->nbc", g, y)) / self.damp)
        return _cat(xp, parts)

    def _as_operator(self) -> LowRankFisher:
        return self

    def _subset(self, blocks: np.ndarray) -> LowRankFisher:
        """The Fisher of the blocks ``blocks`` only (for per-block losses, B-5)."""
        sub = object.__new__(LowRankFisher)
        sub.__dict__.update(self.__dict__)
        index = self.xp._t.as_tensor(blocks, device=self.grads.device) if self.xp.torch else blocks
        sub.grads = self.grads[index]
        sub.num_blocks = len(blocks)
        sub.num_weights = len(blocks) * self.block_size
        sub._diag = None
        return sub


def _cat(xp: Xp, parts: list[Any]) -> Any:
    if xp.torch:
        return xp._t.cat(parts)
    return np.concatenate(parts)
