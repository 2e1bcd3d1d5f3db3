"""Post-training int8 quantization of ONNX models with ONNX Runtime.

Two methods, each a config dataclass mapped to a handler (the torchao ``quantize_`` pattern):

* :class:`DynamicInt8Config`: weights to int8 offline, activations quantized at run time
  (``MatMulInteger``). No calibration data. ONNX Runtime only (DeepSparse does not accelerate
  dynamic quantization ops).
* :class:`StaticInt8Config`: activation ranges calibrated on task data, written in QDQ format
  (``QuantizeLinear``/``DequantizeLinear`` pairs, ONNX Runtime's recommended format) or in
  QOperator format (``QLinearMatMul``). Both run on ONNX Runtime and DeepSparse, but DeepSparse
  1.8 only accelerates the QOperator form with per-tensor scales (MiniLM-L6, 90 % sparse, batch
  1, measured here: QOperator 3.4 ms, per-tensor QDQ 12.2 ms, per-channel QDQ 23.6 ms, fp32
  3.7 ms);
  :meth:`StaticInt8Config.for_engine` returns the measured best settings per engine.

Weights are quantized symmetrically (int8, zero point 0), so pruned weights stay exactly zero.
``reduce_range`` (7-bit weights) is switched on by default only on CPUs without VNNI, where
the int8 ``vpmaddubsw`` path can saturate.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from obert_core.shared import atomic_output, cpu_info

from .._checks import check_finite_initializers
from .._choices import CALIBRATION_METHODS, ENGINES, QUANT_FORMATS
from .._errors import ObertDeployError, brief
from .._validate import check_fields, check_path
from ..bench._inputs import load_onnx
from ..export._onnx_compat import opset_version
from ..size._sparsity import onnx_weight_sparsity

__all__ = [
    "DynamicInt8Config",
    "QuantizeReport",
    "StaticInt8Config",
    "quantize_onnx",
    "register_quantize_handler",
]

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class DynamicInt8Config:
    """Dynamic int8 quantization (ONNX Runtime ``quantize_dynamic``).

    Attributes:
        per_channel: One weight scale per output channel instead of per tensor.
        reduce_range: 7-bit weights; ``None`` means "only on CPUs without VNNI".
        op_types: Op types whose weights are quantized (``Gather`` = embedding tables).
        embedding_bits: 8 (int8 ``Gather``, with ``"Gather"`` in ``op_types``) or 4: embedding
            tables as 4-bit blocks (``com.microsoft.GatherBlockQuantized``, symmetric
            round-to-nearest, one fp32 scale per ``embedding_block_size`` values of a row).
            Pruning leaves the embeddings dense, so in a small-hidden model such as MiniLM-L6
            (52 % of the weights in the word embeddings) they dominate the compressed size;
            4-bit embeddings with per-tensor int8 weights took the oBERT 90 %-sparse model from
            9.0x to 10.3x smaller than dense fp32 after gzip (docs/results.md). ONNX Runtime
            only.
        embedding_block_size: Values per scale of the 4-bit embeddings (16..256, power of 2).
    """

    per_channel: bool = True
    reduce_range: bool | None = None
    op_types: tuple[str, ...] = ("MatMul", "Gather")
    embedding_bits: int = 8
    embedding_block_size: int = 32

    def __post_init__(self) -> None:
        check_fields(self)
        if self.embedding_bits not in (4, 8):
            raise ObertDeployError(
                f"embedding_bits {self.embedding_bits} is not supported; use 8 (int8) or 4"
            )
        size = self.embedding_block_size
        if size < 16 or size > 256 or size & (size - 1):
            raise ObertDeployError(
                f"embedding_block_size {size} is not supported; use a power of 2 in 16..256"
            )


@dataclass(frozen=True)
class StaticInt8Config:
    """Static QDQ int8 quantization (ONNX Runtime ``quantize_static``).

    Attributes:
        per_channel: One weight scale per output channel.
        reduce_range: 7-bit weights; ``None`` means "only on CPUs without VNNI".
        calibration_method: ``minmax``, ``entropy`` or ``percentile``.
        activation_type: ``uint8`` (asymmetric, the x86 default) or ``int8``.
        op_types: Op types to quantize.
        quant_format: ``qdq`` (QuantizeLinear/DequantizeLinear pairs) or ``qoperator``
            (``QLinearMatMul`` and friends).
    """

    per_channel: bool = True
    reduce_range: bool | None = None
    calibration_method: str = "minmax"
    activation_type: str = "uint8"
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Gather")
    quant_format: str = "qdq"

    @classmethod
    def for_engine(cls, engine: str, **overrides: Any) -> StaticInt8Config:
        """Measured best static settings for ``engine``.

        ONNX Runtime: QDQ, per-channel weights, MatMul/Gemm/Gather (embeddings in int8 too).
        OpenVINO gets the same file as ONNX Runtime (its settings are not tuned separately).
        DeepSparse 1.8: QOperator, per-tensor weights, MatMul only (it runs per-channel and QDQ
        graphs and quantized embedding lookups through its slow fallback path).
        """
        if engine == "deepsparse":
            base = cls(per_channel=False, op_types=("MatMul",), quant_format="qoperator")
        elif engine in ("onnxruntime", "openvino"):
            base = cls()
        else:
            raise ObertDeployError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        return replace(base, **overrides)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ObertDeployError(
                f"unknown calibration method {self.calibration_method!r}; choose one of "
                f"{', '.join(CALIBRATION_METHODS)}"
            )
        if self.activation_type not in ("uint8", "int8"):
            raise ObertDeployError(
                f"activation_type must be 'uint8' or 'int8', got {self.activation_type!r}"
            )
        if self.quant_format not in QUANT_FORMATS:
            raise ObertDeployError(
                f"unknown quantization format {self.quant_format!r}; choose qdq or qoperator"
            )


QuantizeConfig = DynamicInt8Config | StaticInt8Config


@dataclass
class QuantizeReport:
    """What :func:`quantize_onnx` did.

    Attributes:
        input: Source fp32 model.
        output: Written int8 model.
        method: ``dynamic`` or ``static``.
        config: The config as a dict.
        input_bytes: Source file size.
        output_bytes: Output file size.
        sparsity_before: Initializer name -> sparsity in the source (non-embedding weights).
        sparsity_after: Same weights in the output (zero = zero point).
        calibration_batches: Batches used for calibration (static only).
        seconds: Wall time.
    """

    input: str
    output: str
    method: str
    config: dict[str, Any]
    input_bytes: int
    output_bytes: int
    sparsity_before: dict[str, float] = field(default_factory=dict)
    sparsity_after: dict[str, float] = field(default_factory=dict)
    calibration_batches: int = 0
    seconds: float = 0.0

    @property
    def sparsity_kept(self) -> bool:
        """True when every quantized weight has at least the zeros of its fp32 source."""
        return all(
            self.sparsity_after.get(name, -1.0) >= before - 1e-12
            for name, before in self.sparsity_before.items()
            if name in self.sparsity_after
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {**asdict(self), "sparsity_kept": self.sparsity_kept}

    def to_markdown(self) -> str:
        """Short markdown summary."""
        matched = [n for n in self.sparsity_before if n in self.sparsity_after]
        return (
            f"Quantized `{self.input}` -> `{self.output}` ({self.method}, "
            f"{self.input_bytes / 1e6:.2f} MB -> {self.output_bytes / 1e6:.2f} MB). "
            f"Weights quantized: {len(matched)}; zeros kept: "
            f"{'yes' if self.sparsity_kept else 'NO'}."
        )


_Handler = Callable[[Path, Path, Any, Iterable[dict[str, np.ndarray]] | None], int]
_HANDLERS: dict[type, _Handler] = {}


def register_quantize_handler(config_type: type) -> Callable[[_Handler], _Handler]:
    """Register the function that applies configs of ``config_type`` (decorator).

    Args:
        config_type: Config class dispatched on by :func:`quantize_onnx`.

    Returns:
        A decorator that registers and returns a handler
        ``(source, target, config, calibration) -> calibration batches used``.
    """

    def decorator(func: _Handler) -> _Handler:
        _HANDLERS[config_type] = func
        return func

    return decorator


def _reduce_range(value: bool | None) -> bool:
    return (not cpu_info().vnni) if value is None else value


@register_quantize_handler(DynamicInt8Config)
def _dynamic(
    source: Path, target: Path, config: DynamicInt8Config, _: Iterable[dict[str, np.ndarray]] | None
) -> int:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    op_types = list(config.op_types)
    extra: dict[str, Any] = {}
    staged: Path | None = None
    if config.embedding_bits == 4:
        staged = target.with_name(target.stem + ".emb4.onnx")
        if _embeddings_to_4bit(source, staged, config.embedding_block_size) == 0:
            raise ObertDeployError(
                f"{str(source)!r} has no Gather over a 2-D float initializer (embedding table) "
                "to quantize to 4 bits; leave embedding_bits at 8"
            )
        source = staged
        op_types = [t for t in op_types if t != "Gather"]
        extra["DefaultTensorType"] = onnx.TensorProto.FLOAT  # contrib op outputs have no type
    try:
        quantize_dynamic(
            source,
            target,
            op_types_to_quantize=op_types,
            per_channel=config.per_channel,
            reduce_range=_reduce_range(config.reduce_range),
            weight_type=QuantType.QInt8,
            extra_options=extra,
        )
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)
    return 0


def _embeddings_to_4bit(source: Path, target: Path, block_size: int) -> int:
    """4-bit blocks for every ``Gather`` over a 2-D float initializer; returns their number.

    The quantizer raises the default-domain opset to 21 (``int4`` tensors); ONNX Runtime runs
    the result, DeepSparse 1.8 cannot load it.
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    model = onnx.load(str(source))
    tables = {
        init.name
        for init in model.graph.initializer
        if len(init.dims) == 2 and init.data_type == onnx.TensorProto.FLOAT
    }
    gathers = []
    for index, node in enumerate(model.graph.node):
        if node.op_type == "Gather" and node.input[0] in tables:
            node.name = node.name or f"obert_gather_{index}"
            gathers.append(node.name)
    if not gathers:
        return 0
    config = DefaultWeightOnlyQuantConfig(
        block_size=block_size,
        is_symmetric=True,
        op_types_to_quantize=("Gather",),
        quant_axes=(("Gather", 1),),
        bits=4,
    )
    quantizer = MatMulNBitsQuantizer(model, algo_config=config, nodes_to_include=gathers)
    with np.errstate(divide="ignore", invalid="ignore"):  # all-zero blocks: 0/0 masked by where
        quantizer.process()
    onnx.save(quantizer.model.model, str(target))
    return len(gathers)


class _ListReader:
    """Calibration data reader over an iterable of feed dicts (duck-types CalibrationDataReader)."""

    def __init__(self, batches: Iterable[dict[str, np.ndarray]]) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(batches)
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is not None:
            self.count += 1
        return batch

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.get_next()
        if batch is None:
            raise StopIteration
        return batch


@register_quantize_handler(StaticInt8Config)
def _static(
    source: Path,
    target: Path,
    config: StaticInt8Config,
    calibration: Iterable[dict[str, np.ndarray]] | None,
) -> int:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if calibration is None:
        raise ObertDeployError(
            "static quantization needs calibration data: pass --calibration-data FILE.tsv and "
            "--tokenizer CHECKPOINT_DIR (or calibration batches in the Python API)"
        )
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }

    class Reader(_ListReader, CalibrationDataReader):  # type: ignore[misc]
        pass

    batches = list(calibration)
    if not batches:
        raise ObertDeployError("the calibration data was empty; pass at least one batch")
    reader = Reader(batches)
    quantize_static(
        source,
        target,
        reader,
        quant_format=QuantFormat.QDQ if config.quant_format == "qdq" else QuantFormat.QOperator,
        op_types_to_quantize=list(config.op_types),
        per_channel=config.per_channel,
        reduce_range=_reduce_range(config.reduce_range),
        activation_type=QuantType.QUInt8 if config.activation_type == "uint8" else QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=methods[config.calibration_method],
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )
    return reader.count


#: Ops that only appear in an already quantized graph.
_QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "QLinearMatMul",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "GatherBlockQuantized",
    }
)


def _check_source(model: onnx.ModelProto, path: Path) -> None:
    """Refuse an already quantized source or one with NaN/inf weights."""
    quantized = sorted({node.op_type for node in model.graph.node} & _QUANTIZED_OPS)
    if quantized:
        raise ObertDeployError(
            f"{str(path)!r} is already quantized ({', '.join(quantized[:3])}); quantize the fp32 "
            "export (`obert-deploy export`) instead"
        )
    check_finite_initializers(model, path)


def _weight_sparsity(model: onnx.ModelProto) -> dict[str, float]:
    return {w.name: w.sparsity for w in onnx_weight_sparsity(model) if not w.is_embedding}


def quantize_onnx(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: QuantizeConfig | None = None,
    *,
    calibration: Iterable[dict[str, np.ndarray]] | None = None,
) -> QuantizeReport:
    """Quantize an fp32 ONNX model to int8 and write it atomically.

    The output keeps the source's opset and IR version when they are lower than what ONNX
    Runtime's quantizer writes, so a DeepSparse-targeted export stays loadable by DeepSparse.

    Args:
        model: Source fp32 ONNX file.
        output: Destination file.
        config: :class:`DynamicInt8Config` (default) or :class:`StaticInt8Config`.
        calibration: Feed dicts for static calibration, shaped like the model inputs.

    Returns:
        A :class:`QuantizeReport` with sizes and per-weight sparsity before/after.

    Raises:
        OnnxModelError: Missing or corrupt source, or one with NaN/inf weights.
        ObertDeployError: Unknown config type, missing calibration data, an already quantized
            source, or ``output`` equal to ``model``.
    """
    check_path(model, "model", "quantize_onnx")
    check_path(output, "output", "quantize_onnx")
    config = config or DynamicInt8Config()
    handler = _HANDLERS.get(type(config))
    if handler is None:
        raise ObertDeployError(
            f"no quantization handler for {type(config).__name__}; use one of "
            f"{', '.join(t.__name__ for t in _HANDLERS)}"
        )
    start = time.perf_counter()
    source = Path(model)
    source_proto = load_onnx(source)
    _check_source(source_proto, source)
    before = _weight_sparsity(source_proto)
    out = Path(output)
    if out.resolve() == source.resolve():
        raise ObertDeployError(
            f"output {str(out)!r} is the source model; pass another file, e.g. "
            f"{str(source.with_name(source.stem + '-int8.onnx'))!r}"
        )
    with atomic_output(out) as tmp:
        try:
            batches = handler(source, tmp, config, calibration)
        except ObertDeployError:
            raise
        except Exception as exc:
            raise ObertDeployError(
                f"ONNX Runtime could not quantize {str(source)!r} ({brief(exc)}); check that it "
                "is an fp32 model written by `obert-deploy export`"
            ) from exc
        quantized = onnx.load(str(tmp))
        changed = False
        if quantized.ir_version > source_proto.ir_version:
            quantized.ir_version = source_proto.ir_version
            changed = True
        if opset_version(quantized) != opset_version(source_proto):
            _LOG.info(
                "quantizer changed the opset from %d to %d",
                opset_version(source_proto),
                opset_version(quantized),
            )
        if changed:
            onnx.save(quantized, str(tmp))
        after = _weight_sparsity(quantized)
    after_by_source = {}
    for name, value in after.items():
        base = name.removesuffix("_quantized")
        after_by_source[base if base in before else name] = value
    return QuantizeReport(
        input=str(source),
        output=str(out),
        method="dynamic"
        if isinstance(config, DynamicInt8Config)
        else f"static-{config.quant_format}",
        config=asdict(config),
        input_bytes=source.stat().st_size,
        output_bytes=out.stat().st_size,
        sparsity_before=before,
        sparsity_after=after_by_source,
        calibration_batches=batches,
        seconds=time.perf_counter() - start,
    )
