"""Argument type checks of the public functions and configs, before any work.

A config dataclass calls :func:`check_fields` first in its ``__post_init__``: every field
annotated ``int``, ``float``, ``bool`` or ``str`` (optionally ``| None``) is checked against its
annotation, so ``ExportConfig(seq_len="128")`` fails with an
:class:`~obert_deploy.ArgumentError` naming the config, the field and the value instead of a
comparison ``TypeError`` later (``docs/architecture.md``, the errors rule).  Functions check
their own scalar arguments with :func:`check_type`.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Callable, Sequence

from ._errors import ArgumentError, ObertDeployError

__all__ = ["check_at_least", "check_fields", "check_path", "check_paths", "check_type"]


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_float(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


_KINDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "int": (_is_int, "an integer"),
    "float": (_is_float, "a number"),
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "str": (lambda v: isinstance(v, str), "a string"),
}


def _wrong(where: str, name: str, value: object, expected: str) -> ArgumentError:
    hint = ""
    if isinstance(value, str) and expected in ("an integer", "a number"):
        hint = f" (write {name}={value.strip()} without quotes)"
    return ArgumentError(
        f"{where}: {name}={value!r} must be {expected}, got {type(value).__name__}{hint}"
    )


def check_type(value: object, name: str, where: str, kind: str, *, optional: bool = False) -> None:
    """Raise :class:`~obert_deploy.ArgumentError` unless ``value`` is of ``kind``.

    Args:
        value: The argument.
        name: Its name, as the caller writes it.
        where: The function or config (``"evaluate"``, ``"ExportConfig"``).
        kind: ``"int"``, ``"float"``, ``"bool"`` or ``"str"``.
        optional: Whether None is allowed.
    """
    if value is None and optional:
        return
    accepts, expected = _KINDS[kind]
    if not accepts(value):
        raise _wrong(where, name, value, expected + (" (or None)" if optional else ""))


def check_at_least(
    value: object, name: str, where: str, low: int, *, high: int | None = None
) -> None:
    """Check an integer argument's type and range (None passes: "not given").

    Raises:
        ArgumentError: If ``value`` is not an integer.
        ObertDeployError: If it is below ``low`` (or above ``high``); a ``ValueError``.
    """
    if value is None:
        return
    check_type(value, name, where, "int")
    number = int(value)  # type: ignore[call-overload]
    if number < low or (high is not None and number > high):
        span = f">= {low}" if high is None else f"in {low}..{high}"
        raise ObertDeployError(f"{where}: {name}={value!r} must be {span}")


def check_path(value: object, name: str, where: str, *, optional: bool = False) -> None:
    """Raise :class:`~obert_deploy.ArgumentError` unless ``value`` is a str or ``os.PathLike``."""
    if value is None and optional:
        return
    if not isinstance(value, str | os.PathLike):
        raise _wrong(where, name, value, "a path (a str or os.PathLike)")


def check_paths(value: object, name: str, where: str) -> None:
    """Raise unless ``value`` is a list of paths (not one bare path string)."""
    if isinstance(value, str | bytes | os.PathLike) or not isinstance(value, Sequence):
        raise _wrong(where, name, value, "a list of paths")
    for item in value:
        check_path(item, f"{name} item", where)


def check_fields(config: object) -> None:
    """Check every scalar field of the dataclass ``config`` against its annotation."""
    where = type(config).__name__
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        annotation = (
            field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
        )
        parts = [part.strip() for part in annotation.split("|")]
        optional = "None" in parts
        kinds = [part for part in parts if part != "None"]
        if len(kinds) == 1 and kinds[0] in _KINDS:
            check_type(getattr(config, field.name), field.name, where, kinds[0], optional=optional)
