"""ONNX weight sparsity (float and quantized) and the size report."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from obert_deploy import onnx_weight_sparsity, size_report, size_table_markdown


def _model(
    weights: dict[str, np.ndarray], dq: dict[str, np.ndarray] | None = None
) -> onnx.ModelProto:
    """x @ w for every weight (through DequantizeLinear for names in ``dq``: zero points)."""
    nodes, inits, outputs = [], [], []
    for name, weight in weights.items():
        inits.append(numpy_helper.from_array(weight, name))
        source = name
        if dq and name in dq:
            inits += [
                numpy_helper.from_array(np.float32(0.05), f"{name}_scale"),
                numpy_helper.from_array(dq[name], f"{name}_zp"),
            ]
            nodes.append(
                helper.make_node(
                    "DequantizeLinear", [name, f"{name}_scale", f"{name}_zp"], [f"{name}_f"]
                )
            )
            source = f"{name}_f"
        nodes.append(helper.make_node("MatMul", ["x", source], [f"y_{name}"]))
        outputs.append(helper.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])], outputs, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def _sparse(
    shape: tuple[int, int], sparsity: float, seed: int, dtype: type = np.float32
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype is np.float32:
        array = rng.normal(size=shape).astype(np.float32)
    else:
        array = rng.integers(1, 120, size=shape).astype(dtype)
    flat = array.reshape(-1)
    flat[rng.permutation(flat.size)[: round(sparsity * flat.size)]] = 0
    return array


def test_float_and_quantized_sparsity() -> None:
    uint8 = _sparse((64, 32), 0.5, 2, np.uint8)
    uint8[uint8 == 0] = 128  # zero point 128: "pruned" entries are stored as 128
    model = _model(
        {"dense": _sparse((64, 32), 0.0, 0), "sparse": _sparse((64, 32), 0.9, 1), "q": uint8},
        dq={"q": np.uint8(128)},
    )
    rows = {r.name: r for r in onnx_weight_sparsity(model)}
    assert rows["dense"].sparsity == 0.0
    assert rows["sparse"].sparsity == pytest.approx(0.9, abs=1e-3)
    assert rows["q"].sparsity == pytest.approx(0.5)
    assert rows["q"].dtype == "uint8"
    assert rows["q"].consumers == ("MatMul",)  # seen through DequantizeLinear


def test_size_report_measures_bitmask_storage(tmp_path: Path) -> None:
    dense_w = _sparse((64, 256), 0.0, 3)
    sparse_w = _sparse((64, 256), 0.9, 3)
    dense_path, sparse_path = tmp_path / "dense.onnx", tmp_path / "sparse.onnx"
    onnx.save(_model({"w": dense_w}), str(dense_path))
    onnx.save(_model({"w": sparse_w}), str(sparse_path))
    dense = size_report(dense_path)
    sparse = size_report(sparse_path, reference=dense_path)
    assert sparse.file_bytes == sparse_path.stat().st_size
    assert sparse.gzip_bytes == len(gzip.compress(sparse_path.read_bytes(), 9, mtime=0))
    nnz = int((sparse_w != 0).sum())
    payload = sparse_w.size // 8 + nnz * 4  # bitmask + fp32 non-zeros
    graph_bytes = sparse.bitmask_bytes - payload
    assert 0 < graph_bytes < 300  # only the graph structure remains
    assert dense.bitmask_bytes == graph_bytes + dense_w.nbytes  # no zeros: stored densely
    assert sparse.csr_bytes == graph_bytes + nnz * (4 + 2) + 65 * 4
    assert sparse.weight_sparsity == pytest.approx(0.9, abs=1e-3)
    assert sparse.reference_bytes == dense.file_bytes
    assert sparse.compression_ratio == pytest.approx(
        dense.file_bytes / sparse.best_compressed_bytes
    )
    assert sparse.compression_ratio > 4
    assert dense.compression_ratio < 1.2
    table = size_table_markdown([dense, sparse])
    assert "sparse.onnx" in table and "| 90 % |" in table


def test_size_report_splits_embeddings(tmp_path: Path) -> None:
    table = _sparse((100, 64), 0.0, 4)
    weight = _sparse((64, 256), 0.9, 5)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"]),
        helper.make_node("MatMul", ["emb", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(weight, "w")],
    )
    path = tmp_path / "emb.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8),
        str(path),
    )
    report = size_report(path)
    assert report.embedding_fp32_bytes == table.nbytes
    assert report.non_embedding_fp32_bytes == weight.nbytes
    nnz_bytes = weight.size // 8 + int((weight != 0).sum()) * 4
    assert report.non_embedding_bitmask_gzip_bytes < nnz_bytes  # gzip only shrinks it further
    assert report.non_embedding_ratio == pytest.approx(
        weight.nbytes / report.non_embedding_bitmask_gzip_bytes
    )
    assert report.non_embedding_ratio > 4  # 90 % zeros: ~7x before gzip
    assert report.weight_sparsity == pytest.approx(0.9, abs=1e-3)  # the table is not a "weight"
    assert report.to_dict()["non_embedding_ratio"] == report.non_embedding_ratio


def test_size_report_counts_4bit_embeddings(tmp_path: Path, dynamic_onnx: Path) -> None:
    """Regression: 4-bit (GatherBlockQuantized) tables are embeddings, stored 2 values a byte."""
    from obert_deploy import DynamicInt8Config, quantize_onnx

    e8, e4 = tmp_path / "e8.onnx", tmp_path / "e4.onnx"
    quantize_onnx(dynamic_onnx, e8, DynamicInt8Config())
    quantize_onnx(dynamic_onnx, e4, DynamicInt8Config(embedding_bits=4))
    fp32, int8, four = size_report(dynamic_onnx), size_report(e8), size_report(e4)
    assert fp32.embedding_fp32_bytes > 0
    # The same tables (plus their fp32 scales), not 0 as before.
    assert fp32.embedding_fp32_bytes <= four.embedding_fp32_bytes < 1.1 * fp32.embedding_fp32_bytes
    # The non-embedding weights are the same int8 ones in both files.
    assert four.non_embedding_fp32_bytes == pytest.approx(int8.non_embedding_fp32_bytes, rel=0.01)
    assert four.non_embedding_ratio == pytest.approx(int8.non_embedding_ratio, rel=0.02)
    # Packed 4-bit storage: the bitmask form of the 4-bit file is smaller than the int8 one.
    assert four.bitmask_bytes < int8.bitmask_bytes
    assert four.bitmask_bytes <= four.file_bytes


def test_4bit_tables_are_measured_packed() -> None:
    from obert_deploy.size._size import _stored_bytes

    values = np.array([1, -2, 3, 0, -8], dtype=np.int8)
    packed = _stored_bytes(values, TensorProto.INT4)
    assert len(packed) == 3  # 5 nibbles -> 3 bytes
    assert packed[0] == (1 | ((-2 & 0xF) << 4))
    assert len(_stored_bytes(values, TensorProto.INT8)) == 5
