"""One vocabulary across the command lines: each idea has one option name, old names still work.

``obert-train``, ``obert-deploy`` and ``obert`` spell each idea the same way (the table in
``docs/concepts.md``, "One vocabulary across the command lines"). Spellings the command lines
used before, or that another of them used, are hidden aliases: :func:`canonical_args` rewrites
them to the one name before the command line is parsed, so existing commands and scripts keep
working and ``--help`` shows one name per idea.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["OPTION_ALIASES", "TASK_ALIASES", "canonical_args", "split_columns"]

OPTION_ALIASES: Mapping[str, str] = {
    "--seq-len": "--max-seq-length",
    "--text-columns": "--text-column",
    "--max-samples": "--max-eval-samples",
    "--lr": "--learning-rate",
    "--train-data": "--train-file",
}
"""Old or other-CLI spelling -> the one option name (every command line)."""

TASK_ALIASES: Mapping[str, str] = {
    "sst2": "sequence-classification",
    "glue-tsv": "sequence-classification",
    "squad": "question-answering",
    "mlm": "masked-lm",
}
"""obert-train's task names -> obert-deploy's (a ``--task`` value of ``obert-deploy``)."""


def canonical_args(
    args: Sequence[str],
    options: Mapping[str, str] = OPTION_ALIASES,
    values: Mapping[str, Mapping[str, str]] | None = None,
) -> list[str]:
    """``args`` with every aliased option (and aliased option value) in its one spelling.

    ``--seq-len 64`` and ``--seq-len=64`` become ``--max-seq-length 64`` / ``=64``; with
    ``values={"--task": TASK_ALIASES}`` the word after ``--task`` is mapped too. Nothing after
    a lone ``--`` is changed (positional arguments), and a value is never read as an option.

    Args:
        args: The command line without the program name.
        options: Alias -> option name.
        values: Option name -> (alias -> value) for options whose values have aliases.

    Returns:
        The rewritten arguments (a new list).
    """
    values = values or {}
    out: list[str] = []
    index = 0
    while index < len(args):
        word = args[index]
        if word == "--":
            out.extend(args[index:])
            break
        name, eq, value = word.partition("=")
        name = options.get(name, name) if name.startswith("-") else name
        table = values.get(name)
        if eq:
            out.append(f"{name}={table.get(value, value) if table else value}")
        elif table is not None and index + 1 < len(args):
            out += [name, table.get(args[index + 1], args[index + 1])]
            index += 1
        else:
            out.append(name)
        index += 1
    return out


def split_columns(value: str | Sequence[str] | None) -> list[str] | None:
    """The column names of ``--text-column``, split on commas (every command line).

    ``"a, b"``, ``["a,b"]`` and ``["a", "b"]`` (the flag given twice) all give ``["a", "b"]``;
    blanks are dropped, and ``None``, empty or only blanks give ``None`` (detect the columns).
    """
    items = [value] if isinstance(value, str) else list(value or [])
    names = [c.strip() for item in items for c in item.split(",") if c.strip()]
    return names or None
