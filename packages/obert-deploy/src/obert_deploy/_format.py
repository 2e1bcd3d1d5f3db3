"""Number formats of the human-readable (console and markdown) output.

The project's convention: JSON files store accuracy, F1, exact match, agreement and sparsity as
fractions in ``[0, 1]`` (like Hugging Face ``evaluate``); console and markdown output print them
as percentages with an explicit unit, e.g. ``48.44 %``.
"""

from __future__ import annotations

__all__ = ["percent"]


def percent(fraction: float, digits: int = 2) -> str:
    """Format a fraction in ``[0, 1]`` as a percentage with a unit: ``0.4844`` → ``"48.44 %"``.

    Args:
        fraction: The value as a fraction (1.0 = 100 %).
        digits: Decimals after the point.

    Returns:
        The percentage followed by a space and ``%``.
    """
    return f"{100.0 * fraction:.{digits}f} %"
