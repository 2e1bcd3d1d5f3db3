"""Inference engines behind one small interface: ONNX Runtime, OpenVINO and DeepSparse.

ONNX Runtime and OpenVINO are maintained and run the same ONNX files in the main environment
(OpenVINO is the optional ``[openvino]`` extra, see :data:`OPENVINO_INSTALL_HINT`). DeepSparse
1.8.0 is end-of-life, licensed for evaluation only, and needs Python < 3.12, ``onnx<1.15`` and
``numpy<2``; it lives in its own virtual environment (see :data:`DEEPSPARSE_INSTALL_HINT`). No
engine is imported until it is used.

Fair latency: every engine gets the same number of threads and runs one request at a time in the
latency scenario (ONNX Runtime: ``intra_op_num_threads`` = threads, sequential execution;
OpenVINO: ``INFERENCE_NUM_THREADS`` = threads, one stream, the ``LATENCY`` hint) and computes
in float32 (OpenVINO would otherwise run float models in bfloat16 on CPUs with AVX512-BF16 or
AMX, which changes both speed and outputs).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from obert_core.shared import cpu_info

from .._choices import ENGINES
from .._errors import EngineNotInstalledError, ObertDeployError, OnnxModelError, brief
from ._inputs import OnnxInput, feed_shape, is_static, load_onnx, onnx_inputs

__all__ = [
    "DEEPSPARSE_INSTALL_HINT",
    "ENGINES",
    "OPENVINO_INSTALL_HINT",
    "OPENVINO_SPARSE_RATE_PROPERTY",
    "Runner",
    "check_sparse_rate",
    "create_runner",
    "engine_available",
    "engine_version",
    "require_engine",
]

_LOG = logging.getLogger(__name__)
#: Highest ONNX IR version DeepSparse 1.8.0's bundled ONNX Runtime can load.
_DEEPSPARSE_MAX_IR = 9
#: The OpenVINO CPU plugin's property (``ov::intel_cpu::sparse_weights_decompression_rate``):
#: int8 MatMul weights at least this sparse are stored packed and decompressed inside the
#: kernel. It needs AMX (``amx_int8``); on other CPUs OpenVINO ignores it.
OPENVINO_SPARSE_RATE_PROPERTY = "CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE"
#: Ops of ONNX Runtime's dynamic quantization; DeepSparse 1.8 aborts the process on them.
_DYNAMIC_QUANT_OPS = frozenset({"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"})

DEEPSPARSE_INSTALL_HINT = (
    "DeepSparse is not installed in this Python environment ({python}, Python {version}); "
    "deepsparse==1.8.0 (end-of-life, evaluation licence) needs Python 3.11 (< 3.12), onnx<1.15 "
    "and numpy<2, so give it its own virtual environment, from the repository root: "
    "`python3.11 -m venv .venv-deepsparse && .venv-deepsparse/bin/pip install -e "
    "'packages/obert-deploy[deepsparse]'` (outside the repository: pip install "
    "'obert-deploy[deepsparse]'; the extra pins 'deepsparse==1.8.0', 'onnx>=1.14,<1.15' and "
    "'numpy<2'); export the model with `obert-deploy export ... --engine deepsparse` in your "
    "main environment, then run `.venv-deepsparse/bin/obert-deploy bench MODEL.onnx --engine "
    "deepsparse`"
)

OPENVINO_INSTALL_HINT = (
    "OpenVINO is not installed in this Python environment ({python}); install it with "
    "`pip install 'obert-deploy[openvino]'` (from the repository root: `pip install -e "
    "'packages/obert-deploy[openvino]'`; the extra pins 'openvino==2026.4.1')"
)


class Runner(Protocol):
    """A compiled model that runs one batch (a dict of input name -> array)."""

    engine: str
    inputs: list[OnnxInput]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch and return the outputs in graph order."""
        ...

    def info(self) -> dict[str, str]:
        """Engine-specific facts about the compiled model (for reports)."""
        ...


def engine_available(engine: str) -> bool:
    """True when ``engine`` can be imported here."""
    module = {"onnxruntime": "onnxruntime", "openvino": "openvino", "deepsparse": "deepsparse"}.get(
        engine
    )
    if module is None:
        return False
    import importlib.util

    return importlib.util.find_spec(module) is not None


def engine_version(engine: str) -> str:
    """Installed version of ``engine`` (``"not installed"`` if absent)."""
    try:
        return importlib.metadata.version(engine)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def require_engine(engine: str) -> None:
    """Raise a clear error unless ``engine`` is known and importable here.

    Raises:
        ObertDeployError: Unknown engine name.
        EngineNotInstalledError: The engine is not installed (the message says how to get it).
    """
    if engine not in ENGINES:
        raise ObertDeployError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine_available(engine):
        return
    if engine == "deepsparse":
        raise EngineNotInstalledError(
            DEEPSPARSE_INSTALL_HINT.format(
                python=sys.executable, version=".".join(map(str, sys.version_info[:3]))
            )
        )
    if engine == "openvino":
        raise EngineNotInstalledError(OPENVINO_INSTALL_HINT.format(python=sys.executable))
    raise EngineNotInstalledError(
        f"{engine} is not installed in this Python environment ({sys.executable}); "
        f"install it with `pip install {engine}`"
    )


def check_sparse_rate(rate: float | None, engine: str) -> None:
    """Refuse a sparse-weights decompression rate outside 0..1 or for an engine without it.

    Raises:
        ObertDeployError: The rate is not finite or not in 0..1, or ``engine`` is not OpenVINO.
    """
    if rate is None:
        return
    if not 0.0 <= rate <= 1.0:  # also False for NaN
        raise ObertDeployError(
            f"sparse weights decompression rate {rate} is not in 0..1; pass the fraction of "
            "zeros from which a weight is stored packed (e.g. 0.5), or leave it out"
        )
    if engine != "openvino":
        raise ObertDeployError(
            f"the sparse weights decompression rate is an OpenVINO option, not one of {engine}; "
            "add --engine openvino or leave it out"
        )


@dataclass
class _OrtRunner:
    engine: str
    inputs: list[OnnxInput]
    session: Any

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self.session.run(None, feeds))

    def info(self) -> dict[str, str]:
        return {"providers": ",".join(self.session.get_providers())}


@dataclass
class _OpenVinoRunner:
    engine: str
    inputs: list[OnnxInput]
    compiled: Any
    settings: dict[str, str]
    # One infer request per calling thread: the throughput scenario calls ``run`` from
    # ``streams`` threads at once, and an infer request serves one call at a time.
    local: threading.local = field(default_factory=threading.local)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        request = getattr(self.local, "request", None)
        if request is None:
            request = self.local.request = self.compiled.create_infer_request()
        result = request.infer({spec.name: feeds[spec.name] for spec in self.inputs})
        return [np.array(result[output]) for output in self.compiled.outputs]

    def info(self) -> dict[str, str]:
        return dict(self.settings)


@dataclass
class _DeepSparseRunner:
    engine: str
    inputs: list[OnnxInput]
    compiled: Any

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self.compiled.run([feeds[spec.name] for spec in self.inputs]))

    def info(self) -> dict[str, str]:
        # Share of graph ops DeepSparse runs with its own kernels (the rest falls back to its
        # bundled ONNX Runtime), and the ISA it compiled for.
        keys = ("fraction_of_supported_ops", "cpu_avx_type", "cpu_vnni", "num_streams")
        return {k: str(getattr(self.compiled, k, "?")) for k in keys}


def _ort_runner(path: str, inputs: list[OnnxInput], threads: int, **_: Any) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise OnnxModelError(
            f"ONNX Runtime cannot load {path!r} ({brief(exc)}); re-create it with "
            "`obert-deploy export`"
        ) from exc
    return _OrtRunner("onnxruntime", inputs, session)


def _deepsparse_runner(
    path: str,
    inputs: list[OnnxInput],
    threads: int,
    *,
    batch_size: int,
    seq_len: int,
    streams: int,
    ir_version: int,
    op_types: frozenset[str],
) -> Runner:
    dynamic_ops = sorted(op_types & _DYNAMIC_QUANT_OPS)
    if dynamic_ops:
        raise OnnxModelError(
            f"{path!r} is dynamically quantized ({', '.join(dynamic_ops)}), which DeepSparse 1.8 "
            "cannot run (it aborts); quantize with `obert-deploy quantize --method static` or "
            "`obert-deploy qat` for DeepSparse, or benchmark this file with --engine onnxruntime"
        )
    if ir_version > _DEEPSPARSE_MAX_IR:
        raise OnnxModelError(
            f"{path!r} has ONNX IR version {ir_version}, DeepSparse 1.8 reads <= "
            f"{_DEEPSPARSE_MAX_IR}; re-export with `obert-deploy export CHECKPOINT --engine "
            "deepsparse` (opset 18, IR 8, static shapes)"
        )
    from deepsparse import Engine

    kwargs: dict[str, Any] = {"batch_size": batch_size, "num_cores": threads}
    if not is_static(inputs):
        _LOG.warning(
            "%s has dynamic input shapes: DeepSparse will run it at %dx%d but shows no sparse "
            "speed-up on such graphs; export with static shapes (the default for --engine "
            "deepsparse)",
            path,
            batch_size,
            seq_len,
        )
        kwargs["input_shapes"] = [list(feed_shape(spec, batch_size, seq_len)) for spec in inputs]
    if streams > 1:
        kwargs["num_streams"] = streams
        kwargs["scheduler"] = "multi_stream"
    try:
        compiled = Engine(model=path, **kwargs)
    except Exception as exc:
        raise OnnxModelError(
            f"DeepSparse cannot compile {path!r} ({brief(exc)}); export it with "
            "`obert-deploy export ... --engine deepsparse`"
        ) from exc
    return _DeepSparseRunner("deepsparse", inputs, compiled)


def _property_text(value: Any) -> str:
    """An OpenVINO property value as text (``ov.Type`` prints as ``<Type: 'float32'>``)."""
    to_string = getattr(value, "to_string", None)
    return str(to_string()) if callable(to_string) else str(value)


def _openvino_runner(
    path: str,
    inputs: list[OnnxInput],
    threads: int,
    *,
    batch_size: int,
    seq_len: int,
    streams: int,
    sparse_weights_decompression_rate: float | None = None,
    **_: Any,
) -> Runner:
    import openvino as ov

    core = ov.Core()
    try:
        model = core.read_model(path)
    except Exception as exc:
        raise OnnxModelError(
            f"OpenVINO {engine_version('openvino')} cannot read {path!r} ({brief(exc)}); "
            "re-create it with `obert-deploy export`, or benchmark it with --engine onnxruntime"
        ) from exc
    settings = {
        "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
        "INFERENCE_NUM_THREADS": str(threads),
        "NUM_STREAMS": str(streams),
        "INFERENCE_PRECISION_HINT": "f32",
    }
    if sparse_weights_decompression_rate is not None:
        settings[OPENVINO_SPARSE_RATE_PROPERTY] = str(sparse_weights_decompression_rate)
    try:
        # Compile for the one shape that will be fed, as DeepSparse does: OpenVINO's
        # static-shape kernels are its fast path (callers pad the last partial batch).
        if not is_static(inputs):
            model.reshape(
                {spec.name: list(feed_shape(spec, batch_size, seq_len)) for spec in inputs}
            )
        compiled = core.compile_model(model, "CPU", settings)
    except Exception as exc:
        raise OnnxModelError(
            f"OpenVINO {engine_version('openvino')} cannot compile {path!r} ({brief(exc)}); "
            "re-create it with `obert-deploy export`, or benchmark it with --engine onnxruntime"
        ) from exc
    applied = {key: _property_text(compiled.get_property(key)) for key in settings}
    if sparse_weights_decompression_rate is not None:
        applied["sparse_weights_decompression"] = _sparse_kernels(compiled)
    return _OpenVinoRunner("openvino", inputs, compiled, applied)


def _sparse_kernels(compiled: Any) -> str:
    """Whether OpenVINO chose its sparse kernels: the ``primitiveType`` of each FullyConnected.

    OpenVINO accepts the rate on any CPU and says nothing when it keeps the weights dense
    (no AMX, float weights, channel counts not multiples of 64), so the compiled graph is read.
    """
    try:
        kinds = [
            op.get_rt_info()["primitiveType"].astype(str)
            for op in compiled.get_runtime_model().get_ordered_ops()
            if op.get_rt_info()["layerType"].astype(str) == "FullyConnected"
        ]
    except Exception as exc:  # an OpenVINO whose runtime model lacks these fields
        return f"unknown ({brief(exc)})"
    sparse = sum("sparse" in kind for kind in kinds)
    text = f"sparse kernels in {sparse} of {len(kinds)} FullyConnected layers"
    if not cpu_info().amx:
        text += " (no AMX on this CPU: OpenVINO keeps the weights dense)"
    return text


_FACTORIES: dict[str, Callable[..., Runner]] = {
    "onnxruntime": _ort_runner,
    "openvino": _openvino_runner,
    "deepsparse": _deepsparse_runner,
}


def create_runner(
    engine: str,
    path: str | os.PathLike[str],
    *,
    batch_size: int,
    seq_len: int,
    threads: int,
    streams: int = 1,
    sparse_weights_decompression_rate: float | None = None,
) -> Runner:
    """Compile ``path`` with ``engine`` for ``(batch_size, seq_len)`` inputs.

    Args:
        engine: ``"onnxruntime"``, ``"openvino"`` or ``"deepsparse"``.
        path: ONNX file.
        batch_size: Batch size that will be fed (OpenVINO compiles a dynamic-shape model for
            this one shape, as DeepSparse does).
        seq_len: Sequence length that will be fed.
        threads: Intra-op threads (ONNX Runtime, OpenVINO) or cores (DeepSparse).
        streams: Concurrent streams (OpenVINO streams, DeepSparse multi-stream scheduler); ONNX
            Runtime ignores it.
        sparse_weights_decompression_rate: OpenVINO only: the CPU plugin's
            ``CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE`` (0..1): int8 MatMul weights with at least
            this fraction of zeros are stored packed. It takes effect only on CPUs with AMX
            (``amx_int8``; see :func:`obert_core.shared.cpu_info`); ``None`` keeps OpenVINO's
            default (off).

    Returns:
        A :class:`Runner` whose ``run(feeds)`` returns the model outputs in graph order.

    Raises:
        EngineNotInstalledError: ``engine`` is not importable; the message says how to get it.
        OnnxModelError: Missing/corrupt file or a file the engine cannot load.
        ShapeMismatchError: The request does not fit the model's static input shapes.
        ObertDeployError: ``sparse_weights_decompression_rate`` outside 0..1 or given for
            another engine than OpenVINO.
    """
    from ._inputs import check_input_shapes

    check_sparse_rate(sparse_weights_decompression_rate, engine)
    require_engine(engine)
    model = load_onnx(path, load_weights=False)
    inputs = onnx_inputs(model)
    check_input_shapes(inputs, batch_size, seq_len, model_name=os.fspath(path))
    extra: dict[str, Any] = {}
    if sparse_weights_decompression_rate is not None:
        extra["sparse_weights_decompression_rate"] = sparse_weights_decompression_rate
    return _FACTORIES[engine](
        os.fspath(path),
        inputs,
        threads,
        batch_size=batch_size,
        seq_len=seq_len,
        streams=streams,
        ir_version=int(model.ir_version),
        op_types=frozenset(node.op_type for node in model.graph.node),
        **extra,
    )
