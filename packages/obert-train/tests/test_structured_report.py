"""The structured report states the fraction of atoms it removed (the target's unit) and, labelled
separately, the weight sparsity over the pruned tensors (issue 18: "achieved 0.2500" at 0.5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import BertTokenizer
from typer.testing import CliRunner

from obert_train import RunOptions, load_recipe, load_task, run_recipe
from obert_train.cli.app import app

from .test_structured import GRADUAL, _model

SETTINGS = ["--set", "num_batches=2", "--set", "grad_batch_size=4", "--set", "min_keep=8",
            "--set", "multiple=8"]  # fmt: skip


def test_oneshot_reports_the_atom_fraction_and_the_weight_sparsity(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [
        "oneshot", "--model", str(tiny_model_dir), "--task", "sst2", "--data-dir", str(sst2_dir),
        "--method", "structured", "--sparsity", "0.5", "--output-dir", str(out), "--no-progress",
        *SETTINGS,
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (row,) = json.loads((out / "metrics.json").read_text())["runs"]
    assert row["atom_sparsity"] == pytest.approx(0.5)
    assert row["achieved_sparsity"] == pytest.approx(0.5)  # in the target's unit
    assert 0.0 < row["weight_sparsity"] < 0.5  # the tensors hold attention weights too
    assert "atom fraction 0.5000" in result.output
    assert f"weight sparsity over the pruned tensors {row['weight_sparsity']:.4f}" in result.output
    header = next(line for line in result.output.splitlines() if "sparsity |" in line)
    assert "atoms" in header and "weights" in header and "achieved" not in header
    report = json.loads((out / "sparsity-0.50" / "structure.json").read_text())
    assert report["atom_sparsity"] == pytest.approx(0.5)


def test_run_records_the_atom_fraction_of_each_structured_step(
    tokenizer: BertTokenizer, sst2_dir: Path, tmp_path: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    result = run_recipe(
        load_recipe(GRADUAL), _model(tokenizer), task, tmp_path / "run",
        options=RunOptions(batch_size=4, progress=False), log=lambda _l: None,
    )  # fmt: skip
    atoms = [step["atom_sparsity"] for step in result.pruning_steps]
    assert atoms == pytest.approx([0.25, 0.4375, 0.5], abs=0.07)  # cubic, multiples of 8
    assert atoms[-1] == pytest.approx(0.5)
    assert all(step["sparsity"] < step["atom_sparsity"] for step in result.pruning_steps)
    assert result.atom_sparsity == pytest.approx(0.5)
