"""The unit of each metric and the one way every package prints it.

Every evaluator of the project returns its metrics in one scale (``docs/architecture.md``, "One
home for each fact"): accuracy, F1 and exact match as **fractions** in ``[0, 1]`` (obert-train's
tasks, obert-deploy's ONNX evaluation), perplexity and losses as plain numbers, sparsity as a
fraction of zeros.  :func:`format_metric` turns one into text by its unit, so obert-train's
command line, obert-deploy's tables and the app's report print ``85.87 %`` for the same F1 and
never a perplexity as a percentage.
"""

from __future__ import annotations

import math
from typing import Literal

from obert_core._errors import ObertError

__all__ = ["PERCENT_METRICS", "format_bytes", "format_metric", "metric_unit"]

MetricUnit = Literal["percent", "fraction", "plain"]

PERCENT_METRICS: frozenset[str] = frozenset({"accuracy", "f1", "exact_match"})
"""Metrics computed as fractions in ``[0, 1]`` and printed in percent (SQuAD v1.1 F1 / EM,
Rajpurkar et al. 2016; GLUE accuracy)."""

_FRACTION_METRICS: frozenset[str] = frozenset(
    {"sparsity", "achieved_sparsity", "target_sparsity", "weight_sparsity", "atom_fraction"}
)
_PREFIXES = ("eval_", "test_", "dense_")


def _base(name: str) -> str:
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def metric_unit(name: str) -> MetricUnit:
    """The unit a metric is printed in.

    Args:
        name: The metric's key (``"f1"``, ``"eval_accuracy"``, ``"perplexity"``, ...); an
            ``eval_`` / ``test_`` prefix (the HF Trainer's) is ignored.

    Returns:
        ``"percent"`` for :data:`PERCENT_METRICS` (values are fractions), ``"fraction"`` for
        sparsities, ``"plain"`` for everything else (perplexity, loss, counts).
    """
    base = _base(name)
    if base in PERCENT_METRICS:
        return "percent"
    if base in _FRACTION_METRICS or base.endswith("_sparsity"):
        return "fraction"
    return "plain"


def format_metric(
    name: str, value: float | None, *, digits: int | None = None, with_unit: bool = True
) -> str:
    """One metric as text, by its unit (:func:`metric_unit`).

    Percent metrics print as ``"85.87 %"`` (``digits`` decimals, default 2), fractions
    (sparsity) as ``"0.5000"`` (default 4), plain numbers (perplexity, loss) as ``"12.34"``
    (default 2); ``None`` prints as ``"-"``.  A table whose header carries the unit passes
    ``with_unit=False`` (``"85.87"``).

    Args:
        name: The metric's key.
        value: Its value in the project's one scale (fractions for percent metrics).
        digits: Decimals, instead of the unit's default.
        with_unit: Append `` %`` to percent metrics.

    Returns:
        The text.

    Raises:
        ObertError: (a ``ValueError``) If a percent metric or a sparsity is not in ``[0, 1]``:
            it was computed in another scale (e.g. percent) and must be normalised where it is
            computed, not here.
    """
    if value is None:
        return "-"
    unit = metric_unit(name)
    value = float(value)
    if unit in ("percent", "fraction") and math.isfinite(value) and not 0.0 <= value <= 1.0:
        raise ObertError(
            f"metric {name!r} = {value!r} is not a fraction in [0, 1]; {name} is kept as a "
            "fraction everywhere (docs/architecture.md): normalise it where it is computed"
        )
    if unit == "percent":
        text = f"{100 * value:.{2 if digits is None else digits}f}"
        return f"{text} %" if with_unit else text
    return f"{value:.{(4 if unit == 'fraction' else 2) if digits is None else digits}f}"


def format_bytes(n: float) -> str:
    """A size in bytes with binary prefixes, as every memory plan and report prints it.

    Args:
        n: Bytes.

    Returns:
        ``"512 B"``, ``"1.50 KiB"``, ..., up to TiB.
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.2f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
