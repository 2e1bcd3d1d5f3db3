"""Convert Hugging Face Hub datasets (``datasets.load_dataset``) into the local record types.

Needs the optional ``datasets`` dependency (``pip install obert-train[hub]``) and network access
the first time a dataset is downloaded.  Names are ``"path"`` or ``"path:config"``, e.g.
``"glue:sst2"``, ``"squad"``, ``"wikitext:wikitext-2-raw-v1"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from obert_train.errors import MissingDependencyError
from obert_train.tasks.data import ClassificationExample, DataError, SquadExample

__all__ = ["MissingDependencyError", "load_hub_split"]


_TEXT_PAIRS = (
    ("sentence1", "sentence2"),
    ("question1", "question2"),
    ("question", "sentence"),
    ("premise", "hypothesis"),
    ("sentence", None),
    ("text", None),
)


def _load(name: str, split: str) -> Any:
    try:
        import datasets  # optional dependency (obert-train[hub])
    except ImportError as exc:
        raise MissingDependencyError(
            f"--dataset {name!r} needs the 'datasets' package: pip install datasets "
            "(or pip install 'obert-train[hub]'), or use local files with --data-dir"
        ) from exc
    path, _, config = name.partition(":")
    try:
        return datasets.load_dataset(path, config or None, split=split)
    except (FileNotFoundError, ValueError, ConnectionError) as exc:
        raise DataError(f"could not load hub dataset {name!r} split {split!r}: {exc}") from exc


def load_hub_split(task: str, name: str, split: str) -> list[Any]:
    """Load one split of a hub dataset as records for ``task``.

    Args:
        task: ``"sst2"`` / ``"glue-tsv"`` (classification), ``"squad"`` or ``"mlm"``.
        name: Dataset name, ``"path"`` or ``"path:config"``.
        split: Split name (``"train"``, ``"validation"``, ...).

    Returns:
        ``ClassificationExample`` / ``SquadExample`` records, or text lines for ``"mlm"``.

    Raises:
        DataError: If the dataset cannot be loaded or lacks the expected columns.
    """
    return convert_rows(task, _load(name, split), f"{name}[{split}]")


def convert_rows(task: str, rows: Iterable[Mapping[str, Any]], source: str) -> list[Any]:
    """Convert dataset rows (mappings of column to value) into records for ``task``."""
    rows = list(rows)
    if not rows:
        raise DataError(f"{source}: no rows")
    columns = set(rows[0])
    if task in ("sst2", "glue-tsv"):
        for first, second in _TEXT_PAIRS:
            if first in columns and (second is None or second in columns) and "label" in columns:
                return [
                    ClassificationExample(
                        str(r[first]),
                        None if second is None else str(r[second]),
                        str(r["label"]),
                        source=f"{source} row",
                        line=index,
                    )
                    for index, r in enumerate(rows)
                ]
        raise DataError(f"{source}: no text/label columns for classification in {sorted(columns)}")
    if task == "squad":
        needed = {"id", "question", "context", "answers"}
        if not needed <= columns:
            raise DataError(
                f"{source}: SQuAD needs columns {sorted(needed)}, got {sorted(columns)}"
            )
        return [
            SquadExample(
                str(r["id"]),
                str(r.get("title", "")),
                str(r["question"]),
                str(r["context"]),
                tuple(str(t) for t in r["answers"]["text"]),
                tuple(int(s) for s in r["answers"]["answer_start"]),
            )
            for r in rows
        ]
    if task == "mlm":
        if "text" not in columns:
            raise DataError(f"{source}: MLM needs a 'text' column, got {sorted(columns)}")
        return [line for r in rows if (line := str(r["text"]).strip())]
    raise DataError(f"unknown task {task!r}; expected one of sst2, glue-tsv, squad, mlm")
