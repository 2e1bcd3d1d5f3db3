"""A refused invocation leaves its output folder exactly as it was, for every command of every CLI.

The output-folder policy (``docs/train.md``, "Output folders"; issue 18): every check runs before
anything is created or written.  For each command of ``obert-train``, ``obert-deploy`` and
``obert`` this sweep runs invocations the command must refuse (a missing input, a bad value, an
output that is an input, an existing output without ``--overwrite``) with an output folder that
already holds a user's files, and compares a snapshot of the whole workspace (names, sizes,
modification times, content hashes) before and after.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("obert_train")
pytest.importorskip("obert_deploy")
pytest.importorskip("obert")

from typer.testing import CliRunner

runner = CliRunner()

WORDS = ["the", "a", "movie", "film", "good", "bad", "great", "awful", "fine", "dull", "fun"]


@dataclass(frozen=True)
class Space:
    """One workspace: a tiny model, SST-2 data, a recipe, a fake ONNX file, a user's folder."""

    root: Path
    model: Path
    data: Path
    recipe: Path
    onnx: Path
    out: Path


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    root = tmp_path_factory.mktemp("inputs")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizer(str(vocab))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, num_labels=2,
    )  # fmt: skip
    model_dir = root / "model"
    BertForSequenceClassification(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = root / "sst2"
    data.mkdir()
    rows = [f"{' '.join(WORDS[i % 7 : i % 7 + 4])}\t{i % 2}" for i in range(24)]
    for name in ("train.tsv", "dev.tsv"):
        (data / name).write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture
def space(shared: Path, tmp_path: Path) -> Space:
    import shutil

    shutil.copytree(shared / "model", tmp_path / "model")
    shutil.copytree(shared / "sst2", tmp_path / "sst2")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "modifiers:\n  - !EpochRangeModifier {start_epoch: 0.0, end_epoch: 1.0}\n"
        "pruning_modifiers:\n  - !GMPruningModifier\n"
        "    params: ['re:.*encoder.*dense.weight']\n    init_sparsity: 0.5\n"
        "    final_sparsity: 0.5\n    start_epoch: 0.0\n    end_epoch: 0.0\n"
        "    update_frequency: 1.0\n"
    )
    onnx = tmp_path / "input.onnx"
    onnx.write_bytes(b"not an onnx model")
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("a user's notes\n")
    (out / "sub" / "data.csv").write_text("1,2\n")
    for name in ("model.onnx", "results.json", "report.md", "report.json", "metrics.json"):
        (out / name).write_text(f"the user's own {name}\n")
    return Space(tmp_path, tmp_path / "model", tmp_path / "sst2", recipe, onnx, out)


def _snapshot(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Names, kinds, sizes, modification times and content hashes of everything under root."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


Args = Callable[[Space], list[str]]


def _train(s: Space, command: str, *extra: str) -> list[str]:
    common = ["--model", str(s.model), "--task", "sst2", "--data-dir", str(s.data)]
    head = {"run": ["run", str(s.recipe)], "oneshot": ["oneshot", "--sparsity", "0.5"]}[command]
    return [*head, *common, "--output-dir", str(s.out), "--no-progress", *extra]


def _quick(s: Space, *extra: str) -> list[str]:
    return [
        "quickstart", "--model", str(s.model), "--task", "sst2", "--data-dir", str(s.data),
        "--output-dir", str(s.out), "--no-progress", *extra,
    ]  # fmt: skip


TRAIN: dict[str, Args] = {
    "run-missing-model": lambda s: _train(s, "run", "--model", str(s.root / "nope")),
    "run-batch-size-0": lambda s: _train(s, "run", "--batch-size", "0"),
    "run-not-empty": lambda s: _train(s, "run"),
    "run-overwrite-into-the-model": lambda s: _train(
        s, "run", "--overwrite", "--output-dir", str(s.model)
    ),
    "run-overwrite-holding-the-data": lambda s: _train(
        s, "run", "--overwrite", "--output-dir", str(s.root)
    ),
    "run-resume-of-nothing": lambda s: _train(s, "run", "--resume"),
    "oneshot-sparsity-1.5": lambda s: _train(s, "oneshot", "--sparsity", "1.5"),
    "oneshot-into-the-model": lambda s: _train(s, "oneshot", "--output-dir", str(s.model)),
    "oneshot-unknown-method": lambda s: _train(s, "oneshot", "--method", "nope"),
    "drop-layers-keep-9": lambda s: [
        "drop-layers",
        str(s.model),
        "--keep",
        "9",
        "--output-dir",
        str(s.out),
        "--overwrite",
    ],
    "drop-layers-not-empty": lambda s: [
        "drop-layers",
        str(s.model),
        "--keep",
        "0",
        "--output-dir",
        str(s.out),
    ],
    "drop-layers-inside-the-model": lambda s: [
        "drop-layers",
        str(s.model),
        "--keep",
        "0",
        "--output-dir",
        str(s.model / "small"),
    ],
    "shrink-not-empty": lambda s: ["shrink", str(s.model), "--output-dir", str(s.out)],
    "shrink-inside-the-model": lambda s: [
        "shrink",
        str(s.model),
        "--output-dir",
        str(s.model / "small"),
    ],
    "shrink-nothing-removed": lambda s: [
        "shrink",
        str(s.model),
        "--output-dir",
        str(s.root / "small"),
    ],
    "recipe-convert-existing-output": lambda s: [
        "recipe",
        "convert",
        str(s.recipe),
        "--output",
        str(s.out / "report.md"),
    ],
}

DEPLOY: dict[str, Args] = {
    "export-missing-model": lambda s: [
        "export",
        str(s.root / "nope"),
        "--output",
        str(s.out / "new.onnx"),
    ],
    "export-existing-output": lambda s: [
        "export",
        str(s.model),
        "--output",
        str(s.out / "model.onnx"),
    ],
    "export-batch-size-0": lambda s: [
        "export",
        str(s.model),
        "--output",
        str(s.out / "new.onnx"),
        "--batch-size",
        "0",
    ],
    "quantize-not-onnx": lambda s: [
        "quantize",
        str(s.onnx),
        "--output",
        str(s.out / "int8.onnx"),
    ],
    "quantize-existing-output": lambda s: [
        "quantize",
        str(s.onnx),
        "--output",
        str(s.out / "model.onnx"),
    ],
    "qat-steps-0": lambda s: [
        "qat",
        str(s.model),
        "--output",
        str(s.out / "qat.onnx"),
        "--steps",
        "0",
    ],
    "evaluate-not-onnx": lambda s: [
        "evaluate",
        str(s.model),
        str(s.onnx),
        "--json",
        str(s.out / "eval.json"),
    ],
    "bench-not-onnx": lambda s: ["bench", str(s.onnx), "--json", str(s.out / "bench.json")],
    "bench-existing-json": lambda s: [
        "bench",
        str(s.onnx),
        "--json",
        str(s.out / "results.json"),
    ],
    "size-missing-model": lambda s: [
        "size",
        str(s.root / "nope.onnx"),
        "--json",
        str(s.out / "size.json"),
    ],
}

APP: dict[str, Args] = {
    "quickstart-missing-model": lambda s: _quick(s, "--model", str(s.root / "nope")),
    "quickstart-into-the-model": lambda s: _quick(s, "--output-dir", str(s.model)),
    "quickstart-users-report": lambda s: _quick(s, "--max-seq-length", "32"),
    "quickstart-batch-size-0": lambda s: _quick(s, "--batch-size", "0"),
}


def _cases() -> list[tuple[str, str, Args]]:
    return [
        *[("obert-train", k, v) for k, v in TRAIN.items()],
        *[("obert-deploy", k, v) for k, v in DEPLOY.items()],
        *[("obert", k, v) for k, v in APP.items()],
    ]


def _app(cli: str) -> object:
    if cli == "obert-train":
        from obert_train.cli.app import app

        return app
    if cli == "obert-deploy":
        from obert_deploy.cli.app import app as deploy_app

        return deploy_app
    from obert.cli import app as obert_app

    return obert_app


@pytest.mark.parametrize(("cli", "case", "args"), _cases(), ids=[c[1] for c in _cases()])
def test_a_refused_invocation_leaves_every_folder_as_it_was(
    space: Space, cli: str, case: str, args: Args, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.chdir(space.root)
    before = _snapshot(space.root)
    result = runner.invoke(_app(cli), args(space))  # type: ignore[arg-type]
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{cli} {case}: uncaught {type(result.exception).__name__}: {result.exception}\n"
        f"{result.output}"
    )
    assert result.exit_code == 2, f"{cli} {case} was not refused:\n{result.output}"
    after = _snapshot(space.root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"{cli} {case} changed {changed}:\n{result.output}"
    assert (space.out / "notes.txt").read_text() == "a user's notes\n"
