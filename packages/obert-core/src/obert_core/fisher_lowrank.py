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

from ._arrays import check_finite, framework_of, is_torch, to_numpy
from ._errors import ObertError
from ._validate import check_block_layout, check_damp, check_positive_int
from ._xp import Xp, xp_of
from .fisher_blocks import _use_numba

__all__ = ["LowRankFisher"]

_CHUNK = 512  # blocks per batched call: float64 temporaries of ~3 MB stay in cache
_FACTOR_LIMIT = 2.0  # cache K_b⁻¹ when its bytes are at most this many times the stored gradients'


class LowRankFisher:
    """The damped Fisher blocks of ``m < B`` gradients, stored as the gradients (Eq. W-1..3).

    Accepted in place of the ``(ceil(d/B), B, B)`` inverse by :func:`~obert_core.obs_saliency`,
    :func:`~obert_core.obs_update` (every mode) and :func:`~obert_core.obs_quadratic_increase`,
    with the same results to float64 round-off; ``inverse()`` gives the explicit blocks.

    The ``m × m`` matrices ``K_b⁻¹`` (Eq. W-1, from one batched Cholesky factorisation per block)
    are computed once, by the first :meth:`diag_blocks`, and reused by :meth:`matvec_blocks` and
    :meth:`group_blocks` (the scores and the superposed update of a step share them), when they
    take at most twice the stored gradients' bytes (``8m² ≤ 2·itemsize·m·B`` per block: always
    for float32 gradients with ``m ≤ B``); otherwise each call refactors its chunk
    (docs/math.md §2.2). On the CPU with Numba installed, ``diag`` and ``F̂⁻¹z`` run as compiled
    per-block loops over the Cholesky factor ``L_b`` instead (Eq. W-5, a third of the work; no
    factor is kept, each call refactors its blocks from the gradients); the other operations
    use the batched path.

    Args:
        grads: ``(m, d)`` gradients, one flattened gradient per row (NumPy or torch, float32 or
            float64). Kept as a contiguous ``(ceil(d/B), m, B)`` copy (the tail block
            zero-padded), in the input's dtype.
        block_size: ``B``.
        damp: ``λ`` > 0.
        num_grads: ``m``, the normaliser of Eq. F (default: the number of rows).
        kernels: ``"numba"`` (compiled per-block loops of Eq. W-5 for ``diag`` and ``F̂⁻¹z``,
            CPU), ``"lapack"`` (batched NumPy/torch linear algebra, Eq. W-4) or ``"auto"``
            (Numba when installed and the gradients are float32 or float64 on the CPU; other
            dtypes take the batched path).

    Raises:
        ObertError: on a bad shape, value or non-finite gradients; ``kernels="numba"`` on CUDA
            or with gradients other than float32/float64.
        BackendUnavailableError: ``kernels="numba"`` without Numba.
    """

    def __init__(
        self,
        grads: Any,
        block_size: int,
        damp: float,
        *,
        num_grads: int | None = None,
        kernels: str = "auto",
    ) -> None:
        framework_of(grads, names=("grads",))
        shape = tuple(grads.shape)
        if len(shape) != 2 or 0 in shape:
            raise ObertError(
                f"grads must be a non-empty 2-D array (num_grads, num_weights), got {shape}."
            )
        check_finite(grads, "grads")
        b = check_positive_int(block_size, "block_size")
        d = int(shape[1])
        # (num_blocks, rows, B), contiguous: block b's gradients, G_b of Eq. F without the 1/√m
        self._setup(_block_rows(grads, -(-d // b), b), d, damp, num_grads, kernels)

    @classmethod
    def from_block_rows(
        cls,
        blocks: Any,
        num_weights: int,
        damp: float,
        *,
        num_grads: int | None = None,
        kernels: str = "auto",
    ) -> LowRankFisher:
        """The same operator from gradients already in its block layout, kept without a copy.

        For a caller that collects the gradients itself (a pruning step writes each chunk of
        gradients straight into this layout instead of concatenating them first).

        Args:
            blocks: ``(ceil(d/B), m, B)`` C-contiguous, ``blocks[b, i]`` the ``b``-th ``B``
                weights of gradient ``i``; the tail block zero beyond ``d``.
            num_weights: ``d``.
            damp: ``λ`` > 0.
            num_grads: ``m``, the normaliser of Eq. F (default: ``blocks.shape[1]``).
            kernels: as for the constructor.

        Raises:
            ObertError: on a bad shape, a non-contiguous array, a non-zero padded tail, a bad
                value or non-finite gradients.
        """
        framework_of(blocks, names=("blocks",))
        shape = tuple(blocks.shape)
        d = check_positive_int(num_weights, "num_weights")
        if len(shape) != 3 or 0 in shape or shape[0] != -(-d // shape[2]):
            raise ObertError(
                f"blocks must have shape (ceil(d/B), m, B) for d={d}, got {shape}; build it "
                "with the tail block zero-padded, or pass (m, d) gradients to LowRankFisher."
            )
        contiguous = blocks.is_contiguous() if is_torch(blocks) else blocks.flags["C_CONTIGUOUS"]
        if not contiguous:
            raise ObertError("blocks must be C-contiguous; pass blocks.contiguous() (a copy).")
        check_finite(blocks, "blocks")
        tail = d - (shape[0] - 1) * shape[2]
        if bool((blocks[-1, :, tail:] != 0).any()):
            raise ObertError(
                f"blocks[-1, :, {tail}:] (beyond d={d}) must be zero: the padded weights would "
                "enter the last block's Fisher."
            )
        out = object.__new__(cls)
        out._setup(blocks, d, damp, num_grads, kernels)
        return out

    def _setup(self, blocks: Any, d: int, damp: float, num_grads: int | None, kernels: str) -> None:
        self._numba = _use_numba(
            kernels,
            blocks,
            readable=_kernels_read(blocks),
            what=f"float32 or float64 gradients (native byte order), got {blocks.dtype}; cast "
            "them to float32 or use kernels='lapack'.",
        )
        self.block_size = int(blocks.shape[2])
        self.damp = check_damp(damp)
        rows = int(blocks.shape[1])
        self.num_grads = rows if num_grads is None else check_positive_int(num_grads, "num_grads")
        self.num_weights = d
        self.num_blocks = int(blocks.shape[0])
        self.xp: Xp = xp_of(blocks)
        self.grads = blocks
        self.xp_like = blocks[:0, 0, 0]
        self._diag: Any = None
        self._kinv: Any = None  # K_b⁻¹ of every block (W-1), float64, once computed
        itemsize = 4 if str(blocks.dtype) in ("float32", "torch.float32") else 8
        self._cache_factor = 8 * rows <= _FACTOR_LIMIT * itemsize * self.block_size

    @property
    def kernels(self) -> str:
        """The kernels of ``diag`` and ``F̂⁻¹z``, ``"numba"`` or ``"lapack"``."""
        return "numba" if self._numba else "lapack"

    # -- float64 building blocks -----------------------------------------------------------

    def _g(self, start: int) -> Any:
        """``G_b`` of blocks ``start:start+_CHUNK`` in float64, scaled by ``1/√m`` (Eq. F)."""
        return self._raw(start) * (1.0 / self.num_grads) ** 0.5

    def _raw(self, start: int) -> Any:
        """``√m·G_b`` of blocks ``start:start+_CHUNK``: the stored gradients as float64."""
        return self.xp.f64(self.grads[start : start + _CHUNK])

    def _chunks(self) -> range:
        return range(0, self.num_blocks, _CHUNK)

    def _bmm(self, a: Any, b: Any) -> Any:
        """Batched matrix product ``a @ b`` over the leading (block) axis."""
        return self.xp._t.bmm(a, b) if self.xp.torch else np.matmul(a, b)

    def _solve(self, k: Any, rhs: Any) -> Any:
        """Batched ``k x = rhs``, ``k`` symmetric positive definite, ``rhs`` (n, m) or (n, m, B).

        A batch with a block that is singular in float64 (an exact zero pivot: equal gradients
        at a damp below their round-off) takes the pseudo-inverse, as :meth:`_inverse_kernel`.
        """
        r3 = rhs[..., None] if rhs.ndim == 2 else rhs
        if self.xp.torch:
            t = self.xp._t
            chol, info = t.linalg.cholesky_ex(k)
            if not bool((info != 0).any()):
                return t.cholesky_solve(r3, chol).reshape(rhs.shape)
            x, info = t.linalg.solve_ex(k, r3)
            if bool((info != 0).any()):
                x = t.linalg.pinv(k, hermitian=True) @ r3
            return x.reshape(rhs.shape)
        try:
            return np.linalg.solve(k, r3).reshape(rhs.shape)
        except np.linalg.LinAlgError:
            return (np.linalg.pinv(k, hermitian=True) @ r3).reshape(rhs.shape)

    def _kernel(self, g: Any, keep: Any = None, damp: float | None = None) -> Any:
        """``K = λI_m + G diag(keep) Gᵀ`` per block (``keep`` None: all columns)."""
        gk = g if keep is None else g * keep[:, None, :]
        k = self._bmm(gk, g.swapaxes(1, 2))
        return k + self.xp.eye(g.shape[1]) * (self.damp if damp is None else damp)

    def _inverse_kernel(self, raw: Any) -> Any:
        """``m·K_b⁻¹ = (mλI + G̃G̃ᵀ)⁻¹`` with ``G̃ = √m·G_b`` the stored gradients (W-1).

        Cholesky ``LLᵀ``, then ``L⁻ᵀL⁻¹``; a block whose matrix is not numerically positive
        definite (``λ`` below the round-off of ``‖G̃‖²`` with duplicate gradients) gets the
        symmetric pseudo-inverse instead. Working with
        the unscaled ``G̃`` saves a pass over the gradients: ``G_bᵀK_b⁻¹G_b = G̃ᵀ(m·K_b)⁻¹G̃``.
        """
        k = self._kernel(raw, damp=self.num_grads * self.damp)
        if not self.xp.torch:
            if _spd(k):
                try:
                    return np.linalg.inv(k)
                except np.linalg.LinAlgError:  # an LU pivot of 0 after a Cholesky that passed
                    pass
            return np.linalg.pinv(k, hermitian=True)
        t = self.xp._t
        chol, info = t.linalg.cholesky_ex(k)
        bad = info != 0
        if bool(bad.any()):  # cholesky_inverse refuses a failed factor's zero diagonal
            chol[bad] = t.eye(k.shape[-1], dtype=k.dtype, device=k.device)
        kinv = t.cholesky_inverse(chol)
        if bool(bad.any()):
            kinv[bad] = t.linalg.pinv(k[bad], hermitian=True)
        return kinv

    def _factor(self, start: int, raw: Any) -> Any:
        """``(m·K_b)⁻¹`` of the chunk at ``start``: the cached one, or computed from ``raw``."""
        if self._kinv is not None:
            return self._kinv[start : start + _CHUNK]
        return self._inverse_kernel(raw)

    def _empty(self, shape: tuple[int, ...]) -> Any:
        if self.xp.torch:
            t = self.xp._t
            return t.empty(shape, dtype=t.float64, device=self.xp.device)
        return np.empty(shape)

    # -- what OBS needs (the InverseOperator protocol of _operators.py) ---------------------

    def diag(self) -> Any:
        """``diag(F̂⁻¹)``, float64, flat ``(d,)`` (Eq. W-2; computed once, then cached)."""
        return self.diag_blocks().reshape(-1)[: self.num_weights]

    def diag_blocks(self) -> Any:
        """``diag(F̂⁻¹)`` as ``(num_blocks, B)`` float64 (Eq. W-2: ``g_qᵀ K_b⁻¹ g_q`` per column).

        The batched path computes (and, within the memory bound, caches) every block's
        ``K_b⁻¹`` on the way; the Numba kernels (Eq. W-5) keep nothing but the diagonal.
        """
        if self._diag is None and self._numba:
            self._diag_numba()
        if self._diag is None:
            nb, m = self.num_blocks, int(self.grads.shape[1])
            out = self._empty((nb, self.block_size))
            keep = self._kinv is None and self._cache_factor
            kinvs = self._empty((nb, m, m)) if keep else None
            for s in self._chunks():
                raw = self._raw(s)
                kinv = self._factor(s, raw)
                y = self._bmm(kinv, raw)
                y *= raw
                lev = y.sum(1)  # g_qᵀ K⁻¹ g_q per column
                out[s : s + _CHUNK] = (1.0 - lev) / self.damp
                if kinvs is not None:
                    kinvs[s : s + _CHUNK] = kinv
            if kinvs is not None:
                self._kinv = kinvs
            self._diag = out
        return self._diag

    def _numpy_grads(self) -> np.ndarray:
        out: np.ndarray = self.grads.detach().numpy() if self.xp.torch else self.grads
        return out

    def _mdamp(self) -> float:
        return float(self.num_grads * self.damp)

    def _run_numba(self, kernel: Any, *inputs: Any) -> Any:
        """The ``(num_blocks, B)`` float64 output of a kernel of Eq. W-5 over every block.

        In the operator's framework; None, and the operator switched to the batched path (which
        takes the pseudo-inverse there), if a block has no float64 Cholesky factor.
        """
        from .backends._block_kernels import run_on_blocks

        out = np.empty((self.num_blocks, self.block_size))
        bad = np.zeros(self.num_blocks, dtype=np.bool_)
        args = (self._numpy_grads(), self._mdamp(), self.damp, *inputs, out, bad)
        run_on_blocks(kernel, self.num_blocks, *args)
        if bad.any():
            self._numba = False
            return None
        return self.xp._t.from_numpy(out) if self.xp.torch else out

    def _diag_numba(self) -> None:
        """``diag(F̂⁻¹)`` by the Numba kernel of Eq. W-5 (left None on a fallback)."""
        from .backends._lowrank_kernels import lowrank_diag_kernel

        self._diag = self._run_numba(lowrank_diag_kernel)

    def _ensure_factor(self) -> None:
        """Build the cached ``(m·K_b)⁻¹`` with the diagonal, if it is cached (batched path).

        The Numba path keeps no factor (Eq. W-5 refactors each block from its gradients).
        """
        if self._numba:
            return
        if self._cache_factor and self._kinv is None:
            self._diag = None
            self.diag_blocks()

    def _matvec_numba(self, z: Any) -> Any:
        """``F̂⁻¹ z`` by the Numba kernel of Eq. W-5 (None if a block has no Cholesky factor)."""
        from .backends._lowrank_kernels import lowrank_matvec_kernel

        return self._run_numba(lowrank_matvec_kernel, np.ascontiguousarray(to_numpy(z), np.float64))

    def superposed_update(self, wb: Any, newly: Any, zero: Any) -> Any:
        """``w − F̂⁻¹z`` with 0 on ``zero``, ``z = w/diag(F̂⁻¹)`` on ``newly``: Eq. 2 superposed.

        One fused Numba pass over the blocks (no float64 temporaries of the whole tensor; a block
        with nothing newly pruned is not factored). ``wb``: the weights in the ``(num_blocks, B)``
        layout (float64); ``newly`` and ``zero``: boolean masks in that layout. Returns None where
        the kernels do not run (the batched path, or a block without a Cholesky factor, after
        which the operator takes the batched path): the caller then builds ``z`` itself.

        Raises:
            ObertError: an input of another shape (the kernel reads without bounds checks).
        """
        want = (self.num_blocks, self.block_size)
        check_block_layout(want, wb=wb, newly=newly, zero=zero)
        if not self._numba:
            return None
        from .backends._lowrank_kernels import lowrank_superpose_kernel

        diag = self.diag_blocks()
        if self.kernels != "numba":  # the diagonal fell back to the batched path
            return None
        return self._run_numba(
            lowrank_superpose_kernel,
            np.ascontiguousarray(to_numpy(wb), np.float64),
            np.ascontiguousarray(to_numpy(diag), np.float64),
            np.ascontiguousarray(to_numpy(newly), np.bool_),
            np.ascontiguousarray(to_numpy(zero), np.bool_),
        )

    def matvec_blocks(self, z: Any) -> Any:
        """``F̂⁻¹ z = (z − G_bᵀ K_b⁻¹ G_b z) / λ`` for ``z`` of shape ``(num_blocks, B)`` (W-1).

        Raises:
            ObertError: ``z`` of another shape.
        """
        check_block_layout((self.num_blocks, self.block_size), z=z)
        xp = self.xp
        self._ensure_factor()
        if self._numba:
            done = self._matvec_numba(z)
            if done is not None:
                return done
        self._ensure_factor()
        out = self._empty((self.num_blocks, self.block_size))
        for s in self._chunks():
            raw = self._raw(s)
            zc = xp.f64(z[s : s + _CHUNK])
            x = self._bmm(self._factor(s, raw), self._bmm(raw, zc[:, :, None]))  # (n, m, 1)
            out[s : s + _CHUNK] = (zc - self._bmm(x.swapaxes(1, 2), raw)[:, 0]) / self.damp
        return out

    def group_blocks(self, group_size: int) -> Any:
        """The ``g×g`` diagonal sub-blocks ``[F̂⁻¹]_QQ``, ``(num_blocks·B/g, g, g)`` float64."""
        xp = self.xp
        bs, gs = self.block_size, group_size
        q = bs // gs
        self._ensure_factor()
        parts = []
        for s in self._chunks():
            raw = self._raw(s)
            n = raw.shape[0]
            y = self._bmm(self._factor(s, raw), raw)  # K⁻¹G (up to the factor m)
            gq = raw.reshape(n, raw.shape[1], q, gs)
            yq = y.reshape(n, raw.shape[1], q, gs)
            inner = xp.einsum("niqa,niqb->nqab", gq, yq)  # G_Qᵀ K⁻¹ G_Q
            parts.append(((xp.eye(gs) - inner) / self.damp).reshape(n * q, gs, gs))
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
            r = self._bmm(g, xp.f64(w)[:, :, None])[:, :, 0]  # G_S w_S
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
        """The explicit ``(num_blocks, B, B)`` float64 inverse (Eq. W-1), for checks.

        By Cholesky (or LU) solves with ``K_b``, independent of the cached ``K_b⁻¹``.
        """
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
        sub._kinv = None if self._kinv is None else self._kinv[index]
        return sub


def _block_rows(grads: Any, num_blocks: int, block_size: int) -> Any:
    """``(m, d)`` → contiguous ``(num_blocks, m, B)``, the tail block zero-padded (one copy)."""
    rows, d = int(grads.shape[0]), int(grads.shape[1])
    full = d // block_size
    out: Any
    if is_torch(grads):
        import torch

        out = torch.zeros((num_blocks, rows, block_size), dtype=grads.dtype, device=grads.device)
    else:
        grads = np.asarray(grads)
        out = np.zeros((num_blocks, rows, block_size), dtype=grads.dtype)
    out[:full] = grads[:, : full * block_size].reshape(rows, full, block_size).swapaxes(0, 1)
    if full < num_blocks:
        out[full, :, : d - full * block_size] = grads[:, full * block_size :]
    return out


def _kernels_read(blocks: Any) -> bool:
    """Whether the Numba kernels of Eq. W-5 read ``blocks``: float32 or float64, native order."""
    if is_torch(blocks):
        return str(blocks.dtype) in ("torch.float32", "torch.float64")
    dtype = np.dtype(blocks.dtype)
    return dtype.isnative and dtype.type in (np.float32, np.float64)


def _spd(k: np.ndarray) -> bool:
    """Whether every matrix of the batch ``k`` has a Cholesky factor (NumPy)."""
    try:
        np.linalg.cholesky(k)
    except np.linalg.LinAlgError:
        return False
    return True


def _cat(xp: Xp, parts: list[Any]) -> Any:
    if xp.torch:
        return xp._t.cat(parts)
    return np.concatenate(parts)
