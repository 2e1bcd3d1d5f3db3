"""A late stage that fails still leaves the report of what finished (issue 18, failing late)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    # the dense and oBERT stages are enough to have finished before the late stage fails
    args = [*quick_args(model_dir, data_dir, recipes, out), "--baseline", "none",
            "--no-structured", "--no-onnx-eval"]  # fmt: skip
    result = runner.invoke(app, args)
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
    from obert.report import foreign_report_files

    assert foreign_report_files(out) == []  # its own report: a rerun may replace it
    (out / "report.md").write_text("# my notes\n")
    assert foreign_report_files(out) == ["report.md"]


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


@pytest.mark.slow
def test_an_interrupted_training_stage_resumes_from_its_last_checkpoint(
    tmp_path: Path,
    model_dir: Path,
    data_dir: Path,
    recipes: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 18: quickstart restarted an interrupted stage from zero; now from its checkpoint."""
    import torch
    from safetensors.torch import load_file

    from obert.training import AccuracyCurve

    two_epochs = tmp_path / "two-epochs.yaml"
    text = recipes["pruning"].read_text()
    two_epochs.write_text(
        text.replace(
            "!EpochRangeModifier {start_epoch: 0, end_epoch: 1}",
            "!EpochRangeModifier {start_epoch: 0, end_epoch: 2}",
        )
    )
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"

    def args(out: Path) -> list[str]:
        return [*quick_args(model_dir, data_dir, {**recipes, "pruning": two_epochs}, out),
                "--baseline", "none", "--no-structured", "--no-onnx-eval"]  # fmt: skip

    first = runner.invoke(app, args(whole))
    assert first.exit_code == 0, first.output
    original = AccuracyCurve.on_step_end

    def ctrl_c_at_step_6(self: AccuracyCurve, args: object, state: Any, *a: Any, **k: Any) -> None:
        if state.global_step == 6:  # 4 steps per epoch: after checkpoint-4, before the end
            raise KeyboardInterrupt
        original(self, args, state, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(AccuracyCurve, "on_step_end", ctrl_c_at_step_6)
    stopped = runner.invoke(app, args(resumed))
    assert stopped.exit_code == 130, stopped.output
    partial = list((resumed / "stages").glob(".obert.partial-*"))
    assert len(partial) == 1 and (partial[0] / "model" / "checkpoint-4").is_dir(), stopped.output
    monkeypatch.setattr(AccuracyCurve, "on_step_end", original)
    again = runner.invoke(app, args(resumed))
    assert again.exit_code == 0, again.output
    assert "[obert] continuing the interrupted run of this stage" in again.output
    stage = json.loads((resumed / "stages" / "obert" / "stage.json").read_text())
    assert stage["outputs"]["resumed_from"] == "checkpoint-4"
    assert not list((resumed / "stages").glob(".obert.*"))
    assert not list((resumed / "stages" / "obert" / "model").glob("checkpoint-*"))
    a = load_file(whole / "stages" / "obert" / "model" / "model.safetensors")
    b = load_file(resumed / "stages" / "obert" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    curve = json.loads((whole / "stages" / "obert" / "stage.json").read_text())["outputs"]["curve"]
    assert stage["outputs"]["curve"] == curve  # the points before the interruption are kept
