"""Int8 quantization: post-training (dynamic, static) with ONNX Runtime, and QAT.

:func:`quantize_onnx` with :class:`DynamicInt8Config` or :class:`StaticInt8Config` (the
calibration feeds from a TSV: :func:`calibration_batches`), and quantization-aware training
that keeps the pruning masks (:func:`qat_export`). The accepted methods, formats and calibration
methods are :data:`PTQ_METHODS`, :data:`QUANT_FORMATS` and :data:`CALIBRATION_METHODS`. Names
load lazily: importing this package imports neither torch nor ONNX Runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

_EXPORTS: dict[str, str] = {
    "CALIBRATION_METHODS": ".._choices",
    "PTQ_METHODS": ".._choices",
    "QUANT_FORMATS": ".._choices",
    "DynamicInt8Config": "._quantize",
    "QuantizeReport": "._quantize",
    "StaticInt8Config": "._quantize",
    "quantize_onnx": "._quantize",
    "register_quantize_handler": "._quantize",
    "calibration_batches": "._calibration",
    "QAT_TASKS": ".._choices",
    "QATConfig": "._qat",
    "QATReport": "._qat",
    "QATWeightRow": "._qat",
    "pruning_masks": "._qat",
    "qat_export": "._qat",
}

__all__ = [
    "CALIBRATION_METHODS",
    "PTQ_METHODS",
    "QAT_TASKS",
    "QUANT_FORMATS",
    "DynamicInt8Config",
    "QATConfig",
    "QATReport",
    "QATWeightRow",
    "QuantizeReport",
    "StaticInt8Config",
    "calibration_batches",
    "pruning_masks",
    "qat_export",
    "quantize_onnx",
    "register_quantize_handler",
]

__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .._choices import CALIBRATION_METHODS, PTQ_METHODS, QAT_TASKS, QUANT_FORMATS
    from ._calibration import calibration_batches
    from ._qat import QATConfig, QATReport, QATWeightRow, pruning_masks, qat_export
    from ._quantize import (
        DynamicInt8Config,
        QuantizeReport,
        StaticInt8Config,
        quantize_onnx,
        register_quantize_handler,
    )
