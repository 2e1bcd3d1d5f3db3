"""A late stage that fails still leaves the report of what finished (issue 18, failing late)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from obert.cli import app
from obert.errors import StageError

from .conftest import quick_args

runner = CliRunner()


@pytest.mark.slow
def test_a_failed_late_stage_writes_the_report_of_what_finished(
    tmp_path: Path,
    model_dir: Path,
    data_dir: Path,
    recipes: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import obert.deploy

    def broken(*args: object, **kwargs: object) -> object:
        raise StageError("size report failed: the disk is on fire")

    monkeypatch.setattr(obert.deploy, "size_stage", broken)
    out = tmp_path / "out"
    result = runner.invoke(app, quick_args(model_dir, data_dir, recipes, out))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == ["error: size report failed: the disk is on fire"], result.output
    assert "stage size failed; the report of what finished:" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["failed_stage"]["stage"] == "size"
    assert "the disk is on fire" in report["failed_stage"]["error"]
    assert set(report["models"]) >= {"dense"}  # the trained models are reported
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# obert quickstart report")
    assert "**stage size failed**: size report failed: the disk is on fire" in markdown


def test_ctrl_c_exits_130_saying_what_to_rerun(
    tmp_path: Path,
    model_dir: Path,
    data_dir: Path,
    recipes: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 18: Ctrl-C exited 130 with no hint of what to run next."""
    import obert.pipeline

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(obert.pipeline, "run_quickstart", interrupted)
    out = tmp_path / "out"
    result = runner.invoke(app, quick_args(model_dir, data_dir, recipes, out))
    assert result.exit_code == 130, result.output
    assert f"interrupted; rerun the same command: the finished stages in {out}/stages" in " ".join(
        result.output.split()
    )
