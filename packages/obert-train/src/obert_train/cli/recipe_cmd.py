"""``obert-train recipe show|list``: what a recipe will do, before a long run."""

from __future__ import annotations

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


@recipe_app.command("list")
def list_() -> None:
    """List the recipes shipped with obert-train."""
    from obert_train.recipe import list_shipped_recipes

    for name in list_shipped_recipes():
        typer.echo(name)
