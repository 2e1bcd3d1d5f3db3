"""Every quickstart stage uses obert-train's label policy (issue 18): a stray SST-2 label is
refused by file and line before any stage trains."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from obert.cli import app

from .conftest import quick_args


@pytest.mark.parametrize("label", ["5", "positive"])
def test_quickstart_refuses_a_label_outside_0_1_before_training(
    model_dir: Path, data_dir: Path, recipes: dict[str, Path], tmp_path: Path, label: str
) -> None:
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    train = data / "train.tsv"
    lines = train.read_text(encoding="utf-8").splitlines()
    lines.append(f"a stray sentence\t{label}")
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, quick_args(model_dir, data, recipes, out))
    assert result.exit_code == 2, result.output
    assert f"train.tsv:{len(lines)}: label {label!r} is not allowed" in result.output
    assert "['0', '1']" in result.output
    assert not (out / "stages").exists() or not any((out / "stages").iterdir())
