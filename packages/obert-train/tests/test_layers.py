"""Layer dropping: ``drop_layers`` and ``obert-train drop-layers``."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertForSequenceClassification,
    BertTokenizer,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.masking_utils import create_bidirectional_mask
from typer.testing import CliRunner

import obert_train
from obert_train import ModelError, OptionError, drop_layers
from obert_train.cli.app import app
from obert_train.layers import evenly_spaced_layers, find_layers

from .conftest import tiny_config

runner = CliRunner()


@pytest.fixture
def six_layer_dir(tmp_path: Path, tokenizer: BertTokenizer) -> Path:
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        tiny_config(len(tokenizer), num_hidden_layers=6, num_labels=2)
    )
    path = tmp_path / "six"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _batch(tokenizer: BertTokenizer) -> dict[str, torch.Tensor]:
    texts = ["a good fun film", "the worst film of the year and a dull boring mess"]
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))  # with padding


@torch.no_grad()
def _kept_layers_forward(
    model: BertForSequenceClassification, keep: list[int], batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and hidden states of the ORIGINAL model run through its kept layers only."""
    bert = model.bert
    hidden = bert.embeddings(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])
    mask = create_bidirectional_mask(
        config=model.config, inputs_embeds=hidden, attention_mask=batch["attention_mask"]
    )
    states = [hidden]
    for index in keep:
        out: Any = bert.encoder.layer[index](hidden, mask)
        hidden = out[0] if isinstance(out, tuple) else out
        states.append(hidden)
    logits = model.classifier(model.dropout(bert.pooler(hidden)))
    return logits, states


def test_cli_checkpoint_equals_the_kept_layers_of_the_original(
    six_layer_dir: Path, tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    out = tmp_path / "three"
    result = runner.invoke(
        app, ["drop-layers", str(six_layer_dir), "--keep", "0,2,5", "--output-dir", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "drop_layers.json").read_text())
    assert report["kept_layers"] == [0, 2, 5]
    assert report["dropped_layers"] == [1, 3, 4]
    assert report["original_num_layers"] == 6 and report["num_layers"] == 3
    assert report["layer_list"] == "bert.encoder.layer"
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 3
    assert len(json.loads((out / "sparsity.json").read_text())["tensors"]) == 18  # 6 per layer

    # plain transformers, no obert_train involved in loading
    small = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert AutoTokenizer.from_pretrained(out).get_vocab() == tokenizer.get_vocab()
    original = AutoModelForSequenceClassification.from_pretrained(six_layer_dir).eval()
    batch = _batch(tokenizer)
    with torch.no_grad():
        got = small(**batch, output_hidden_states=True)
    logits, states = _kept_layers_forward(original, [0, 2, 5], batch)
    assert torch.equal(got.logits, logits)
    assert len(got.hidden_states) == 4
    for mine, reference in zip(got.hidden_states, states, strict=True):
        assert torch.equal(mine, reference)


def test_num_layers_keeps_evenly_spaced_layers_ending_with_the_top(
    six_layer_dir: Path, tmp_path: Path
) -> None:
    assert evenly_spaced_layers(6, 3) == [1, 3, 5]
    assert evenly_spaced_layers(12, 6) == [1, 3, 5, 7, 9, 11]
    assert evenly_spaced_layers(12, 3) == [3, 7, 11]
    assert evenly_spaced_layers(7, 3) == [2, 4, 6]
    assert evenly_spaced_layers(6, 1) == [5]
    assert evenly_spaced_layers(6, 6) == list(range(6))
    out = tmp_path / "three"
    args = ["drop-layers", str(six_layer_dir), "--num-layers", "3", "--output-dir", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "drop_layers.json").read_text())
    assert report["kept_layers"] == [1, 3, 5]
    assert report["rule"].startswith("--num-layers 3")
    # a second run into the same folder needs --overwrite, which replaces the checkpoint
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "not empty" in again.output
    args[2:4] = ["--keep", "4"]
    replaced = runner.invoke(app, [*args, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((out / "drop_layers.json").read_text())["kept_layers"] == [4]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_python_api_in_place_and_unchanged_on_error(
    tiny_bert: BertForSequenceClassification,
) -> None:
    assert obert_train.drop_layers is drop_layers
    model = copy.deepcopy(tiny_bert)
    with pytest.raises(OptionError, match="not both"):
        drop_layers(model, [0], num_layers=1)
    with pytest.raises(OptionError, match="name the layers"):
        drop_layers(model)
    with pytest.raises(OptionError, match=r"layer\(s\) \[2\] out of range"):
        drop_layers(model, [0, 2])
    assert len(model.bert.encoder.layer) == 2 and model.config.num_hidden_layers == 2
    second = model.bert.encoder.layer[1]
    assert drop_layers(model, [1]) is model
    assert list(model.bert.encoder.layer) == [second]
    assert model.config.num_hidden_layers == 1
    assert model.bert.encoder.layer[0].attention.self.layer_idx == 0  # renumbered
    with pytest.raises(ModelError, match="has no config"):
        drop_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)), [0])


def test_pruned_heads_are_renumbered(tiny_bert: BertForSequenceClassification) -> None:
    model = copy.deepcopy(tiny_bert)
    model.config.pruned_heads = {1: [0]}
    drop_layers(model, [1])
    assert model.config.pruned_heads == {0: [0]}


def _distilbert() -> torch.nn.Module:
    config = DistilBertConfig(vocab_size=40, dim=32, n_layers=4, n_heads=2, hidden_dim=64)
    return DistilBertForSequenceClassification(config)


def _llama() -> torch.nn.Module:
    config = LlamaConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=64,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def _qwen2() -> torch.nn.Module:
    config = Qwen2Config(
        vocab_size=40, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=64, use_sliding_window=True,
        max_window_layers=2, sliding_window=4,
    )  # fmt: skip
    return Qwen2ForCausalLM(config)


@pytest.mark.parametrize(
    ("build", "layer_list"),
    [
        (_distilbert, "distilbert.transformer.layer"),
        (_llama, "model.layers"),
        (_qwen2, "model.layers"),
    ],
    ids=["distilbert", "llama", "qwen2-layer-types"],
)
def test_other_families_save_and_load(build: Any, layer_list: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build().eval()
    assert find_layers(model)[0] == layer_list
    types = list(getattr(model.config, "layer_types", None) or [])
    drop_layers(model, [1, 3])
    assert model.config.num_hidden_layers == 2
    if types:
        assert model.config.layer_types == [types[1], types[3]]
        assert types[1] != types[3]  # one full, one sliding-window layer kept
    model.save_pretrained(tmp_path / "small")
    causal = hasattr(model, "generate") and "CausalLM" in type(model).__name__
    auto = AutoModelForCausalLM if causal else AutoModelForSequenceClassification
    loaded = auto.from_pretrained(tmp_path / "small").eval()
    assert type(loaded) is type(model)
    ids = torch.randint(0, 40, (2, 6))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    if causal:  # the KV cache is indexed by the renumbered layer_idx
        greedy = {"max_new_tokens": 3, "do_sample": False}
        assert torch.equal(model.generate(ids[:1], **greedy), loaded.generate(ids[:1], **greedy))


def test_drop_layers_help_imports_no_torch() -> None:
    import os
    import subprocess
    import sys

    code = (
        "import sys; from obert_train.cli.app import main; "
        "sys.argv=['obert-train','drop-layers','--help'];"
        "\ntry: main()\nexcept SystemExit: pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH')"
    )
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip().endswith("NOTORCH"), done.stdout[-300:]
    for option in ("--keep", "--num-layers", "--output-dir", "--overwrite"):
        assert option in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 80


def test_a_dropped_model_distils_from_the_full_one(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    """docs/train.md 2c: drop-layers, then run with a !DistillationModifier and --teacher."""
    small = tmp_path / "small"
    dropped = runner.invoke(
        app, ["drop-layers", str(tiny_model_dir), "--num-layers", "1", "--output-dir", str(small)]
    )
    assert dropped.exit_code == 0, dropped.output
    recipe = tmp_path / "distil.yaml"
    recipe.write_text(
        "modifiers:\n  - !EpochRangeModifier {start_epoch: 0, end_epoch: 1}\n"
        "distillation_modifiers:\n  - !DistillationModifier\n"
        "    {hardness: 1.0, temperature: 2.0, distill_output_keys: [logits]}\n"
    )
    out = tmp_path / "kd"
    result = runner.invoke(
        app,
        ["run", str(recipe), "--model", str(small), "--teacher", str(tiny_model_dir),
         "--task", "sst2", "--data-dir", str(sst2_dir), "--output-dir", str(out),
         "--batch-size", "6", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("kd_loss" in entry for entry in log)
    assert AutoModelForSequenceClassification.from_pretrained(out).config.num_hidden_layers == 1
