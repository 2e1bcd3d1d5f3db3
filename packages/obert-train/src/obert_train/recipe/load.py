"""Finding, reading and overriding recipes: the one parser of every entry point.

A recipe source is a file path (``.yaml``, or a SparseZoo-style ``.md`` with YAML front
matter), YAML text (any string with a newline), or the name of a recipe shipped in
``obert_train/recipes/`` (``"minilm-sst2-obert80"``). ``obert-train run``, ``oneshot``,
``recipe show``, ``recipe convert``, the Python API and ``obert quickstart`` all read recipes
through :func:`load_recipe`:

1. the text (a Markdown recipe's front matter, :mod:`obert_train.recipe._markdown`) is read as
   YAML: modifier groups, SparseML's ``version`` and top-level variables;
2. overrides of a variable's name replace it, then the variables are evaluated in file order
   (:mod:`obert_train.recipe._variables`, the safe arithmetic of
   :mod:`obert_train.recipe._eval`);
3. the other overrides change fields of the modifiers, then every ``eval(...)`` of a field is
   evaluated;
4. the modifiers and the rules between them are validated (:func:`validate_recipe`), so
   overridden values get the same checks as written ones.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

from pydantic import BaseModel

from obert_train._validate import check_mapping, check_path
from obert_train.errors import ArgumentError, RecipeError
from obert_train.pruning.registry import method_for_tag
from obert_train.recipe._eval import Expr, is_expr_text
from obert_train.recipe._markdown import front_matter, has_front_matter
from obert_train.recipe._messages import suggest
from obert_train.recipe._variables import (
    check_shadowing,
    evaluate_variables,
    follow_variables,
    split_overrides,
    substitute,
)
from obert_train.recipe._yaml import RawModifier, parse_recipe_text, parse_value
from obert_train.recipe.modifiers import CORE_MODIFIERS
from obert_train.recipe.pruning_modifier import ScheduleFields, pruning_fields
from obert_train.recipe.recipe import Recipe, known_tags, validate_recipe
from obert_train.recipe.spec import ModifierSpec
from obert_train.recipe.training_modifiers import TRAINING_MODIFIERS

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["apply_overrides", "build_recipe", "list_shipped_recipes", "load_recipe"]

_SUFFIX = ".yaml"
_LOGGING = ("log_types", "constant_logging")
"""SparseML's logging fields (any modifier): dropped with a note, see :func:`_logging_fields`."""
_SPECIAL = {"num_epochs": ("EpochRangeModifier", "end_epoch")}
"""Override keys that set a field of another name (``num_epochs``: the run length)."""


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


def _markdown(text: str, path: str | None, where: str) -> str:
    """The recipe YAML of a source: a ``.md`` file's front matter, text's if it has one."""
    if path is not None and path.lower().endswith(".md"):
        return front_matter(text, where)
    if path is None and has_front_matter(text):
        return front_matter(text, where)
    return text


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
    if source.endswith((".yaml", ".yml", ".md")) or "/" in source or os.sep in source:
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
    if tag in TRAINING_MODIFIERS:
        return TRAINING_MODIFIERS[tag].recipe_fields()
    cls = method_for_tag(tag)
    return None if cls is None else pruning_fields(cls)


def _logging_fields(raws: Sequence[RawModifier]) -> tuple[list[RawModifier], tuple[str, ...]]:
    """The modifiers without SparseML's logging fields, and a note for each one removed.

    ``log_types`` and ``constant_logging`` only choose SparseML's loggers; here logging is the
    trainer's (``--report-to``, ``--logging-steps``), so they are dropped, and ``recipe show``
    says so.
    """
    out, notes = [], []
    for raw in raws:
        dropped = [key for key in _LOGGING if key in raw.fields]
        if not dropped:
            out.append(raw)
            continue
        fields = {k: v for k, v in raw.fields.items() if k not in _LOGGING}
        out.append(RawModifier(raw.tag, fields, raw.position, raw.line, raw.group, raw.overridden))
        notes.append(
            f"{raw.label()}: {', '.join(dropped)} not used (logging is the trainer's: "
            "--report-to, --logging-steps)"
        )
    return out, tuple(notes)


def _wants_text(tag: str, field: str) -> bool:
    """Whether the field's schema type is text (``mask_type``, ``lr_func``, ``inter_func``)."""
    cls = method_for_tag(tag)
    models: list[type[BaseModel]] = [CORE_MODIFIERS[tag]] if tag in CORE_MODIFIERS else []
    models += [TRAINING_MODIFIERS[tag]] if tag in TRAINING_MODIFIERS else []
    models += [] if cls is None else [ScheduleFields, cls.Settings]
    info = next((m.model_fields[field] for m in models if field in m.model_fields), None)
    if info is None:
        return False
    annotation = info.annotation
    if annotation is str:
        return True
    args = get_args(annotation)
    return get_origin(annotation) is Literal and all(isinstance(a, str) for a in args)


def _typed(given: Any, key: str, raws: Sequence[RawModifier], hits: Sequence[int]) -> Any:
    """An override's value as the field's schema type: text stays text, other text is YAML.

    ``mask_type=2:4`` stays ``"2:4"`` (never YAML 1.1's base-60 int 124), ``damp=1e-7`` is the
    float, ``params=[re:a, re:b]`` a list.
    """
    if not isinstance(given, str) or isinstance(given, Expr):
        return given
    field = key.partition(".")[2] or key
    text = hits and all(_wants_text(raws[i].tag, field) for i in hits)
    if text and not is_expr_text(given):
        return given.strip()
    return _no_line(parse_value(given, f"override {key!r}"))


def _no_line(value: Any) -> Any:
    """``value`` with every ``eval(...)`` in it lineless.

    An override's text is not on a line of the recipe file (its line 1 would name the file's).
    """
    if isinstance(value, Expr):
        return Expr(str(value))
    if isinstance(value, list):
        return [_no_line(item) for item in value]
    if isinstance(value, dict):
        return {name: _no_line(item) for name, item in value.items()}
    return value


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
        if key == "num_epochs":
            value = _typed(given, key, raws, [])
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
        value = _typed(given, key, raws, hits)
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
            ``!EpochRangeModifier`` end (adding one if there is none), unless the recipe has a
            variable of that name: a key naming a top-level variable overrides the variable
            before the ``eval(...)`` fields are evaluated (SparseML's ``recipe_args``). String
            values (from a command line) are read as the field's type: text fields keep the
            text (``"2:4"``), others are read as YAML (``"0.9"``, ``"true"``, ``"1e-7"``,
            ``"eval(num_epochs - 2)"``).

    Returns:
        The validated :class:`Recipe`.

    Raises:
        RecipeError: If the source is not found or the recipe (or an override) is invalid; the
            message names the file, the modifier, the field and the value.
        ArgumentError: If ``source`` is not a string or path, or ``overrides`` not a dict.
    """
    check_path(source, "source", "load_recipe")
    check_mapping(overrides, "overrides", "load_recipe")
    text, path, where = _source(source)
    doc = parse_recipe_text(_markdown(text, path, where), where)
    variables = evaluate_variables(doc.variables, {}, where)
    check_shadowing(doc, variables, _fields_of, where, _SPECIAL)
    to_variables, to_fields = split_overrides(doc, overrides or {})
    raws = doc.modifiers
    if to_variables:
        variables = evaluate_variables(doc.variables, to_variables, where)
        changed = {name: variables[name] for name in to_variables}
        raws = follow_variables(raws, doc, changed, _fields_of, _SPECIAL)
    if to_fields:
        raws = apply_overrides(raws, to_fields, where)
    raws, notes = _logging_fields(substitute(raws, variables, where))
    recipe = validate_recipe(raws, path, where)
    return dataclasses.replace(recipe, version=doc.version, variables=variables, notes=notes)


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
        ArgumentError: If ``modifiers`` is not a list of :class:`~obert_train.ModifierSpec`.
    """
    given: object = modifiers  # checked as any object: callers may pass anything
    if isinstance(given, str | bytes) or not isinstance(given, Sequence):
        raise ArgumentError(
            f"build_recipe: modifiers={modifiers!r} must be a list of ModifierSpec, "
            f"got {type(modifiers).__name__}"
        )
    for spec in modifiers:
        if not isinstance(spec, ModifierSpec):
            raise ArgumentError(
                f"build_recipe: modifier {spec!r} must be a ModifierSpec (ModifierSpec.pruning, "
                f"ModifierSpec.epoch_range, ...), got {type(spec).__name__}"
            )
    where = source or "built recipe"
    raws = [spec.raw(position) for position, spec in enumerate(modifiers, start=1)]
    return validate_recipe(raws, None, where)
