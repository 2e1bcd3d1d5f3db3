"""``convert_recipe``: a SparseML recipe written as a plain, fully evaluated recipe of ours.

SparseML recipes (``.yaml`` or SparseZoo's ``recipe.md``) carry variables and ``eval(...)``
expressions and modifiers that run as something else here (a ``!SetLearningRateModifier`` is
a constant learning-rate phase). The converted file says what will run: every value evaluated,
every modifier in its resolved form, written by the one recipe writer
(:meth:`~obert_train.Recipe.to_yaml`, i.e. :func:`~obert_train.recipe.spec.recipe_yaml`), and
it loads back to an equal recipe (docs/recipes.md, "Compatibility").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from obert_core.shared import atomic_write_text
from obert_train.errors import OutputDirError
from obert_train.recipe.load import load_recipe
from obert_train.recipe.recipe import Recipe

__all__ = ["convert_recipe"]


def _header(recipe: Recipe) -> str:
    lines = []
    if recipe.version is not None:
        lines.append(f"# converted from a SparseML recipe, version {recipe.version}")
    if recipe.variables:
        lines.append("# its variables, as evaluated:")
        lines += [f"#   {name} = {value!r}" for name, value in recipe.variables.items()]
    return "\n".join(lines) + "\n" if lines else ""


def convert_recipe(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    overrides: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Recipe:
    """Write ``source`` as a plain recipe (no variables, no ``eval``) to ``output``, atomically.

    Args:
        source: A recipe file (``.yaml`` or ``.md``), YAML text or a shipped name, read by
            :func:`~obert_train.recipe.load_recipe`.
        output: The ``.yaml`` file to write.
        overrides: As for :func:`~obert_train.recipe.load_recipe` (a variable's name overrides
            the variable before evaluation).
        overwrite: Replace an existing ``output``.

    Returns:
        The recipe (``load_recipe(output)`` gives an equal one).

    Raises:
        RecipeError: If the recipe is invalid (nothing is written).
        OutputDirError: If ``output`` exists (without ``overwrite``), is a folder, or is the
            source file itself.
    """
    recipe = load_recipe(source, overrides)
    out = Path(output)
    if out.is_dir():
        raise OutputDirError(f"output {str(out)!r} is a folder; give a .yaml file to write")
    if recipe.path is not None and out.exists() and out.resolve() == Path(recipe.path).resolve():
        raise OutputDirError(
            f"output {str(out)!r} is the recipe being converted; write to another file"
        )
    if out.suffix.lower() == ".md":
        raise OutputDirError(
            f"output {str(out)!r}: the converted recipe is YAML; give a .yaml file"
        )
    if out.exists() and not overwrite:
        raise OutputDirError(
            f"output {str(out)!r} exists; pass --overwrite (overwrite=True) to replace it"
        )
    atomic_write_text(out, _header(recipe) + recipe.to_yaml())
    return recipe
