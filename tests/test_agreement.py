"""obert-train and obert-deploy read the same task files the same way.

Each library keeps its own reader (obert-train: label strings for its label maps; obert-deploy:
integer labels for ONNX accuracy, no torch), and both find columns by the one table in
``obert_core.shared``; this test is the guard docs/architecture.md promises: on the same files
the two give the same texts, labels, questions, contexts and answers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

train = pytest.importorskip("obert_train")
deploy = pytest.importorskip("obert_deploy")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("OBERT_DATA_DIR", ROOT.parent / "shared" / "data"))


def _same_tsv(path: Path) -> int:
    ours = train.read_glue_tsv(path)
    theirs = deploy.read_glue_tsv(path)
    assert theirs.labels is not None
    assert len(ours) == len(theirs.texts) == len(theirs.labels)
    for example, texts, label in zip(ours, theirs.texts, theirs.labels, strict=True):
        expected = (example.text_a,) if example.text_b is None else (example.text_a, example.text_b)
        assert texts == expected
        assert int(example.label) == label
    return len(ours)


@pytest.mark.parametrize(
    "header",
    [
        ("sentence", "label"),
        ("label", "sentence"),
        ("sentence1", "sentence2", "label"),
        ("question", "sentence", "label"),
        ("premise", "hypothesis", "label"),
        ("#1 String", "#2 String", "label"),
        ("text", "label"),
    ],
)
def test_glue_tsv_columns_agree(tmp_path: Path, header: tuple[str, ...]) -> None:
    rows = []
    for i in range(5):
        cells = {name: f"{name} {i} it 's a \"quote" for name in header}
        cells["label"] = str(i % 2)
        rows.append("\t".join(cells[name] for name in header))
    path = tmp_path / "data.tsv"
    path.write_text("\t".join(header) + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    assert _same_tsv(path) == 5


def test_sst2_dev_agrees() -> None:
    path = DATA / "SST-2" / "dev.tsv"
    if not path.is_file():
        pytest.skip(f"{path} not present (set OBERT_DATA_DIR)")
    assert _same_tsv(path) == 872


def test_squad_readers_agree(tmp_path: Path) -> None:
    source = DATA / "SQuAD" / "dev-v1.1.json"
    if not source.is_file():
        pytest.skip(f"{source} not present (set OBERT_DATA_DIR)")
    payload = json.loads(source.read_text(encoding="utf-8"))
    payload["data"] = payload["data"][:3]  # three articles are plenty and keep the test fast
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    from obert_deploy.evaluation import read_squad

    ours = train.read_squad_json(path)
    theirs = read_squad(path)
    assert len(ours) == len(theirs) > 100
    for a, b in zip(ours, theirs, strict=True):
        assert (a.qid, a.question, a.context, a.answers) == (b.id, b.question, b.context, b.answers)


@pytest.mark.parametrize("first", ["label", "sentence"])
def test_a_byte_order_mark_is_not_part_of_the_header(tmp_path: Path, first: str) -> None:
    """A TSV saved by a spreadsheet program starts with a UTF-8 BOM: both readers just work."""
    header = (first, "label" if first == "sentence" else "sentence")
    rows = [
        "\t".join(str(i % 2) if h == "label" else f"text {i}" for h in header) for i in range(4)
    ]
    path = tmp_path / "bom.tsv"
    path.write_text("\t".join(header) + "\n" + "\n".join(rows) + "\n", encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert _same_tsv(path) == 4
    assert [e.text_a for e in train.read_glue_tsv(path)] == [f"text {i}" for i in range(4)]


def test_a_bom_squad_file_reads_in_both(tmp_path: Path) -> None:
    """A SQuAD JSON file with a BOM reads the same in both libraries."""
    context = "Paris is the capital of France."
    qa = {
        "id": "q1",
        "question": "What is the capital?",
        "answers": [{"text": "Paris", "answer_start": 0}],
    }
    payload = {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": [qa]}]}]}
    path = tmp_path / "bom.json"
    path.write_text(json.dumps(payload), encoding="utf-8-sig")
    from obert_deploy.evaluation import read_squad

    ours, theirs = train.read_squad_json(path), read_squad(path)
    assert [(a.qid, a.answers) for a in ours] == [(b.id, b.answers) for b in theirs]


@pytest.mark.parametrize("reader", ["train", "deploy"])
def test_a_binary_tsv_names_the_file(tmp_path: Path, reader: str) -> None:
    """A binary file given as a TSV: one package error naming the file, not a raw decode error."""
    path = tmp_path / "train.tsv"
    path.write_bytes(b"sentence\tlabel\n\x89PNG\r\n\x1a\n\x00\xff\xfe\x80\tx\n")
    read = train.read_glue_tsv if reader == "train" else deploy.read_glue_tsv
    error = train.ObertTrainError if reader == "train" else deploy.ObertDeployError
    with pytest.raises(error, match="not UTF-8") as info:
        read(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_max_train_samples_is_one_subset_in_both(tmp_path: Path) -> None:
    """``--max-train-samples N`` keeps the same rows in obert-train and obert-deploy ``qat``."""
    from obert_core.shared import train_subset
    from obert_deploy.cli.qat import _subset

    path = tmp_path / "train.tsv"
    rows = [f"row {i}\t{i % 2}" for i in range(40)]
    path.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    ours = [e.text_a for e in train_subset(train.read_glue_tsv(path), 7, 42)]
    theirs = _subset(deploy.read_glue_tsv(path), 7, 42)
    assert [t[0] for t in theirs.texts] == ours
    assert ours != [f"row {i}" for i in range(7)]  # a random sample, not the first rows
    assert theirs.lines == [int(t.split()[1]) + 2 for t in ours]
