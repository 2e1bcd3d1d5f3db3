"""Argument checks shared by the public functions; every message names the value and the remedy."""

from __future__ import annotations

import math
import numbers

from ._errors import ObertError

__all__ = [
    "check_choice",
    "check_count",
    "check_damp",
    "check_finite_real",
    "check_positive_int",
    "check_sparsity",
]


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as an int if it is an integer ≥ 1, else raise :class:`ObertError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ObertError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def check_count(value: object, name: str) -> int:
    """Return ``value`` as an int if it is an integer ≥ 0, else raise :class:`ObertError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise ObertError(f"{name} must be an integer ≥ 0, got {value!r}.")
    return int(value)


def check_damp(value: object) -> float:
    """Return the dampening λ as a float if it is finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ObertError(f"damp must be a positive float such as 1e-7, got {value!r}.")
    damp = float(value)
    if not math.isfinite(damp) or damp <= 0.0:
        raise ObertError(
            f"damp must be finite and > 0 (the paper uses 1e-7; grid-search 1e-4…1e-8), "
            f"got {value!r}."
        )
    return damp


def check_sparsity(value: object, name: str = "sparsity") -> float:
    """Return a sparsity in [0, 1) as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ObertError(f"{name} must be a float in [0, 1), got {value!r}.")
    s = float(value)
    if not (0.0 <= s < 1.0):
        raise ObertError(
            f"{name} must be in [0, 1), got {value!r}; pass e.g. 0.9 for 90% of the weights pruned."
        )
    return s


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ObertError(
            f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}."
        )
    return str(value)


def check_finite_real(value: object, name: str) -> float:
    """Return ``value`` as a float if it is a finite real number (not a bool or a string)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ObertError(f"{name} must be a number, got {type(value).__name__} {value!r}.")
    number = float(value)
    if not math.isfinite(number):
        raise ObertError(f"{name} must be finite, got {value!r}.")
    return number


def check_block_layout(want: tuple[int, int], **arrays: object) -> None:
    """Refuse any of ``arrays`` whose shape is not ``want`` ``(num_blocks, block_size)``.

    The fused kernels read these without bounds checks, so a flat vector must be padded first.
    """
    for name, x in arrays.items():
        shape = tuple(getattr(x, "shape", ()))
        if shape != want:
            raise ObertError(
                f"{name} must have shape {want} (num_blocks, block_size), got {shape}; pad the "
                "flat vector to num_blocks·block_size."
            )
