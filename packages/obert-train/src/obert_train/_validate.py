"""Argument checks of the public functions, worded like the command lines' option errors.

Every public entry point of obert-train checks the types and ranges of its scalar arguments
here, first, so a wrong call fails with a message naming the function, the argument and the
value (``oneshot_prune: sparsity='0.5' must be a number in [0, 1) ...``) instead of a
comparison ``TypeError`` or an ``AttributeError`` deep inside (``docs/architecture.md``, the
errors rule).  A wrong type is an :class:`~obert_train.ArgumentError` (a ``TypeError``), a
value out of range an :class:`~obert_train.OptionError` (a ``ValueError``).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence

from obert_train.errors import ArgumentError, OptionError

__all__ = [
    "check_bool",
    "check_int",
    "check_mapping",
    "check_number",
    "check_path",
    "check_real",
    "check_str",
    "check_str_sequence",
]


def _wrong(func: str, name: str, value: object, expected: str) -> ArgumentError:
    hint = ""
    if isinstance(value, str) and expected.startswith(("a number", "an integer")):
        hint = f" (write {name}={value.strip()} without quotes)"
    return ArgumentError(
        f"{func}: {name}={value!r} must be {expected}, got {type(value).__name__}{hint}"
    )


def check_real(
    value: object,
    name: str,
    func: str,
    *,
    low: float | None = None,
    high: float | None = None,
    high_open: bool = False,
    low_open: bool = False,
) -> float:
    """Return ``value`` as a float if it is a finite real number within the bounds.

    Raises:
        ArgumentError: If ``value`` is not a real number (a string, a bool, None).
        OptionError: If it is not finite or outside the bounds.
    """
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    span = f" in {lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _wrong(func, name, value, "a number" + (span if low is not None else ""))
    number = float(value)
    below = low is not None and (number <= low if low_open else number < low)
    above = high is not None and (number >= high if high_open else number > high)
    if not math.isfinite(number) or below or above:
        raise OptionError(f"{func}: {name}={value!r} is outside{span}; pass a number{span}")
    return number


def check_number(value: object, name: str, func: str, expected: str = "a number") -> float:
    """Return ``value`` as a float if it is a real number (not a bool or a string).

    Only the type: the range is the function's own check (its message and error class).

    Raises:
        ArgumentError: If ``value`` is not a real number.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _wrong(func, name, value, expected)
    return float(value)


def check_int(value: object, name: str, func: str, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer (not a bool) ≥ ``minimum``.

    Raises:
        ArgumentError: If ``value`` is not an integer.
        OptionError: If it is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _wrong(func, name, value, "an integer")
    if minimum is not None and int(value) < minimum:
        raise OptionError(f"{func}: {name}={value!r} must be an integer >= {minimum}")
    return int(value)


def check_bool(value: object, name: str, func: str) -> bool:
    """Return ``value`` if it is a bool (True or False, not 0/1 or a string)."""
    if not isinstance(value, bool):
        raise _wrong(func, name, value, "True or False")
    return value


def check_str(value: object, name: str, func: str) -> str:
    """Return ``value`` if it is a string (its value is the function's own business)."""
    if not isinstance(value, str):
        raise _wrong(func, name, value, "a string")
    return value


def check_path(value: object, name: str, func: str) -> str | os.PathLike[str]:
    """Return ``value`` if it is a path (a string or an ``os.PathLike``)."""
    if isinstance(value, os.PathLike | str):
        return value
    raise _wrong(func, name, value, "a path (a str or os.PathLike)")


def check_mapping(value: object, name: str, func: str) -> Mapping[object, object] | None:
    """Return ``value`` if it is None or a mapping (a dict)."""
    if value is not None and not isinstance(value, Mapping):
        raise _wrong(func, name, value, "a dict (or None)")
    return value


def check_str_sequence(value: object, name: str, func: str) -> Sequence[str] | None:
    """Return ``value`` if it is None or a list/tuple of strings (not one bare string)."""
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise _wrong(func, name, value, "a list of strings (or None)")
    for item in value:
        if not isinstance(item, str):
            raise _wrong(func, f"{name} item", item, "a string")
    return value
