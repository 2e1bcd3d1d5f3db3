"""Model size report: file, gzip, sparse bitmask storage, CSR estimate, ratio vs dense fp32.

Sparse storage is *measured*, not estimated: every initializer is serialised either densely or
as a bitmask (one bit per entry, ``numpy.packbits``) followed by its non-zero values, whichever
is smaller (the ``sparse_bitmask`` idea of compressed-tensors); the graph without initializers
is added, and the whole byte stream is also gzip-compressed. For integer (quantized) tensors the
"zero" is the quantization zero point. The CSR figure is an estimate: ``nnz * (value + column
index) + (rows + 1) * 4`` bytes with 16-bit column indices when a row has < 65536 columns.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .._errors import OnnxModelError
from .._format import percent
from .._validate import check_at_least, check_path
from ..bench._inputs import load_onnx
from ._sparsity import _zero_points, embedding_initializers, onnx_weight_sparsity

__all__ = ["SizeReport", "size_report", "size_table_markdown"]


@dataclass(frozen=True)
class SizeReport:
    """Sizes of one ONNX model, in bytes.

    Attributes:
        path: The ONNX file.
        file_bytes: Size on disk.
        gzip_bytes: Size of the file after ``gzip -<level>``.
        bitmask_bytes: Size with every sparse-enough tensor stored as bitmask + non-zeros.
        bitmask_gzip_bytes: ``bitmask_bytes`` after gzip.
        csr_bytes: CSR estimate (2-D tensors in CSR when smaller, others dense).
        dense_fp32_bytes: Size the same parameters take as dense fp32 (integer tensors counted at
            4 bytes per entry) plus the graph: the "uncompressed fp32" baseline of this model.
        weight_sparsity: Fraction of zeros over non-embedding 2-D weights.
        embedding_fp32_bytes: Dense fp32 size of the embedding tables (initializers read only by
            ``Gather`` or the 4-bit ``GatherBlockQuantized``, directly or through
            ``DequantizeLinear``, with their scales and zero points); encoder pruning leaves them.
        non_embedding_fp32_bytes: Dense fp32 size of all other initializers.
        non_embedding_bitmask_gzip_bytes: Bitmask form of those other initializers after gzip.
        reference_bytes: ``file_bytes`` of the reference model (dense fp32 export), if given.
    """

    path: str
    file_bytes: int
    gzip_bytes: int
    bitmask_bytes: int
    bitmask_gzip_bytes: int
    csr_bytes: int
    dense_fp32_bytes: int
    weight_sparsity: float
    embedding_fp32_bytes: int = 0
    non_embedding_fp32_bytes: int = 0
    non_embedding_bitmask_gzip_bytes: int = 0
    reference_bytes: int | None = None

    @property
    def best_compressed_bytes(self) -> int:
        """Smallest of the compressed forms (gzip of the file, gzip of the bitmask form)."""
        return min(self.gzip_bytes, self.bitmask_gzip_bytes)

    @property
    def compression_ratio(self) -> float:
        """Reference (or dense fp32) bytes divided by :attr:`best_compressed_bytes`."""
        baseline = self.reference_bytes or self.dense_fp32_bytes
        return baseline / self.best_compressed_bytes

    @property
    def non_embedding_ratio(self) -> float:
        """Dense fp32 bytes of the non-embedding weights over their bitmask+gzip bytes."""
        if not self.non_embedding_bitmask_gzip_bytes:
            return 0.0
        return self.non_embedding_fp32_bytes / self.non_embedding_bitmask_gzip_bytes

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict including the derived figures."""
        return {
            **asdict(self),
            "best_compressed_bytes": self.best_compressed_bytes,
            "compression_ratio": self.compression_ratio,
            "non_embedding_ratio": self.non_embedding_ratio,
        }


@dataclass
class _Payload:
    """Serialised tensors and size tallies, split into embedding and other tensors."""

    embedding: list[bytes]
    other: list[bytes]
    csr_bytes: int = 0
    embedding_fp32: int = 0
    other_fp32: int = 0


#: 4-bit tensor types (UINT4 = 21, INT4 = 22; onnx < 1.16, as in the DeepSparse environment, has
#: no names for them): NumPy holds one value per byte, the file two.
_UINT4 = int(getattr(onnx.TensorProto, "UINT4", 21))
_FOUR_BIT = {_UINT4, int(getattr(onnx.TensorProto, "INT4", 22))}


def _stored_bytes(values: np.ndarray, data_type: int) -> bytes:
    """``values`` as the file stores them: two 4-bit values per byte for INT4/UINT4."""
    if data_type not in _FOUR_BIT:
        return np.ascontiguousarray(values).tobytes()
    nibbles = values.reshape(-1).astype(np.int16).astype(np.uint8) & 0x0F
    if nibbles.size % 2:
        nibbles = np.concatenate([nibbles, np.zeros(1, dtype=np.uint8)])
    return (nibbles[0::2] | (nibbles[1::2] << 4)).tobytes()


def _default_zero(init: onnx.TensorProto, array: np.ndarray) -> np.ndarray:
    """The stored value of 0.0 when no zero point is given (8 for ONNX Runtime's UINT4)."""
    if init.data_type == _UINT4:
        return np.full((), 8, dtype=array.dtype)
    return np.zeros((), dtype=array.dtype)


def _tensor_payloads(model: onnx.ModelProto) -> _Payload:
    """Serialise every initializer densely or as bitmask + non-zeros, whichever is smaller."""
    zero_points = _zero_points(model)
    embeddings = embedding_initializers(model)
    payload = _Payload(embedding=[], other=[])
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        dense = _stored_bytes(array, init.data_type)
        fp32 = 4 * array.size if array.dtype != np.float64 else 8 * array.size
        zero = zero_points.get(init.name, _default_zero(init, array))
        nonzero = array != zero if array.size else np.zeros(0, dtype=bool)
        nnz = int(nonzero.sum())
        bitmask = np.packbits(nonzero.reshape(-1)).tobytes() + _stored_bytes(
            array[nonzero], init.data_type
        )
        chunk = bitmask if len(bitmask) < len(dense) else dense
        if init.name in embeddings:
            payload.embedding.append(chunk)
            payload.embedding_fp32 += fp32
        else:
            payload.other.append(chunk)
            payload.other_fp32 += fp32
        if array.ndim == 2:
            index_bytes = 2 if array.shape[1] < 65536 else 4
            value_bytes = 0.5 if init.data_type in _FOUR_BIT else array.itemsize
            csr = int(nnz * (value_bytes + index_bytes)) + (array.shape[0] + 1) * 4
            payload.csr_bytes += min(csr, len(dense))
        else:
            payload.csr_bytes += len(dense)
    return payload


def size_report(
    path: str | os.PathLike[str],
    *,
    reference: str | os.PathLike[str] | None = None,
    gzip_level: int = 9,
) -> SizeReport:
    """Measure the storage size of an ONNX model in several formats.

    Args:
        path: ONNX file.
        reference: Dense fp32 ONNX file to compare against (ratio = its file size divided by
            this model's best compressed size). Without it the ratio uses the model's own dense
            fp32 size.
        gzip_level: gzip compression level (1-9).

    Returns:
        The :class:`SizeReport` of ``path``.

    Raises:
        OnnxModelError: ``path`` or ``reference`` is missing, a directory or not an ONNX file.
    """
    check_path(path, "path", "size_report")
    check_path(reference, "reference", "size_report", optional=True)
    check_at_least(gzip_level, "gzip_level", "size_report", 1, high=9)
    if reference is not None:
        if not Path(reference).exists():
            raise OnnxModelError(
                f"reference model {os.fspath(reference)!r} does not exist; pass the dense fp32 "
                "export with --reference (create it with `obert-deploy export`) or leave "
                "--reference out to compare with the model's own dense fp32 size"
            )
        load_onnx(reference, load_weights=False)  # a directory or a corrupt file: clear error
    file = Path(path)
    model = load_onnx(file)
    raw = file.read_bytes()
    payload = _tensor_payloads(model)
    embedding_stream = b"".join(payload.embedding)
    other_stream = b"".join(payload.other)
    graph_only = onnx.ModelProto()
    graph_only.CopyFrom(model)
    del graph_only.graph.initializer[:]
    graph_bytes = graph_only.SerializeToString()
    weights = [w for w in onnx_weight_sparsity(model) if not w.is_embedding]
    total = sum(int(np.prod(w.shape)) for w in weights)
    sparsity = sum(w.sparsity * int(np.prod(w.shape)) for w in weights) / total if total else 0.0

    def gz(data: bytes) -> int:
        return len(gzip.compress(data, compresslevel=gzip_level, mtime=0))

    return SizeReport(
        path=str(file),
        file_bytes=len(raw),
        gzip_bytes=gz(raw),
        bitmask_bytes=len(graph_bytes) + len(embedding_stream) + len(other_stream),
        bitmask_gzip_bytes=gz(graph_bytes + embedding_stream + other_stream),
        csr_bytes=len(graph_bytes) + payload.csr_bytes,
        dense_fp32_bytes=len(graph_bytes) + payload.embedding_fp32 + payload.other_fp32,
        weight_sparsity=float(sparsity),
        embedding_fp32_bytes=payload.embedding_fp32,
        non_embedding_fp32_bytes=payload.other_fp32,
        non_embedding_bitmask_gzip_bytes=gz(other_stream) if other_stream else 0,
        reference_bytes=Path(reference).stat().st_size if reference is not None else None,
    )


def _mb(value: int) -> str:
    return f"{value / 1e6:.2f}"


def size_table_markdown(reports: list[SizeReport]) -> str:
    """Render size reports as a markdown table (sizes in MB = 10^6 bytes)."""
    lines = [
        "| model | sparsity | file MB | gzip MB | bitmask MB | bitmask+gzip MB | CSR est. MB | "
        "ratio vs dense fp32 | non-embedding ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in reports:
        lines.append(
            f"| {Path(r.path).name} | {percent(r.weight_sparsity, 0)} | {_mb(r.file_bytes)} | "
            f"{_mb(r.gzip_bytes)} | {_mb(r.bitmask_bytes)} | {_mb(r.bitmask_gzip_bytes)} | "
            f"{_mb(r.csr_bytes)} | {r.compression_ratio:.1f}x | {r.non_embedding_ratio:.1f}x |"
        )
    return "\n".join(lines)
