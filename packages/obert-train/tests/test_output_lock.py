"""The output-folder lock across processes (docs/train.md, "Output folders"; issue 18).

Two ``oneshot`` runs into one folder lost a ``metrics.json`` row; a second ``run --overwrite``
replaced a running run's result.  Now the second command is refused at once, naming the PID that
holds the folder, and every finished target keeps its row.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _oneshot(model: Path, data: Path, out: Path, sparsity: str) -> subprocess.Popen[str]:
    args = [
        sys.executable, "-m", "obert_train", "oneshot", "--model", str(model), "--task", "sst2",
        "--data-dir", str(data), "--output-dir", str(out), "--no-progress", "--method",
        "magnitude", "--sparsity", sparsity,
    ]  # fmt: skip
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_ENV
    )


@pytest.mark.slow
def test_two_oneshot_runs_into_one_folder_never_lose_a_metrics_row(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = _oneshot(tiny_model_dir, sst2_dir, out, "0.5")
    second = _oneshot(tiny_model_dir, sst2_dir, out, "0.7")
    done = {"0.50": first.communicate(timeout=300), "0.70": second.communicate(timeout=300)}
    codes = {"0.50": first.returncode, "0.70": second.returncode}
    for key, (_, err) in done.items():
        assert codes[key] in (0, 2), err
        if codes[key] == 2:  # refused at once: the other one held the folder
            # the PID, or "another process" when the holder ended between the two looks
            assert "is in use by" in err and "Traceback" not in err, err
    ran = sorted(k for k, c in codes.items() if c == 0)
    assert ran, done
    if len(ran) == 1:  # the refused one, run again now that the folder is free
        again = "0.70" if ran == ["0.50"] else "0.50"
        proc = _oneshot(tiny_model_dir, sst2_dir, out, again)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    rows = json.loads((out / "metrics.json").read_text())["runs"]
    assert sorted(Path(r["output_dir"]).name for r in rows) == ["sparsity-0.50", "sparsity-0.70"]


def test_ctrl_c_in_run_exits_130_with_the_resume_hint(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: Ctrl-C exited 130 with no "rerun with --resume" hint."""
    from typer.testing import CliRunner

    import obert_train.hf.run
    from obert_train.cli.app import app

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(obert_train.hf.run, "run_recipe", interrupted)
    args = [
        "run", "minilm-sst2-obert90", "--model", str(tiny_model_dir), "--task", "sst2",
        "--data-dir", str(sst2_dir), "--output-dir", str(tmp_path / "out"), "--no-progress",
        "--teacher", str(tiny_model_dir),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130, result.output
    assert "interrupted; rerun the same command with --resume" in result.output
    assert "Traceback" not in result.output


def test_run_recipe_refuses_the_model_folder_as_its_output(
    tiny_model_dir: Path, sst2_dir: Path
) -> None:
    """Issue 18: `run --model M --teacher M --output-dir M --overwrite` replaced M's weights."""
    import hashlib

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from obert_train import OutputDirError, load_recipe, load_task, run_recipe

    def snapshot() -> dict[str, str]:
        return {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tiny_model_dir.iterdir()
        }

    before = snapshot()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    recipe = load_recipe("modifiers:\n  - !EpochRangeModifier {start_epoch: 0, end_epoch: 1}\n")
    with pytest.raises(OutputDirError, match=r"is the input model's folder \(model_name\)"):
        run_recipe(
            recipe, model, task, tiny_model_dir, model_name=str(tiny_model_dir), overwrite=True
        )
    assert snapshot() == before


def test_ctrl_c_in_oneshot_exits_130_saying_what_is_complete(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import obert_train.pruning.oneshot
    from obert_train.cli.app import app

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(obert_train.pruning.oneshot, "oneshot_prune", interrupted)
    out = tmp_path / "out"
    args = [
        "oneshot", "--model", str(tiny_model_dir), "--task", "sst2", "--data-dir", str(sst2_dir),
        "--output-dir", str(out), "--no-progress", "--method", "magnitude", "--sparsity", "0.5",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130, result.output
    assert "interrupted; the sparsity-* folders listed in metrics.json are complete" in " ".join(
        result.output.split()
    )
    assert not out.exists()  # nothing was written: the folder made for the lock is gone again
