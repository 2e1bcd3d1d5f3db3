"""Shared fixtures: a tiny pruned BERT checkpoint with a word-level tokenizer, data, exports.

Everything is built in-process (no network). Exports are session-scoped because the dynamo
exporter takes a few seconds per model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

POSITIVE = ["good", "great", "fine", "nice", "superb", "happy", "love", "best"]
NEGATIVE = ["bad", "awful", "poor", "sad", "worst", "hate", "dull", "boring"]
NEUTRAL = [f"w{i}" for i in range(60)]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *NEUTRAL]
SEQ_LEN = 16
REPO_ROOT = Path(__file__).resolve().parents[3]


def _prune_(model: torch.nn.Module, sparsity: float) -> None:
    """Per-layer magnitude pruning of encoder Linear weights (test helper)."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and ".encoder." in f".{name}.":
                weight = module.weight
                k = int(sparsity * weight.numel())
                threshold = weight.abs().flatten().kthvalue(k).values
                weight.mul_(weight.abs() > threshold)


def _sentences(n: int, seed: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = int(rng.integers(0, 2))
        words = list(rng.choice(NEUTRAL, size=int(rng.integers(3, 8))))
        words.insert(
            int(rng.integers(0, len(words))), str(rng.choice(POSITIVE if label else NEGATIVE))
        )
        rows.append((" ".join(words), label))
    return rows


def write_tsv(path: Path, n: int, seed: int) -> Path:
    lines = ["sentence\tlabel", *(f"{s} \t{y}" for s, y in _sentences(n, seed))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _tiny_config(**kwargs: object) -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        **kwargs,
    )


def _save_tokenizer(directory: Path) -> None:
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    tokenizer.save_pretrained(directory)


def _train_briefly(model: torch.nn.Module, tsv: Path, tokenizer_dir: Path, steps: int) -> None:
    """A few optimizer steps on the synthetic task, keeping pruned weights at zero."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
    enc = tokenizer(
        [r[0] for r in rows],
        padding="max_length",
        max_length=SEQ_LEN,
        truncation=True,
        return_tensors="pt",
    )
    labels = torch.tensor([int(r[1]) for r in rows])
    keep = {n: p != 0 for n, p in model.named_parameters() if bool((p == 0).any()) and p.ndim == 2}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        idx = torch.arange(step * 16, step * 16 + 16) % len(rows)
        out = model(**{k: v[idx] for k, v in enc.items()}, labels=labels[idx])
        optimizer.zero_grad()
        torch.autograd.backward(out.loss)
        optimizer.step()
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in keep:
                    param.masked_fill_(~keep[name], 0.0)
    model.eval()


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real datasets (SST-2/, SQuAD/): $OBERT_DATA_DIR, else ../shared/data beside the repo.

    The library has no default location (a library does not know the repository's layout), so
    the tests that read the real data pass this directory explicitly; they skip without it.
    """
    env = os.environ.get("OBERT_DATA_DIR")
    root = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not root.is_dir():
        pytest.skip(f"shared data directory {root} not present (set OBERT_DATA_DIR)")
    return root


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_tsv(root / "train.tsv", 256, seed=1)
    write_tsv(root / "dev.tsv", 40, seed=2)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A 2-layer BERT classifier, 80 % pruned, trained 30 steps, with its tokenizer."""
    directory = tmp_path_factory.mktemp("tiny_ckpt")
    _save_tokenizer(directory)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(_tiny_config(num_labels=2))
    _prune_(model, 0.8)
    _train_briefly(model, data_dir / "train.tsv", directory, steps=30)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_qa_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny_qa")
    _save_tokenizer(directory)
    torch.manual_seed(1)
    model = transformers.BertForQuestionAnswering(_tiny_config())
    _prune_(model, 0.5)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def squad_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("squad") / "dev.json"
    context = "w1 w2 good w3 w4 bad w5 w6 w7 nice w8"
    data = {
        "version": "1.1",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": "q1",
                                "question": "w1 good",
                                "answers": [{"text": "good", "answer_start": 6}],
                            },
                            {
                                "id": "q2",
                                "question": "w2 bad",
                                "answers": [{"text": "bad w5", "answer_start": 20}],
                            },
                        ],
                    }
                ],
            }
        ],
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path) -> transformers.PreTrainedModel:
    from obert_deploy import load_checkpoint

    return load_checkpoint(tiny_checkpoint, "sequence-classification").model


@pytest.fixture(scope="session")
def static_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """DeepSparse-style export: static 2 x 16, opset 18, IR 8, LayerNorm decomposed."""
    from obert_deploy import ExportConfig, export_onnx

    path = tmp_path_factory.mktemp("onnx") / "tiny_static.onnx"
    export_onnx(
        tiny_checkpoint, path, ExportConfig(engine="deepsparse", batch_size=2, seq_len=SEQ_LEN)
    )
    return path


@pytest.fixture(scope="session")
def dynamic_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """ONNX Runtime-style export: dynamic batch and sequence, opset 18."""
    from obert_deploy import ExportConfig, export_onnx

    path = tmp_path_factory.mktemp("onnx") / "tiny_dynamic.onnx"
    export_onnx(
        tiny_checkpoint, path, ExportConfig(engine="onnxruntime", batch_size=2, seq_len=SEQ_LEN)
    )
    return path


@pytest.fixture(scope="session")
def static_int8_onnx(
    tmp_path_factory: pytest.TempPathFactory,
    static_onnx: Path,
    data_dir: Path,
    tiny_checkpoint: Path,
) -> Path:
    from obert_deploy import (
        StaticInt8Config,
        load_tokenizer,
        quantize_onnx,
        read_glue_tsv,
        tokenize,
    )

    dataset = read_glue_tsv(data_dir / "train.tsv", max_samples=16)
    feeds = tokenize(
        load_tokenizer(tiny_checkpoint),
        dataset.texts,
        SEQ_LEN,
        ["input_ids", "attention_mask", "token_type_ids"],
    )
    batches = [{k: v[i : i + 2] for k, v in feeds.items()} for i in range(0, 16, 2)]
    path = tmp_path_factory.mktemp("onnx") / "tiny_static_int8.onnx"
    quantize_onnx(static_onnx, path, StaticInt8Config(), calibration=batches)
    return path


def _deepsparse_python() -> str | None:
    """Interpreter that can import deepsparse: this one, $OBERT_DEEPSPARSE_PYTHON or the repo's
    .venv-deepsparse; None when there is none."""
    candidates = [
        sys.executable,
        os.environ.get("OBERT_DEEPSPARSE_PYTHON", ""),
        str(REPO_ROOT / ".venv-deepsparse" / "bin" / "python"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            probe = subprocess.run(
                [candidate, "-c", "import deepsparse, obert_deploy"],
                capture_output=True,
                check=False,
            )
            if probe.returncode == 0:
                return candidate
    return None


@pytest.fixture(scope="session")
def deepsparse_python() -> str:
    """Interpreter with DeepSparse and obert-deploy; skip the test when there is none."""
    python = _deepsparse_python()
    if python is None:
        pytest.skip(
            "no Python with deepsparse + obert-deploy: run "
            "packages/obert-deploy/scripts/test_deepsparse.sh (creates .venv-deepsparse; "
            "see docs/deploy.md) or set OBERT_DEEPSPARSE_PYTHON"
        )
    return python


@pytest.fixture(scope="session")
def deepsparse_cli(deepsparse_python: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m obert_deploy ARGS`` in the DeepSparse environment."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [deepsparse_python, "-m", "obert_deploy", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )

    return run
