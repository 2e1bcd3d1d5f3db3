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


def test_structured_sparsity_states_the_atoms_then_the_weights() -> None:
    from obert.report import _sparsity

    assert _sparsity({"sparsity": 0.4, "atom_sparsity": 0.5}) == "50.0 of atoms (40.0 of weights)"
    assert _sparsity({"sparsity": 0.9}) == "90.0"


def test_quickstart_training_keeps_the_last_atom_fraction() -> None:
    from obert_train import RunResult

    steps = [{"sparsity": 0.2, "atom_sparsity": 0.25}, {"sparsity": 0.4, "atom_sparsity": 0.5}]
    result = RunResult.__new__(RunResult)
    object.__setattr__(result, "pruning_steps", steps)
    assert result.atom_sparsity == 0.5
    object.__setattr__(result, "pruning_steps", [{"sparsity": 0.5}])
    assert result.atom_sparsity is None
