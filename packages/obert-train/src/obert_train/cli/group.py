"""The command group every oBERT typer command line shares: option aliases and ``--version``.

obert-train's ``obert-train`` and the application's ``obert`` both read the old or other-CLI
spellings of an option (``--seq-len``, ``--text-columns``, ``--max-samples``, ``--lr``,
``--train-data``, ``-o``) as the one name of each idea (:func:`obert_core.shared.canonical_args`;
the table is in ``docs/concepts.md``) and answer ``--version`` the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperGroup

from obert_core.shared import OPTION_ALIASES, canonical_args

__all__ = ["VocabularyGroup", "version_callback"]

_ALIASES = {**OPTION_ALIASES, "-o": "--output-dir"}


class VocabularyGroup(TyperGroup):
    """A typer command group that reads aliased option spellings as their one name.

    Pass it as ``typer.Typer(cls=VocabularyGroup)``; the aliases stay hidden from ``--help``.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Parse ``args`` with every aliased option written in its one spelling."""
        return super().parse_args(ctx, canonical_args(args, _ALIASES))


def version_callback(program: str, module: str) -> Callable[[bool], None]:
    """The callback of an eager ``--version`` option: print ``PROGRAM VERSION`` and exit.

    Args:
        program: The command's name, e.g. ``"obert-train"``.
        module: The package whose ``__version__`` is printed (imported when the flag is given).

    Returns:
        A typer option callback.
    """

    def show(value: bool) -> None:
        if value:
            typer.echo(f"{program} {importlib.import_module(module).__version__}")
            raise typer.Exit()

    return show
