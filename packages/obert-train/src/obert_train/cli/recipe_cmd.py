"""``obert-train recipe show|list|convert``: what a recipe will do, before a long run.

``show`` reads the recipe with the same :func:`~obert_train.recipe.load_recipe` as ``run``
(every check that needs no model, so a recipe ``run`` refuses up front fails here with the same
message and exit code 2); ``convert`` writes a SparseML recipe as a plain, evaluated one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from obert_train.cli.common import USER_ERRORS, fail, parse_sets

__all__ = ["recipe_app"]

recipe_app = typer.Typer(
    add_completion=False, no_args_is_help=True, help=__doc__, rich_markup_mode=None
)


@recipe_app.command("show")
def show(
    recipe: Annotated[str, typer.Argument(help="Recipe file, YAML text or shipped name.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override KEY=VALUE (as for `run`).")
    ] = None,
    steps_per_epoch: Annotated[
        int | None, typer.Option(min=1, help="Also give each pruning step's optimizer step.")
    ] = None,
    train_examples: Annotated[
        int | None, typer.Option(min=1, help="With --batch-size: derive the steps per epoch.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Examples per optimizer step.")] = 32,
) -> None:
    """Print the resolved plan: every pruning step, LR phases, KD; exit 2 if invalid."""
    from obert_train.recipe import load_recipe

    try:
        parsed = load_recipe(recipe, parse_sets(set_))
        spe = steps_per_epoch
        if spe is None and train_examples is not None:
            spe = max(1, -(-train_examples // batch_size))
        typer.echo(parsed.describe(spe))
    except USER_ERRORS as exc:
        raise fail(exc) from exc


@recipe_app.command("convert")
def convert(
    recipe: Annotated[
        str, typer.Argument(help="SparseML recipe (.yaml or recipe.md), YAML text or shipped name.")
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            "--output-dir",  # obert-train reads -o as --output-dir (the CLIs' one vocabulary)
            help="The .yaml file to write.",
        ),
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override KEY=VALUE: a variable (before eval) or a field."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUTPUT.")] = False,
) -> None:
    """Write RECIPE as a plain recipe: variables and eval(...) evaluated, modifiers resolved."""
    from obert_train.recipe import convert_recipe

    try:
        parsed = convert_recipe(recipe, output, parse_sets(set_), overwrite=overwrite)
        typer.echo(f"wrote {output} (fingerprint {parsed.fingerprint()[:16]})")
    except USER_ERRORS as exc:
        raise fail(exc) from exc


@recipe_app.command("list")
def list_() -> None:
    """List the recipes shipped with obert-train."""
    from obert_train.recipe import list_shipped_recipes

    for name in list_shipped_recipes():
        typer.echo(name)
