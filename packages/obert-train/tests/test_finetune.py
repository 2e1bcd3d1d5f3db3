from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertForSequenceClassification, BertTokenizer

from obert_train import OneShotConfig, finetune, load_task, oneshot_prune, resolve_target_params


def test_finetune_learns_and_keeps_masks(
    tiny_bert: BertForSequenceClassification, tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    oneshot_prune(tiny_bert, OneShotConfig(method="magnitude", sparsity=0.5))
    zeros = {n: p == 0 for n, p in resolve_target_params(tiny_bert).items()}
    before = task.evaluate(tiny_bert, progress=False)["loss"]
    result = finetune(
        tiny_bert, task, epochs=4, batch_size=6, learning_rate=3e-3, keep_masks=True,
        progress=False,
    )  # fmt: skip
    assert result.steps == 24
    assert task.evaluate(tiny_bert, progress=False)["loss"] < before
    assert not tiny_bert.training
    for name, p in resolve_target_params(tiny_bert).items():
        assert torch.all(p[zeros[name]] == 0)


def test_finetune_rejects_bad_settings(
    tiny_bert: BertForSequenceClassification, tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    with pytest.raises(ValueError, match="must be positive"):
        finetune(tiny_bert, task, epochs=0)
