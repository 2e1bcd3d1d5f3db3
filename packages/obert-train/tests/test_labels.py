"""The label policy (docs/train.md, "Labels"): SST-2 is {0, 1}; other TSVs are checked against
the training file and the model's head; a bad row is named by file and line (issue 18)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import BertForSequenceClassification, BertModel, BertTokenizer
from typer.testing import CliRunner

from obert_train import DataError, load_task
from obert_train.cli.app import app

from .conftest import tiny_config

runner = CliRunner()


def _stray(path: Path, name: str, label: str) -> int:
    """Append a row with ``label`` to ``path/name``; returns its line number."""
    file = path / name
    lines = file.read_text().splitlines()
    lines.append(f"a stray sentence\t{label}")
    file.write_text("\n".join(lines) + "\n")
    return len(lines)


@pytest.mark.parametrize("label", ["5", "positive"])
def test_sst2_refuses_a_label_outside_0_1_naming_file_and_line(
    tokenizer: BertTokenizer, sst2_dir: Path, label: str
) -> None:
    line = _stray(sst2_dir, "train.tsv", label)
    with pytest.raises(DataError) as info:
        load_task("sst2", tokenizer, data_dir=sst2_dir)
    message = str(info.value)
    assert f"train.tsv:{line}: label {label!r}" in message
    assert "['0', '1']" in message


def test_glue_tsv_dev_labels_must_be_training_labels(
    tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    line = _stray(sst2_dir, "dev.tsv", "2")
    with pytest.raises(DataError, match=rf"dev.tsv:{line}: label '2'.*training file's labels"):
        load_task("glue-tsv", tokenizer, data_dir=sst2_dir)


def test_a_two_class_head_and_a_bad_row_names_the_row(
    tokenizer: BertTokenizer, sst2_dir: Path, tiny_model_dir: Path
) -> None:
    line = _stray(sst2_dir, "train.tsv", "5")
    task = load_task("glue-tsv", tokenizer, data_dir=sst2_dir, need_dev=False)
    with pytest.raises(DataError, match=rf"'5' first at .*train.tsv:{line}"):
        task.load_model(str(tiny_model_dir))


def test_a_model_without_a_head_gets_the_task_labels(
    tokenizer: BertTokenizer, sst2_dir: Path, tmp_path: Path
) -> None:
    BertModel(tiny_config(len(tokenizer))).save_pretrained(tmp_path / "base")
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    model = task.load_model(str(tmp_path / "base"))
    assert model.config.id2label == {0: "0", 1: "1"}
    assert model.config.label2id == {"0": 0, "1": 1}


def test_a_head_naming_the_labels_keeps_its_ids(tokenizer: BertTokenizer, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = "sentence\tlabel\ngood film\tpos\nbad film\tneg\n"
    (data / "train.tsv").write_text(rows)
    (data / "dev.tsv").write_text(rows)
    config = tiny_config(len(tokenizer), num_labels=2)
    config.id2label, config.label2id = {0: "pos", 1: "neg"}, {"pos": 0, "neg": 1}
    BertForSequenceClassification(config).save_pretrained(tmp_path / "head")
    task = load_task("glue-tsv", tokenizer, data_dir=data)
    assert task.labels == ["neg", "pos"]  # sorted, before the head is known
    model = task.load_model(str(tmp_path / "head"))
    assert model.config.id2label == {0: "pos", 1: "neg"}
    assert task.label_to_id == {"pos": 0, "neg": 1}
    assert [f["labels"] for f in task.train_features] == [0, 1]
    assert [f["labels"] for f in task.dev_features] == [0, 1]


@pytest.mark.parametrize("command", ["run", "oneshot"])
def test_the_cli_refuses_a_bad_row_before_any_work(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path, command: str
) -> None:
    line = _stray(sst2_dir, "train.tsv", "positive")
    out = tmp_path / "out"
    common = ["--model", str(tiny_model_dir), "--task", "sst2", "--data-dir", str(sst2_dir)]
    args = (
        ["run", "minilm-sst2-dense", *common, "--output-dir", str(out)]
        if command == "run"
        else ["oneshot", *common, "--output-dir", str(out), "--sparsity", "0.5", "--eval"]
    )
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"train.tsv:{line}: label 'positive'" in result.output
    assert not (out / "metrics.json").exists() and not (out / "pytorch_model.bin").exists()


def test_a_teacher_with_other_label_ids_than_the_student_is_refused(
    tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.tsv").write_text("sentence\tlabel\ngood film\tpos\nbad film\tneg\n")
    BertModel(tiny_config(len(tokenizer))).save_pretrained(tmp_path / "base")
    config = tiny_config(len(tokenizer), num_labels=2)
    config.id2label, config.label2id = {0: "pos", 1: "neg"}, {"pos": 0, "neg": 1}
    BertForSequenceClassification(config).save_pretrained(tmp_path / "teacher")
    task = load_task("glue-tsv", tokenizer, data_dir=data, need_dev=False)
    student = task.load_model(str(tmp_path / "base"))
    assert student.config.label2id == {"neg": 0, "pos": 1}
    with pytest.raises(DataError, match="must use the same label ids"):
        task.load_model(str(tmp_path / "teacher"))
    assert [f["labels"] for f in task.train_features] == [1, 0]  # unchanged: pos=1, neg=0
