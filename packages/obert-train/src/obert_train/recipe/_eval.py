"""The safe arithmetic of SparseML recipe expressions, ``eval(num_epochs - 1)``.

SparseML recipes are parameterised by top-level variables used in modifier fields as
``eval(<expression>)`` (docs/recipes.md, "Compatibility"). SparseML evaluated them with its
``restricted_eval``, an ``ast`` walker; this is the same grammar, and never Python's ``eval``:

* numbers (int, float), names of recipe variables;
* ``+ - * / // % **``, unary ``-`` and ``+``, parentheses;
* the pure functions SparseML allowed: ``abs``, ``float``, ``int``, ``min``, ``max``, ``round``
  (positional arguments only).

Anything else (a string, an attribute, a subscript, another call, a comparison, a lambda) is
refused, as are a division by zero and a number (constant, variable, intermediate or final
result) that is not finite or is larger than ``2 ** 1024``, checked before a power computes it.
``eval(name)`` of a variable that is not a number (a list of ``params``, a mask type ``"2:4"``)
gives that value unchanged, as in SparseML.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from obert_train.errors import RecipeError

__all__ = ["FUNCTIONS", "Expr", "evaluate", "is_expr_text", "names_in"]

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "float": float,
    "int": int,
    "max": max,
    "min": min,
    "round": round,
}
"""The functions an expression may call (those of SparseML's ``restricted_eval``)."""

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_MAX_EXPONENT = 1024
"""Larger integer powers are refused (``10 ** 10 ** 10`` would never finish)."""
_MAX_BITS = 1024
"""A number of magnitude above ``2 ** 1024`` (beyond every float) is refused, before a power
computes it: ``(9 ** 1024) ** 1024`` would not print, one more ``** 1024`` never finish."""


class Expr(str):
    """An ``eval(...)`` text of a recipe, with the line it was written on.

    A ``str`` (so code that does not evaluate it sees the text); the recipe reader makes one of
    every ``eval(...)`` scalar.

    Attributes:
        line: 1-based line in the recipe file (None: from an override or built in Python).
    """

    line: int | None

    def __new__(cls, text: str, line: int | None = None) -> Expr:
        """An expression ``text`` (``"eval(num_epochs - 1)"``) written on ``line``."""
        obj = super().__new__(cls, text)
        obj.line = line
        return obj

    @property
    def body(self) -> str:
        """The text inside ``eval(...)``."""
        return self.strip()[5:-1]


def is_expr_text(value: object) -> bool:
    """Whether ``value`` is a string of the form ``eval(...)``."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    return text.startswith("eval(") and text.endswith(")")


class _Refused(Exception):
    """What is wrong with an expression (turned into a RecipeError by :func:`evaluate`)."""


def _tree(expr: Expr) -> ast.expr:
    try:
        return ast.parse(expr.body.strip(), mode="eval").body
    except SyntaxError as exc:
        raise _Refused(f"is not an arithmetic expression ({exc.msg})") from None


def names_in(expr: Expr) -> set[str]:
    """The variable names an expression uses (empty if it does not parse)."""
    try:
        tree = _tree(expr)
    except _Refused:
        return set()
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    return {
        node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and id(node) not in called
    }


def _number(value: Any, what: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refused(f"{what} is {value!r}, not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Refused(f"{what} is {value}, not a finite number")
    if isinstance(value, int) and abs(value).bit_length() > _MAX_BITS:
        raise _Refused(f"{what} is larger than 2**{_MAX_BITS}")
    return value


def _check_power(left: float | int, right: float | int) -> None:
    """Refuse a power whose exponent, or (for integers) whose result, would be too large."""
    if abs(right) > _MAX_EXPONENT:
        raise _Refused(f"the exponent {right!r} is too large")
    # |left| >= 2 ** (bits - 1), so an integer power is at least 2 ** ((bits - 1) * right)
    if (
        isinstance(left, int)
        and isinstance(right, int)
        and right > 0
        and (abs(left).bit_length() - 1) * right > _MAX_BITS
    ):
        raise _Refused(f"the result is larger than 2**{_MAX_BITS}")


def _walk(node: ast.expr, variables: Mapping[str, Any]) -> float | int:
    if isinstance(node, ast.Constant):
        return _number(node.value, "the constant")
    if isinstance(node, ast.Name):
        if node.id not in variables:
            known = sorted(variables)
            raise _Refused(f"unknown variable {node.id!r} (variables defined before it: {known})")
        return _number(variables[node.id], f"variable {node.id!r}")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _walk(node.left, variables), _walk(node.right, variables)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        try:
            return _number(_BINARY[type(node.op)](left, right), "the result")
        except ZeroDivisionError:
            raise _Refused("divides by zero") from None
        except OverflowError:
            raise _Refused("overflows") from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _number(_UNARY[type(node.op)](_walk(node.operand, variables)), "the result")
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in FUNCTIONS or node.keywords:
            shown = ast.unparse(node.func)
            raise _Refused(
                f"calls {shown!r}; only {sorted(FUNCTIONS)} with positional arguments may be called"
            )
        args = [_walk(arg, variables) for arg in node.args]
        try:
            return _number(FUNCTIONS[name](*args), "the result")
        except (TypeError, ValueError, OverflowError) as exc:
            raise _Refused(f"{name}(...) fails: {exc}") from None
    if isinstance(node, ast.Attribute):
        raise _Refused(f"accesses the attribute {ast.unparse(node)!r}; only arithmetic is allowed")
    raise _Refused(
        f"uses {ast.unparse(node)!r} ({type(node).__name__}); only numbers, variables, "
        "+ - * / // % **, parentheses and " + ", ".join(sorted(FUNCTIONS)) + " are allowed"
    )


def evaluate(expr: Expr, variables: Mapping[str, Any], where: str, context: str = "") -> Any:
    """The value of ``eval(...)`` with the recipe's variables.

    Args:
        expr: The expression (``Expr("eval(num_epochs - 1)", line=12)``).
        variables: Variable name -> value (numbers for arithmetic; ``eval(name)`` alone may
            name a variable of any type).
        where: The recipe (a file, or ``"recipe text"``) for messages.
        context: What holds it (``"field 'end_epoch' of modifier 3 (!OBSPruningModifier)"``).

    Returns:
        A finite int or float, or a non-numeric variable's value for ``eval(name)``.

    Raises:
        RecipeError: Naming the expression, the file, the line and what is wrong.
    """
    try:
        tree = _tree(expr)
        if isinstance(tree, ast.Name) and tree.id in variables:
            return variables[tree.id]
        value = _walk(tree, variables)
        if isinstance(value, float) and not math.isfinite(value):
            raise _Refused(f"gives {value}, not a finite number")
        return value
    except _Refused as exc:
        line = f", line {expr.line}" if expr.line is not None else ""
        held = f" ({context})" if context else ""
        raise RecipeError(
            f"{where}{line}: {str(expr).strip()!r}{held} {exc}; fix the expression or the "
            "recipe variables"
        ) from None
