"""Fisher-inverse backends: the NumPy float64 reference, Numba (parallel CPU) and torch (CPU/CUDA).

A backend builds the blocked inverse ``(ceil(d/B), B, B)`` of ``λI + (1/m) Σ g gᵀ`` (docs/math.md
§2) in two ways:

* ``gram`` + ``gram_to_inverse`` — the batched build: accumulate each block's Gram matrix
  ``G_bᵀG_b`` in float64 (products of float32 inputs are exact in float64, so masked,
  rank-deficient blocks at ``damp = 1e-7`` stay accurate), then invert every ``λI + G/m`` in
  float64 (batched LAPACK on CPU, batched Cholesky on CUDA).
* ``sm_update`` — the streaming Sherman–Morrison rank-1 updates used by the SparseML reference.

Backends are looked up by name with :func:`get_backend`; heavy dependencies are imported lazily.
"""

from __future__ import annotations

from typing import Any, Protocol

from .._errors import ObertError

__all__ = ["BACKENDS", "FisherBackend", "default_backend_for", "get_backend"]

BACKENDS = ("numpy", "numba", "torch")


class FisherBackend(Protocol):
    """The operations a Fisher-inverse backend provides (all arrays of that backend's framework)."""

    name: str

    def new_gram(self, num_blocks: int, block_size: int, like: Any) -> Any:
        """Return a ``(num_blocks, B, B)`` Gram accumulator on the device of ``like``.

        float64 (the torch fast path: float32); its entries may be uninitialised until the
        first :meth:`add_gram` with ``first=True`` defines them (with the tiles' tile order:
        until ``untile_after`` or :meth:`finish_gram`).
        """
        ...

    def add_gram(
        self,
        acc: Any,
        grads: Any,
        num_weights: int,
        block_size: int,
        *,
        first: bool = False,
        tiles: bool = False,
        tile_order: bool = False,
        untile_after: bool = False,
    ) -> bool | None:
        """Add ``G_bᵀ G_b`` of a ``(k, d)`` chunk to ``acc`` in place (lower triangle suffices).

        ``first``: set ``acc`` to it instead, never reading ``acc`` (the first chunk).
        ``tiles``: the torch backend computes the lower triangles of a contiguous float32 CPU
        Gram with the Numba register tiles of ``_gram_kernels``: its full blocks in their tile
        order (``tile_order``, from the first chunk on; moved into the ``(num_blocks, B, B)``
        layout after the chunk with ``untile_after``, or by :meth:`finish_gram`), or already in
        that layout. The NumPy and Numba backends ignore these: NumPy's kernel writes the
        whole product, Numba's the lower triangle.

        Returns:
            Whether every full block's last row and the tail block's diagonal are finite after
            the chunk, when the backend checked them while adding (the tiles do); ``None``
            when it did not, and the caller checks the Gram itself.
        """
        ...

    def finish_gram(self, acc: Any, num_weights: int, block_size: int) -> None:
        """Bring ``acc`` into its ``(num_blocks, B, B)`` layout after the last :meth:`add_gram`.

        Called only for a Gram still in tile order (the torch backend's ``tiles`` with
        ``tile_order``): moves it to ``B × B`` in place (the lower triangles, zeros above).
        A no-op for the other backends.
        """
        ...

    def gram_to_inverse(
        self, acc: Any, damp: float, num_grads: int, num_weights: int, out_dtype: Any
    ) -> Any:
        """Return the inverses of ``damp·I + acc/num_grads`` (may overwrite ``acc``)."""
        ...

    def identity_inverse(
        self, num_blocks: int, block_size: int, damp: float, dtype: Any, like: Any
    ) -> Any:
        """Return ``(1/damp)·I`` blocks, the start of the Sherman–Morrison recursion."""
        ...

    def sm_update(
        self, finv: Any, grads: Any, num_weights: int, block_size: int, num_grads: int
    ) -> None:
        """Apply one Sherman–Morrison rank-1 update per gradient row to ``finv`` in place."""
        ...


def get_backend(name: str) -> FisherBackend:
    """Return the backend called ``name`` (``"numpy"``, ``"numba"`` or ``"torch"``).

    Raises:
        ObertError: for an unknown name.
        BackendUnavailableError: if the backend's optional dependency is not installed.
    """
    if name == "numpy":
        from ._numpy import NumpyBackend

        return NumpyBackend()
    if name == "numba":
        from ._numba import NumbaBackend

        return NumbaBackend()
    if name == "torch":
        from ._torch import TorchBackend

        return TorchBackend()
    raise ObertError(f"unknown backend {name!r}; choose one of {', '.join(map(repr, BACKENDS))}.")


def default_backend_for(framework: str) -> str:
    """Default backend for ``framework``: torch for tensors, Numba (else NumPy) for arrays."""
    if framework == "torch":
        return "torch"
    try:
        import numba  # noqa: F401
    except ImportError:
        return "numpy"
    return "numba"
