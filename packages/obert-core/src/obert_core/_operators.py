"""The inverse-Fisher operations OBS needs, for dense Fisher blocks and for M-FAC.

Vectors are kept in the padded block layout ``(num_blocks, B)``; all math runs in float64.
"""

from __future__ import annotations

from typing import Any, Protocol

from ._arrays import check_finite, framework_of
from ._errors import ObertError
from ._xp import Xp, xp_of

__all__ = ["DenseBlocks", "InverseOperator", "as_operator"]

_CHUNK = 4096  # blocks per batched solve: bounds float64 temporaries (~80 MB at B = 50)


class InverseOperator(Protocol):
    """What :func:`~obert_core.obs_saliency` and :func:`~obert_core.obs_update` need of ``F̂⁻¹``."""

    num_weights: int
    block_size: int
    num_blocks: int
    xp: Xp

    def diag_blocks(self) -> Any:
        """``diag(F̂⁻¹)`` as ``(num_blocks, B)`` float64."""
        ...

    def group_blocks(self, group_size: int) -> Any:
        """The ``g×g`` diagonal sub-blocks ``[F̂⁻¹]_QQ``, ``(num_blocks·B/g, g, g)`` float64."""
        ...

    def matvec_blocks(self, z: Any) -> Any:
        """``F̂⁻¹ z`` for ``z`` of shape ``(num_blocks, B)``."""
        ...

    def restricted_solve(self, sel: Any, rhs: Any) -> Any:
        """``z`` with ``z_S = ([F̂⁻¹]_SS)⁻¹ rhs_S`` per block and ``z = 0`` off ``S = sel``."""
        ...


class DenseBlocks:
    """:class:`InverseOperator` over an explicit ``(num_blocks, B, B)`` inverse (NumPy or torch)."""

    def __init__(self, finv: Any, num_weights: int) -> None:
        self.finv = finv
        self.num_weights = num_weights
        self.num_blocks, self.block_size = int(finv.shape[0]), int(finv.shape[1])
        self.xp = xp_of(finv)

    def _chunks(self) -> range:
        return range(0, self.num_blocks, _CHUNK)

    def diag_blocks(self) -> Any:
        f = self.finv
        d = f.diagonal(dim1=1, dim2=2) if self.xp.torch else f.diagonal(axis1=1, axis2=2)
        return self.xp.f64(d)

    def group_blocks(self, group_size: int) -> Any:
        nb, bs, g = self.num_blocks, self.block_size, group_size
        q = bs // g
        f = self.finv.reshape(nb, q, g, q, g)
        return self.xp.f64(self.xp.einsum("nqaqb->nqab", f).reshape(nb * q, g, g))

    def matvec_blocks(self, z: Any) -> Any:
        out = []
        for s in self._chunks():
            out.append(
                self.xp.einsum(
                    "nij,nj->ni", self.xp.f64(self.finv[s : s + _CHUNK]), z[s : s + _CHUNK]
                )
            )
        return _cat(self.xp, out)

    def restricted_solve(self, sel: Any, rhs: Any) -> Any:
        xp = self.xp
        out = []
        eye = xp.eye(self.block_size)
        for s in self._chunks():
            f = xp.f64(self.finv[s : s + _CHUNK])
            m = sel[s : s + _CHUNK]
            pair = m[:, :, None] & m[:, None, :]
            # [F⁻¹]_SS on S×S, a scaled identity elsewhere: the systems decouple, so the solution is
            # exactly ([F⁻¹]_SS)⁻¹ rhs_S on S and 0 off S (rhs is zeroed there).
            scale = f.diagonal(dim1=1, dim2=2) if xp.torch else f.diagonal(axis1=1, axis2=2)
            scale = scale.mean(-1) if xp.torch else scale.mean(axis=-1)
            a = xp.where(pair, f, eye * scale[:, None, None])
            r = xp.where(m, rhs[s : s + _CHUNK], 0.0 * rhs[s : s + _CHUNK])
            out.append(xp.where(m, xp.solve(a, r), 0.0 * r))
        return _cat(xp, out)

    def restricted_update(self, sel: Any, rhs: Any) -> Any:
        """``F̂⁻¹ z`` for ``z = restricted_solve(sel, rhs)``, by compressed solves.

        Per block only the ``|S|×|S|`` system ``[F̂⁻¹]_SS z_S = rhs_S`` is solved and only the
        ``|S|`` columns ``[F̂⁻¹]_{:,S}`` are multiplied, instead of a padded ``B×B`` solve and a full
        ``B×B`` product: blocks are grouped by ``|S|`` so each group is one batched solve. The same
        linear algebra as :meth:`restricted_solve` followed by :meth:`matvec_blocks` (equal up to
        float64 rounding), about ``(B/|S|)³`` fewer flops in the solve.
        """
        xp = self.xp
        nb, bs = self.num_blocks, self.block_size
        out = xp.zeros((nb, bs))
        if xp.torch:
            t = xp._t
            counts = sel.sum(-1)
            # selected coordinates first, each block's in ascending order (a stable sort)
            order = t.argsort((~sel).to(t.int8), dim=-1, stable=True)
            for k in t.unique(counts).tolist():
                if k == 0:
                    continue
                members = t.nonzero(counts == k).flatten()
                for s in range(0, members.shape[0], _CHUNK):
                    blk = members[s : s + _CHUNK]
                    idx = order[blk, :k]
                    n = blk.shape[0]
                    # gather the S columns first (exact), then widen only those to float64
                    cols = xp.f64(t.gather(self.finv[blk], 2, idx[:, None, :].expand(n, bs, k)))
                    sub = t.gather(cols, 1, idx[:, :, None].expand(n, k, k))
                    x = xp.solve(sub, t.gather(rhs[blk], 1, idx))
                    out[blk] = t.bmm(cols, x.unsqueeze(-1)).squeeze(-1)
            return out
        import numpy as np

        counts = sel.sum(axis=-1)
        order = np.argsort(~sel, axis=-1, kind="stable")
        for k in np.unique(counts).tolist():
            if k == 0:
                continue
            members = np.flatnonzero(counts == k)
            for s in range(0, members.shape[0], _CHUNK):
                blk = members[s : s + _CHUNK]
                idx = order[blk, :k]
                cols = xp.f64(np.take_along_axis(self.finv[blk], idx[:, None, :], axis=2))
                sub = np.take_along_axis(cols, idx[:, :, None], axis=1)
                x = xp.solve(sub, np.take_along_axis(rhs[blk], idx, axis=1))
                out[blk] = np.einsum("nik,nk->ni", cols, x)
        return out


def _cat(xp: Xp, parts: list[Any]) -> Any:
    if xp.torch:
        return xp._t.cat(parts)
    import numpy as np

    return np.concatenate(parts)


def as_operator(finv: Any, weights: Any) -> InverseOperator:
    """Wrap ``finv`` (inverse blocks or an :class:`~obert_core.MFACInverse`) for ``weights``.

    Raises:
        ObertError: on a framework mix, a wrong shape, or non-finite entries.
    """
    d = int(weights.shape[0])
    if hasattr(finv, "_as_operator"):
        op: InverseOperator = finv._as_operator()
        framework_of(weights, op.xp_like, names=("weights", "finv"))  # type: ignore[attr-defined]
        if op.num_weights != d:
            raise ObertError(
                f"the {type(finv).__name__} was built for {op.num_weights} weights but weights "
                f"has {d}; build it from gradients of this tensor."
            )
        return op
    framework_of(weights, finv, names=("weights", "finv"))
    shape = tuple(finv.shape)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ObertError(
            f"finv must have shape (num_blocks, B, B) as returned by block_fisher_inverse, got "
            f"{shape}."
        )
    nb_expected = -(-d // shape[1])
    if shape[0] != nb_expected:
        raise ObertError(
            f"finv has {shape[0]} blocks of size {shape[1]} but {d} weights need "
            f"ceil({d}/{shape[1]}) = {nb_expected}; build finv from gradients of this tensor."
        )
    check_finite(finv, "finv")
    return DenseBlocks(finv, d)
