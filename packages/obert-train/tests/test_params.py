from __future__ import annotations

import pytest
import torch
from transformers import BertForSequenceClassification

from obert_train import BERT_ENCODER_PATTERNS, TargetError, resolve_target_params


def test_default_patterns_pick_six_linear_weights_per_layer(
    tiny_bert: BertForSequenceClassification,
) -> None:
    params = resolve_target_params(tiny_bert)
    assert len(params) == 6 * tiny_bert.config.num_hidden_layers
    for name, param in params.items():
        assert name.endswith(".weight")
        assert param.ndim == 2
        for excluded in ("embeddings", "LayerNorm", "pooler", "classifier", "bias"):
            assert excluded not in name
    assert list(params)[:6] == [
        "bert.encoder.layer.0.attention.self.query.weight",
        "bert.encoder.layer.0.attention.self.key.weight",
        "bert.encoder.layer.0.attention.self.value.weight",
        "bert.encoder.layer.0.attention.output.dense.weight",
        "bert.encoder.layer.0.intermediate.dense.weight",
        "bert.encoder.layer.0.output.dense.weight",
    ]


def test_unmatched_patterns_are_all_listed() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(TargetError, match="matched no parameter") as info:
        resolve_target_params(model)
    for pattern in BERT_ENCODER_PATTERNS:
        assert pattern in str(info.value)


def test_custom_patterns_and_bad_regex() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    assert list(resolve_target_params(model, [r"^\d\.weight$"])) == ["0.weight", "1.weight"]
    with pytest.raises(TargetError, match="not a valid regex"):
        resolve_target_params(model, ["(unclosed"])
    with pytest.raises(TargetError, match="no target patterns"):
        resolve_target_params(model, [])
