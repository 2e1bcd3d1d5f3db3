"""Top-level recipe variables and the ``eval(...)`` fields that use them (SparseML recipes).

SparseML recipes are parameterised by top-level variables (``num_epochs: 30``,
``init_lr: 1e-4``) used in modifier fields as ``eval(num_epochs - 1)``; its ``recipe_args``
overrode a variable before the expressions were evaluated (docs/recipes.md, "Compatibility").
Here:

* a variable is a number, an ``eval(...)`` of earlier variables, or any other value (a list of
  ``params``, a mask type) that a field takes whole as ``eval(name)``;
* an override of a variable's name replaces its value before anything is evaluated;
* a variable may not shadow a modifier field: a variable ``damp`` next to a pruning modifier
  that takes ``damp`` but does not set it to an expression of ``damp`` would make
  ``--set damp=...`` change the variable and not the modifier;
* every expression is evaluated by :func:`obert_train.recipe._eval.evaluate`, whose messages
  name the expression, the file and the line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from obert_train.errors import RecipeError
from obert_train.recipe._eval import Expr, evaluate, names_in
from obert_train.recipe._yaml import RawModifier, RecipeDocument, Variable, parse_value

__all__ = ["check_shadowing", "evaluate_variables", "split_overrides", "substitute"]


def _deep(value: Any, variables: Mapping[str, Any], where: str, context: str) -> Any:
    if isinstance(value, Expr):
        return evaluate(value, variables, where, context)
    if isinstance(value, list):
        return [_deep(item, variables, where, context) for item in value]
    if isinstance(value, Mapping):
        return {key: _deep(item, variables, where, context) for key, item in value.items()}
    return value


def check_shadowing(
    doc: RecipeDocument,
    fields_of: Callable[[str], Sequence[str] | None],
    where: str,
    special: Mapping[str, tuple[str, str]] | None = None,
) -> None:
    """Refuse a variable named like a field of a modifier that does not use it for that field.

    Args:
        doc: The recipe as read.
        fields_of: The fields a modifier tag takes (None for an unknown tag).
        where: The recipe, for messages.
        special: Override keys that set a field of another name: key -> (tag, field)
            (``num_epochs`` -> the ``!EpochRangeModifier``'s ``end_epoch``); a variable of that
            name must be what the field is computed from.

    Raises:
        RecipeError: Naming the variable, its line, the modifier and what to do.
    """
    for variable in doc.variables:
        name = variable.name
        for raw in doc.modifiers:
            field = name
            tag, target = (special or {}).get(name, ("", ""))
            if raw.tag == tag:
                field = target
            elif name not in (fields_of(raw.tag) or []):
                continue
            value = raw.fields.get(field)
            if isinstance(value, Expr) and name in names_in(value):
                continue
            written = "does not set it" if field not in raw.fields else f"sets it to {value!r}"
            at = f", line {variable.line}" if variable.line is not None else ""
            raise RecipeError(
                f"{where}{at}: variable {name!r} shadows the field {field!r} of {raw.label()}, "
                f"which {written}: an override of {name!r} would change the variable, not the "
                f"modifier; rename the variable, or write '{field}: eval({name})' in the modifier"
            )


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
