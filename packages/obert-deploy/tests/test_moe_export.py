"""Mixture-of-experts models export (issue 18): pruned or not, as docs/deploy.md says.

transformers 5 runs fused experts through ``grouped_mm`` (a custom op on CPU with no ONNX
conversion: ``ConversionError``); the export switches them to ``batched_mm`` for the export and
restores the caller's choice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

import obert_deploy as od

transformers = pytest.importorskip("transformers")


def _tiny_moe() -> Any:
    torch.manual_seed(0)
    config = transformers.OlmoeConfig(
        vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, num_experts=4, num_experts_per_tok=2,
        max_position_embeddings=64,
    )  # fmt: skip
    return transformers.OlmoeModel(config).eval()


@pytest.mark.slow
@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
def test_a_moe_model_exports_with_parity(tmp_path: Path, pruned: bool) -> None:
    model = _tiny_moe()
    before = model.config._experts_implementation
    if pruned:  # structured expert pruning zeroes neurons of the fused 3-D tensors
        with torch.no_grad():
            for layer in model.layers:
                layer.mlp.experts.down_proj[:, :, ::2] = 0.0
    out = tmp_path / "moe.onnx"
    report = od.export_onnx(
        model, out, od.ExportConfig(task="feature-extraction", seq_len=16, batch_size=2)
    )
    assert out.is_file()
    assert max(report.max_abs_diff.values()) < 1e-4
    assert model.config._experts_implementation == before  # the caller's model is unchanged
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    ids = np.arange(16, dtype=np.int64)[None, :] % 64
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    with torch.no_grad():
        expected = model(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
    np.testing.assert_allclose(session.run(None, feeds)[0], expected, atol=1e-4)
