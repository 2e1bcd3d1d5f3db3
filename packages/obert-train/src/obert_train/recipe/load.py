"""Finding, reading and overriding recipes.

A recipe source is a file path, YAML text (any string with a newline), or the name of a recipe
shipped in ``obert_train/recipes/`` (``"minilm-sst2-obert80"``). Overrides change fields of
the recipe before it is validated, so overridden values get the same checks as written ones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from obert_train.errors import RecipeError
from obert_train.pruning.registry import method_for_tag
from obert_train.recipe._messages import suggest
from obert_train.recipe._yaml import RawModifier, parse_recipe_text, parse_value
from obert_train.recipe.modifiers import CORE_MODIFIERS
from obert_train.recipe.pruning_modifier import pruning_fields
from obert_train.recipe.recipe import Recipe, known_tags, validate_recipe
from obert_train.recipe.spec import ModifierSpec

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["apply_overrides", "build_recipe", "list_shipped_recipes", "load_recipe"]

_SUFFIX = ".yaml"


def _shipped_dir() -> Traversable:
    return resources.files("obert_train").joinpath("recipes")


def list_shipped_recipes() -> list[str]:
    """Names of the recipes shipped with obert-train (``load_recipe`` takes them)."""
    folder = _shipped_dir()
    if not folder.is_dir():
        return []
    return sorted(
        entry.name.removesuffix(_SUFFIX)
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.endswith(_SUFFIX)
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"recipe file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read recipe file {str(path)!r}: {exc}") from None


def _source(source: str | os.PathLike[str]) -> tuple[str, str | None, str]:
    """``(text, path, where)`` of a recipe source."""
    if not isinstance(source, str):
        path = Path(source)
        return _read(path), str(path), str(path)
    if "\n" in source:
        return source, None, "recipe text"
    path = Path(source)
    if path.is_file():
        return _read(path), source, source
    name = source.removesuffix(_SUFFIX)
    shipped = list_shipped_recipes()
    if name in shipped and os.sep not in source and "/" not in source:
        entry = _shipped_dir().joinpath(name + _SUFFIX)
        return entry.read_text(encoding="utf-8"), str(entry), f"shipped recipe {name!r}"
    if path.is_dir():
        raise RecipeError(f"recipe {source!r} is a folder; give a recipe file (.yaml) in it")
    if source.endswith((".yaml", ".yml")) or "/" in source or os.sep in source:
        raise RecipeError(
            f"recipe file {source!r} not found; give a file, YAML text or a shipped name "
            "(obert-train recipe list)"
        )
    raise RecipeError(
        f"no recipe file or shipped recipe named {source!r}{suggest(name, shipped)} "
        f"shipped recipes: {shipped}"
    )


def _fields_of(tag: str) -> list[str] | None:
    """Recipe fields a modifier with this tag takes (None for an unknown tag)."""
    if tag in CORE_MODIFIERS:
        return CORE_MODIFIERS[tag].recipe_fields()
    cls = method_for_tag(tag)
    return None if cls is None else pruning_fields(cls)


def _with(raw: RawModifier, field: str, value: Any) -> RawModifier:
    return RawModifier(
        raw.tag,
        {**raw.fields, field: value},
        raw.position,
        raw.line,
        raw.group,
        raw.overridden | {field},
    )


def apply_overrides(
    raws: list[RawModifier], overrides: Mapping[str, Any], where: str
) -> list[RawModifier]:
    """Apply overrides to the modifiers of a recipe (see :func:`load_recipe`).

    Raises:
        RecipeError: For a key that applies to no modifier, an unknown tag or a value that is
            not YAML.
    """
    raws = list(raws)
    for key, given in overrides.items():
        value = parse_value(given, f"override {key!r}") if isinstance(given, str) else given
        if key == "num_epochs":
            ranges = [i for i, raw in enumerate(raws) if raw.tag == "EpochRangeModifier"]
            if not ranges:
                position = len(raws) + 1
                raws.append(RawModifier("EpochRangeModifier", {"start_epoch": 0}, position))
                ranges = [len(raws) - 1]
            for i in ranges:
                raws[i] = _with(raws[i], "end_epoch", value)
            continue
        tag, dot, field = key.partition(".")
        if not dot:
            tag, field = "", key
        tag = tag.removeprefix("!")
        if tag and tag not in known_tags():
            raise RecipeError(
                f"override {key!r}: unknown modifier tag {tag!r}{suggest(tag, known_tags())} "
                f"known tags: {known_tags()}"
            )
        hits = [
            i
            for i, raw in enumerate(raws)
            if (not tag or raw.tag == tag) and field in (_fields_of(raw.tag) or [])
        ]
        if not hits:
            scope = f"!{tag} modifier" if tag else "modifier"
            present = sorted({f"!{raw.tag}" for raw in raws})
            fields = {f for raw in raws for f in (_fields_of(raw.tag) or [])}
            raise RecipeError(
                f"override {key!r} applies to no {scope} of {where} (its modifiers: {present})"
                f"{suggest(field, fields)} use a field of one of them, 'Tag.field' to pick one "
                "kind, or num_epochs"
            )
        for i in hits:
            raws[i] = _with(raws[i], field, value)
    return raws


def load_recipe(
    source: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None
) -> Recipe:
    """Read and validate a recipe.

    Args:
        source: A recipe file, YAML text (a string containing a newline), or the name of a
            shipped recipe (:func:`list_shipped_recipes`, e.g. ``"minilm-sst2-obert80"``).
        overrides: Fields to change before validation. ``{"final_sparsity": 0.9}`` sets the
            field on every modifier that takes it; ``{"OBSPruningModifier.damp": 1e-6}``
            only on modifiers with that tag; ``{"num_epochs": 3}`` sets the
            ``!EpochRangeModifier`` end (adding one if there is none). String values (from a
            command line: ``"0.9"``, ``"true"``, ``"1e-7"``) are read as YAML.

    Returns:
        The validated :class:`Recipe`.

    Raises:
        RecipeError: If the source is not found or the recipe (or an override) is invalid; the
            message names the file, the modifier, the field and the value.
    """
    text, path, where = _source(source)
    raws = parse_recipe_text(text, where)
    if overrides:
        raws = apply_overrides(raws, overrides, where)
    return validate_recipe(raws, path, where)


def build_recipe(modifiers: Sequence[ModifierSpec], *, source: str | None = None) -> Recipe:
    """A recipe from modifiers built in Python, validated as :func:`load_recipe` validates a file.

    Example::

        recipe = build_recipe([
            ModifierSpec.epoch_range(3.0),
            ModifierSpec.pruning("obert", init_sparsity=0.5, final_sparsity=0.9,
                                 start_epoch=0.0, end_epoch=2.0, update_frequency=0.5,
                                 num_grads=64),
            ModifierSpec.distillation(hardness=1.0, temperature=2.0),
        ])
        text = recipe.to_yaml()  # a recipe file that load_recipe reads back equal

    Args:
        modifiers: The modifiers (:class:`~obert_train.ModifierSpec`), any order of groups.
        source: How messages name the recipe (default ``"built recipe"``).

    Returns:
        The validated recipe (no file: ``path`` is None).

    Raises:
        RecipeError: Naming the modifier, the field and the value, as for a file.
    """
    where = source or "built recipe"
    raws = [spec.raw(position) for position, spec in enumerate(modifiers, start=1)]
    return validate_recipe(raws, None, where)
