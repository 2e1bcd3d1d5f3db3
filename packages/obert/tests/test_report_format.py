"""The report prints every metric by its unit through obert_core.shared.format_metric (issue 18)."""

from __future__ import annotations

import pytest

from obert.report import _curve_table
from obert_core import ObertError


def _report(metric: str, dense: float, point: float) -> dict[str, object]:
    curve = [{"sparsity": 0.5, "metric": point}]
    return {
        "metric": metric,
        "models": {"dense": {"pytorch": {metric: dense}}, "obert": {"curve": curve}},
    }


def test_f1_fractions_print_in_percent_once() -> None:
    table = _curve_table(_report("f1", 0.0724, 0.0643))
    assert "dev f1 %" in table and "| 7.24 |" in table and "| 6.43 |" in table


def test_perplexity_is_a_plain_number() -> None:
    table = _curve_table(_report("perplexity", 31.5, 42.25))
    assert "dev perplexity |" in table and "| 31.50 |" in table and "%" not in table.split("\n")[2]


def test_an_f1_in_percent_is_refused_not_printed_as_724() -> None:
    with pytest.raises(ObertError, match=r"'f1' = 7\.24 is not a fraction"):
        _curve_table(_report("f1", 7.24, 0.06))
