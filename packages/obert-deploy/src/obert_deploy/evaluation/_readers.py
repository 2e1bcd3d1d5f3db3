"""GLUE-style TSV and SQuAD v1.1 JSON readers, with clear errors for malformed files.

Nothing is downloaded: the files are passed explicitly (or found by :mod:`._datasets`).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obert_core.shared import glue_text_columns

from .._errors import ObertDeployError
from .._validate import check_at_least, check_path

__all__ = ["QAExample", "TextDataset", "read_glue_tsv", "read_squad"]


@dataclass(frozen=True)
class TextDataset:
    """Text inputs (one or two segments per example) with integer labels.

    Attributes:
        texts: One tuple of 1 or 2 strings per example.
        labels: Integer label per example (``None`` for unlabelled files).
        path: Source file.
        lines: The line of each example in ``path`` (1-based, the header is line 1), for
            messages naming a bad row.
    """

    texts: list[tuple[str, ...]]
    labels: list[int] | None
    path: str
    lines: list[int] = field(default_factory=list, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class QAExample:
    """One SQuAD question: id, question, context and the accepted answer strings.

    Attributes:
        id: SQuAD question id.
        question: The question text.
        context: The paragraph the answer is taken from.
        answers: Accepted answer strings (SQuAD v1.1 dev has up to several per question).
    """

    id: str
    question: str
    context: str
    answers: tuple[str, ...]


def _data_file(path: str | os.PathLike[str], kind: str) -> Path:
    """``path`` as a :class:`Path` if it is an existing file, else a clear error."""
    file = Path(path)
    if file.is_dir():
        raise ObertDeployError(
            f"data file {str(file)!r} is a directory; pass the {kind} file itself "
            f"(e.g. {str(file / ('dev.tsv' if kind == 'TSV' else 'dev-v1.1.json'))!r})"
        )
    if not file.is_file():
        raise ObertDeployError(f"data file {str(file)!r} does not exist; pass an existing {kind}")
    return file


def _short(values: Sequence[str], limit: int = 80) -> str:
    """A header (or any list of cells) cut to ``limit`` characters for a message."""
    text = repr(list(values))
    return text if len(text) <= limit else text[: limit - 5] + " ...]"


def _read_header(reader: Any, file: Path) -> list[str]:
    header: list[str] | None = next(reader, None)
    if not header:
        raise ObertDeployError(f"data file {str(file)!r} is empty; pass a TSV with a header row")
    if header[0].lstrip().startswith(("{", "[")):
        raise ObertDeployError(
            f"data file {str(file)!r} looks like JSON (SQuAD?), not a GLUE-style TSV; for "
            "question answering pass --task question-answering, else a tab-separated file "
            "with a header row such as 'sentence<TAB>label'"
        )
    return header


def _resolve_columns(
    header: list[str], text_columns: Sequence[str] | None, label_column: str | None, file: Path
) -> tuple[list[int], int | None]:
    if text_columns is None:
        text_columns = glue_text_columns(header)
        if text_columns is None:
            raise ObertDeployError(
                f"cannot tell the text columns of {str(file)!r} (header {_short(header)}); pass "
                "--text-column NAME[,NAME2]"
            )
    if not 1 <= len(text_columns) <= 2:
        raise ObertDeployError(
            f"{len(text_columns)} text columns {list(text_columns)} given for {str(file)!r}; pass "
            "one or two (a sentence, or a sentence pair) with --text-column"
        )
    missing = [c for c in text_columns if c not in header]
    if missing:
        raise ObertDeployError(
            f"text columns {missing} not in the header {_short(header)} of {str(file)!r}; pass "
            "--text-column with names from the header"
        )
    if label_column and label_column not in header:
        raise ObertDeployError(
            f"label column {label_column!r} not in the header {_short(header)} of "
            f"{str(file)!r}; this needs labelled data: pass a TSV with a {label_column!r} column "
            "(e.g. SST-2 dev.tsv, not test.tsv)"
        )
    label_idx = header.index(label_column) if label_column else None
    return [header.index(c) for c in text_columns], label_idx


def _read_rows(
    reader: Any,
    file: Path,
    width: int,
    text_idx: list[int],
    label_idx: int | None,
    max_samples: int | None,
) -> tuple[list[tuple[str, ...]], list[int], list[int]]:
    texts: list[tuple[str, ...]] = []
    labels: list[int] = []
    lines: list[int] = []
    for line_no, row in enumerate(reader, start=2):
        if max_samples is not None and len(texts) >= max_samples:
            break
        if not row:
            continue
        if len(row) < width:
            raise ObertDeployError(
                f"{str(file)!r} line {line_no} has {len(row)} tab-separated fields, the header "
                f"{width}; fix the line (a missing tab, or a quote/tab inside the text)"
            )
        texts.append(tuple(row[i].strip() for i in text_idx))
        lines.append(line_no)
        if label_idx is not None:
            try:
                labels.append(int(row[label_idx]))
            except ValueError:
                raise ObertDeployError(
                    f"{str(file)!r} line {line_no}: label {row[label_idx]!r} is not an integer; "
                    "labels must be class indices such as 0 and 1"
                ) from None
    return texts, labels, lines


def read_glue_tsv(
    path: str | os.PathLike[str],
    *,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = "label",
    max_samples: int | None = None,
) -> TextDataset:
    """Read a GLUE-style TSV file (header row, tab separated, no quoting).

    Args:
        path: The ``.tsv`` file.
        text_columns: One or two column names holding the text; detected from the header when
            ``None`` (``sentence``, ``sentence1/sentence2``, ``question/sentence``, ...).
        label_column: Column of integer labels; ``None`` for unlabelled data.
        max_samples: Keep only the first rows.

    Raises:
        ObertDeployError: Missing file, a directory, not UTF-8 text, JSON instead of TSV,
            unknown columns, short rows or non-integer labels.
    """
    check_path(path, "path", "read_glue_tsv")
    check_at_least(max_samples, "max_samples", "read_glue_tsv", 1)
    file = _data_file(path, "TSV")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with file.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = _read_header(reader, file)
            text_idx, label_idx = _resolve_columns(header, text_columns, label_column, file)
            texts, labels, lines = _read_rows(
                reader, file, len(header), text_idx, label_idx, max_samples
            )
    except UnicodeDecodeError as exc:
        raise ObertDeployError(
            f"data file {str(file)!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "pass a GLUE-style TSV file"
        ) from None
    return TextDataset(
        texts=texts, labels=labels if label_idx is not None else None, path=str(file), lines=lines
    )


def _squad_json(file: Path) -> list[Any]:
    remedy = (
        "pass SQuAD v1.1 JSON such as dev-v1.1.json (for a TSV use --task sequence-classification)"
    )
    try:
        data = json.loads(file.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ObertDeployError(
            f"{str(file)!r} is not UTF-8 text ({exc.reason}); {remedy}"
        ) from None
    except json.JSONDecodeError as exc:
        raise ObertDeployError(f"{str(file)!r} is not JSON ({exc}); {remedy}") from None
    articles = data.get("data") if isinstance(data, dict) else None
    if not isinstance(articles, list):
        raise ObertDeployError(f"{str(file)!r} has no 'data' list of articles; {remedy}")
    return articles


def _qa_example(qa: Any, context: Any, file: Path, where: str) -> QAExample:
    try:
        qid = str(qa.get("id", where))
        question, answers = qa["question"], qa["answers"]
        texts = tuple(a["text"] for a in answers)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ObertDeployError(
            f"{str(file)!r} {where}: a question lacks {exc} (each needs 'id', 'question' and "
            "'answers' with 'text'); pass SQuAD v1.1 JSON"
        ) from None
    if not all(isinstance(t, str) for t in (question, context, *texts)):
        raise ObertDeployError(
            f"{str(file)!r} question {qid!r}: question, context and answer texts must be strings"
        )
    return QAExample(id=qid, question=question, context=context, answers=texts)


def read_squad(path: str | os.PathLike[str], *, max_samples: int | None = None) -> list[QAExample]:
    """Read a SQuAD v1.1 JSON file into :class:`QAExample` objects (in file order).

    Args:
        path: The SQuAD ``.json`` file (``{"data": [{"paragraphs": [...]}, ...]}``).
        max_samples: Keep only the first questions.

    Returns:
        The questions with their contexts and accepted answers.

    Raises:
        ObertDeployError: Missing file, a directory, not JSON, or not SQuAD's structure (the
            message names the article/paragraph or question id).
    """
    file = _data_file(path, "SQuAD JSON")
    examples = []
    for a, article in enumerate(_squad_json(file)):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise ObertDeployError(
                f"{str(file)!r} article {a}: no 'paragraphs' list; pass SQuAD v1.1 JSON"
            )
        for p, paragraph in enumerate(paragraphs):
            where = f"article {a} paragraph {p}"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                raise ObertDeployError(
                    f"{str(file)!r} {where}: no 'context' and 'qas' list; pass SQuAD v1.1 JSON"
                )
            for qa in paragraph["qas"]:
                examples.append(_qa_example(qa, paragraph.get("context"), file, where))
                if max_samples is not None and len(examples) >= max_samples:
                    return examples
    return examples
