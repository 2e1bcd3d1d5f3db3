"""Per-weight sparsity of ONNX files and their size on disk, compressed and in sparse forms.

:func:`size_report` (:class:`SizeReport`), the sparsity of ONNX initializers
(:func:`onnx_weight_sparsity`) and its match with the PyTorch weights (:func:`match_sparsity`).
Names load lazily (NumPy and onnx only; no torch, no inference engine).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

_EXPORTS: dict[str, str] = {
    "SizeReport": "._size",
    "size_report": "._size",
    "size_table_markdown": "._size",
    "OnnxWeightSparsity": "._sparsity",
    "SparsityRow": "._sparsity",
    "linear_weights": "._sparsity",
    "match_sparsity": "._sparsity",
    "onnx_weight_sparsity": "._sparsity",
    "sparsity_table_markdown": "._sparsity",
}

__all__ = [
    "OnnxWeightSparsity",
    "SizeReport",
    "SparsityRow",
    "linear_weights",
    "match_sparsity",
    "onnx_weight_sparsity",
    "size_report",
    "size_table_markdown",
    "sparsity_table_markdown",
]

__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._size import SizeReport, size_report, size_table_markdown
    from ._sparsity import (
        OnnxWeightSparsity,
        SparsityRow,
        linear_weights,
        match_sparsity,
        onnx_weight_sparsity,
        sparsity_table_markdown,
    )
