"""obert-deploy: export (sparse) Transformers to ONNX, quantize to int8, benchmark on CPU.

The package is split by topic, each subpackage with its own ``__all__``:

* :mod:`obert_deploy.export`: ONNX export, removal of structurally pruned neurons and heads,
  the DeepSparse graph rewrites, tasks and checkpoint loading;
* :mod:`obert_deploy.quantize`: post-training int8 (dynamic, static) and QAT;
* :mod:`obert_deploy.bench`: engines, model inputs, the CPU report, latency and throughput;
* :mod:`obert_deploy.evaluation`: data readers and dev-set accuracy;
* :mod:`obert_deploy.size`: per-weight sparsity and size on disk.

The names users need are importable from ``obert_deploy`` itself (its ``__all__``); the
lower-level helpers from their subpackage.

Names are imported lazily (PEP 562), so ``import obert_deploy`` loads neither torch nor an
inference engine; the benchmark and size tools work in a torch-free environment such as the
DeepSparse one.

Examples:
    >>> import obert_deploy
    >>> obert_deploy.get_task("sequence-classification").output_names
    ('logits',)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes

__version__ = "0.1.0"

#: Public name -> the module that provides it (relative to this package).
_EXPORTS: dict[str, str] = {
    # errors
    "ArgumentError": "._errors",
    "CheckpointError": "._errors",
    "EngineNotInstalledError": "._errors",
    "MissingDependencyError": "._errors",
    "ObertDeployError": "._errors",
    "OnnxModelError": "._errors",
    "ShapeMismatchError": "._errors",
    "UnsupportedTaskError": "._errors",
    "VerificationError": "._errors",
    # export: tasks, checkpoints, ONNX export, structured zeros, DeepSparse rewrites
    "TASKS": ".export",
    "TaskSpec": ".export",
    "get_task": ".export",
    "LoadedCheckpoint": ".export",
    "load_checkpoint": ".export",
    "load_tokenizer": ".export",
    "ExportConfig": ".export",
    "ExportReport": ".export",
    "export_onnx": ".export",
    "convert_for_deepsparse": ".export",
    "ShrinkReport": ".export",
    "ShrinkRow": ".export",
    "remove_heads": ".export",
    "shrink_model": ".export",
    # size: sparsity and size
    "OnnxWeightSparsity": ".size",
    "SparsityRow": ".size",
    "onnx_weight_sparsity": ".size",
    "SizeReport": ".size",
    "size_report": ".size",
    "size_table_markdown": ".size",
    # quantize: post-training int8 and QAT
    "DynamicInt8Config": ".quantize",
    "QuantizeReport": ".quantize",
    "StaticInt8Config": ".quantize",
    "quantize_onnx": ".quantize",
    "register_quantize_handler": ".quantize",
    "QATConfig": ".quantize",
    "QATReport": ".quantize",
    "QATWeightRow": ".quantize",
    "pruning_masks": ".quantize",
    "qat_export": ".quantize",
    # bench: engines, model inputs, CPU, benchmark
    "ENGINES": ".bench",
    "SCENARIOS": ".bench",
    "BenchConfig": ".bench",
    "BenchResult": ".bench",
    "benchmark": ".bench",
    "read_results_json": ".bench",
    "results_to_markdown": ".bench",
    "write_results_json": ".bench",
    "plot_results": ".bench",
    "create_runner": ".bench",
    "load_onnx": ".bench",
    "CpuInfo": ".bench",
    "cpu_info": ".bench",
    # evaluation: data and evaluation
    "TextDataset": ".evaluation",
    "read_glue_tsv": ".evaluation",
    "tokenize": ".evaluation",
    "EvalReport": ".evaluation",
    "EvalResult": ".evaluation",
    "evaluate": ".evaluation",
}

#: Helpers that were in ``__all__`` before the topic subpackages: still importable from here so
#: that existing code keeps working, but not part of the top-level API (import them from their
#: subpackage, e.g. ``from obert_deploy.bench import make_inputs``).
_HELPERS: dict[str, str] = {
    "decompose_layer_norm": ".export",
    "fold_dequantize_transpose": ".export",
    "reorder_gelu": ".export",
    "linear_weights": ".size",
    "match_sparsity": ".size",
    "sparsity_table_markdown": ".size",
    "DEEPSPARSE_INSTALL_HINT": ".bench",
    "OnnxInput": ".bench",
    "check_input_shapes": ".bench",
    "engine_available": ".bench",
    "make_inputs": ".bench",
    "onnx_inputs": ".bench",
    "QAExample": ".evaluation",
    "data_dir": ".evaluation",
    "default_dataset": ".evaluation",
    "read_squad": ".evaluation",
    "squad_scores": ".evaluation",
}

__all__ = [
    "ENGINES",
    "SCENARIOS",
    "TASKS",
    "ArgumentError",
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
    "OnnxModelError",
    "OnnxWeightSparsity",
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
    "convert_for_deepsparse",
    "cpu_info",
    "create_runner",
    "evaluate",
    "export_onnx",
    "get_task",
    "load_checkpoint",
    "load_onnx",
    "load_tokenizer",
    "onnx_weight_sparsity",
    "plot_results",
    "pruning_masks",
    "qat_export",
    "quantize_onnx",
    "read_glue_tsv",
    "read_results_json",
    "register_quantize_handler",
    "remove_heads",
    "results_to_markdown",
    "shrink_model",
    "size_report",
    "size_table_markdown",
    "tokenize",
    "write_results_json",
]

__getattr__, _dir = lazy_attributes(__name__, {**_EXPORTS, **_HELPERS})


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from ._errors import (
        ArgumentError,
        CheckpointError,
        EngineNotInstalledError,
        MissingDependencyError,
        ObertDeployError,
        OnnxModelError,
        ShapeMismatchError,
        UnsupportedTaskError,
        VerificationError,
    )
    from .bench import (
        ENGINES,
        SCENARIOS,
        BenchConfig,
        BenchResult,
        CpuInfo,
        benchmark,
        cpu_info,
        create_runner,
        load_onnx,
        plot_results,
        read_results_json,
        results_to_markdown,
        write_results_json,
    )
    from .evaluation import (
        EvalReport,
        EvalResult,
        TextDataset,
        evaluate,
        read_glue_tsv,
        tokenize,
    )
    from .export import (
        TASKS,
        ExportConfig,
        ExportReport,
        LoadedCheckpoint,
        ShrinkReport,
        ShrinkRow,
        TaskSpec,
        convert_for_deepsparse,
        export_onnx,
        get_task,
        load_checkpoint,
        load_tokenizer,
        remove_heads,
        shrink_model,
    )
    from .quantize import (
        DynamicInt8Config,
        QATConfig,
        QATReport,
        QATWeightRow,
        QuantizeReport,
        StaticInt8Config,
        pruning_masks,
        qat_export,
        quantize_onnx,
        register_quantize_handler,
    )
    from .size import (
        OnnxWeightSparsity,
        SizeReport,
        SparsityRow,
        onnx_weight_sparsity,
        size_report,
        size_table_markdown,
    )
