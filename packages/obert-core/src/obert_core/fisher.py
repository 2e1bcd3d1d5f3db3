"""Blocked empirical-Fisher inverse (oBERT paper §3; docs/math.md §2).

The empirical Fisher of ``m`` gradients ``g_i ∈ R^d`` with dampening ``λ`` is

    F̂ = λ I_d + (1/m) Σ_{i=1..m} g_i g_iᵀ.                                          (Eq. F)

oBERT keeps only its block-diagonal part: the flattened tensor is cut into ``ceil(d/B)`` chunks of
``B`` consecutive coordinates and each ``B×B`` block is inverted on its own. A tail chunk shorter
than ``B`` is zero-padded; the padded coordinates decouple (``F̂⁻¹`` is ``1/λ`` on their diagonal
and 0 elsewhere) and never influence the real coordinates.

Two builds give the same result:

* ``method="batched"`` (default): accumulate ``G_bᵀG_b`` in float64, then one batched Cholesky
  inverse of ``λI + G_bᵀG_b/m``. Numerically sound even for ``λ = 1e-7`` and masked coordinates.
* ``method="streaming"``: one Sherman–Morrison rank-1 update per gradient (the SparseML reference),

      F̂_i⁻¹ = F̂_{i−1}⁻¹ − (F̂_{i−1}⁻¹ g_i)(F̂_{i−1}⁻¹ g_i)ᵀ / (m + g_iᵀ F̂_{i−1}⁻¹ g_i),  F̂_0⁻¹ = I/λ.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from ._arrays import all_finite, check_finite, framework_of, is_torch, to_numpy
from ._errors import ObertError
from ._validate import check_choice, check_damp, check_positive_int
from .backends import BACKENDS, FisherBackend, default_backend_for, get_backend
from .fisher_blocks import FisherBlocks, _numba_available
from .fisher_fill import fill_unseen_curvature

__all__ = ["BlockFisherBuilder", "block_fisher_inverse", "fisher_memory_bytes"]

METHODS = ("batched", "streaming")
GRAM_KERNELS = ("auto", "numba", "blas")


def fisher_memory_bytes(
    num_weights: int, block_size: int, itemsize: int = 4, *, method: str | None = None
) -> int:
    """Bytes needed for the blocked inverse Fisher of one tensor.

    Args:
        num_weights: ``d``, the number of weights of the tensor.
        block_size: ``B``.
        itemsize: bytes per stored element (4 for float32, 8 for float64).
        method: ``None`` for the stored inverse, ``4·ceil(d/B)·B²`` in float32 (docs/math.md
            §2); ``"streaming"`` or ``"batched"`` for the peak while building it (the batched
            build also holds a float64 Gram accumulator).

    Returns:
        The number of bytes.
    """
    d = check_positive_int(num_weights, "num_weights")
    b = check_positive_int(block_size, "block_size")
    itemsize = check_positive_int(itemsize, "itemsize")
    stored = -(-d // b) * b * b * itemsize
    if method is None or method == "streaming":
        return stored
    check_choice(method, "method", METHODS)
    return stored + -(-d // b) * b * b * 8


class BlockFisherBuilder:
    """Streaming construction of the blocked inverse Fisher from gradient chunks.

    Feed ``(k_i, d)`` chunks as a training loop produces them with :meth:`add`, then call
    :meth:`finalize`. The result equals :func:`block_fisher_inverse` on the concatenated gradients.

    Args:
        num_weights: ``d``, the length of each flattened gradient.
        block_size: ``B``, the Fisher block size (``B = d`` gives the full inverse).
        damp: ``λ`` > 0.
        num_grads: ``m``, the normaliser of Eq. F; the expected number of gradients.
        method: ``"batched"`` or ``"streaming"`` (see module docstring).
        backend: ``"numpy"``, ``"numba"``, ``"torch"`` or ``None`` (torch for tensors, Numba if
            installed else NumPy for arrays). Inputs of the other framework are converted, and the
            result is returned in the framework of the gradients.
        device: torch device for the inverse (torch backend only; default: the gradients' device).
        dtype: dtype of the returned inverse, float32 or float64 (default: the gradients' dtype;
            float32 for float16/bfloat16 gradients, which are accepted and accumulated in float32
            or float64 — half precision cannot hold the inverse, whose entries reach ``1/damp``).
        gram_precision: torch backend only: dtype of the batched Gram GEMM, ``"float32"``,
            ``"float64"`` or ``"auto"`` (float64 when ``num_grads < block_size`` — a rank-deficient
            Gram whose null space float32 products would pollute at small ``damp`` — on CUDA, or for
            float64 gradients or output; float32 otherwise). The NumPy and Numba backends always
            accumulate in float64; every backend inverts in float64.
        fill_unseen: batched build only: give the directions of a block that no gradient spans
            (``m < B``) the block's mean curvature instead of ``λ`` alone
            (:func:`~obert_core.fill_unseen_curvature`, Eq. U of docs/math.md §1.1); no effect
            when ``num_grads >= block_size``.
        gram_kernels: torch backend, batched build, float32 Gram on the CPU: ``"auto"`` (the
            default) computes each block's lower triangle with the Numba register tiles when
            Numba is installed and ``B >= 16`` (except 16, 17 and 21, whose tile order does not
            fit in the block; at ``B = 50`` in less time than the batched GEMM of whole blocks,
            docs/benchmarks.md), else the batched GEMM; ``"numba"`` always the tiles (the first
            :meth:`add` raises where they cannot run: no Numba, CUDA, a float64 Gram, a block
            size whose tile order does not fit); ``"blas"`` always the batched GEMM. Either
            way, a build whose compiled kernel disagrees with float64 (checked once per process)
            warns and takes the batched GEMM. Any other backend or build accepts only
            ``"auto"``. With the tiles, the finalised Gram's entries above the diagonal are
            finite but unspecified (only the lower triangle is read).

    Note:
        If fewer than ``num_grads`` gradients were added, :meth:`finalize` warns and still divides
        by ``num_grads``, as the reference implementation does.
    """

    def __init__(
        self,
        num_weights: int,
        block_size: int,
        damp: float,
        num_grads: int,
        *,
        method: str = "batched",
        backend: str | None = None,
        device: Any = None,
        dtype: Any = None,
        gram_precision: str = "auto",
        fill_unseen: bool = False,
        gram_kernels: str = "auto",
    ) -> None:
        self.num_weights = check_positive_int(num_weights, "num_weights")
        self.block_size = check_positive_int(block_size, "block_size")
        if self.block_size > self.num_weights:
            raise ObertError(
                f"block_size={block_size} is larger than the number of weights "
                f"num_weights={num_weights}; use block_size <= {num_weights}."
            )
        self.damp = check_damp(damp)
        self.num_grads = check_positive_int(num_grads, "num_grads")
        self.method = check_choice(method, "method", METHODS)
        if fill_unseen and self.method != "batched":
            raise ObertError(
                "fill_unseen needs method='batched' (the streaming build never forms the Gram); "
                "use method='batched' or fill_unseen=False."
            )
        self.fill_unseen = bool(fill_unseen)
        if dtype is not None:
            check_output_dtype(dtype, self.damp)
        if backend is not None:
            check_choice(backend, "backend", BACKENDS)
        self.gram_precision = check_choice(
            gram_precision, "gram_precision", ("auto", "float32", "float64")
        )
        self.gram_kernels = check_choice(gram_kernels, "gram_kernels", GRAM_KERNELS)
        if self.gram_kernels != "auto" and (backend not in (None, "torch") or method != "batched"):
            raise ObertError(
                f"gram_kernels={gram_kernels!r} chooses the torch backend's batched Gram kernel; "
                f"with backend={backend!r}, method={method!r} pass gram_kernels='auto'."
            )
        self.num_blocks = -(-self.num_weights // self.block_size)
        self._backend_name = backend
        self._tiles = False
        self._backend: FisherBackend | None = None
        self._device = device
        self._dtype = dtype
        self._framework: str | None = None
        self._state: Any = None
        self._tiled = False  # the tiles' full blocks in tile order (docs/math.md §2)
        self._seen = 0
        self._chunks = 0  # add() calls that added gradients
        self._failure: str | None = None  # the chunk that made the Gram non-finite
        self._done = False
        self._timings = {"accumulate_s": 0.0, "invert_s": 0.0}

    @property
    def timings(self) -> dict[str, float]:
        """Wall time spent so far, in seconds.

        ``accumulate_s``: Gram GEMMs or rank-1 updates (including transfers; with the register
        tiles, also their move into the ``B × B`` layout); ``invert_s``: the batched inversion
        in :meth:`finalize`, or ``diag(F̂⁻¹)`` in :meth:`finalize_fisher`.
        """
        return dict(self._timings)

    @property
    def uses_gram_tiles(self) -> bool:
        """Whether the Gram is accumulated by the Numba register tiles (known after one ``add``)."""
        return self._tiles

    @property
    def num_seen(self) -> int:
        """Number of gradients added so far."""
        return self._seen

    def _setup(self, grads: Any) -> None:
        """Choose the backend, dtype and Gram kernel from the first chunk; allocate the state.

        All or nothing: a choice that raises (e.g. ``gram_kernels`` that cannot run here) leaves
        the builder as it was, so the next ``add`` sets it up again and raises the same error.
        """
        dtype_asked = self._dtype
        try:
            self._framework = framework_of(grads, names=("grads",))
            name = self._backend_name or default_backend_for(self._framework)
            self._backend = get_backend(name)
            dtype = self._dtype if self._dtype is not None else _floating_dtype_of(grads)
            self._dtype = _torch_dtype(dtype) if name == "torch" else _numpy_dtype(dtype)
            like = self._to_backend(grads[:0])
            if self.method == "batched":
                if name == "torch":
                    like = like.to(self._torch_gram_dtype(like))
                    self._tiles = self._tiled = self._use_tiles(like)
                elif self.gram_kernels != "auto":
                    raise ObertError(
                        f"gram_kernels={self.gram_kernels!r} chooses the torch backend's Gram "
                        f"kernel, but these {self._framework} gradients use the {name} backend; "
                        "pass backend='torch' or gram_kernels='auto'."
                    )
                self._state = self._backend.new_gram(self.num_blocks, self.block_size, like)
            else:
                self._state = self._backend.identity_inverse(
                    self.num_blocks, self.block_size, self.damp, self._dtype, like
                )
        except Exception:
            self._framework, self._backend, self._dtype = None, None, dtype_asked
            self._state, self._tiles, self._tiled = None, False, False
            raise

    def _use_tiles(self, gram: Any) -> bool:
        """Whether the torch Gram ``gram`` (empty, its dtype and device) takes the Numba tiles."""
        import torch

        if self.gram_kernels == "blas":
            return False
        reason = (
            "it runs on the CPU; use gram_kernels='blas' on CUDA"
            if gram.device.type != "cpu"
            else "it accumulates float32; pass gram_precision='float32' or gram_kernels='auto'"
            if gram.dtype != torch.float32
            else "Numba is not installed; install obert-core[numba] or pass 'auto'/'blas'"
            if not _numba_available()
            else None
        )
        if reason is None:
            from .backends._gram_kernels import tiled_size

            b, size = self.block_size, int(tiled_size(self.block_size))
            if size > b * b:  # the tile order could not stay inside the Gram's own memory
                reason = (
                    f"the tile order of a {b} × {b} block ({size} floats) does not fit in its "
                    f"{b * b}; the tiles take B = 15, 18-20 or B >= 22, so pass "
                    "gram_kernels='auto' or 'blas'"
                )
        if self.gram_kernels == "numba" and reason is not None:
            raise ObertError(f"gram_kernels='numba' cannot build this Gram: {reason}.")
        if reason is not None or (self.gram_kernels == "auto" and self.block_size < 16):
            return False
        from .backends._gram_kernels import tiles_agree

        return tiles_agree()

    def _to_backend(self, x: Any) -> Any:
        assert self._backend is not None
        if self._backend.name == "torch":
            import torch

            t = x if is_torch(x) else torch.from_numpy(np.ascontiguousarray(x))
            if self._device is not None:
                t = t.to(self._device)
            return t
        return x.detach().cpu().numpy() if is_torch(x) else x

    def add(self, grads: Any) -> None:
        """Add a chunk of gradients.

        The batched build does not scan the ``k·d`` gradient entries for NaN/inf: a NaN or inf
        entry ``g_ij`` makes row ``j`` of its block's Gram non-finite, so after the chunk's
        GEMM only the last row of every block is checked (``d`` entries in contiguous runs of
        ``B``), and the finalisation checks the diagonal (docs/math.md §2). A chunk that fails
        leaves the Gram unusable: the error names the chunk, and the builder refuses any
        further call.

        Args:
            grads: ``(k, d)`` (or ``(d,)`` for one gradient) NumPy array or torch tensor.

        Raises:
            ObertError: wrong shape, non-finite values (or, with a float32 Gram, gradients so
                large that their squares overflow it), more than ``num_grads`` gradients in total,
                a ``gram_kernels`` choice that cannot run on these gradients (first call), or a
                call after :meth:`finalize` or after such an error.
        """
        self._check_usable()
        if getattr(grads, "ndim", None) == 1:
            grads = grads[None]
        shape = tuple(getattr(grads, "shape", ()))
        if len(shape) != 2 or shape[1] != self.num_weights:
            raise ObertError(
                f"grads must have shape (k, {self.num_weights}) (one flattened gradient per row), "
                f"got shape {shape}; reshape each gradient with .reshape(-1)."
            )
        if self._framework is None:
            self._setup(grads)
        elif framework_of(grads, names=("grads",)) != self._framework:
            raise ObertError(
                f"grads chunk is a {framework_of(grads)} array but earlier chunks were "
                f"{self._framework}; feed one framework to a builder."
            )
        if shape[0] == 0:
            return
        if self._seen + shape[0] > self.num_grads:
            raise ObertError(
                f"received {self._seen + shape[0]} gradients but num_grads={self.num_grads}; "
                "raise num_grads or stop adding gradients."
            )
        if self.method != "batched":
            check_finite(grads, "grads")
        assert self._backend is not None
        t0 = time.perf_counter()
        g = self._to_backend(grads)
        if self.method == "batched":
            # out of the tile order once at most one chunk of this size is left (see add_tiles)
            untile = self._tiled and self.num_grads - self._seen - shape[0] <= shape[0]
            finite = self._backend.add_gram(
                self._state,
                g,
                self.num_weights,
                self.block_size,
                first=self._chunks == 0,
                tiles=self._tiles,
                tile_order=self._tiled,
                untile_after=untile,
            )
            self._tiled = self._tiled and not untile
            if not (_gram_probe_finite(self._state) if finite is None else finite):
                self._refuse_chunk(grads)
        else:
            self._backend.sm_update(
                self._state, g, self.num_weights, self.block_size, self.num_grads
            )
        self._seen += shape[0]
        self._chunks += 1
        self._timings["accumulate_s"] += time.perf_counter() - t0

    def _check_usable(self) -> None:
        if self._done:
            raise ObertError("this BlockFisherBuilder was already finalized; create a new one.")
        if self._failure is not None:
            raise ObertError(
                f"this BlockFisherBuilder refused {self._failure} and its Gram is not usable; "
                "create a new one and feed it finite gradients."
            )

    def _refuse_chunk(self, grads: Any) -> None:
        """Raise for the chunk that made the Gram's diagonal non-finite; poison the builder."""
        k = int(grads.shape[0])
        where = (
            f"add() call {self._chunks + 1} (gradients {self._seen}..{self._seen + k - 1}, "
            "counted from 0)"
        )
        self._failure = where
        if not all_finite(grads):
            raise ObertError(
                f"grads of {where} contain NaN or inf values; check the loss (e.g. fp16 "
                "overflow or a diverged model) and drop or recompute the non-finite gradients, "
                "then build the Fisher again with a new BlockFisherBuilder."
            )
        big = float(abs(grads).max())
        raise ObertError(
            f"grads of {where} are finite but their squares overflow the "
            f"{_dtype_name(self._state.dtype)} Gram (largest |entry| {big:.3g}); scale the loss "
            "down or pass gram_precision='float64', then build the Fisher again with a new "
            "BlockFisherBuilder."
        )

    def _torch_gram_dtype(self, g: Any) -> Any:
        import torch

        if self.gram_precision == "float64":
            return torch.float64
        if self.gram_precision == "float32":
            return torch.float32
        exact = (
            self.num_grads < self.block_size
            or g.device.type != "cpu"
            or g.dtype == torch.float64
            or self._dtype == torch.float64
        )
        return torch.float64 if exact else torch.float32

    def _start_finalize(self, name: str) -> None:
        """The checks both finalisations make first; marks the builder finalized."""
        self._check_usable()
        if self._seen == 0 or self._backend is None:
            raise ObertError(f"no gradients were added; call add(grads) before {name}().")
        if self._seen < self.num_grads:
            warnings.warn(
                f"only {self._seen} of num_grads={self.num_grads} gradients were added; the "
                f"Fisher is still normalised by 1/{self.num_grads} (as in the reference "
                "implementation). Pass num_grads equal to the number of gradients to avoid this.",
                UserWarning,
                stacklevel=3,  # the caller of finalize() / finalize_fisher()
            )
        self._done = True

    def finalize(self) -> Any:
        """Return the ``(ceil(d/B), B, B)`` inverse blocks, in the gradients' framework."""
        self._start_finalize("finalize")
        assert self._backend is not None  # checked by _start_finalize
        if self.method == "batched":
            self._finish_gram()
        t0 = time.perf_counter()
        if self.method == "batched":
            self._check_diagonal()
            self._fill()
            finv = self._backend.gram_to_inverse(
                self._state, self.damp, self.num_grads, self.num_weights, self._dtype
            )
        else:
            finv = self._state
        self._timings["invert_s"] += time.perf_counter() - t0
        self._state = None
        if not all_finite(finv):
            raise ObertError(
                f"the inverse Fisher has NaN or inf entries (damp={self.damp!r}, dtype "
                f"{finv.dtype}, method={self.method!r}); increase damp or pass dtype=float64."
            )
        return self._from_backend(finv)

    def finalize_fisher(self, *, overwrite_gram: bool = False) -> FisherBlocks:
        """Return the damped Fisher blocks un-inverted, as a :class:`~obert_core.FisherBlocks`.

        The batched build's Gram stack is kept as accumulated (no copy, no ``B×B`` output per
        block) and ``diag(F̂⁻¹)`` is computed here (timed as ``invert_s``), so a non-positive-
        definite block is reported now, as by :meth:`finalize`. The scores and the joint update
        it supports need only factorisations of ``F̂`` (docs/math.md §2.1).

        Args:
            overwrite_gram: keep ``diag``'s inverse factors in the Gram's memory (see
                :class:`~obert_core.FisherBlocks`): the superposed update then needs no
                factorisation, and nothing that reads the Gram works afterwards.

        Raises:
            ObertError: for ``method="streaming"`` (it builds the inverse itself), no gradients,
                a second finalisation, or a block that is not positive definite.
        """
        if self.method != "batched":
            raise ObertError(
                "finalize_fisher() needs method='batched' (the streaming build holds only the "
                "inverse); call finalize() instead."
            )
        self._start_finalize("finalize_fisher")
        self._finish_gram()
        t0 = time.perf_counter()
        self._check_diagonal()
        self._fill()
        blocks = FisherBlocks(  # the diagonal is finite (checked), so is the lower triangle
            self._from_backend(self._state),
            self.damp,
            self.num_grads,
            self.num_weights,
            check=False,
            overwrite_gram=overwrite_gram,
        )
        blocks.diag()  # the scores' diag(F̂⁻¹); raises here on a block that is not PD
        self._timings["invert_s"] += time.perf_counter() - t0
        self._state = None
        return blocks

    def _finish_gram(self) -> None:
        """Bring the Gram into its ``(num_blocks, B, B)`` layout (timed as ``accumulate_s``)."""
        assert self._backend is not None
        if not self._tiled:  # not the tiles, or already moved after a chunk
            return
        t0 = time.perf_counter()
        self._backend.finish_gram(self._state, self.num_weights, self.block_size)
        self._timings["accumulate_s"] += time.perf_counter() - t0
        self._tiled = False

    def _check_diagonal(self) -> None:
        """Refuse a Gram whose diagonal is not finite although every chunk's row check passed.

        The rows catch every NaN/inf gradient when the GEMM multiplies out zeros (IEEE
        ``0·NaN = NaN``; MKL and OpenBLAS do); the diagonal ``Σ_i g_ij²`` also catches a BLAS
        that skips zero factors and finite squares that overflow a float32 Gram in one column.
        """
        diag = _gram_diagonal(self._state)
        if all_finite(diag):
            return
        flat = to_numpy(diag).reshape(-1)[: self.num_weights]
        bad = np.flatnonzero(~np.isfinite(flat))
        self._failure = "a non-finite Gram"
        raise ObertError(
            f"the Fisher's Gram has {bad.size} non-finite diagonal entries (first: weight "
            f"{int(bad[0])}): a gradient of one of the {self._chunks} chunks had NaN or inf "
            f"entries there, or finite ones whose squares overflow the "
            f"{_dtype_name(self._state.dtype)} Gram; drop or recompute those gradients (or pass "
            "gram_precision='float64') and build the Fisher again with a new BlockFisherBuilder."
        )

    def _fill(self) -> None:
        """Eq. U on the accumulated Gram (``fill_unseen``; a no-op when ``m >= B``)."""
        if self.fill_unseen and self.num_grads < self.block_size:
            self._state = fill_unseen_curvature(self._state, self.num_grads)  # float64

    def _from_backend(self, finv: Any) -> Any:
        assert self._backend is not None
        if self._framework == "torch" and self._backend.name != "torch":
            import torch

            return torch.from_numpy(finv)
        if self._framework == "numpy" and self._backend.name == "torch":
            return finv.detach().cpu().numpy()
        return finv


def _gram_probe_finite(acc: Any) -> bool:
    """Whether the last row of every Gram block, and the last block's diagonal, are finite.

    A NaN or inf gradient entry ``g_ij`` makes ``Σ_i g_i,B−1 g_ij`` (row ``B−1``, column ``j``)
    non-finite whatever ``g_i,B−1`` is; the last block's diagonal covers a zero-padded tail,
    whose row ``B−1`` is padding. The rows are contiguous, so this reads ``d`` numbers in runs of
    ``B``, 2-4x faster than the diagonal's ``d`` cache lines (docs/benchmarks.md).
    """
    return all_finite(acc[:, -1, :]) and all_finite(_gram_diagonal(acc[-1:]))


def _gram_diagonal(acc: Any) -> Any:
    """The ``(num_blocks, B)`` diagonal entries of a Gram stack, a strided view (no copy)."""
    if is_torch(acc):
        return acc.diagonal(dim1=1, dim2=2)
    return np.diagonal(acc, axis1=1, axis2=2)


#: dtypes the inverse Fisher is returned in; half precision cannot hold it.
OUTPUT_DTYPES = ("float32", "float64")
_HALF_DTYPES = ("float16", "bfloat16")


def _dtype_name(dtype: Any) -> str:
    """``"float32"`` for ``numpy.float32``, ``torch.float32``, ``"float32"``, ..."""
    if type(dtype).__module__.startswith("torch"):
        return str(dtype).removeprefix("torch.")
    try:
        return str(np.dtype(dtype).name)
    except TypeError:
        return str(dtype)


def check_output_dtype(dtype: Any, damp: float) -> None:
    """Raise :class:`ObertError` unless ``dtype`` is float32 or float64.

    Args:
        dtype: A NumPy or torch dtype (or its name).
        damp: The dampening, for the message (the inverse reaches ``1/damp``).
    """
    name = _dtype_name(dtype)
    if name in _HALF_DTYPES:
        raise ObertError(
            f"dtype={name} cannot hold the inverse Fisher: its entries reach 1/damp = "
            f"{1.0 / damp:.3g} (float16 overflows above 65504, bfloat16 keeps 3 significant "
            "digits); pass dtype=float32 or float64 — or leave dtype out: half-precision "
            "gradients are accepted and give a float32 inverse."
        )
    if name not in OUTPUT_DTYPES:
        raise ObertError(
            f"dtype={dtype!r} is not a dtype the inverse Fisher can be returned in; pass "
            "float32 or float64 (numpy or torch), or leave dtype out."
        )


def _floating_dtype_of(x: Any) -> Any:
    """The dtype of ``x`` if it is float32/float64; float32 for half precision; else float64."""
    if is_torch(x):
        import torch

        if x.dtype in (torch.float16, torch.bfloat16):
            return torch.float32
        return x.dtype if x.dtype.is_floating_point else torch.float64
    if x.dtype == np.float16:
        return np.dtype(np.float32)
    return x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)


def _numpy_dtype(dtype: Any) -> Any:
    if type(dtype).__module__.startswith("torch"):
        return np.dtype(str(dtype).removeprefix("torch."))
    return np.dtype(dtype)


def _torch_dtype(dtype: Any) -> Any:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    out: Any = getattr(torch, np.dtype(dtype).name)
    return out


def block_fisher_inverse(
    grads: Any,
    block_size: int,
    damp: float,
    *,
    num_grads: int | None = None,
    backend: str | None = None,
    method: str = "batched",
    dtype: Any = None,
    chunk_size: int = 256,
    gram_precision: str = "auto",
    fill_unseen: bool = False,
    gram_kernels: str = "auto",
) -> Any:
    """Inverse of each ``B×B`` diagonal block of the empirical Fisher (Eq. F).

    Args:
        grads: ``(k, d)`` gradients, one flattened (row-major) gradient per row (any float dtype;
            half precision is accumulated in float32 or float64). The API is flat by nature:
            flatten a 2-D weight's gradients with ``g.reshape(k, -1)``; scores and updates from
            :func:`~obert_core.obs_saliency` / :func:`~obert_core.obs_update` come back in the
            weight's shape.
        block_size: ``B``; blocks are consecutive flattened coordinates, the tail zero-padded.
        damp: dampening ``λ`` > 0 (the paper uses 1e-7).
        num_grads: normaliser ``m`` (default ``k``).
        backend: ``"numpy"`` (float64 reference), ``"numba"``, ``"torch"`` or ``None`` (by type).
        method: ``"batched"`` (Gram + Cholesky, default) or ``"streaming"`` (Sherman–Morrison).
        dtype: dtype of the result, float32 or float64 (default: the dtype of ``grads``; float32
            for float16/bfloat16 gradients, see :class:`BlockFisherBuilder`).
        chunk_size: gradients processed per backend call (bounds temporary memory).
        gram_precision: see :class:`BlockFisherBuilder`.
        fill_unseen: see :class:`BlockFisherBuilder` (Eq. U, docs/math.md §1.1).
        gram_kernels: see :class:`BlockFisherBuilder`.

    Returns:
        ``(ceil(d/B), B, B)`` array of the framework of ``grads``: block ``b`` is
        ``(λI + (1/m) G_bᵀ G_b)⁻¹`` for coordinates ``b·B … b·B+B−1``.

    Raises:
        ObertError: on a bad shape, value or option (the message says which and what to do).
        BackendUnavailableError: if the chosen backend's dependency is missing.
    """
    shape = tuple(getattr(grads, "shape", ()))
    framework_of(grads, names=("grads",))
    if len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
        raise ObertError(
            f"grads must be a non-empty 2-D array of shape (num_grads, num_weights), got shape "
            f"{shape}; stack flattened gradients with np.stack / torch.stack."
        )
    builder = BlockFisherBuilder(
        shape[1],
        block_size,
        damp,
        shape[0] if num_grads is None else num_grads,
        method=method,
        backend=backend,
        dtype=dtype,
        gram_precision=gram_precision,
        fill_unseen=fill_unseen,
        gram_kernels=gram_kernels,
    )
    chunk = check_positive_int(chunk_size, "chunk_size")
    for start in range(0, shape[0], chunk):
        builder.add(grads[start : start + chunk])
    return builder.finalize()
