"""Command line of obert-train.

``run`` trains with a recipe (gradual pruning + distillation, dense or sparse transfer);
``oneshot`` prunes one-shot; ``drop-layers`` writes a checkpoint with fewer layers; ``shrink``
writes a structurally pruned checkpoint with smaller tensors; ``recipe
show`` prints what a recipe will do; ``methods`` lists the registered pruning methods and their
settings.
"""

from __future__ import annotations

from typing import Annotated

import typer

from obert_core.shared import quiet_third_party
from obert_train.cli.drop_layers import drop_layers_command
from obert_train.cli.group import VocabularyGroup, version_callback
from obert_train.cli.oneshot import oneshot
from obert_train.cli.recipe_cmd import recipe_app
from obert_train.cli.run import run
from obert_train.cli.shrink import shrink_command

__all__ = ["app", "main"]

# Plain click help (no rich panels): option names stay whole at 80 columns.


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help=__doc__,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=VocabularyGroup,
)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=version_callback("obert-train", "obert_train"),
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Command line of obert-train (``obert-train COMMAND -h`` for a command's options)."""
    quiet_third_party()


app.command("run")(run)
app.command("oneshot")(oneshot)
app.command("drop-layers")(drop_layers_command)
app.command("shrink")(shrink_command)
app.add_typer(recipe_app, name="recipe")


@app.command("methods")
def methods() -> None:
    """List the registered pruning methods, their recipe tags and settings with defaults."""
    from obert_train.pruning.registry import METHODS

    for name in sorted(METHODS):
        cls = METHODS[name]
        tags = ", ".join(f"!{t}" for t in cls.recipe_tags)
        typer.echo(f"{name}  ({tags})  {(cls.__doc__ or '').strip().splitlines()[0]}")
        for field, info in cls.Settings.model_fields.items():
            note = f"  ({info.description})" if info.default is None and info.description else ""
            typer.echo(f"    {field} = {info.default!r}{note}")


def main() -> None:
    """Entry point of the ``obert-train`` script."""
    app()
