"""Readers for the local task files: GLUE TSV, SQuAD v1.1 JSON and raw text (WikiText).

Every reader returns plain Python records (no tokenisation) and raises :class:`DataError` naming
the file, the line or record and the remedy when a file is missing or malformed.  Hub datasets
(``datasets.load_dataset``) are converted to the same records by :mod:`obert_train.tasks.hub`.
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obert_core.shared import GLUE_LABEL_COLUMNS, GLUE_TEXT_COLUMNS, glue_text_columns
from obert_train._validate import check_path, check_str_sequence
from obert_train.errors import DataError

__all__ = [
    "ClassificationExample",
    "DataError",
    "SquadExample",
    "read_glue_tsv",
    "read_raw_text",
    "read_squad_json",
    "split_squad_articles",
]


@dataclass(frozen=True)
class ClassificationExample:
    """One sentence (pair) classification example.

    Attributes:
        text_a: First sentence.
        text_b: Second sentence for pair tasks, else ``None``.
        label: Label string exactly as in the file (mapped to ids by the task).
        source: Where the example comes from (the file, or the hub dataset and split), for
            messages; not part of equality.
        line: Its line in ``source`` (1-based; the record number for hub data), for
            messages; not part of equality.
    """

    text_a: str
    text_b: str | None
    label: str
    source: str = field(default="", compare=False, repr=False)
    line: int = field(default=0, compare=False, repr=False)

    @property
    def where(self) -> str:
        """``file:line`` of the example (or ``record N`` when the source is unknown)."""
        if self.source:
            return f"{self.source}:{self.line}"
        return f"record {self.line}"


@dataclass(frozen=True)
class SquadExample:
    """One SQuAD v1.1 question with its context and gold answers.

    Attributes:
        qid: Question id (unique within the file).
        title: Title of the Wikipedia article the paragraph comes from.
        question: The question text.
        context: The paragraph the answer is a span of.
        answers: Gold answer texts (several annotators on dev, one on train).
        answer_starts: Character offset of each answer in ``context``.
    """

    qid: str
    title: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist; check --data-dir / the file name")
    return path


def read_glue_tsv(
    path: str | os.PathLike[str],
    *,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
) -> list[ClassificationExample]:
    """Read a GLUE-style tab-separated file with a header row.

    Columns are found by name: ``sentence`` (SST-2, CoLA with header), ``sentence1/sentence2``
    (RTE, MRPC-like), ``question1/question2`` (QQP), ``question/sentence`` (QNLI),
    ``premise/hypothesis``; the label column is ``label`` (or ``gold_label`` / ``Quality``).
    Quotes are not special (GLUE files contain unbalanced quotes).

    Args:
        path: The ``.tsv`` file.
        text_columns: One or two column names overriding the automatic choice.
        label_column: Label column name overriding the automatic choice.

    Returns:
        The examples in file order.

    Raises:
        DataError: If the file is missing, has no header with known columns, a row has too few
            fields, or a label is empty.
    """
    check_str_sequence(text_columns, "text_columns", "read_glue_tsv")
    check_path(path, "path", "read_glue_tsv")
    file = _require_file(Path(path))
    # utf-8-sig: a byte-order mark (spreadsheet programs write one) is not part of the header.
    try:
        with file.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            try:
                header = next(reader)
            except StopIteration:
                raise DataError(f"{file}: the file is empty; expected a GLUE TSV header") from None
            columns = {name.strip(): i for i, name in enumerate(header)}
            text_idx = _glue_text_indices(file, columns, text_columns)
            label_idx = _glue_label_index(file, columns, label_column)
            needed = max([*text_idx, label_idx]) + 1
            examples: list[ClassificationExample] = []
            for line_no, row in enumerate(reader, start=2):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) < needed:
                    raise DataError(
                        f"{file}:{line_no}: expected at least {needed} tab-separated fields "
                        f"(header {header}), got {len(row)}: {row!r}"
                    )
                label = row[label_idx].strip()
                if not label:
                    raise DataError(
                        f"{file}:{line_no}: empty label in column {header[label_idx]!r}"
                    )
                text_b = row[text_idx[1]].strip() if len(text_idx) > 1 else None
                examples.append(
                    ClassificationExample(
                        row[text_idx[0]].strip(), text_b, label, source=str(file), line=line_no
                    )
                )
    except UnicodeDecodeError as exc:
        raise DataError(_not_utf8(file, exc, "a GLUE-style TSV file")) from None
    if not examples:
        raise DataError(f"{file}: no examples after the header")
    return examples


def _not_utf8(file: Path, exc: UnicodeDecodeError, expected: str) -> str:
    """The message for a file that is not UTF-8 text (a binary file, another encoding)."""
    return (
        f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start}); pass {expected} "
        "(save it as UTF-8)"
    )


def _glue_text_indices(
    file: Path, columns: dict[str, int], text_columns: Sequence[str] | None
) -> list[int]:
    if text_columns is not None:
        if not 1 <= len(text_columns) <= 2:
            raise DataError(
                f"text_columns (--text-column) must name 1 or 2 columns, got {list(text_columns)}"
            )
        missing = [c for c in text_columns if c not in columns]
        if missing:
            raise DataError(f"{file}: column(s) {missing} not in header {sorted(columns)}")
        return [columns[c] for c in text_columns]
    found = glue_text_columns(list(columns))
    if found is not None:
        return [columns[name] for name in found]
    raise DataError(
        f"{file}: no known text column in header {sorted(columns)}; expected one of "
        f"{list(GLUE_TEXT_COLUMNS)}, or name one or two with --text-column (text_columns=)"
    )


def _glue_label_index(file: Path, columns: dict[str, int], label_column: str | None) -> int:
    candidates = (label_column,) if label_column is not None else GLUE_LABEL_COLUMNS
    for name in candidates:
        if name in columns:
            return columns[name]
    raise DataError(
        f"{file}: no label column {list(candidates)} in header {sorted(columns)}; "
        "name it with --label-column (label_column= in Python); unlabelled test files cannot "
        "be used for pruning or evaluation"
    )


def _squad_example(file: Path, title: str, context: str, qa: dict[str, Any]) -> SquadExample:
    """One question, checked: answers present, ``answer_start`` an integer where the text is.

    Raises:
        DataError: Naming the file, the question id and the bad field.
    """
    qid = str(qa["id"])
    answers = qa["answers"]
    if not answers:
        raise DataError(
            f"{file}: question {qid!r} has no answers (SQuAD v2 unanswerable questions are "
            "not supported)"
        )
    texts: list[str] = []
    starts: list[int] = []
    for answer in answers:
        text, start = str(answer["text"]), answer["answer_start"]
        if isinstance(start, bool) or not isinstance(start, int | str) or not str(start).isdigit():
            raise DataError(
                f"{file}: question {qid!r}: answer_start {start!r} is not a character offset "
                "(a non-negative integer)"
            )
        start = int(start)
        if context[start : start + len(text)] != text:
            found = context[start : start + len(text)]
            raise DataError(
                f"{file}: question {qid!r}: the answer {text!r} is not at its answer_start "
                f"{start} (the context has {found!r} there); fix the offset or the text"
            )
        texts.append(text)
        starts.append(start)
    return SquadExample(qid, title, str(qa["question"]), context, tuple(texts), tuple(starts))


def read_squad_json(path: str | os.PathLike[str]) -> list[SquadExample]:
    """Read a SQuAD v1.1 JSON file (``{"data": [{"title", "paragraphs": [...]}]}``).

    Args:
        path: ``train-v1.1.json`` or ``dev-v1.1.json``.

    Returns:
        One record per question, in file order.

    Raises:
        DataError: If the file is missing, is not JSON, lacks the SQuAD structure, has a
            question without answers, or an ``answer_start`` that is not an integer or does
            not point at its answer text.
    """
    check_path(path, "path", "read_squad_json")
    file = _require_file(Path(path))
    try:
        payload = json.loads(file.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DataError(_not_utf8(file, exc, "a SQuAD v1.1 JSON file")) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}: not valid JSON ({exc}); expected a SQuAD v1.1 file") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise DataError(f"{file}: expected a JSON object with a 'data' list (SQuAD v1.1 format)")
    examples: list[SquadExample] = []
    try:
        for article in payload["data"]:
            title = str(article.get("title", ""))
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    examples.append(_squad_example(file, title, context, qa))
    except (KeyError, TypeError) as exc:
        raise DataError(
            f"{file}: malformed SQuAD record (missing or wrong-typed field {exc}); expected "
            "data[].paragraphs[].{context, qas[].{id, question, answers[].{text, answer_start}}}"
        ) from exc
    if not examples:
        raise DataError(f"{file}: no questions found")
    return examples


def split_squad_articles(
    examples: Sequence[SquadExample],
    train_articles: int,
    eval_articles: int,
    *,
    seed: int = 0,
    source: str = "the SQuAD file",
) -> tuple[list[SquadExample], list[SquadExample]]:
    """Split SQuAD questions by article: no article has questions on both sides.

    Articles are identified by their title (``data[].title``; entries sharing a title count as
    one article).  Each title, in file order, draws a key from ``random.Random(seed).random()``
    and the articles are sorted by it (a shuffle built on the one generator output Python
    guarantees across versions); the questions of the first ``train_articles`` go to training,
    those of the next ``eval_articles`` to evaluation, each side in file order.  The same file,
    counts and seed give the same split on every machine.

    Args:
        examples: The questions of one SQuAD file (:func:`read_squad_json`).
        train_articles: Articles for training (at least 1).
        eval_articles: Articles for evaluation (at least 1).
        seed: Seed of the shuffle.
        source: Name of the file, for messages.

    Returns:
        ``(train questions, eval questions)``.

    Raises:
        DataError: If a count is below 1 or the two together exceed the file's articles.
    """
    asked = f"{train_articles}:{eval_articles}"
    counts: tuple[object, ...] = (train_articles, eval_articles)
    for value in counts:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(
                f"split_articles (--split-articles) {asked}: both counts must be whole numbers "
                "of articles >= 1, e.g. 40:8"
            )
    titles = list(dict.fromkeys(e.title for e in examples))
    if train_articles + eval_articles > len(titles):
        raise DataError(
            f"split_articles (--split-articles) {asked} asks for "
            f"{train_articles + eval_articles} articles, but {source} has only {len(titles)}; "
            f"give counts that sum to at most {len(titles)}"
        )
    rng = random.Random(seed)
    keys = {title: rng.random() for title in titles}
    order = sorted(titles, key=keys.__getitem__)
    train_titles = set(order[:train_articles])
    eval_titles = set(order[train_articles : train_articles + eval_articles])
    return (
        [e for e in examples if e.title in train_titles],
        [e for e in examples if e.title in eval_titles],
    )


def read_raw_text(path: str | os.PathLike[str]) -> list[str]:
    """Read a raw text corpus (e.g. WikiText ``wiki.valid.raw``) into non-blank lines.

    WikiText raw files use CRLF line ends and mark paragraph breaks with lines holding a single
    space; both are normalised away (lines are stripped and blank lines dropped).

    Args:
        path: A UTF-8 text file.

    Returns:
        The stripped, non-blank lines in file order.

    Raises:
        DataError: If the file is missing, is not UTF-8, or holds no text.
    """
    check_path(path, "path", "read_raw_text")
    file = _require_file(Path(path))
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(_not_utf8(file, exc, "a raw text corpus")) from None
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise DataError(f"{file}: no text (only blank lines)")
    return lines
