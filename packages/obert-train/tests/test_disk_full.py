"""A full disk: one ``error:`` line naming the folder, nothing half-written (issue 18).

The disk is "filled" by making the writers fail the way they do on ENOSPC: torch's
``PytorchStreamWriter`` (``RuntimeError: ... unexpected pos``) for the Trainer's checkpoints,
safetensors' ``SafetensorError`` for the saved model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from safetensors import SafetensorError
from typer.testing import CliRunner

from obert_train.cli import app

runner = CliRunner()

GMP = """
modifiers:
  - !EpochRangeModifier
    start_epoch: 0
    end_epoch: 2
pruning_modifiers:
  - !GMPruningModifier
    params: ["re:bert.encoder.layer.*.intermediate.dense.weight"]
    init_sparsity: 0.2
    final_sparsity: 0.5
    start_epoch: 0
    end_epoch: 1
    update_frequency: 0.5
"""


def _error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "Traceback" not in output
    return errors[0]


def test_oneshot_on_a_full_disk(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: Any, save_directory: Any, *args: Any, **kwargs: Any) -> None:
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        (Path(save_directory) / "model.safetensors").write_bytes(b"half")
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", full)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["oneshot", "--model", str(tiny_model_dir), "--task", "sst2", "--data-dir",
         str(sst2_dir), "--output-dir", str(out), "--method", "magnitude", "--sparsity", "0.5",
         "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert "no space left on device in" in line and str(out) in line
    half = [p for p in out.rglob("*") if p.name == "model.safetensors"] if out.exists() else []
    assert half == []


ZO = """
training_modifiers:
  - !ZerothOrderModifier
    seed: 1
"""


@pytest.mark.parametrize("zeroth_order", [False, True], ids=["backprop", "zeroth-order"])
def test_run_on_a_full_disk(
    tiny_model_dir: Path,
    sst2_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    zeroth_order: bool,
) -> None:
    """ObertTrainer and ZOTrainer (a ``!ZerothOrderModifier`` recipe) alike."""
    real_save = torch.save

    def full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(f, str | Path) and "checkpoint-" in str(f):
            Path(f).write_bytes(b"half")
            raise RuntimeError(
                "[enforce fail at inline_container.cc:664] . unexpected pos 448 vs 342"
            )
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full)
    recipe = tmp_path / "gmp.yaml"
    recipe.write_text(GMP + (ZO if zeroth_order else ""))
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["run", str(recipe), "--model", str(tiny_model_dir), "--task", "sst2", "--data-dir",
         str(sst2_dir), "--output-dir", str(out), "--batch-size", "6", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert "no space left on device in" in line and str(out) in line
    assert list(out.glob("checkpoint-*")) == []
