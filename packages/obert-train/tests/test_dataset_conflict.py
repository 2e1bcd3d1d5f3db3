"""A hub --dataset that local files would override is refused, not silently ignored (issue 18:
``oneshot --data-dir … --dataset glue:sst2`` used the folder without a word)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import BertTokenizer
from typer.testing import CliRunner

from obert_train import ArgumentError, load_task
from obert_train.cli.app import app


def test_load_task_refuses_a_dataset_no_split_reads(
    tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    with pytest.raises(ArgumentError, match=r"--dataset\) 'glue:sst2' and data_dir"):
        load_task("sst2", tokenizer, data_dir=sst2_dir, dataset="glue:sst2")
    train, dev = sst2_dir / "train.tsv", sst2_dir / "dev.tsv"
    with pytest.raises(ArgumentError, match="would not be read"):
        load_task("sst2", tokenizer, train_file=train, dev_file=dev, dataset="glue:sst2")
    with pytest.raises(ArgumentError, match="would not be read"):
        load_task("sst2", tokenizer, train_file=train, dataset="glue:sst2", need_dev=False)


def test_oneshot_refuses_data_dir_with_dataset_before_any_work(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [
        "oneshot", "--model", str(tiny_model_dir), "--task", "sst2", "--data-dir", str(sst2_dir),
        "--dataset", "glue:sst2", "--sparsity", "0.5", "--output-dir", str(out), "--no-progress",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: dataset (--dataset) 'glue:sst2' and data_dir")
    assert not (out / "metrics.json").exists()
