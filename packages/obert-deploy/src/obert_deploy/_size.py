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

from ._inputs import load_onnx
from ._sparsity import _zero_points, onnx_weight_sparsity

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

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict including the derived figures."""
        return {
            **asdict(self),
            "best_compressed_bytes": self.best_compressed_bytes,
            "compression_ratio": self.compression_ratio,
        }


def _tensor_payloads(model: onnx.ModelProto) -> tuple[bytes, int, int]:
    """Return (bitmask byte stream, CSR estimate bytes, dense fp32 bytes) of all initializers."""
    zero_points = _zero_points(model)
    chunks: list[bytes] = []
    csr_total = 0
    fp32_total = 0
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        dense = np.ascontiguousarray(array).tobytes()
        fp32_total += 4 * array.size if array.dtype != np.float64 else 8 * array.size
        zero = zero_points.get(init.name, np.zeros((), dtype=array.dtype))
        nonzero = array != zero if array.size else np.zeros(0, dtype=bool)
        nnz = int(nonzero.sum())
        bitmask = np.packbits(nonzero.reshape(-1)).tobytes() + array[nonzero].tobytes()
        chunks.append(bitmask if len(bitmask) < len(dense) else dense)
        if array.ndim == 2:
            index_bytes = 2 if array.shape[1] < 65536 else 4
            csr = nnz * (array.itemsize + index_bytes) + (array.shape[0] + 1) * 4
            csr_total += min(csr, len(dense))
        else:
            csr_total += len(dense)
    return b"".join(chunks), csr_total, fp32_total


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
    """
    file = Path(path)
    model = load_onnx(file)
    raw = file.read_bytes()
    stream, csr_tensors, fp32_tensors = _tensor_payloads(model)
    graph_only = onnx.ModelProto()
    graph_only.CopyFrom(model)
    del graph_only.graph.initializer[:]
    graph_bytes = graph_only.SerializeToString()
    weights = [w for w in onnx_weight_sparsity(model) if not w.is_embedding]
    total = sum(int(np.prod(w.shape)) for w in weights)
    sparsity = sum(w.sparsity * int(np.prod(w.shape)) for w in weights) / total if total else 0.0
    return SizeReport(
        path=str(file),
        file_bytes=len(raw),
        gzip_bytes=len(gzip.compress(raw, compresslevel=gzip_level, mtime=0)),
        bitmask_bytes=len(graph_bytes) + len(stream),
        bitmask_gzip_bytes=len(
            gzip.compress(graph_bytes + stream, compresslevel=gzip_level, mtime=0)
        ),
        csr_bytes=len(graph_bytes) + csr_tensors,
        dense_fp32_bytes=len(graph_bytes) + fp32_tensors,
        weight_sparsity=float(sparsity),
        reference_bytes=Path(reference).stat().st_size if reference is not None else None,
    )


def _mb(value: int) -> str:
    return f"{value / 1e6:.2f}"


def size_table_markdown(reports: list[SizeReport]) -> str:
    """Render size reports as a markdown table (sizes in MB = 10^6 bytes)."""
    lines = [
        "| model | sparsity | file MB | gzip MB | bitmask MB | bitmask+gzip MB | CSR est. MB | "
        "ratio vs dense fp32 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in reports:
        lines.append(
            f"| {Path(r.path).name} | {r.weight_sparsity:.0%} | {_mb(r.file_bytes)} | "
            f"{_mb(r.gzip_bytes)} | {_mb(r.bitmask_bytes)} | {_mb(r.bitmask_gzip_bytes)} | "
            f"{_mb(r.csr_bytes)} | {r.compression_ratio:.1f}x |"
        )
    return "\n".join(lines)
