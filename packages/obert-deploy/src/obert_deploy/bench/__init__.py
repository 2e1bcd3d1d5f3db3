"""Latency and throughput on ONNX Runtime, OpenVINO and DeepSparse, and what they need.

:func:`benchmark` (:class:`BenchConfig`, :class:`BenchResult`) with its results as a table, JSON
and a plot; the engines (:data:`ENGINES`, :func:`create_runner`); the model inputs
(:func:`load_onnx`, :func:`make_inputs`); one block-sparse Linear as an ONNX graph
(:func:`linear_graph`, :func:`pack_block_rows`) and the per-layer latency table obert-train's
allocator reads (:func:`measure_latency_table`, :func:`write_latency_table`); the CPU report
(:func:`cpu_info`). Names load lazily: importing this package imports neither torch nor an
inference engine, so it works in the torch-free DeepSparse environment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

_EXPORTS: dict[str, str] = {
    "SCENARIOS": ".._choices",
    "BenchConfig": "._bench",
    "BenchResult": "._bench",
    "benchmark": "._bench",
    "read_results_json": "._results",
    "results_to_markdown": "._results",
    "write_results_json": "._results",
    "plot_results": "._plot",
    "DEEPSPARSE_INSTALL_HINT": "._engines",
    "OPENVINO_INSTALL_HINT": "._engines",
    "ENGINES": ".._choices",
    "create_runner": "._engines",
    "engine_available": "._engines",
    "OnnxInput": "._inputs",
    "check_input_shapes": "._inputs",
    "load_onnx": "._inputs",
    "make_inputs": "._inputs",
    "onnx_inputs": "._inputs",
    "LINEAR_FORMS": ".._choices",
    "block_gather_reference": "._linear",
    "linear_graph": "._linear",
    "measure_latency_table": "._linear",
    "pack_block_rows": "._linear",
    "parse_block": "._linear",
    "parse_shapes": "._linear",
    "random_block_mask": "._linear",
    "write_latency_table": "._linear",
    "CpuInfo": "obert_core.shared",
    "cpu_info": "obert_core.shared",
}

__all__ = [
    "DEEPSPARSE_INSTALL_HINT",
    "ENGINES",
    "LINEAR_FORMS",
    "OPENVINO_INSTALL_HINT",
    "SCENARIOS",
    "BenchConfig",
    "BenchResult",
    "CpuInfo",
    "OnnxInput",
    "benchmark",
    "block_gather_reference",
    "check_input_shapes",
    "cpu_info",
    "create_runner",
    "engine_available",
    "linear_graph",
    "load_onnx",
    "make_inputs",
    "measure_latency_table",
    "onnx_inputs",
    "pack_block_rows",
    "parse_block",
    "parse_shapes",
    "plot_results",
    "random_block_mask",
    "read_results_json",
    "results_to_markdown",
    "write_latency_table",
    "write_results_json",
]

__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)

if TYPE_CHECKING:
    from obert_core.shared import CpuInfo, cpu_info

    from .._choices import ENGINES, LINEAR_FORMS, SCENARIOS
    from ._bench import BenchConfig, BenchResult, benchmark
    from ._engines import (
        DEEPSPARSE_INSTALL_HINT,
        OPENVINO_INSTALL_HINT,
        create_runner,
        engine_available,
    )
    from ._inputs import OnnxInput, check_input_shapes, load_onnx, make_inputs, onnx_inputs
    from ._linear import (
        block_gather_reference,
        linear_graph,
        measure_latency_table,
        pack_block_rows,
        parse_block,
        parse_shapes,
        random_block_mask,
        write_latency_table,
    )
    from ._plot import plot_results
    from ._results import read_results_json, results_to_markdown, write_results_json
