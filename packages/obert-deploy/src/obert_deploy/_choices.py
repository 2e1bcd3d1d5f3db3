"""The closed sets of names obert-deploy accepts: engines, scenarios, tasks, quantization options.

Each set is defined once, here, and used by the library's checks, its subpackages' ``__all__``
and the command line's choices (``obert_deploy.cli`` builds its option types from them), so a
new engine or method is one edit. The module imports nothing, so ``--help`` stays instant.
"""

from __future__ import annotations

__all__ = [
    "CALIBRATION_METHODS",
    "ENGINES",
    "EVAL_TASKS",
    "LINEAR_FORMS",
    "PTQ_METHODS",
    "QAT_TASKS",
    "QUANT_FORMATS",
    "SCENARIOS",
]

#: Inference engines obert-deploy exports for and benchmarks on.
ENGINES = ("onnxruntime", "openvino", "deepsparse")
#: Benchmark scenarios: one request at a time, or concurrent streams.
SCENARIOS = ("latency", "throughput")
#: Tasks :func:`~obert_deploy.evaluate` has a metric for (a subset of
#: :data:`~obert_deploy.TASKS`).
EVAL_TASKS = ("sequence-classification", "question-answering", "image-classification")
#: Forms of one block-sparse Linear timed by ``obert-deploy latency-table``: one dense
#: ``MatMul`` (zeros included), or the block-row gather → batched GEMM
#: (:func:`~obert_deploy.bench.linear_graph`).
LINEAR_FORMS = ("matmul", "block-gather")
#: Tasks :func:`~obert_deploy.qat_export` can fine-tune.
QAT_TASKS = ("sequence-classification",)
#: Post-training methods, one config class each: ``dynamic``
#: (:class:`~obert_deploy.DynamicInt8Config`) and ``static``
#: (:class:`~obert_deploy.StaticInt8Config`).
PTQ_METHODS = ("dynamic", "static")
#: Calibration methods of static quantization (ONNX Runtime's ``CalibrationMethod``).
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
#: Formats of static quantization: ``QuantizeLinear``/``DequantizeLinear`` pairs or QOperator.
QUANT_FORMATS = ("qdq", "qoperator")
