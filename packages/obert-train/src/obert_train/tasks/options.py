"""The data options: where a task's data come from and how they are cut.

One type for :func:`obert_train.load_task`, the data flags of ``obert-train run`` and
``obert-train oneshot`` (``--data-dir`` ... ``--split-seed``) and ``obert quickstart``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DataOptions"]


def _path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


@dataclass(frozen=True)
class DataOptions:
    """Where a task's data come from and how they are cut (every field optional).

    Data come from ``train_file`` / ``dev_file``, else from the standard file names in
    ``data_dir``, else from the hub dataset ``dataset`` (:func:`obert_train.load_task`). The
    values are checked when the task is loaded, with messages naming the field and its
    command-line flag. Paths may be given as strings and sequences as lists: they are stored
    as :class:`~pathlib.Path` and tuples.

    Attributes:
        data_dir: Folder with the task files (``--data-dir``).
        dataset: Hub dataset ``path[:config]`` such as ``"glue:sst2"`` (``--dataset``).
        train_file: Explicit training file (``--train-file``).
        dev_file: Explicit dev file (``--dev-file``).
        max_seq_length: Token limit (``--max-seq-length``); None: the task's default (128;
            SQuAD 384).
        max_train_samples: Seeded random subset of the training records; None: all.
        max_eval_samples: The first N dev records (``eval_subset``); None: all.
        text_columns: GLUE TSV: one or two text columns instead of the automatic choice
            (``--text-column``, repeatable).
        label_column: GLUE TSV: the label column instead of ``label``.
        doc_stride: SQuAD: overlap of long-context windows; None: 128, or half the context
            room of shorter windows (``squad_doc_stride``).
        max_query_length: SQuAD: question tokens kept (default 64).
        split_articles: SQuAD: ``(N, M)`` splits ONE file by article: the first N shuffled
            articles train, the next M are the dev set (``--split-articles N:M``).
        split_seed: SQuAD: seed of the article shuffle (None: 0); only with
            ``split_articles``.
    """

    data_dir: Path | None = None
    dataset: str | None = None
    train_file: Path | None = None
    dev_file: Path | None = None
    max_seq_length: int | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    text_columns: tuple[str, ...] | None = None
    label_column: str | None = None
    doc_stride: int | None = None
    max_query_length: int | None = None
    split_articles: tuple[int, int] | None = None
    split_seed: int | None = None

    def __post_init__(self) -> None:
        """Store paths as :class:`~pathlib.Path` and sequences as tuples (values unchecked)."""
        for name in ("data_dir", "train_file", "dev_file"):
            object.__setattr__(self, name, _path(getattr(self, name)))
        for name in ("text_columns", "split_articles"):
            value = getattr(self, name)
            if isinstance(value, Sequence) and not isinstance(value, str):
                object.__setattr__(self, name, tuple(value))

    @property
    def squad_options(self) -> dict[str, int]:
        """The SQuAD windowing options that are set (``doc_stride``, ``max_query_length``)."""
        given = {"doc_stride": self.doc_stride, "max_query_length": self.max_query_length}
        return {name: value for name, value in given.items() if value is not None}
