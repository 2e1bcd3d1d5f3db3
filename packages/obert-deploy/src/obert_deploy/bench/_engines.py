"""Inference engines behind one small interface: ONNX Runtime and DeepSparse.

DeepSparse 1.8.0 is end-of-life, licensed for evaluation only, and needs Python < 3.12,
``onnx<1.15`` and ``numpy<2``; it lives in its own virtual environment (see
:data:`DEEPSPARSE_INSTALL_HINT`). Neither engine is imported until it is used.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .._choices import ENGINES
from .._errors import EngineNotInstalledError, ObertDeployError, OnnxModelError, brief
from ._inputs import OnnxInput, is_static, load_onnx, onnx_inputs

__all__ = [
    "DEEPSPARSE_INSTALL_HINT",
    "ENGINES",
    "Runner",
    "create_runner",
    "engine_available",
    "engine_version",
    "require_engine",
]

_LOG = logging.getLogger(__name__)
#: Highest ONNX IR version DeepSparse 1.8.0's bundled ONNX Runtime can load.
_DEEPSPARSE_MAX_IR = 9
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
    module = {"onnxruntime": "onnxruntime", "deepsparse": "deepsparse"}.get(engine)
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
    raise EngineNotInstalledError(
        f"{engine} is not installed in this Python environment ({sys.executable}); "
        f"install it with `pip install {engine}`"
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
        kwargs["input_shapes"] = [[batch_size, seq_len] for _ in inputs]
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


_FACTORIES: dict[str, Callable[..., Runner]] = {
    "onnxruntime": _ort_runner,
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
) -> Runner:
    """Compile ``path`` with ``engine`` for ``(batch_size, seq_len)`` inputs.

    Args:
        engine: ``"onnxruntime"`` or ``"deepsparse"``.
        path: ONNX file.
        batch_size: Batch size that will be fed.
        seq_len: Sequence length that will be fed.
        threads: Intra-op threads (ONNX Runtime) or cores (DeepSparse).
        streams: Concurrent streams (DeepSparse multi-stream scheduler); ONNX Runtime ignores it.

    Returns:
        A :class:`Runner` whose ``run(feeds)`` returns the model outputs in graph order.

    Raises:
        EngineNotInstalledError: ``engine`` is not importable; the message says how to get it.
        OnnxModelError: Missing/corrupt file or a file the engine cannot load.
        ShapeMismatchError: The request does not fit the model's static input shapes.
    """
    from ._inputs import check_input_shapes

    require_engine(engine)
    model = load_onnx(path, load_weights=False)
    inputs = onnx_inputs(model)
    check_input_shapes(inputs, batch_size, seq_len, model_name=os.fspath(path))
    return _FACTORIES[engine](
        os.fspath(path),
        inputs,
        threads,
        batch_size=batch_size,
        seq_len=seq_len,
        streams=streams,
        ir_version=int(model.ir_version),
        op_types=frozenset(node.op_type for node in model.graph.node),
    )
