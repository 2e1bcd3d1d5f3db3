"""ONNX export with parity and sparsity checks, and what it needs.

:func:`export_onnx` (:class:`ExportConfig`, :class:`ExportReport`) loads a checkpoint for one
of the :data:`TASKS` (:func:`load_checkpoint`, also transformers-4 checkpoints whose
``config.pruned_heads`` heads are absent), removes structurally pruned FFN neurons and attention
heads (:func:`shrink_model`, kept FFN widths rounded up by :func:`rounded_width`,
:func:`remove_heads`), exports with the dynamo exporter and, for
DeepSparse, rewrites the graph (:func:`convert_for_deepsparse` and its steps). Names load
lazily: importing this package imports neither torch nor transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

_EXPORTS: dict[str, str] = {
    "ExportConfig": "._export",
    "ExportReport": "._export",
    "export_onnx": "._export",
    "TASKS": "._tasks",
    "TaskSpec": "._tasks",
    "get_task": "._tasks",
    "LoadedCheckpoint": "._checkpoint",
    "load_checkpoint": "._checkpoint",
    "load_tokenizer": "._checkpoint",
    "ShrinkReport": "._shrink",
    "ShrinkRow": "._shrink",
    "remove_heads": "._shrink",
    "rounded_width": "._shrink",
    "shrink_model": "._shrink",
    "convert_for_deepsparse": "._onnx_compat",
    "decompose_layer_norm": "._onnx_compat",
    "fold_dequantize_transpose": "._onnx_compat",
    "reorder_gelu": "._onnx_compat",
}

__all__ = [
    "TASKS",
    "ExportConfig",
    "ExportReport",
    "LoadedCheckpoint",
    "ShrinkReport",
    "ShrinkRow",
    "TaskSpec",
    "convert_for_deepsparse",
    "decompose_layer_norm",
    "export_onnx",
    "fold_dequantize_transpose",
    "get_task",
    "load_checkpoint",
    "load_tokenizer",
    "remove_heads",
    "reorder_gelu",
    "rounded_width",
    "shrink_model",
]

__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._checkpoint import LoadedCheckpoint, load_checkpoint, load_tokenizer
    from ._export import ExportConfig, ExportReport, export_onnx
    from ._onnx_compat import (
        convert_for_deepsparse,
        decompose_layer_norm,
        fold_dequantize_transpose,
        reorder_gelu,
    )
    from ._shrink import ShrinkReport, ShrinkRow, remove_heads, rounded_width, shrink_model
    from ._tasks import TASKS, TaskSpec, get_task
