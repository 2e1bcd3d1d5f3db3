from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

from obert_train import oneshot_prune, resolve_target_params, save_checkpoint, sparsity_report
from obert_train.checkpoint import atomic_directory, atomic_write_text


def test_pruned_checkpoint_loads_with_plain_from_pretrained(
    tiny_bert: BertForSequenceClassification, tmp_path: Path
) -> None:
    result = oneshot_prune(tiny_bert, "magnitude", 0.6)
    out = tmp_path / "pruned"
    recipe = {"method": result.method, "sparsity": 0.6, **result.settings.model_dump()}
    report = save_checkpoint(tiny_bert, out, recipe=recipe)
    assert (out / "model.safetensors").is_file()
    assert not list(tmp_path.glob(".pruned.*"))  # no temporary folders left behind
    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    for name, p in tiny_bert.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], p)
    sparsity = json.loads((out / "sparsity.json").read_text())
    assert sparsity == report
    assert sparsity["global"]["sparsity"] == pytest.approx(0.6, abs=1e-4)
    assert len(sparsity["tensors"]) == 12
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved == {
        "method": "magnitude",
        "sparsity": 0.6,
        "mask_type": "unstructured",
        "global_sparsity": True,
        "targets": None,
        "allocation": "global",
        "latency_table": None,
        "allocation_floor": None,
        "allocation_rounds": 1,
        "allocation_spacing": "equal",
    }

    # Loading the pruned checkpoint and pruning further keeps the earlier mask.
    before = {n: p != 0 for n, p in resolve_target_params(loaded).items()}
    oneshot_prune(loaded, "magnitude", 0.8)
    for name, p in resolve_target_params(loaded).items():
        assert not torch.any((p != 0) & ~before[name])
    assert sparsity_report(loaded)["global"]["sparsity"] == pytest.approx(0.8, abs=1e-4)


def test_failed_save_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    with atomic_directory(out) as tmp:
        (tmp / "weights").write_text("old")

    def half_written() -> None:
        with atomic_directory(out) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        half_written()
    assert (out / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    with atomic_directory(out) as tmp:
        (tmp / "weights").write_text("new")
    assert (out / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_atomic_write_text(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "metrics.json"
    atomic_write_text(path, "{}")
    atomic_write_text(path, '{"a": 1}')
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_atomic_outputs_get_the_umask_modes(tmp_path: Path) -> None:
    """Not mkstemp's 0600 / mkdtemp's 0700: the modes plain open()/mkdir() would give."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}\n")
        with atomic_directory(tmp_path / "ckpt") as tmp:
            (tmp / "x.txt").write_text("x")
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.json", "{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "ckpt").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600


# --- the output-folder policy (docs/train.md, "Output folders") ------------------------------


def test_save_checkpoint_keeps_a_folders_other_contents(
    tiny_bert: BertForSequenceClassification, tmp_path: Path
) -> None:
    """Issue 18: save_checkpoint deleted notes.txt and sub/ of an existing folder."""
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes")
    (out / "sub" / "data.csv").write_text("1,2")
    save_checkpoint(tiny_bert, out, recipe={"method": "dense"}, extra_files={"x.json": "{}\n"})
    assert (out / "notes.txt").read_text() == "my notes"
    assert (out / "sub" / "data.csv").read_text() == "1,2"
    for name in ("model.safetensors", "config.json", "sparsity.json", "recipe.yaml", "x.json"):
        assert (out / name).is_file(), name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left
    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert torch.equal(loaded.classifier.weight, tiny_bert.classifier.weight)


def test_save_checkpoint_refuses_an_existing_file(
    tiny_bert: BertForSequenceClassification, tmp_path: Path
) -> None:
    """Issue 18: an existing regular file was turned into a folder."""
    from obert_train import OutputDirError

    file = tmp_path / "model.bin"
    file.write_bytes(b"user data")
    with pytest.raises(OutputDirError, match=r"model\.bin' exists and is not a folder"):
        save_checkpoint(tiny_bert, file)
    assert file.read_bytes() == b"user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_a_second_save_into_the_same_folder_drops_the_first_ones_own_reports(
    tiny_bert: BertForSequenceClassification, tmp_path: Path
) -> None:
    """oneshot --overwrite: an unstructured result must not keep a structured run's report."""
    out = tmp_path / "sparsity-0.50"
    save_checkpoint(tiny_bert, out, extra_files={"structure.json": "{}\n"})
    (out / "notes.txt").write_text("mine")
    save_checkpoint(tiny_bert, out, extra_files={"other.json": "{}\n"})
    names = sorted(p.name for p in out.iterdir())
    assert "structure.json" not in names  # the earlier checkpoint's own report
    assert {"notes.txt", "other.json", "model.safetensors", "sparsity.json"} <= set(names)


def test_a_sharded_save_over_a_single_file_save_loads_the_new_weights(
    tiny_bert: BertForSequenceClassification, tmp_path: Path
) -> None:
    """Review: the earlier model.safetensors stayed beside the new shards (and was loaded),
    and the earlier recipe.yaml stayed beside a model it no longer describes."""
    import functools

    out = tmp_path / "ckpt"
    save_checkpoint(tiny_bert, out, recipe={"method": "magnitude"})
    assert (out / "model.safetensors").is_file()
    with torch.no_grad():
        tiny_bert.classifier.weight.add_(1.0)
    sharded = functools.partial(tiny_bert.save_pretrained, max_shard_size="20KB")
    tiny_bert.save_pretrained = sharded  # type: ignore[method-assign]
    save_checkpoint(tiny_bert, out)
    names = {p.name for p in out.iterdir()}
    assert "model.safetensors.index.json" in names
    assert "model.safetensors" not in names  # the earlier single file is gone
    assert "recipe.yaml" not in names  # recipe=None: the earlier recipe no longer applies
    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert torch.equal(loaded.classifier.weight, tiny_bert.classifier.weight)
