"""The damped Fisher blocks kept un-inverted: what an OBS step needs of ``F̂⁻¹`` (docs/math.md §2.1).

An OBS step never needs the explicit inverse of a block ``F̂ = λI + G/m`` (``G = Σ g gᵀ`` over
the block's ``B`` coordinates):

* the scores (Eq. 4) need ``diag(F̂⁻¹)``: with ``F̂ = LLᵀ`` and ``X = L⁻¹``,
  ``[F̂⁻¹]_ii = Σ_r X_ri²`` — a Cholesky factorisation and a triangular inverse, two thirds of the
  flops of the explicit inverse and no ``B×B`` output per block;
* the joint update (Eq. 3) of the zero set ``S`` with kept weights ``R`` is, by the block
  inverse of ``F̂`` (``[F̂⁻¹]_RS ([F̂⁻¹]_SS)⁻¹ = −F̂_RR⁻¹ F̂_RS``), one ``|R|×|R|`` solve:

      δw_S = −w_S,    δw_R = F̂_RR⁻¹ F̂_RS w_S,

  so a step at 90 % sparsity solves 5×5 systems (B = 50) where the explicit inverse would need
  45×45 ones.

:class:`FisherBlocks` stores the Gram stack as accumulated (no copy; float32 when ``m ≥ B`` on
CPU) and is accepted by :func:`~obert_core.obs_saliency` and :func:`~obert_core.obs_update`
wherever the inverse blocks are. Every factorisation runs in float64; with Numba installed each
block is factorised by one compiled loop (``obert_core.backends._block_kernels``), otherwise by
batched LAPACK calls of NumPy or torch (also for CUDA tensors).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ._arrays import check_finite, framework_of, is_torch, to_numpy
from ._errors import ObertError
from ._validate import check_block_layout, check_choice, check_damp, check_positive_int
from ._xp import Xp, xp_of

__all__ = ["FisherBlocks"]

KERNELS = ("auto", "numba", "lapack")
_DIAG_LOCK = threading.Lock()
_CHUNK = 2048  # blocks per batched LAPACK call (~40 MB of float64 at B = 50)


def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _use_numba(kernels: str, data: Any, *, readable: bool = True, what: str = "") -> bool:
    """Whether an operator over ``data`` runs its Numba kernels (``kernels`` of :data:`KERNELS`).

    ``"auto"``: Numba when installed, ``data`` on the CPU and ``readable`` by the kernels.
    ``"numba"`` raises instead where it cannot run: Numba missing, CUDA data, or unreadable
    ``data`` (the message ``kernels='numba' reads {what}``).
    """
    check_choice(kernels, "kernels", KERNELS)
    on_cpu = not is_torch(data) or data.device.type == "cpu"
    if kernels == "numba":
        from .backends._block_kernels import numba  # noqa: F401  (raises if missing)

        if not on_cpu:
            raise ObertError("kernels='numba' runs on the CPU; use kernels='lapack' for CUDA.")
        if not readable:
            raise ObertError(f"kernels='numba' reads {what}")
        return True
    return kernels == "auto" and on_cpu and readable and _numba_available()


class FisherBlocks:
    """The damped empirical-Fisher blocks ``F̂_b = λI + G_b/m``, factorised on demand.

    Accepted in place of the ``(ceil(d/B), B, B)`` inverse by :func:`~obert_core.obs_saliency`
    and :func:`~obert_core.obs_update` (same results to float64 round-off of the inverse, see
    the module docstring); :meth:`~obert_core.BlockFisherBuilder.finalize_fisher` returns one.

    Args:
        gram: ``(ceil(d/B), B, B)`` Gram blocks ``Σ_i g_i g_iᵀ`` (NumPy or torch, float32 or
            float64; only the lower triangle is read; a zero-padded tail block). Kept, not copied.
        damp: ``λ`` > 0.
        num_grads: ``m``, the normaliser of Eq. F.
        num_weights: ``d`` (``ceil(d/B)`` must equal the number of blocks).
        kernels: ``"numba"`` (compiled per-block loops, CPU), ``"lapack"`` (batched NumPy/torch
            linear algebra) or ``"auto"`` (Numba when installed and the blocks are on the CPU).
        check: scan ``gram`` for NaN/inf (False: skip the scan of a Gram built from gradients
            already checked, as :class:`~obert_core.BlockFisherBuilder` does; a non-finite
            block is then reported as not positive definite when it is factorised).
        overwrite_gram: let :meth:`diag` keep its float64 inverse Cholesky factors
            ``X = L⁻¹`` in the Gram's own memory (as SciPy's ``overwrite_a``; a block's
            strictly lower ``X`` in float64 fits in its ``B×B`` float32 Gram block), so that each
            ``F̂⁻¹z`` after it — the superposed update of Eq. 2 — takes two triangular
            products per block (``B²`` flops) instead of a factorisation (``B³/3``), with no
            second Gram-sized array (:meth:`factor_bytes`: the side arrays). Afterwards
            everything that reads the Gram (:meth:`inverse`, the joint update, ``group_size >
            1``, ``F̂u``, :attr:`gram`) raises, also after a :meth:`diag` that failed (a
            block not positive definite): the Gram is gone either way. Numba kernels and a
            C-contiguous, writable CPU Gram only; otherwise the Gram is left as it is and
            nothing is kept.

    Raises:
        ObertError: on a bad shape, dtype, value or non-finite entries.
        BackendUnavailableError: ``kernels="numba"`` without Numba.
    """

    def __init__(
        self,
        gram: Any,
        damp: float,
        num_grads: int,
        num_weights: int,
        *,
        kernels: str = "auto",
        check: bool = True,
        overwrite_gram: bool = False,
    ) -> None:
        framework_of(gram, names=("gram",))
        shape = tuple(gram.shape)
        if len(shape) != 3 or shape[1] != shape[2] or 0 in shape:
            raise ObertError(
                f"gram must have shape (num_blocks, B, B) with B >= 1, got {shape}; pass the "
                "Gram blocks of BlockFisherBuilder."
            )
        self.damp = check_damp(damp)
        self.num_grads = check_positive_int(num_grads, "num_grads")
        self.num_weights = check_positive_int(num_weights, "num_weights")
        self.num_blocks, self.block_size = int(shape[0]), int(shape[1])
        if self.num_blocks != -(-self.num_weights // self.block_size):
            raise ObertError(
                f"gram has {self.num_blocks} blocks of size {self.block_size} but {num_weights} "
                f"weights need ceil({num_weights}/{self.block_size}) = "
                f"{-(-self.num_weights // self.block_size)}; build it from gradients of this "
                "tensor."
            )
        name = str(gram.dtype).removeprefix("torch.")
        if name not in ("float32", "float64"):
            raise ObertError(f"gram must be float32 or float64, got {gram.dtype}.")
        if check:
            check_finite(gram, "gram")
        self._numba = _use_numba(kernels, gram)
        self._gram_data = gram
        self.xp: Xp = xp_of(gram)
        self.xp_like = gram[:0, 0, 0]
        self._diag: Any = None
        # (the live coordinates are kept as int16: no overwrite for blocks of 32,768 or more)
        self.overwrite_gram = bool(overwrite_gram) and self._numba and self.block_size < 2**15
        self._factors: tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._overwritten = False

    @property
    def kernels(self) -> str:
        """The kernels in use, ``"numba"`` or ``"lapack"``."""
        return "numba" if self._numba else "lapack"

    @staticmethod
    def factor_bytes(num_weights: int, block_size: int) -> int:
        """Bytes that ``overwrite_gram=True`` adds to the Gram for a tensor of ``num_weights``.

        Per block the diagonal of ``X`` (float64, ``8B``), the live coordinates (int16, ``2B``)
        and their number (int32); the rest of ``X`` takes the Gram's own memory.
        """
        d = check_positive_int(num_weights, "num_weights")
        b = check_positive_int(block_size, "block_size")
        return -(-d // b) * (10 * b + 4)

    @property
    def gram(self) -> Any:
        """The Gram blocks as passed in (kept, not copied).

        Raises:
            ObertError: after :meth:`diag` overwrote them (``overwrite_gram=True``).
        """
        return self._gram("reading FisherBlocks.gram")

    def _gram(self, what: str) -> Any:
        """The Gram blocks, or an error naming ``what`` if :meth:`diag` overwrote them."""
        if self._overwritten:
            raise ObertError(
                f"{what} reads the Gram blocks, which diag() overwrote with its factors "
                "(overwrite_gram=True); build the Fisher again without overwrite_gram for it."
            )
        return self._gram_data

    def diag(self) -> Any:
        """``diag(F̂⁻¹)``, float64, flat ``(d,)`` (computed once, then cached).

        Raises:
            ObertError: if a block is not positive definite (increase ``damp``).
        """
        return self._diag_blocks().reshape(-1)[: self.num_weights]

    def inverse(self, dtype: Any = None) -> Any:
        """The explicit ``(num_blocks, B, B)`` inverse, as :func:`~obert_core.block_fisher_inverse`.

        Args:
            dtype: float32 or float64 of the gram's framework (default: the gram's dtype).
        """
        xp = self.xp
        parts = [self._inverse_chunk(s) for s in range(0, self.num_blocks, _CHUNK)]
        out = _cat(xp, parts)
        return out if dtype is None else out.to(dtype) if xp.torch else out.astype(dtype)

    def _as_operator(self) -> _FisherOperator:
        return _FisherOperator(self)

    # -- float64 building blocks -------------------------------------------------------------

    def _like(self, x: np.ndarray) -> Any:
        if self.xp.torch:
            return self.xp._t.from_numpy(x)
        return x

    def _dense(self, start: int, stop: int) -> Any:
        """``λI + G/m`` of blocks ``start:stop`` in float64, symmetrised from the lower triangle."""
        xp = self.xp
        a = xp.f64(self._gram("the explicit Fisher blocks")[start:stop])
        a = a.tril() + a.tril(-1).mT if xp.torch else np.tril(a) + np.swapaxes(np.tril(a, -1), 1, 2)
        return a * (1.0 / self.num_grads) + xp.eye(self.block_size) * self.damp

    def _inverse_chunk(self, start: int) -> Any:
        xp = self.xp
        a = self._dense(start, start + _CHUNK)
        if xp.torch:
            t = xp._t
            chol, info = t.linalg.cholesky_ex(a)
            inv = t.cholesky_inverse(chol)
            d = inv.diagonal(dim1=1, dim2=2)
            self._raise_if_bad((info != 0) | ~(t.isfinite(d) & (d > 0)).all(dim=1), start)
            return inv
        inv = np.linalg.inv(a)
        d = inv.diagonal(axis1=1, axis2=2)
        self._raise_if_bad(~(np.isfinite(d).all(axis=1) & (d > 0).all(axis=1)), start)
        return inv

    def _raise_if_bad(self, bad: Any, offset: int = 0) -> None:
        idx = np.flatnonzero(to_numpy(bad))
        if idx.size:
            raise ObertError(
                f"{idx.size} Fisher block(s) (first: block {offset + int(idx[0])}) are not "
                f"positive definite with damp={self.damp!r}; increase damp."
            )

    def _diag_blocks(self) -> Any:
        with _DIAG_LOCK:  # one diag at a time: it uses every core, and may overwrite the Gram
            if self._diag is None:
                self._diag = self._compute_diag()
        return self._diag

    def _compute_diag(self) -> Any:
        agree = "none"
        if self._numba:
            from .backends._block_kernels import kernels_agree

            agree = kernels_agree()
            if agree == "none":  # this build's compiled kernels are wrong: LAPACK
                self._numba = self.overwrite_gram = False
        if self._numba:
            from .backends._block_kernels import (
                _NO_FACTORS,
                diag_inverse_kernel,
                factor_arrays,
                run_on_blocks,
            )
            from .backends._lane_kernels import slp_vectorize

            nb, n = self.num_blocks, self.block_size
            out = np.empty((nb, n))
            bad = np.zeros(nb, dtype=np.bool_)
            gram = to_numpy(self._gram("diag(F̂⁻¹)"))
            xbuf = _float64_view(gram) if self.overwrite_gram else None
            kept = (
                _NO_FACTORS if xbuf is None else (8 // gram.itemsize, xbuf, *factor_arrays(nb, n))
            )
            # from here on the Gram is gone (also when a block fails and diag raises)
            self._overwritten = xbuf is not None
            with slp_vectorize():  # the lanes' scalars become vector operations (_lane_kernels)
                run_on_blocks(
                    diag_inverse_kernel,
                    nb,
                    *(gram, self.damp, 1.0 / self.num_grads, out, bad, agree == "lanes", *kept),
                )
            # a Gram with inf entries (float32 overflow) factorises into NaN, not into a failure
            self._raise_if_bad(bad | ~(np.isfinite(out) & (out > 0)).all(axis=1))
            if xbuf is not None:
                self._factors = kept
            return self._like(out)
        xp = self.xp
        parts = []
        for s in range(0, self.num_blocks, _CHUNK):
            inv = self._inverse_chunk(s)
            parts.append(inv.diagonal(dim1=1, dim2=2) if xp.torch else inv.diagonal(0, 1, 2))
        return _cat(xp, parts)


class _FisherOperator:
    """:class:`~obert_core._operators.InverseOperator` over :class:`FisherBlocks` (float64)."""

    def __init__(self, fb: FisherBlocks) -> None:
        self.fb = fb
        self.num_weights = fb.num_weights
        self.block_size = fb.block_size
        self.num_blocks = fb.num_blocks
        self.xp: Xp = fb.xp
        self.xp_like = fb.xp_like

    def _subset(self, blocks: np.ndarray) -> _FisherOperator:
        """The operator of the Fisher blocks ``blocks`` only (their Gram rows, not copied)."""
        fb = self.fb
        gram = fb._gram("a subset of the blocks")
        index = self.xp._t.as_tensor(blocks, device=gram.device) if self.xp.torch else blocks
        sub = FisherBlocks(  # checked as part of fb (only lower triangles are read)
            gram[index],
            fb.damp,
            fb.num_grads,
            len(blocks) * fb.block_size,
            check=False,
            kernels=fb.kernels,
        )
        return _FisherOperator(sub)

    def diag_blocks(self) -> Any:
        """``diag(F̂⁻¹)`` as ``(num_blocks, B)`` float64."""
        return self.fb._diag_blocks()

    def group_blocks(self, group_size: int) -> Any:
        """``[F̂⁻¹]_QQ`` of consecutive groups of ``group_size`` (explicit inverse, by chunks)."""
        fb, xp, g = self.fb, self.xp, group_size
        q = self.block_size // g
        parts = []
        for s in range(0, self.num_blocks, _CHUNK):
            inv = fb._inverse_chunk(s)
            n = inv.shape[0]
            parts.append(xp.einsum("nqaqb->nqab", inv.reshape(n, q, g, q, g)).reshape(n * q, g, g))
        return _cat(xp, parts)

    def matvec_blocks(self, z: Any) -> Any:
        """``F̂⁻¹ z`` for ``z`` of shape ``(num_blocks, B)``: one Cholesky solve per block.

        With the factors ``diag()`` kept (``overwrite_gram``): ``XᵀX z`` instead.
        """
        fb, xp = self.fb, self.xp
        if fb._numba and fb._factors is not None:  # kept by diag(): XᵀX z, no factorisation
            from .backends._block_kernels import factored_solve_kernel, run_on_blocks

            out = np.empty((self.num_blocks, self.block_size))
            zz = np.ascontiguousarray(to_numpy(xp.f64(z)))
            run_on_blocks(factored_solve_kernel, self.num_blocks, *fb._factors, fb.damp, zz, out)
            return fb._like(out)
        if fb._numba:
            from .backends._block_kernels import run_on_blocks, solve_kernel

            out = np.empty((self.num_blocks, self.block_size))
            bad = np.zeros(self.num_blocks, dtype=np.bool_)
            zz = np.ascontiguousarray(to_numpy(xp.f64(z)))
            gram = to_numpy(fb._gram("F̂⁻¹z without factors"))
            run_on_blocks(
                solve_kernel, self.num_blocks, gram, fb.damp, 1.0 / fb.num_grads, zz, out, bad
            )
            fb._raise_if_bad(bad)
            return fb._like(out)
        parts = [
            xp.solve(fb._dense(s, s + _CHUNK), z[s : s + _CHUNK])
            for s in range(0, self.num_blocks, _CHUNK)
        ]
        return _cat(xp, parts)

    def superposed_update(self, wb: Any, newly: Any, zero: Any) -> Any:
        """``w − F̂⁻¹z`` with 0 on ``zero``, ``z = w/diag(F̂⁻¹)`` on ``newly``: Eq. 2 superposed.

        One fused Numba pass over the blocks with no float64 temporaries of the whole tensor,
        through the factors ``diag()`` kept (``overwrite_gram``) or else one factorisation per
        block with something newly pruned. ``wb``: the weights in the ``(num_blocks, B)`` layout
        (float64); ``newly`` and ``zero``: boolean masks in that layout. Returns None with the
        LAPACK kernels (the caller then builds ``z`` itself).

        Raises:
            ObertError: an input of another shape, or a block that is not positive definite.
        """
        fb = self.fb
        want = (self.num_blocks, self.block_size)
        check_block_layout(want, wb=wb, newly=newly, zero=zero)
        if not fb._numba:
            return None
        from .backends._block_kernels import _NO_FACTORS, run_on_blocks, superpose_kernel

        diag = np.ascontiguousarray(to_numpy(fb._diag_blocks()), np.float64)
        if fb._factors is not None:
            gram, kept = np.empty((0, 1, 1), np.float32), fb._factors
        else:
            gram = to_numpy(fb._gram("the superposed update without factors"))
            kept = _NO_FACTORS
        out = np.empty(want)
        bad = np.zeros(self.num_blocks, dtype=np.bool_)
        run_on_blocks(
            superpose_kernel,
            self.num_blocks,
            *(gram, fb.damp, 1.0 / fb.num_grads, *kept),
            np.ascontiguousarray(to_numpy(wb), np.float64),
            diag,
            np.ascontiguousarray(to_numpy(newly), np.bool_),
            np.ascontiguousarray(to_numpy(zero), np.bool_),
            out,
            bad,
        )
        fb._raise_if_bad(bad)
        return fb._like(out)

    def _apply_fisher(self, u: Any) -> Any:
        """``F̂ u`` per block (float64)."""
        fb, xp = self.fb, self.xp
        parts = [
            xp.einsum("nij,nj->ni", fb._dense(s, s + _CHUNK), u[s : s + _CHUNK])
            for s in range(0, self.num_blocks, _CHUNK)
        ]
        return _cat(xp, parts)

    def restricted_update(self, sel: Any, rhs: Any) -> Any:
        """``F̂⁻¹ E_S ([F̂⁻¹]_SS)⁻¹ rhs_S`` per block, through the kept weights ``R = ¬S``.

        Equals ``rhs`` on ``S`` and ``−F̂_RR⁻¹ F̂_RS rhs_S`` on ``R`` (docs/math.md §2.1): one
        ``|R|×|R|`` Cholesky solve per block.
        """
        fb, xp = self.fb, self.xp
        if fb._numba:
            from .backends._block_kernels import restricted_update_kernel, run_on_blocks

            out = np.empty((self.num_blocks, self.block_size))
            bad = np.zeros(self.num_blocks, dtype=np.bool_)
            s_np = np.ascontiguousarray(to_numpy(sel))
            r_np = np.ascontiguousarray(to_numpy(xp.f64(rhs)))
            gram = to_numpy(fb._gram("the joint update"))
            run_on_blocks(
                restricted_update_kernel,
                self.num_blocks,
                *(gram, fb.damp, 1.0 / fb.num_grads, s_np, r_np, out, bad),
            )
            fb._raise_if_bad(bad)
            return fb._like(out)
        parts = []
        eye = xp.eye(self.block_size)
        for s in range(0, self.num_blocks, _CHUNK):
            f = fb._dense(s, s + _CHUNK)
            m = sel[s : s + _CHUNK]
            r = xp.f64(rhs[s : s + _CHUNK])
            rs = xp.where(m, r, 0.0 * r)
            keep = ~m
            pair = keep[:, :, None] & keep[:, None, :]
            # F̂_RR on R×R and the identity elsewhere: the systems decouple, so the solution is
            # F̂_RR⁻¹ F̂_RS rhs_S on R and exactly 0 on S (its right-hand side is zeroed there).
            a = xp.where(pair, f, eye + 0.0 * f)
            b = xp.where(keep, xp.einsum("nij,nj->ni", f, rs), 0.0 * r)
            x = xp.solve(a, b)
            parts.append(xp.where(m, r, -x))
        return _cat(xp, parts)

    def restricted_solve(self, sel: Any, rhs: Any) -> Any:
        """``z_S = ([F̂⁻¹]_SS)⁻¹ rhs_S``, 0 off S: ``F̂ u`` for ``u`` of :meth:`restricted_update`."""
        z = self._apply_fisher(self.restricted_update(sel, rhs))
        return self.xp.where(sel, z, 0.0 * z)


def _cat(xp: Xp, parts: list[Any]) -> Any:
    if xp.torch:
        return xp._t.cat(parts)
    return np.concatenate(parts)


def _float64_view(gram: np.ndarray) -> np.ndarray | None:
    """The Gram's memory as a flat float64 array, or None where it cannot be written in place.

    Needs a C-contiguous, writable array whose data starts on an 8-byte boundary (a float32
    array with an odd number of entries loses its last 4 bytes, which no block's factors reach).
    """
    if not (gram.flags.c_contiguous and gram.flags.writeable) or gram.ctypes.data % 8:
        return None
    flat = gram.reshape(-1)
    per = 8 // gram.itemsize
    return flat[: flat.size // per * per].view(np.float64)
