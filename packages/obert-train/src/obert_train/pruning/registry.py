"""The one registry of pruning methods: name -> method class (with its settings model).

Methods register themselves where they are defined (``@register_method``).  The built-in ones
are imported by the ``obert_train.pruning`` package, so they are registered before this module is
used, without the registry importing them.  Recipes find a method by its recipe tag
(``!OBSPruningModifier`` -> ``obert``), the CLI lists what is here.
"""

from __future__ import annotations

from typing import Any, TypeVar

from obert_train._validate import check_str
from obert_train.errors import RecipeError
from obert_train.pruning.method import PruningMethod

__all__ = ["METHODS", "create_method", "method_for_tag", "register_method"]

METHODS: dict[str, type[PruningMethod]] = {}
"""Registered pruning methods by name."""

_M = TypeVar("_M", bound=type[PruningMethod])


def register_method(cls: _M) -> _M:
    """Class decorator adding a :class:`PruningMethod` subclass to :data:`METHODS`.

    Raises:
        RecipeError: If its name or one of its recipe tags is taken (a ``ValueError``).
    """
    name = cls.name
    if name in METHODS and METHODS[name] is not cls:
        raise RecipeError(f"pruning method {name!r} is already registered")
    for tag in cls.recipe_tags:
        other = method_for_tag(tag)
        if other is not None and other is not cls:
            raise RecipeError(f"recipe tag {tag!r} already selects method {other.name!r}")
    METHODS[name] = cls
    return cls


def method_for_tag(tag: str) -> type[PruningMethod] | None:
    """The method a recipe modifier tag selects (e.g. ``"OBSPruningModifier"``), or None."""
    check_str(tag, "tag", "method_for_tag")
    for cls in METHODS.values():
        if tag in cls.recipe_tags:
            return cls
    return None


def create_method(name: str, **settings: Any) -> PruningMethod:
    """A fresh method instance by registry name, its settings validated.

    Raises:
        RecipeError: If the name is not registered or a setting is unknown or invalid (the
            message names the method, the setting and the value).
    """
    check_str(name, "name", "create_method")
    if name not in METHODS:
        raise RecipeError(f"pruning method {name!r} unknown; registered: {sorted(METHODS)}")
    cls = METHODS[name]
    from pydantic import ValidationError

    try:
        return cls(**settings)
    except ValidationError as exc:
        raise RecipeError(describe_validation_error(exc, f"method {name!r}", cls)) from None


def describe_validation_error(exc: Any, where: str, cls: type[PruningMethod] | None) -> str:
    """One line per pydantic error: the field, the value and what is allowed (no URLs)."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(settings)"
        if err["type"] == "extra_forbidden":
            allowed = sorted(cls.Settings.model_fields) if cls is not None else []
            lines.append(f"{where}: unknown setting {loc!r}; allowed: {allowed}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {loc} = {err.get('input')!r}: {msg}")
    return "; ".join(lines)
