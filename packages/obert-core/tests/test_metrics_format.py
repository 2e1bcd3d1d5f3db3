"""One number formatter that knows each metric's unit (issue 18)."""

from __future__ import annotations

import pytest

from obert_core import ObertError
from obert_core.shared import PERCENT_METRICS, format_metric, metric_unit


def test_percent_metrics_are_fractions_printed_in_percent() -> None:
    assert {"accuracy", "f1", "exact_match"} == PERCENT_METRICS
    assert format_metric("f1", 0.8587) == "85.87 %"
    assert format_metric("eval_accuracy", 0.5) == "50.00 %"
    assert format_metric("exact_match", 0.25, with_unit=False) == "25.00"
    assert format_metric("accuracy", None) == "-"


def test_perplexity_and_loss_are_plain_numbers() -> None:
    assert metric_unit("perplexity") == "plain"
    assert format_metric("perplexity", 3133982.84) == "3133982.84"
    assert format_metric("loss", 0.6931) == "0.69"


def test_sparsity_is_a_fraction() -> None:
    assert metric_unit("achieved_sparsity") == "fraction"
    assert format_metric("sparsity", 0.5) == "0.5000"


@pytest.mark.parametrize(
    ("name", "value"), [("f1", 858.72), ("accuracy", -0.1), ("sparsity", 50.0)]
)
def test_a_value_in_another_scale_is_refused_naming_it(name: str, value: float) -> None:
    with pytest.raises(ObertError, match=rf"metric '{name}' = {value!r} is not a fraction"):
        format_metric(name, value)
