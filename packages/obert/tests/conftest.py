"""Shared fixtures: a tiny BERT built in-process, its word-level tokenizer, data and recipes.

Everything is made here (no network): a 2-layer BERT with hidden size 32 whose vocabulary is
the words of a small draw of the package's own sentiment grammar, SQuAD-format questions on the
same sentences, and recipes with the shipped ones' structure on a budget of a few optimizer
steps.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

from obert.datagen import Example, generate, to_tsv

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TRAIN, DEV = generate(64, 32, seed=7)

TINY_DENSE = """
modifiers:
  - !EpochRangeModifier {start_epoch: 0, end_epoch: 1}
training_modifiers:
  - !LearningRateFunctionModifier
    {start_epoch: 0, end_epoch: 1, lr_func: linear, init_lr: 1.0e-3, final_lr: 1.0e-4}
"""

TINY_PRUNING = r"""
modifiers:
  - !EpochRangeModifier {start_epoch: 0, end_epoch: 1}
training_modifiers:
  - !LearningRateFunctionModifier
    {start_epoch: 0, end_epoch: 1, lr_func: cyclic_linear, cycle_epochs: 0.5,
     init_lr: 1.0e-3, final_lr: 1.0e-4}
pruning_modifiers:
  - !OBSPruningModifier
    params: ['re:encoder\.layer\.\d+\.(attention\.(self\.(query|key|value)|output\.dense)|intermediate\.dense|output\.dense)\.weight$']
    init_sparsity: 0.5
    final_sparsity: 0.8
    start_epoch: 0.0
    end_epoch: 0.5
    update_frequency: 0.5
    inter_func: linear
    num_grads: 4
    grad_sampler_kwargs: {batch_size: 4}
    fisher_block_size: 16
    damp: 1.0e-4
    mode: superpose
distillation_modifiers:
  - !DistillationModifier {hardness: 1.0, temperature: 2.0, distill_output_keys: [logits]}
"""


def vocabulary() -> list[str]:
    """The words of the tiny data set (plus BERT's special tokens)."""
    words = sorted({w for e in (*TRAIN, *DEV) for w in e.sentence.split()})
    return [*SPECIALS, *words]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train.tsv`` (64 sentences) and ``dev.tsv`` (32) in SST-2 format."""
    path = tmp_path_factory.mktemp("data")
    (path / "train.tsv").write_text(to_tsv(TRAIN), encoding="utf-8")
    (path / "dev.tsv").write_text(to_tsv(DEV), encoding="utf-8")
    return path


def squad_json(examples: list[Example], seed: int) -> str:
    """SQuAD v1.1 JSON: one question per sentence, whose answer is one of its words.

    The question is the two words around the answer; every word is in :func:`vocabulary`.
    """
    rng = random.Random(seed)
    articles = []
    for number, example in enumerate(examples):
        words = example.sentence.split()
        at = rng.randrange(1, len(words) - 1)
        start = len(" ".join(words[:at])) + 1
        assert example.sentence[start : start + len(words[at])] == words[at]
        qa = {
            "id": f"q{number}",
            "question": f"{words[at - 1]} {words[at + 1]}",
            "answers": [{"text": words[at], "answer_start": start}],
        }
        paragraph = {"context": example.sentence, "qas": [qa]}
        articles.append({"title": f"article {number // 8}", "paragraphs": [paragraph]})
    return json.dumps({"version": "1.1", "data": articles})


@pytest.fixture(scope="session")
def squad_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train-v1.1.json`` (64 questions) and ``dev-v1.1.json`` (16) on the tiny sentences."""
    path = tmp_path_factory.mktemp("squad")
    (path / "train-v1.1.json").write_text(squad_json(TRAIN, seed=1), encoding="utf-8")
    (path / "dev-v1.1.json").write_text(squad_json(DEV[:16], seed=2), encoding="utf-8")
    return path


SQUAD_ARGS = ["--task", "squad", "--max-seq-length", "64", "--doc-stride", "16",
              "--max-query-length", "16"]  # fmt: skip
"""Window options of SQuAD on the tiny BERT (64 positions)."""


def tiny_model(vocab_size: int) -> BertForSequenceClassification:
    """A 2-layer BERT with hidden size 32 and a 2-class head (seeded)."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT saved with its tokenizer."""
    path = tmp_path_factory.mktemp("tiny-bert")
    (path / "vocab.txt").write_text("\n".join(vocabulary()) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(path / "vocab.txt"))
    tokenizer.save_pretrained(path)
    tiny_model(len(tokenizer)).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def recipes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny dense and pruning recipes as files."""
    path = tmp_path_factory.mktemp("recipes")
    (path / "dense.yaml").write_text(TINY_DENSE, encoding="utf-8")
    (path / "obert.yaml").write_text(TINY_PRUNING, encoding="utf-8")
    return {"dense": path / "dense.yaml", "pruning": path / "obert.yaml"}


def quick_args(model_dir: Path, data_dir: Path, recipes: dict[str, Path], out: Path) -> list[str]:
    """``obert quickstart`` arguments for a run of a few seconds per stage on the tiny model."""
    return [
        "quickstart",
        "--model", str(model_dir),
        "--task", "sst2",
        "--data-dir", str(data_dir),
        "--max-seq-length", "32",
        "--dense-recipe", str(recipes["dense"]),
        "--recipe", str(recipes["pruning"]),
        "--batch-size", "16",
        "--bench-batch-size", "1",
        "--bench-iterations", "3",
        "--no-progress",
        "--deepsparse", str(out.parent / "no-deepsparse" / "obert-deploy"),
        "--output-dir", str(out),
    ]  # fmt: skip
