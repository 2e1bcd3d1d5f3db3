"""A checkpoint with encoder layers dropped (``obert-train drop-layers``) is just a config to us.

obert-deploy must export, shrink-check and evaluate such checkpoints without obert-train: here
the dropping is done by hand (a 2-layer config holding layers 1 and 3 of a 4-layer model, the
form ``obert_train.drop_layers`` writes), and the ONNX export must match PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
import transformers

from obert_deploy import ExportConfig, evaluate, export_onnx

from .conftest import _prune_, _save_tokenizer, _tiny_config


@pytest.fixture(scope="module")
def dropped_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    full_config, small_config = _tiny_config(), _tiny_config()
    full_config.num_hidden_layers = 4
    full = transformers.BertForSequenceClassification(full_config).eval()
    _prune_(full, 0.8)
    small = transformers.BertForSequenceClassification(small_config).eval()
    state = full.state_dict()
    for new, old in enumerate((1, 3)):
        prefix = f"bert.encoder.layer.{old}."
        for key, value in state.items():
            if key.startswith(prefix):
                state[f"bert.encoder.layer.{new}.{key[len(prefix) :]}"] = value
    kept = {k: v for k, v in state.items() if k in small.state_dict()}
    small.load_state_dict(kept, strict=True)
    directory = tmp_path_factory.mktemp("dropped")
    small.save_pretrained(directory)
    _save_tokenizer(directory)
    return directory


def test_export_of_a_layer_dropped_checkpoint(dropped_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "dropped.onnx"
    report = export_onnx(dropped_checkpoint, out, ExportConfig(seq_len=16))
    assert max(report.max_abs_diff.values()) < 1e-4
    linear = [row for row in report.sparsity if ".encoder.layer." in row.name]
    assert {row.name.split(".encoder.layer.")[1].split(".")[0] for row in linear} == {"0", "1"}
    assert all(row.same_zeros for row in report.pruned_weights)
    names = {init.name for init in onnx.load(str(out)).graph.initializer}
    assert not any("layer.2" in name or "layer.3" in name for name in names)


def test_evaluate_of_a_layer_dropped_checkpoint(
    dropped_checkpoint: Path, tmp_path: Path, data_dir: Path
) -> None:
    out = tmp_path / "dropped.onnx"
    export_onnx(dropped_checkpoint, out, ExportConfig(seq_len=16))
    result = evaluate(dropped_checkpoint, [out], data=data_dir / "dev.tsv", seq_len=16)
    torch_row, onnx_row = result.results
    assert onnx_row.agreement == 1.0
    assert onnx_row.metrics["accuracy"] == torch_row.metrics["accuracy"]
