"""Top-level recipe variables and the ``eval(...)`` fields that use them (SparseML recipes).

SparseML recipes are parameterised by top-level variables (``num_epochs: 30``,
``init_lr: 1e-4``) used in modifier fields as ``eval(num_epochs - 1)``; its ``recipe_args``
overrode a variable before the expressions were evaluated (docs/recipes.md, "Compatibility").
Here:

* a variable is a number, an ``eval(...)`` of earlier variables, or any other value (a list of
  ``params``, a mask type) that a field takes whole as ``eval(name)``;
* an override of a variable's name replaces its value before anything is evaluated;
* a variable may not shadow a modifier field: a variable ``damp`` next to a pruning modifier
  that takes ``damp`` must be what the field is: ``damp: eval(damp)``, or the same value
  (``damp: *damp``, an alias, as SparseML recipes write it), and an override of ``damp`` then
  sets both; otherwise ``--set damp=...`` would change the variable and not the modifier;
* every expression is evaluated by :func:`obert_train.recipe._eval.evaluate`, whose messages
  name the expression, the file and the line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from obert_train.errors import RecipeError
from obert_train.recipe._eval import Expr, evaluate, names_in
from obert_train.recipe._yaml import RawModifier, RecipeDocument, Variable, parse_value

__all__ = [
    "check_shadowing",
    "evaluate_variables",
    "follow_variables",
    "split_overrides",
    "substitute",
]


def _deep(value: Any, variables: Mapping[str, Any], where: str, context: str) -> Any:
    if isinstance(value, Expr):
        return evaluate(value, variables, where, context)
    if isinstance(value, list):
        return [_deep(item, variables, where, context) for item in value]
    if isinstance(value, Mapping):
        return {key: _deep(item, variables, where, context) for key, item in value.items()}
    return value


def _fields_named(
    name: str,
    raw: RawModifier,
    fields_of: Callable[[str], Sequence[str] | None],
    special: Mapping[str, tuple[str, str]],
) -> str | None:
    """The field of ``raw`` a variable ``name`` stands for (None: none)."""
    tag, target = special.get(name, ("", ""))
    if raw.tag == tag:
        return target
    return name if name in (fields_of(raw.tag) or []) else None


def _depends(doc: RecipeDocument) -> dict[str, set[str]]:
    """Variable -> every variable its value is computed from (transitively)."""
    out: dict[str, set[str]] = {}
    for variable in doc.variables:
        direct = names_in(variable.value) if isinstance(variable.value, Expr) else set()
        out[variable.name] = set(direct).union(*(out.get(n, set()) for n in direct))
    return out


def _uses(value: Any, name: str, depends: Mapping[str, set[str]]) -> bool:
    if not isinstance(value, Expr):
        return False
    used = names_in(value)
    return name in used or any(name in depends.get(n, set()) for n in used)


def check_shadowing(
    doc: RecipeDocument,
    variables: Mapping[str, Any],
    fields_of: Callable[[str], Sequence[str] | None],
    where: str,
    special: Mapping[str, tuple[str, str]] | None = None,
) -> None:
    """Refuse a variable named like a modifier field that the field does not follow.

    A variable ``X`` next to a modifier that takes a field ``X`` is fine when the field is an
    ``eval(...)`` computed from ``X``, or written with the variable's value (SparseML recipes
    write ``init_lr: *init_lr``); an override of ``X`` then changes both (as SparseML's
    ``recipe_args`` did). A field with another value, an expression not computed from ``X``,
    or no value (the method's default) would not follow: refused.

    Args:
        doc: The recipe as read.
        variables: The variables evaluated without overrides.
        fields_of: The fields a modifier tag takes (None for an unknown tag).
        where: The recipe, for messages.
        special: Override keys that set a field of another name: key -> (tag, field)
            (``num_epochs`` -> the ``!EpochRangeModifier``'s ``end_epoch``).

    Raises:
        RecipeError: Naming the variable, its line, the modifier and what to do.
    """
    depends = _depends(doc)
    for variable in doc.variables:
        name = variable.name
        for raw in doc.modifiers:
            field = _fields_named(name, raw, fields_of, special or {})
            if field is None:
                continue
            value = raw.fields.get(field)
            if _uses(value, name, depends):
                continue
            if field in raw.fields and not isinstance(value, Expr) and value == variables[name]:
                continue
            written = "does not set it" if field not in raw.fields else f"sets it to {value!r}"
            at = f", line {variable.line}" if variable.line is not None else ""
            raise RecipeError(
                f"{where}{at}: variable {name!r} = {variables[name]!r} shadows the field "
                f"{field!r} of {raw.label()}, which {written}: an override of {name!r} would "
                f"change the variable, not the modifier; rename the variable, or write "
                f"'{field}: eval({name})' in the modifier"
            )


def follow_variables(
    raws: Sequence[RawModifier],
    doc: RecipeDocument,
    overridden: Mapping[str, Any],
    fields_of: Callable[[str], Sequence[str] | None],
    special: Mapping[str, tuple[str, str]] | None = None,
) -> list[RawModifier]:
    """The modifiers with each field written as an overridden variable's value set to its new value.

    (:func:`check_shadowing` made sure such a field had the variable's value.) Fields computed
    from the variable by ``eval(...)`` follow by evaluation and are left alone.

    Args:
        raws: The modifiers.
        doc: The recipe as read.
        overridden: Overridden variable -> its new evaluated value.
        fields_of: The fields a modifier tag takes.
        special: As for :func:`check_shadowing`.
    """
    depends = _depends(doc)
    out = []
    for raw in raws:
        fields = dict(raw.fields)
        changed = set()
        for name, value in overridden.items():
            field = _fields_named(name, raw, fields_of, special or {})
            if field is not None and field in fields and not _uses(fields[field], name, depends):
                fields[field] = value
                changed.add(field)
        out.append(
            RawModifier(
                raw.tag, fields, raw.position, raw.line, raw.group, raw.overridden | changed
            )
        )
    return out


def split_overrides(
    doc: RecipeDocument, overrides: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(variable overrides, field overrides)``: keys naming a variable go to the first."""
    names = {variable.name for variable in doc.variables}
    to_variables = {key: value for key, value in overrides.items() if key in names}
    to_fields = {key: value for key, value in overrides.items() if key not in names}
    return to_variables, to_fields


def evaluate_variables(
    variables: Sequence[Variable], overrides: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """The value of every variable, in file order, each with the earlier ones.

    Args:
        variables: The variables as written.
        overrides: Variable name -> new value (text is read as YAML, so ``"30"`` is a number,
            ``"2:4"`` a string and ``"eval(a * 2)"`` an expression).
        where: The recipe, for messages.

    Raises:
        RecipeError: For an expression that fails (see :func:`~obert_train.recipe._eval.evaluate`)
            or uses a variable defined after it.
    """
    lines = {variable.name: variable.line for variable in variables}
    values: dict[str, Any] = {}
    for variable in variables:
        value = variable.value
        context = f"variable {variable.name!r}"
        if variable.name in overrides:
            given = overrides[variable.name]
            value = (
                parse_value(given, f"override {variable.name!r}")
                if isinstance(given, str)
                else given
            )
            if isinstance(value, Expr):
                value = Expr(str(value))
            context += " (set by an override)"
        if isinstance(value, Expr):
            later = sorted((names_in(value) & set(lines)) - set(values))
            if later:
                line = f", line {value.line}" if value.line is not None else ""
                raise RecipeError(
                    f"{where}{line}: {str(value)!r} ({context}) uses {later[0]!r}, defined later "
                    f"(line {lines[later[0]]}); define variables before the ones that use them"
                )
        values[variable.name] = _deep(value, values, where, context)
    return values


def substitute(
    raws: Sequence[RawModifier], variables: Mapping[str, Any], where: str
) -> list[RawModifier]:
    """The modifiers with every ``eval(...)`` in their fields evaluated.

    Raises:
        RecipeError: Naming the expression, the field, the modifier, the file and the line.
    """
    out = []
    for raw in raws:
        fields = {
            key: _deep(value, variables, where, f"field {key!r} of {raw.label()}")
            for key, value in raw.fields.items()
        }
        out.append(RawModifier(raw.tag, fields, raw.position, raw.line, raw.group, raw.overridden))
    return out
