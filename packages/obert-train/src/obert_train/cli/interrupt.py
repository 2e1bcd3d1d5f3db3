"""Ctrl-C in a command: exit code 130 (128 + SIGINT) and what to run next."""

from __future__ import annotations

import typer

__all__ = ["EXIT_INTERRUPTED", "interrupted"]

EXIT_INTERRUPTED = 130
"""Exit code after Ctrl-C (128 + SIGINT), as a shell reports an interrupted program."""


def interrupted(hint: str) -> typer.Exit:
    """Print ``interrupted; <hint>`` on stderr; the caller raises the returned Exit(130).

    Args:
        hint: What to run next, e.g. "rerun the same command with --resume".
    """
    typer.secho(f"interrupted; {hint}", fg=typer.colors.YELLOW, err=True)
    return typer.Exit(code=EXIT_INTERRUPTED)
