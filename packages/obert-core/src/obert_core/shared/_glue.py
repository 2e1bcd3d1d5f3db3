"""The column names of GLUE-style TSV files (Wang et al. 2019, GLUE), one table for every reader.

obert-train's training reader and obert-deploy's evaluation reader find a file's text and label
columns by these names, most specific first, so both read the same columns of the same file.
"""

from __future__ import annotations

__all__ = ["GLUE_LABEL_COLUMNS", "GLUE_TEXT_COLUMNS", "glue_text_columns"]

GLUE_TEXT_COLUMNS: tuple[tuple[str, str | None], ...] = (
    ("sentence1", "sentence2"),  # RTE, MRPC-like, WNLI, STS-B
    ("question1", "question2"),  # QQP
    ("question", "sentence"),  # QNLI
    ("#1 String", "#2 String"),  # MRPC as distributed
    ("premise", "hypothesis"),  # MNLI-like
    ("sentence", None),  # SST-2, CoLA with a header
    ("text", None),
)
"""``(first text column, second text column or None)``, most specific first."""

GLUE_LABEL_COLUMNS: tuple[str, ...] = ("label", "gold_label", "Quality")
"""Label column names, in the order they are looked for."""


def glue_text_columns(header: list[str] | tuple[str, ...]) -> tuple[str, ...] | None:
    """The text columns of a header by :data:`GLUE_TEXT_COLUMNS`, or ``None`` if none match.

    Args:
        header: The column names of the file's first row (surrounding spaces ignored).

    Returns:
        One or two column names as they appear in :data:`GLUE_TEXT_COLUMNS`.
    """
    names = {name.strip() for name in header}
    for first, second in GLUE_TEXT_COLUMNS:
        if first in names and (second is None or second in names):
            return (first,) if second is None else (first, second)
    return None
