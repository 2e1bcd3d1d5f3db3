"""obert: one command from a pretrained Transformer to a pruned, exported, benchmarked model.

``obert quickstart`` (:func:`run_quickstart`) runs the pipeline of the three libraries of this
project: dense fine-tuning and gradual oBERT pruning with distillation (``obert_train``), the
same-budget GMP baseline, ONNX export with parity and sparsity checks, int8, CPU latency and
size (``obert_deploy``), and writes a report with plots. Every stage is cached by its inputs.
Names are imported lazily (PEP 562): ``import obert`` loads neither torch nor transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from obert.cache import StageCache, StageRecord
    from obert.config import QuickstartConfig
    from obert.errors import DiskSpaceError, ObertPipelineError, PipelineInputError, StageError
    from obert.pipeline import QuickstartResult, run_quickstart
    from obert.training import AccuracyCurve

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "AccuracyCurve": "obert.training",
    "DiskSpaceError": "obert.errors",
    "ObertPipelineError": "obert.errors",
    "PipelineInputError": "obert.errors",
    "QuickstartConfig": "obert.config",
    "QuickstartResult": "obert.pipeline",
    "StageCache": "obert.cache",
    "StageError": "obert.errors",
    "StageRecord": "obert.cache",
    "run_quickstart": "obert.pipeline",
}
"""Public name -> the module defining it (imported on first use)."""

__all__ = [
    "AccuracyCurve",
    "DiskSpaceError",
    "ObertPipelineError",
    "PipelineInputError",
    "QuickstartConfig",
    "QuickstartResult",
    "StageCache",
    "StageError",
    "StageRecord",
    "__version__",
    "run_quickstart",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'obert' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
