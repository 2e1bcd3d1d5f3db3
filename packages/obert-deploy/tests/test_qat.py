"""QAT keeps pruning masks exactly zero through fake quantization and export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

pytest.importorskip("torchao")

from obert_deploy import (
    QATConfig,
    UnsupportedTaskError,
    load_onnx,
    load_tokenizer,
    onnx_weight_sparsity,
    pruning_masks,
    qat_export,
    read_glue_tsv,
    tokenize,
)


def _batches(data_dir: Path, checkpoint: Path, n: int = 64, batch: int = 8):
    dataset = read_glue_tsv(data_dir / "train.tsv", max_samples=n)
    feeds = tokenize(
        load_tokenizer(checkpoint),
        dataset.texts,
        16,
        ["input_ids", "attention_mask", "token_type_ids"],
    )
    labels = np.asarray(dataset.labels)
    return [
        ({k: v[i : i + batch] for k, v in feeds.items()}, labels[i : i + batch])
        for i in range(0, n, batch)
    ]


def test_pruning_masks(tiny_model: torch.nn.Module) -> None:
    masks = pruning_masks(tiny_model)
    assert len(masks) == 12
    # keep-masks: True = kept, so 20 % of each 80 %-sparse tensor is True
    assert all(abs(float(m.float().mean()) - 0.2) < 0.01 for m in masks.values())


@pytest.mark.parametrize("engine", ["deepsparse"])
def test_qat_keeps_masks_and_runs_on_ort(
    tmp_path: Path, tiny_model: torch.nn.Module, tiny_checkpoint: Path, data_dir: Path, engine: str
) -> None:
    out = tmp_path / "qat.onnx"
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    report = qat_export(
        tiny_model,
        out,
        _batches(data_dir, tiny_checkpoint),
        QATConfig(engine=engine, steps=6, learning_rate=5e-3, seq_len=16, export_batch_size=2),
    )
    # the caller's model is untouched
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())
    assert report.masks_kept and len(report.weights) == 12
    assert all(r.zeros_after_training and r.zeros_after_fake_quant for r in report.weights)
    assert len(report.losses) == 6 and all(np.isfinite(report.losses))
    model = load_onnx(out)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert model.ir_version <= 8 and "LayerNormalization" not in ops
    # independent check: 12 int8 weights with >= 80 % zero-point entries
    int8 = [w for w in onnx_weight_sparsity(model) if w.dtype == "int8"]
    assert sum(w.sparsity >= 0.799 for w in int8) >= 12
    feeds = {
        "input_ids": np.full((2, 16), 7, np.int64),
        "attention_mask": np.ones((2, 16), np.int64),
        "token_type_ids": np.zeros((2, 16), np.int64),
    }
    (logits,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert logits.shape == (2, 2) and np.isfinite(logits).all()
    assert "masks kept: yes" in report.to_markdown()


@pytest.mark.slow
def test_qat_dynamic_shapes_for_onnxruntime(
    tmp_path: Path, tiny_model: torch.nn.Module, tiny_checkpoint: Path, data_dir: Path
) -> None:
    out = tmp_path / "qat_ort.onnx"
    report = qat_export(
        tiny_model,
        out,
        _batches(data_dir, tiny_checkpoint),
        QATConfig(engine="onnxruntime", steps=3, seq_len=16),
    )
    assert report.masks_kept and report.opset == 18
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert report.max_abs_diff < 5e-2
    for batch, seq in ((1, 16), (5, 16), (3, 9), (2, 40)):  # batch and sequence are dynamic
        feeds = {
            n: np.ones((batch, seq), np.int64)
            for n in ("input_ids", "attention_mask", "token_type_ids")
        }
        assert session.run(None, feeds)[0].shape == (batch, 2)


def test_qat_rejects_unsupported_task_and_bad_batches(
    tmp_path: Path, tiny_model: torch.nn.Module
) -> None:
    with pytest.raises(UnsupportedTaskError, match="'question-answering'"):
        QATConfig(task="question-answering")
    bad = [
        (
            {
                "input_ids": np.ones((2, 8), np.int64),
                "attention_mask": np.ones((2, 8), np.int64),
                "token_type_ids": np.zeros((2, 8), np.int64),
            },
            np.zeros(2, np.int64),
        )
    ]
    with pytest.raises(ValueError, match=r"sequence length 8, config\.seq_len is 16"):
        qat_export(tiny_model, tmp_path / "x.onnx", bad, QATConfig(seq_len=16, steps=1))
    assert not (tmp_path / "x.onnx").exists()
