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
