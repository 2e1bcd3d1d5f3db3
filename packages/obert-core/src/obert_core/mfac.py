"""M-FAC static inverse Fisher (Frantar, Kurtic, Alistarh, NeurIPS 2021, arXiv 2107.03356).

The same damped empirical Fisher ``F̂ = λI + (1/m) Σ g_i g_iᵀ`` as oBERT, but its inverse is never
stored as a matrix. Unrolling the Sherman–Morrison recursion gives (docs/math.md §6)

    F̂⁻¹ = λ⁻¹ I − Σ_{i=1..m} v_i v_iᵀ / D_i,
    v_i = λ⁻¹ g_i − Σ_{j<i} (v_jᵀ g_i / D_j) v_j,     D_i = m + g_iᵀ v_i,             (Eq. M)

so ``m`` vectors and scalars (O(d·m) memory, O(d·m²) time) answer every query:
``F̂⁻¹x`` and ``diag(F̂⁻¹)`` in O(d·m), one entry in O(m). This works for any block size up to the
whole tensor (``block_size=None``), where the dense blocked inverse would need O(d²).
"""

from __future__ import annotations

from typing import Any

from ._arrays import check_finite, framework_of
from ._errors import ObertError
from ._operators import DenseBlocks
from ._validate import check_damp, check_positive_int
from ._xp import Xp, xp_of

__all__ = ["MFACInverse"]

_BUDGET = 256 * 2**20  # bytes of float64 temporaries per chunk of blocks


class MFACInverse:
    """Inverse empirical Fisher in M-FAC form (Eq. M), optionally per block of ``B`` coordinates.

    Accepted by :func:`~obert_core.obs_saliency` and :func:`~obert_core.obs_update` in place of the
    dense ``(num_blocks, B, B)`` array.

    Args:
        grads: ``(k, d)`` flattened gradients (NumPy or torch); flat by nature: flatten a 2-D
            weight's gradients with ``g.reshape(k, -1)``.
        damp: ``λ`` > 0.
        num_grads: ``m`` of Eq. M (default ``k``).
        block_size: ``B`` (default ``d``: the full, unblocked inverse).

    The vectors are held in float64 (``O(d·k)`` memory: 8·d·k bytes).
    """

    def __init__(
        self,
        grads: Any,
        damp: float,
        *,
        num_grads: int | None = None,
        block_size: int | None = None,
    ) -> None:
        framework_of(grads, names=("grads",))
        shape = tuple(grads.shape)
        if len(shape) != 2 or 0 in shape:
            raise ObertError(
                f"grads must be a non-empty (num_grads, num_weights) array, got shape {shape}."
            )
        check_finite(grads, "grads")
        k, d = shape
        self.damp = check_damp(damp)
        self.num_grads = check_positive_int(k if num_grads is None else num_grads, "num_grads")
        self.num_weights = d
        self.block_size = d if block_size is None else check_positive_int(block_size, "block_size")
        if self.block_size > d:
            raise ObertError(f"block_size={self.block_size} exceeds the {d} weights; use <= {d}.")
        self.num_blocks = -(-d // self.block_size)
        xp = xp_of(grads)
        self.xp = xp
        self.xp_like = grads[:0]
        nb, bs = self.num_blocks, self.block_size
        x = xp.f64(grads)
        rows = [xp.pad(x[i], nb * bs).reshape(nb, bs) for i in range(k)]
        a = 1.0 / self.damp
        self._v = xp.zeros((nb, k, bs))
        self._dd = xp.zeros((nb, k))
        for i, g in enumerate(rows):
            v = a * g
            if i:
                vp = self._v[:, :i]
                coef = xp.einsum("njb,nb->nj", vp, g) / self._dd[:, :i]
                v = v - xp.einsum("nj,njb->nb", coef, vp)
            self._v[:, i] = v
            self._dd[:, i] = self.num_grads + (g * v).sum(-1)

    def _w(self, sl: slice = slice(None)) -> Any:
        """``v_j / sqrt(D_j)`` for the blocks in ``sl``: ``F̂⁻¹ = λ⁻¹I − Σ_j w_j w_jᵀ``."""
        return self._v[sl] / self.xp.sqrt(self._dd[sl])[:, :, None]

    def diag(self) -> Any:
        """``diag(F̂⁻¹)``, float64, **flat** ``(d,)`` like the gradients it was built from.

        Reshape it to the weight's shape with ``mf.diag().reshape(weight.shape)``.
        """
        return self._as_operator().diag_blocks().reshape(-1)[: self.num_weights]

    def matvec(self, v: Any) -> Any:
        """``F̂⁻¹ v`` for ``v`` with ``d`` entries (any shape, flattened row-major), float64.

        Returns:
            The product in the shape of ``v``.
        """
        framework_of(v, self.xp_like, names=("v", "MFACInverse"))
        if v.reshape(-1).shape[0] != self.num_weights:
            raise ObertError(
                f"v must have {self.num_weights} entries, got {v.reshape(-1).shape[0]}."
            )
        check_finite(v, "v")
        op = self._as_operator()
        z = self.xp.pad(self.xp.f64(v.reshape(-1)), self.num_blocks * self.block_size)
        out = op.matvec_blocks(z.reshape(self.num_blocks, self.block_size)).reshape(-1)
        return out[: self.num_weights].reshape(tuple(v.shape))

    def dense_blocks(self) -> Any:
        """The explicit ``(num_blocks, B, B)`` blocks (O(d·B) memory; for small problems/tests)."""
        w = self._w()
        return self.xp.eye(self.block_size) / self.damp - self.xp.einsum("njb,njc->nbc", w, w)

    def _as_operator(self) -> _MFACOperator:
        return _MFACOperator(self)


def _cat(xp: Xp, parts: list[Any]) -> Any:
    if xp.torch:
        return xp._t.cat(parts)
    import numpy as np

    return np.concatenate(parts)


class _MFACOperator:
    """:class:`~obert_core._operators.InverseOperator` over an :class:`MFACInverse`.

    Every query runs over chunks of blocks so that its temporaries stay within ``_BUDGET`` bytes
    (the stored vectors are the only O(d·m) memory).
    """

    def __init__(self, mf: MFACInverse) -> None:
        self.mf = mf
        self.num_weights = mf.num_weights
        self.block_size = mf.block_size
        self.num_blocks = mf.num_blocks
        self.xp: Xp = mf.xp
        self.xp_like = mf.xp_like
        self.m = int(mf._v.shape[1])

    def _slices(self, per_block_bytes: int) -> list[slice]:
        step = max(1, _BUDGET // max(per_block_bytes, 1))
        return [slice(s, s + step) for s in range(0, self.num_blocks, step)]

    def diag_blocks(self) -> Any:
        mf = self.mf
        return _cat(
            self.xp,
            [
                1.0 / mf.damp - (mf._v[sl] * mf._v[sl] / mf._dd[sl][:, :, None]).sum(1)
                for sl in self._slices(8 * self.m * self.block_size)
            ],
        )

    def group_blocks(self, group_size: int) -> Any:
        mf, g, xp = self.mf, group_size, self.xp
        q = self.block_size // g
        parts = []
        for sl in self._slices(8 * self.m * self.block_size * (1 + g)):
            w = mf._w(sl)
            w = w.reshape(w.shape[0], self.m, q, g)
            sub = xp.eye(g) / mf.damp - xp.einsum("njqa,njqb->nqab", w, w)
            parts.append(sub.reshape(-1, g, g))
        return _cat(xp, parts)

    def matvec_blocks(self, z: Any) -> Any:
        xp, parts = self.xp, []
        for sl in self._slices(8 * self.m * self.block_size):
            w = self.mf._w(sl)
            zz = z[sl]
            parts.append(
                zz / self.mf.damp - xp.einsum("njb,nj->nb", w, xp.einsum("njb,nb->nj", w, zz))
            )
        return _cat(xp, parts)

    def restricted_solve(self, sel: Any, rhs: Any) -> Any:
        mf, xp, m, bs = self.mf, self.xp, self.m, self.block_size
        parts = []
        if bs <= m:  # small blocks: materialise them chunk by chunk
            for sl in self._slices(8 * (m * bs + 3 * bs * bs)):
                w = mf._w(sl)
                dense = xp.eye(bs) / mf.damp - xp.einsum("njb,njc->nbc", w, w)
                op = DenseBlocks(dense, dense.shape[0] * bs)
                parts.append(op.restricted_solve(sel[sl], rhs[sl]))
            return _cat(xp, parts)
        # Large blocks: Woodbury on [F⁻¹]_SS = aI − W_S W_Sᵀ (a = 1/λ), an m×m solve per block:
        # ([F⁻¹]_SS)⁻¹ r = r/a + W_S (aI − W_SᵀW_S)⁻¹ W_Sᵀ r / a.
        a = 1.0 / mf.damp
        for sl in self._slices(8 * (m * bs + 2 * m * m)):
            s = sel[sl]
            w = mf._w(sl) * s[:, None, :]
            r = xp.where(s, rhs[sl], 0.0 * rhs[sl])
            gram = xp.einsum("njb,nkb->njk", w, w)
            t = xp.einsum("njb,nb->nj", w, r)
            y = xp.solve(a * xp.eye(m) - gram, t)
            parts.append(r / a + xp.einsum("njb,nj->nb", w, y) / a)
        return _cat(xp, parts)
