"""``oneshot --eval`` prints each metric by its unit (issue 18: SQuAD F1 was ``858.72 %``, MLM
perplexity ``3133982.84 %``): metrics.json holds fractions, the table percent once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from obert_core.shared import format_metric
from obert_train.cli.app import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("task", "fixture", "metric"), [("squad", "squad_dir", "f1"), ("mlm", "mlm_dir", "perplexity")]
)
def test_oneshot_eval_prints_the_metric_in_its_unit(
    tiny_model_dir: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    task: str,
    fixture: str,
    metric: str,
) -> None:
    data = request.getfixturevalue(fixture)
    out = tmp_path / "out"
    args = [
        "oneshot", "--model", str(tiny_model_dir), "--task", task, "--data-dir", str(data),
        "--output-dir", str(out), "--no-progress", "--sparsity", "0.5", "--method", "magnitude",
        "--eval", "--max-seq-length", "64" if task == "squad" else "16",
    ]  # fmt: skip
    if task == "squad":
        args += ["--doc-stride", "16", "--max-query-length", "16"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    runs = json.loads((out / "metrics.json").read_text())["runs"]
    for run in runs:
        value = run["metrics"][metric]
        if metric == "f1":
            assert 0.0 <= value <= 1.0  # a fraction, like accuracy
        cell = format_metric(metric, value)
        assert cell in result.output
    table = result.output[result.output.index("sparsity |") :]
    if metric == "perplexity":
        assert "%" not in table
    else:
        assert all(
            float(c.split()[0]) <= 100.0 for c in table.split("|") if c.strip().endswith("%")
        )
