"""obert-deploy: export (sparse) Transformers to ONNX, quantize to int8, benchmark on CPU.

Public API (everything else is private). Names are imported lazily (PEP 562), so
``import obert_deploy`` loads neither torch nor an inference engine; the benchmark and size
tools work in a torch-free environment such as the DeepSparse one.

Examples:
    >>> import obert_deploy
    >>> obert_deploy.get_task("sequence-classification").output_names
    ('logits',)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # errors
    "CheckpointError": "_errors",
    "EngineNotInstalledError": "_errors",
    "MissingDependencyError": "_errors",
    "ObertDeployError": "_errors",
    "OnnxModelError": "_errors",
    "ShapeMismatchError": "_errors",
    "UnsupportedTaskError": "_errors",
    "VerificationError": "_errors",
    # tasks and checkpoints
    "TASKS": "_tasks",
    "TaskSpec": "_tasks",
    "get_task": "_tasks",
    "LoadedCheckpoint": "_checkpoint",
    "load_checkpoint": "_checkpoint",
    "load_tokenizer": "_checkpoint",
    # export
    "ENGINES": "_export",
    "ExportConfig": "_export",
    "ExportReport": "_export",
    "export_onnx": "_export",
    "convert_for_deepsparse": "_onnx_compat",
    "decompose_layer_norm": "_onnx_compat",
    "fold_dequantize_transpose": "_onnx_compat",
    "reorder_gelu": "_onnx_compat",
    "ShrinkReport": "_shrink",
    "ShrinkRow": "_shrink",
    "remove_heads": "_shrink",
    "shrink_model": "_shrink",
    # sparsity and size
    "OnnxWeightSparsity": "_sparsity",
    "SparsityRow": "_sparsity",
    "linear_weights": "_sparsity",
    "match_sparsity": "_sparsity",
    "onnx_weight_sparsity": "_sparsity",
    "sparsity_table_markdown": "_sparsity",
    "SizeReport": "_size",
    "size_report": "_size",
    "size_table_markdown": "_size",
    # quantization
    "DynamicInt8Config": "_quantize",
    "QuantizeReport": "_quantize",
    "StaticInt8Config": "_quantize",
    "quantize_onnx": "_quantize",
    "register_quantize_handler": "_quantize",
    "QATConfig": "_qat",
    "QATReport": "_qat",
    "QATWeightRow": "_qat",
    "pruning_masks": "_qat",
    "qat_export": "_qat",
    # inputs, engines, benchmark
    "OnnxInput": "_inputs",
    "check_input_shapes": "_inputs",
    "load_onnx": "_inputs",
    "make_inputs": "_inputs",
    "onnx_inputs": "_inputs",
    "DEEPSPARSE_INSTALL_HINT": "_engines",
    "create_runner": "_engines",
    "engine_available": "_engines",
    "CpuInfo": "_cpu",
    "cpu_info": "_cpu",
    "SCENARIOS": "_bench",
    "BenchConfig": "_bench",
    "BenchResult": "_bench",
    "benchmark": "_bench",
    "read_results_json": "_bench",
    "results_to_markdown": "_bench",
    "write_results_json": "_bench",
    "plot_results": "_plot",
    # data and evaluation
    "QAExample": "_data",
    "TextDataset": "_data",
    "data_dir": "_data",
    "default_dataset": "_data",
    "read_glue_tsv": "_data",
    "read_squad": "_data",
    "tokenize": "_data",
    "EvalReport": "_evaluate",
    "EvalResult": "_evaluate",
    "evaluate": "_evaluate",
    "squad_scores": "_evaluate",
}

__all__ = [
    "DEEPSPARSE_INSTALL_HINT",
    "ENGINES",
    "SCENARIOS",
    "TASKS",
    "BenchConfig",
    "BenchResult",
    "CheckpointError",
    "CpuInfo",
    "DynamicInt8Config",
    "EngineNotInstalledError",
    "EvalReport",
    "EvalResult",
    "ExportConfig",
    "ExportReport",
    "LoadedCheckpoint",
    "MissingDependencyError",
    "ObertDeployError",
    "OnnxInput",
    "OnnxModelError",
    "OnnxWeightSparsity",
    "QAExample",
    "QATConfig",
    "QATReport",
    "QATWeightRow",
    "QuantizeReport",
    "ShapeMismatchError",
    "ShrinkReport",
    "ShrinkRow",
    "SizeReport",
    "SparsityRow",
    "StaticInt8Config",
    "TaskSpec",
    "TextDataset",
    "UnsupportedTaskError",
    "VerificationError",
    "__version__",
    "benchmark",
    "check_input_shapes",
    "convert_for_deepsparse",
    "cpu_info",
    "create_runner",
    "data_dir",
    "decompose_layer_norm",
    "default_dataset",
    "engine_available",
    "evaluate",
    "export_onnx",
    "fold_dequantize_transpose",
    "get_task",
    "linear_weights",
    "load_checkpoint",
    "load_onnx",
    "load_tokenizer",
    "make_inputs",
    "match_sparsity",
    "onnx_inputs",
    "onnx_weight_sparsity",
    "plot_results",
    "pruning_masks",
    "qat_export",
    "quantize_onnx",
    "read_glue_tsv",
    "read_results_json",
    "read_squad",
    "register_quantize_handler",
    "remove_heads",
    "reorder_gelu",
    "results_to_markdown",
    "shrink_model",
    "size_report",
    "size_table_markdown",
    "sparsity_table_markdown",
    "squad_scores",
    "tokenize",
    "write_results_json",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from ._bench import (
        SCENARIOS,
        BenchConfig,
        BenchResult,
        benchmark,
        read_results_json,
        results_to_markdown,
        write_results_json,
    )
    from ._checkpoint import LoadedCheckpoint, load_checkpoint, load_tokenizer
    from ._cpu import CpuInfo, cpu_info
    from ._data import (
        QAExample,
        TextDataset,
        data_dir,
        default_dataset,
        read_glue_tsv,
        read_squad,
        tokenize,
    )
    from ._engines import DEEPSPARSE_INSTALL_HINT, create_runner, engine_available
    from ._errors import (
        CheckpointError,
        EngineNotInstalledError,
        MissingDependencyError,
        ObertDeployError,
        OnnxModelError,
        ShapeMismatchError,
        UnsupportedTaskError,
        VerificationError,
    )
    from ._evaluate import EvalReport, EvalResult, evaluate, squad_scores
    from ._export import ENGINES, ExportConfig, ExportReport, export_onnx
    from ._inputs import OnnxInput, check_input_shapes, load_onnx, make_inputs, onnx_inputs
    from ._onnx_compat import (
        convert_for_deepsparse,
        decompose_layer_norm,
        fold_dequantize_transpose,
        reorder_gelu,
    )
    from ._plot import plot_results
    from ._qat import QATConfig, QATReport, QATWeightRow, pruning_masks, qat_export
    from ._quantize import (
        DynamicInt8Config,
        QuantizeReport,
        StaticInt8Config,
        quantize_onnx,
        register_quantize_handler,
    )
    from ._shrink import ShrinkReport, ShrinkRow, remove_heads, shrink_model
    from ._size import SizeReport, size_report, size_table_markdown
    from ._sparsity import (
        OnnxWeightSparsity,
        SparsityRow,
        linear_weights,
        match_sparsity,
        onnx_weight_sparsity,
        sparsity_table_markdown,
    )
    from ._tasks import TASKS, TaskSpec, get_task
