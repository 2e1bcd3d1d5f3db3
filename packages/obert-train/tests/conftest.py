"""Shared fixtures: a tiny BERT, a matching word-level tokenizer and small task files."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

from obert_train import ClassificationTask, load_task

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(Path(__file__).parent))  # test helper modules (block_helpers)

POSITIVE = ["a good fun film", "great acting and a warm story", "the best movie of the year"]
NEGATIVE = ["a dull boring mess", "bad acting and a weak plot", "the worst film of the year"]
CONTEXT = (
    "The cat sat on the mat in the old house. The dog slept near the door. "
    "Paris is the capital of France and Berlin is the capital of Germany."
)
QUESTIONS = [
    ("q1", "Where did the cat sit?", "on the mat", CONTEXT.index("on the mat")),
    ("q2", "Where did the dog sleep?", "near the door", CONTEXT.index("near the door")),
    ("q3", "What is the capital of France?", "Paris", CONTEXT.index("Paris")),
    ("q4", "What is the capital of Germany?", "Berlin", CONTEXT.index("Berlin")),
]


def shared_data_dir() -> Path:
    env = os.environ.get("OBERT_DATA_DIR")
    return Path(env) if env else (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture
def real_file() -> Callable[[str], Path]:
    """Path of a file under the shared data folder; skips the test when it is absent."""

    def get(relative: str) -> Path:
        file = shared_data_dir() / relative
        if not file.is_file():
            pytest.skip(f"real data file {file} not present (set OBERT_DATA_DIR)")
        return file

    return get


def _vocab_words() -> list[str]:
    words: set[str] = set()
    texts = [*POSITIVE, *NEGATIVE, CONTEXT, *(q for _, q, _, _ in QUESTIONS)]
    for text in texts:
        for token in text.lower().replace(".", " . ").replace("?", " ? ").split():
            words.add(token)
    return sorted(words)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (path / "vocab.txt").write_text("\n".join([*specials, *_vocab_words()]) + "\n")
    return path


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path) -> BertTokenizer:
    return BertTokenizer.from_pretrained(tokenizer_dir)


def tiny_config(vocab_size: int, **kwargs: object) -> BertConfig:
    base = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
    }
    base.update(kwargs)
    return BertConfig(**base)


@pytest.fixture
def tiny_bert(tokenizer: BertTokenizer) -> BertForSequenceClassification:
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(len(tokenizer), num_labels=2))
    model.eval()
    return model


@pytest.fixture
def tiny_model_dir(
    tmp_path: Path, tiny_bert: BertForSequenceClassification, tokenizer: BertTokenizer
) -> Path:
    path = tmp_path / "tiny-bert"
    tiny_bert.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def sst2_dir(tmp_path: Path) -> Path:
    path = tmp_path / "sst2"
    path.mkdir()
    rows = [f"{s} \t1" for s in POSITIVE] + [f"{s} \t0" for s in NEGATIVE]
    (path / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows * 6) + "\n")
    (path / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture
def task(tokenizer: BertTokenizer, sst2_dir: Path) -> ClassificationTask:
    """The SST-2 classification task on :func:`sst2_dir`'s files."""
    loaded = load_task("sst2", tokenizer, data_dir=sst2_dir)
    assert isinstance(loaded, ClassificationTask)
    return loaded


def squad_payload(questions: list[tuple[str, str, str, int]]) -> dict[str, object]:
    qas = [
        {"id": qid, "question": q, "answers": [{"text": a, "answer_start": s}]}
        for qid, q, a, s in questions
    ]
    return {
        "version": "1.1",
        "data": [{"title": "T", "paragraphs": [{"context": CONTEXT, "qas": qas}]}],
    }


@pytest.fixture
def squad_dir(tmp_path: Path) -> Path:
    path = tmp_path / "squad"
    path.mkdir()
    (path / "train-v1.1.json").write_text(json.dumps(squad_payload(QUESTIONS * 4)))
    (path / "dev-v1.1.json").write_text(json.dumps(squad_payload(QUESTIONS)))
    return path


@pytest.fixture
def mlm_dir(tmp_path: Path) -> Path:
    path = tmp_path / "mlm"
    path.mkdir()
    lines = [" \r\n", f" {CONTEXT} \r\n", " \r\n"] * 3
    (path / "wiki.train.raw").write_bytes("".join(lines).encode())
    (path / "wiki.valid.raw").write_bytes("".join(lines[:3]).encode())
    return path
