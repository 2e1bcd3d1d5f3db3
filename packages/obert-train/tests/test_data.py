from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from obert_train import DataError
from obert_train.tasks.data import read_glue_tsv, read_raw_text, read_squad_json


def test_glue_tsv_single_sentence(sst2_dir: Path) -> None:
    examples = read_glue_tsv(sst2_dir / "dev.tsv")
    assert len(examples) == 6
    assert examples[0].text_a == "a good fun film"  # GLUE's trailing space is stripped
    assert examples[0].text_b is None
    assert {e.label for e in examples} == {"0", "1"}


def test_glue_tsv_pairs_and_quotes(tmp_path: Path) -> None:
    path = tmp_path / "rte.tsv"
    path.write_text('index\tsentence1\tsentence2\tlabel\n0\ta "quote\tb\tentailment\n')
    (example,) = read_glue_tsv(path)
    assert (example.text_a, example.text_b, example.label) == ('a "quote', "b", "entailment")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("foo\tbar\nx\ty\n", "no known text column"),
        ("sentence\tscore\nx\t1\n", "no label column"),
        ("sentence\tlabel\nonly-one-field\n", "expected at least 2"),
        ("sentence\tlabel\nx\t \n", "empty label"),
        ("sentence\tlabel\n", "no examples"),
    ],
)
def test_glue_tsv_malformed(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_glue_tsv(path)


def test_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_glue_tsv(tmp_path / "nope.tsv")


def test_squad_json(squad_dir: Path) -> None:
    examples = read_squad_json(squad_dir / "dev-v1.1.json")
    assert [e.qid for e in examples] == ["q1", "q2", "q3", "q4"]
    for e in examples:
        start = e.answer_starts[0]
        assert e.context[start : start + len(e.answers[0])] == e.answers[0]


def _one_question(answers: list[dict[str, object]]) -> str:
    qa = {"id": "x", "question": "?", "answers": answers}
    return json.dumps({"data": [{"paragraphs": [{"context": "abc", "qas": [qa]}]}]})


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"version": "1.1"}), "'data' list"),
        (json.dumps({"data": [{"paragraphs": [{"qas": []}]}]}), "malformed SQuAD record"),
        (_one_question([]), "no answers"),
        (_one_question([{"text": "bc", "answer_start": 5}]), "answer_start 5"),
    ],
)
def test_squad_malformed(tmp_path: Path, payload: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(payload)
    with pytest.raises(DataError, match=message):
        read_squad_json(path)


def test_raw_text_crlf_and_blank_lines(mlm_dir: Path) -> None:
    lines = read_raw_text(mlm_dir / "wiki.valid.raw")
    assert len(lines) == 1
    assert not lines[0].startswith(" ")
    assert "\r" not in lines[0]


def test_raw_text_only_blank(tmp_path: Path) -> None:
    path = tmp_path / "blank.raw"
    path.write_bytes(b" \r\n \r\n")
    with pytest.raises(DataError, match="no text"):
        read_raw_text(path)


def test_raw_text_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.raw"
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_raw_text(path)


# Real files (read from ../shared/data; skipped when absent).


def test_real_sst2_dev_counts(real_file: Callable[[str], Path]) -> None:
    examples = read_glue_tsv(real_file("SST-2/dev.tsv"))
    assert len(examples) == 872
    assert sum(e.label == "0" for e in examples) == 428


def test_real_squad_dev_counts(real_file: Callable[[str], Path]) -> None:
    examples = read_squad_json(real_file("SQuAD/dev-v1.1.json"))
    assert len(examples) == 10570
    assert len({e.title for e in examples}) == 48


def test_real_wikitext_valid_lines(real_file: Callable[[str], Path]) -> None:
    lines = read_raw_text(real_file("wikitext-2-raw/wiki.valid.raw"))
    assert len(lines) == 2461
