"""Task data: GLUE-style TSV files, SQuAD JSON, tokenisation to fixed-shape NumPy batches.

The shared datasets are looked up in ``$OBERT_DATA_DIR`` or in ``../shared/data`` next to the
repository root; nothing is downloaded.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import ObertDeployError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "QAExample",
    "TextDataset",
    "data_dir",
    "default_dataset",
    "iter_batches",
    "read_glue_tsv",
    "read_squad",
    "tokenize",
]

_KNOWN_TEXT_COLUMNS: tuple[tuple[str, ...], ...] = (
    ("sentence1", "sentence2"),
    ("question1", "question2"),
    ("question", "sentence"),
    ("premise", "hypothesis"),
    ("sentence",),
    ("text",),
)


@dataclass(frozen=True)
class TextDataset:
    """Text inputs (one or two segments per example) with integer labels.

    Attributes:
        texts: One tuple of 1 or 2 strings per example.
        labels: Integer label per example (``None`` for unlabelled files).
        path: Source file.
    """

    texts: list[tuple[str, ...]]
    labels: list[int] | None
    path: str

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


def data_dir() -> Path | None:
    """Directory of the shared datasets: ``$OBERT_DATA_DIR`` or ``<repo>/../shared/data``."""
    env = os.environ.get("OBERT_DATA_DIR")
    if env:
        return Path(env)
    candidate = Path(__file__).resolve().parents[4] / ".." / "shared" / "data"
    return candidate.resolve() if candidate.is_dir() else None


def default_dataset(task: str, split: str = "dev") -> Path:
    """Default data file of ``task``: SST-2 (sequence classification) or SQuAD v1.1.

    Raises:
        ObertDeployError: The task has no default dataset or the file is absent.
    """
    root = data_dir()
    files = {
        "sequence-classification": Path("SST-2") / f"{split}.tsv",
        "question-answering": Path("SQuAD") / f"{split}-v1.1.json",
    }
    if task not in files:
        raise ObertDeployError(
            f"task {task!r} has no default dataset; pass a data file explicitly (--data)"
        )
    if root is None or not (root / files[task]).is_file():
        raise ObertDeployError(
            f"default dataset {files[task]} for task {task!r} not found (data dir: {root}); "
            "set OBERT_DATA_DIR or pass a data file explicitly (--data)"
        )
    return root / files[task]


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
        ObertDeployError: Missing file, unknown columns or non-integer labels.
    """
    file = Path(path)
    if not file.is_file():
        raise ObertDeployError(f"data file {str(file)!r} does not exist")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with file.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if not header:
            raise ObertDeployError(f"data file {str(file)!r} is empty")
        if text_columns is None:
            text_columns = next((c for c in _KNOWN_TEXT_COLUMNS if set(c) <= set(header)), None)
            if text_columns is None:
                raise ObertDeployError(
                    f"cannot tell the text columns of {str(file)!r} (header {header}); pass "
                    "--text-columns"
                )
        missing = [
            c for c in [*text_columns, *([label_column] if label_column else [])] if c not in header
        ]
        if missing:
            raise ObertDeployError(f"columns {missing} not in the header {header} of {str(file)!r}")
        text_idx = [header.index(c) for c in text_columns]
        label_idx = header.index(label_column) if label_column else None
        texts: list[tuple[str, ...]] = []
        labels: list[int] = []
        for line_no, row in enumerate(reader, start=2):
            if max_samples is not None and len(texts) >= max_samples:
                break
            if not row:
                continue
            texts.append(tuple(row[i].strip() for i in text_idx))
            if label_idx is not None:
                try:
                    labels.append(int(row[label_idx]))
                except (ValueError, IndexError):
                    raise ObertDeployError(
                        f"{str(file)!r} line {line_no}: label {row[label_idx : label_idx + 1]} is "
                        "not an integer"
                    ) from None
    return TextDataset(
        texts=texts, labels=labels if label_idx is not None else None, path=str(file)
    )


def read_squad(path: str | os.PathLike[str], *, max_samples: int | None = None) -> list[QAExample]:
    """Read a SQuAD v1.1 JSON file into :class:`QAExample` objects (in file order).

    Args:
        path: The SQuAD ``.json`` file (``{"data": [{"paragraphs": [...]}, ...]}``).
        max_samples: Keep only the first questions.

    Returns:
        The questions with their contexts and accepted answers.

    Raises:
        ObertDeployError: Missing file or not SQuAD JSON.
    """
    file = Path(path)
    if not file.is_file():
        raise ObertDeployError(f"data file {str(file)!r} does not exist")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ObertDeployError(f"{str(file)!r} is not a SQuAD JSON file ({exc})") from exc
    examples = []
    for article in data:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                examples.append(
                    QAExample(
                        id=str(qa["id"]),
                        question=qa["question"],
                        context=paragraph["context"],
                        answers=tuple(a["text"] for a in qa["answers"]),
                    )
                )
                if max_samples is not None and len(examples) >= max_samples:
                    return examples
    return examples


def tokenize(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[tuple[str, ...]],
    seq_len: int,
    input_names: Sequence[str],
) -> dict[str, np.ndarray]:
    """Tokenise texts to int64 arrays of shape ``(len(texts), seq_len)`` (padded, truncated).

    Args:
        tokenizer: A ``transformers`` tokenizer.
        texts: One tuple of 1 or 2 segments per example.
        seq_len: Tokens per example (padding to and truncation at this length).
        input_names: Model inputs to return; ``token_type_ids`` is zero-filled when the
            tokenizer does not produce it.

    Returns:
        Input name -> int64 array of shape ``(len(texts), seq_len)``.

    Raises:
        ObertDeployError: The tokenizer does not produce a required input.
    """
    first = [t[0] for t in texts]
    second = [t[1] for t in texts] if texts and len(texts[0]) > 1 else None
    encoded: Any = tokenizer(
        first,
        second,
        padding="max_length",
        truncation=True,
        max_length=seq_len,
        return_tensors="np",
    )
    feeds = {}
    for name in input_names:
        if name in encoded:
            feeds[name] = np.asarray(encoded[name], dtype=np.int64)
        elif name == "token_type_ids":
            feeds[name] = np.zeros((len(texts), seq_len), dtype=np.int64)
        else:
            raise ObertDeployError(f"the tokenizer does not produce model input {name!r}")
    return feeds


def iter_batches(
    feeds: dict[str, np.ndarray], batch_size: int, *, pad_last: bool = False
) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """Yield ``(batch, n_real)`` slices of ``feeds``.

    With ``pad_last`` the final partial batch is padded to ``batch_size`` by repeating its last
    row (for static-shape models); ``n_real`` says how many rows are real.

    Args:
        feeds: Input name -> array with the examples on axis 0.
        batch_size: Rows per batch (>= 1).
        pad_last: Pad the final partial batch to ``batch_size``.

    Yields:
        ``(batch, n_real)`` pairs.

    Raises:
        ObertDeployError: ``batch_size`` < 1.
    """
    if batch_size < 1:
        raise ObertDeployError(f"batch size {batch_size} must be >= 1; pass --batch-size 1 or more")
    total = len(next(iter(feeds.values())))
    for start in range(0, total, batch_size):
        batch = {k: v[start : start + batch_size] for k, v in feeds.items()}
        real = len(next(iter(batch.values())))
        if pad_last and real < batch_size:
            batch = {
                k: np.concatenate([v, np.repeat(v[-1:], batch_size - real, axis=0)])
                for k, v in batch.items()
            }
        yield batch, real
