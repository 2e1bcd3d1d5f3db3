"""Command line interface: ``obert-deploy export | quantize | qat | evaluate | bench | size``.

Every failure is one line on stderr (``error: ...``, naming the bad value and the remedy) with a
non-zero exit code, and happens before any expensive work: option values, output paths (no
existing file is replaced without ``--overwrite``), input files and model limits are checked
first. Heavy modules (torch, transformers, ONNX Runtime) are imported inside the commands, so
``--help`` is instant.

This module holds the typer app and its one-line-error command group; the options the commands
share are in :mod:`obert_deploy.cli.common`, each command in its own module.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from obert_core.shared import TASK_ALIASES, canonical_args, quiet_third_party

from .._errors import brief
from .bench import bench
from .common import one_line
from .evaluate import evaluate
from .export import export
from .latency_table import latency_table
from .qat import qat
from .quantize import quantize
from .size import size

__all__ = ["app", "main"]

#: Option values with aliases: obert-train's task names for ``--task``.
_VALUES = {"--task": TASK_ALIASES}

#: click's base class of usage errors, whether typer vendors click or depends on it.
_CLICK_EXCEPTION: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


def _verbose(args: Sequence[str] | None) -> bool:
    words = sys.argv[1:] if args is None else list(args)
    return "--verbose" in words or "-v" in words


def _given_value(exc: Exception, args: Sequence[str] | None, message: str) -> str:
    """``" (got 'abc')"`` for a bad option value whose message does not quote it."""
    opts = getattr(getattr(exc, "param", None), "opts", None) or []
    words = canonical_args(sys.argv[1:] if args is None else list(args), values=_VALUES)
    for index, word in enumerate(words):
        for opt in opts:
            value = None
            if word == opt and index + 1 < len(words):
                value = words[index + 1]
            elif word.startswith(opt + "="):
                value = word[len(opt) + 1 :]
            if value is not None and value not in message:
                return f" (got {value!r})"
    return ""


EXIT_INTERRUPTED = 130
"""Exit code after Ctrl-C (128 + SIGINT), as a shell reports an interrupted program."""


class _OneLineErrors(TyperGroup):
    """A command group whose usage errors are one ``error: ...`` line, not a usage block.

    It also reads the project's one option vocabulary: old or other-CLI spellings
    (``--seq-len``, ``--text-columns``, ``--task sst2``, ...) are hidden aliases
    (:func:`obert_core.shared.canonical_args`).
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Parse ``args`` with every aliased option written in its one spelling."""
        return super().parse_args(ctx, canonical_args(args, values=_VALUES))

    def invoke(self, ctx: Any) -> Any:
        """Run the command; Ctrl-C is one ``interrupted`` line and exit 130 (as obert-train)."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            typer.secho(
                "interrupted; run the command again to finish", fg=typer.colors.YELLOW, err=True
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(
                args=args,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        except _CLICK_EXCEPTION as exc:
            message = exc.format_message().replace("Value error, ", "")  # type: ignore[attr-defined]
            message += _given_value(exc, args, message)
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            typer.echo(f"error: {one_line(message)}{hint}", err=True)
            sys.exit(int(getattr(exc, "exit_code", 2)))
        except Exception as exc:  # a bug: one line, the traceback only with --verbose
            if _verbose(args):
                raise
            typer.echo(
                f"error: unexpected {brief(exc)}; this is a bug in obert-deploy: rerun with "
                "--verbose for the traceback and report it",
                err=True,
            )
            sys.exit(1)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="obert-deploy",
    help="Export (sparse) Hugging Face models to ONNX, quantize to int8, benchmark on CPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: it wraps to the terminal instead of cutting option names at 80 columns.
    rich_markup_mode=None,
    cls=_OneLineErrors,
    context_settings={"max_content_width": 100, "help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"obert-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    quiet_third_party(verbose=verbose)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


# In this order in `obert-deploy --help`.
app.command("export")(export)
app.command("quantize")(quantize)
app.command("qat")(qat)
app.command("evaluate")(evaluate)
app.command("bench")(bench)
app.command("latency-table")(latency_table)
app.command("size")(size)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="obert-deploy")
