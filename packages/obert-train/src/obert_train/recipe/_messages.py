"""Error messages of recipe validation: field, value, what is wrong and what to do.

Pydantic validation errors are rewritten here (no pydantic wording, no URLs); unknown keys get
a "did you mean" suggestion and the list of allowed keys.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from obert_train.errors import RecipeError

__all__ = ["check_known_keys", "explain_errors", "fmt", "suggest"]

_TYPE_TEXT = {
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "finite_number": "must be a finite number",
    "missing": "is required",
    "extra_forbidden": "is not a field of this modifier",
}
_BOUND_TEXT = {
    "greater_than": ("gt", "must be > {}"),
    "greater_than_equal": ("ge", "must be >= {}"),
    "less_than": ("lt", "must be < {}"),
    "less_than_equal": ("le", "must be <= {}"),
    "too_short": ("min_length", "must have at least {} item(s)"),
}


def fmt(value: Any) -> str:
    """A value as written in messages (``0.9``, ``'cubic'``, ``[...]``)."""
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


def suggest(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, else ``";"`` (ends a message part)."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ";"


def _reason(err: Mapping[str, Any]) -> str:
    kind = str(err["type"])
    ctx = err.get("ctx") or {}
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind in _BOUND_TEXT:
        key, text = _BOUND_TEXT[kind]
        return text.format(fmt(ctx.get(key)))
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind in _TYPE_TEXT:
        text = _TYPE_TEXT[kind]
        value = err.get("input")
        if isinstance(value, str) and value.strip().startswith("eval("):
            text += (
                " ('eval(...)' is evaluated in recipe files and their overrides, with the "
                "recipe's variables, not in a method's settings)"
            )
        return text
    return str(err.get("msg", "invalid value")).removeprefix("Value error, ")


def explain_errors(
    exc: ValidationError,
    where: str,
    rename: Mapping[str, str] | None = None,
    overridden: Collection[str] = (),
) -> RecipeError:
    """A RecipeError listing every error of a pydantic validation, in recipe terms.

    Args:
        exc: The validation error.
        where: Prefix naming the modifier and file, e.g.
            ``"modifier 4 (!OBSPruningModifier, line 21) in r.yaml"``.
        rename: Field names of the validated model -> names in the recipe
            (``targets`` -> ``params``).
        overridden: Recipe fields whose values came from an override (said in the message).
    """
    rename = rename or {}
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        head = rename.get(loc[0], loc[0]) if loc else ""
        name = head + "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in loc[1:])
        reason = _reason(err)
        if not name:
            lines.append(reason)
            continue
        note = " (set by an override)" if head in overridden else ""
        if err["type"] == "missing":
            lines.append(f"{name} {reason}")
        else:
            lines.append(f"{name} = {fmt(err.get('input'))}{note}: {reason}")
    return RecipeError(f"{where}: " + "; ".join(lines))


def check_known_keys(
    fields: Iterable[str],
    allowed: Collection[str],
    where: str,
    refused: Mapping[str, str] | None = None,
) -> None:
    """Refuse keys that are not fields of a modifier.

    Args:
        fields: The keys written in the recipe.
        allowed: The modifier's fields.
        where: Prefix naming the modifier and file.
        refused: Known SparseML fields that are not supported: key -> what to do instead.

    Raises:
        RecipeError: For the first unknown or refused key, with a suggestion and the allowed
            keys.
    """
    for key in fields:
        if refused and key in refused:
            raise RecipeError(f"{where}: field {key!r} is not supported: {refused[key]}")
        if key not in allowed:
            raise RecipeError(
                f"{where}: unknown field {key!r}{suggest(key, allowed)} allowed: {sorted(allowed)}"
            )
