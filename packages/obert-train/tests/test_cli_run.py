"""CLI: ``obert-train run``, ``recipe show|list``, ``methods`` and one-shot recipes read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification
from typer.testing import CliRunner

from obert_train import load_recipe, resolve_target_params
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
    final_sparsity: 0.6
    start_epoch: 0
    end_epoch: 1
    update_frequency: 0.5
"""


def _text(result: object) -> str:
    return str(getattr(result, "output", "")).replace("\n", " ")


def test_recipe_show_prints_every_step_and_list_shows_shipped_recipes() -> None:
    result = runner.invoke(
        app, ["recipe", "show", "minilm-sst2-obert90", "--steps-per-epoch", "63"]
    )
    assert result.exit_code == 0, result.output
    for value in ("0.5000", "0.7815", "0.8852", "0.9000", "cyclic_linear", "hardness"):
        assert value in result.output
    listed = runner.invoke(app, ["recipe", "list"])
    assert listed.exit_code == 0
    assert "minilm-sst2-obert90" in listed.output.split()
    assert "paper-squad-unstructured90" in listed.output.split()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GMP.replace("final_sparsity", "final_sparsty"), "final_sparsty.*did you mean"),
        (GMP.replace("!GMPruningModifier", "!GMPPruningModifier"), "GMPPruningModifier"),
        (GMP.replace("final_sparsity: 0.6", "final_sparsity: 0.1"), "final_sparsity"),
    ],
)
def test_recipe_show_refuses_an_invalid_recipe_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    result = runner.invoke(app, ["recipe", "show", str(file)])
    assert result.exit_code == 2
    import re

    assert "bad.yaml" in _text(result) and re.search(message, _text(result))


def test_methods_lists_the_registry_with_settings() -> None:
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0
    for name in ("obert", "magnitude", "movement", "constant", "fisher_block_size = 50"):
        assert name in result.output
    assert "!OBSPruningModifier" in result.output and "!GMPruningModifier" in result.output


def test_run_trains_prunes_and_refuses_a_busy_folder(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    recipe = tmp_path / "gmp.yaml"
    recipe.write_text(GMP)
    out = tmp_path / "run"
    args = [
        "run", str(recipe), "--model", str(tiny_model_dir), "--task", "sst2",
        "--data-dir", str(sst2_dir), "--output-dir", str(out), "--batch-size", "6",
        "--no-progress", "--set", "final_sparsity=0.5",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.rindex('{\n  "output_dir"') :])
    assert summary["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert [s["epoch"] for s in summary["pruning_steps"]] == [0.0, 0.5, 1.0]
    model = AutoModelForSequenceClassification.from_pretrained(out)
    written = load_recipe(str(out / "recipe.yaml"))
    assert written.pruning[0].final_sparsity == 0.5
    params = resolve_target_params(model, written.pruning[0].settings.targets)
    zeros = sum(int((p == 0).sum()) for p in params.values())
    assert zeros == round(0.5 * sum(p.numel() for p in params.values()))
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "not empty" in _text(again)


def test_run_without_the_teacher_a_recipe_distils_from_is_refused(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "kd"
    result = runner.invoke(
        app,
        ["run", "minilm-sst2-obert80", "--model", str(tiny_model_dir), "--task", "sst2",
         "--data-dir", str(sst2_dir), "--output-dir", str(out), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--teacher" in _text(result)
    assert not out.exists()


def test_oneshot_recipe_reads_back_and_reproduces_the_checkpoint(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    common = ["--model", str(tiny_model_dir), "--task", "sst2", "--data-dir", str(sst2_dir),
              "--no-progress"]  # fmt: skip
    first = runner.invoke(
        app,
        ["oneshot", *common, "--output-dir", str(tmp_path / "a"), "--sparsity", "0.5",
         "--num-grads", "4", "--grad-batch-size", "4", "--fisher-block-size", "16",
         "--damp", "1e-4"],
    )  # fmt: skip
    assert first.exit_code == 0, first.output
    recipe_file = tmp_path / "a" / "sparsity-0.50" / "recipe.yaml"
    recipe = load_recipe(str(recipe_file))
    settings = recipe.pruning[0].settings
    assert (settings.num_grads, settings.fisher_block_size, settings.damp) == (4, 16, 1e-4)
    second = runner.invoke(
        app, ["oneshot", *common, "--output-dir", str(tmp_path / "b"), "--recipe", str(recipe_file)]
    )
    assert second.exit_code == 0, second.output
    a = AutoModelForSequenceClassification.from_pretrained(tmp_path / "a" / "sparsity-0.50")
    b = AutoModelForSequenceClassification.from_pretrained(tmp_path / "b" / "sparsity-0.50")
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), name


def test_run_refuses_a_model_whose_head_does_not_fit_the_task(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "three"
    data.mkdir()
    rows = (sst2_dir / "train.tsv").read_text().splitlines()
    relabelled = [rows[0]] + [
        r if i % 3 else r.rsplit("\t", 1)[0] + "\t2" for i, r in enumerate(rows[1:])
    ]
    for name in ("train.tsv", "dev.tsv"):
        (data / name).write_text("\n".join(relabelled) + "\n")
    recipe = tmp_path / "gmp.yaml"
    recipe.write_text(GMP)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["run", str(recipe), "--model", str(tiny_model_dir), "--task", "glue-tsv",
         "--data-dir", str(data), "--output-dir", str(out), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "does not fit task 'glue-tsv' (3 labels)" in _text(result)
    assert not out.exists()


TRANSFER = """
modifiers:
  - !EpochRangeModifier {start_epoch: 0, end_epoch: 1}
pruning_modifiers:
  - !ConstantPruningModifier
    params: ["re:bert.encoder.layer.*.intermediate.dense.weight"]
"""


def test_sparse_transfer_keeps_the_zeros_of_a_pruned_model(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    """!ConstantPruningModifier on a pruned model trains with its zeros fixed (a dense one is
    refused: tests/test_bad_input.py)."""
    pruned = tmp_path / "pruned"
    first = runner.invoke(
        app,
        ["oneshot", "--model", str(tiny_model_dir), "--task", "sst2", "--data-dir",
         str(sst2_dir), "--output-dir", str(pruned), "--method", "magnitude", "--sparsity",
         "0.5", "--target", "intermediate\\.dense\\.weight$", "--no-progress"],
    )  # fmt: skip
    assert first.exit_code == 0, first.output
    start = AutoModelForSequenceClassification.from_pretrained(pruned / "sparsity-0.50")
    recipe = tmp_path / "transfer.yaml"
    recipe.write_text(TRANSFER)
    out = tmp_path / "transfer"
    result = runner.invoke(
        app,
        ["run", str(recipe), "--model", str(pruned / "sparsity-0.50"), "--task", "sst2",
         "--data-dir", str(sst2_dir), "--output-dir", str(out), "--batch-size", "6",
         "--no-progress", "--learning-rate", "1e-2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    end = AutoModelForSequenceClassification.from_pretrained(out)
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    before, after = start.get_parameter(name), end.get_parameter(name)
    assert torch.equal(before == 0, after == 0)  # the same zeros, no more, no fewer
    assert not torch.equal(before, after)  # and the kept weights trained
