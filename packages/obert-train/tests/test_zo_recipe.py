"""``!ZerothOrderModifier``: ZO training through the recipe lifecycle and ``obert-train run``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification
from typer.testing import CliRunner

from obert_train import RecipeError, load_recipe
from obert_train.cli import app
from obert_train.hf.zo_pool import available_cores
from obert_train.recipe import ZerothOrderModifier, convert_recipe

runner = CliRunner()

ZO = """
modifiers:
  - !EpochRangeModifier
    start_epoch: 0
    end_epoch: 2
training_modifiers:
  - !SetLearningRateModifier
    learning_rate: 1.0e-3
  - !ZerothOrderModifier
    FIELDS
pruning_modifiers:
  - !ConstantPruningModifier
    params: ["re:bert.encoder.layer.*.intermediate.dense.weight"]
"""


def _zo(fields: str = "seed: 3") -> str:
    return ZO.replace("FIELDS", fields.replace("\n", "\n    "))


def _text(result: object) -> str:
    return str(getattr(result, "output", "")).replace("\n", " ")


def test_the_modifier_loads_describes_converts_and_round_trips(tmp_path: Path) -> None:
    recipe = load_recipe("minilm-sst2-zo-sparse")
    zo = recipe.zeroth_order
    assert zo == ZerothOrderModifier(estimator="spsa", mu=1e-3, seed=0, position=3)
    text = recipe.describe(steps_per_epoch=10)
    assert "Optimizer: zeroth-order for the whole run" in text and "SPSA (MeZO)" in text
    assert load_recipe(recipe.to_yaml()) == recipe
    converted = convert_recipe("minilm-sst2-zo-sparse", tmp_path / "zo.yaml")
    assert converted.zeroth_order is not None
    assert load_recipe(tmp_path / "zo.yaml") == recipe
    assert "!ZerothOrderModifier" in (tmp_path / "zo.yaml").read_text()
    cge = load_recipe(
        _zo("estimator: cge\ngradient_sparsity: 0.9\ngradient_ratios: zo_grasp\nworkers: 1")
    )
    shown = cge.describe()
    assert "coordinate-wise (DeepZero CGE)" in shown and "ZO-GraSP ratios (q = 192" in shown
    assert "other matrices stay frozen" in shown  # CGE moves no matrix without a mask
    assert "other matrices stay frozen" not in text  # SPSA perturbs every trained tensor


def test_the_fingerprint_has_the_zo_settings_but_not_the_workers() -> None:
    plain = load_recipe(ZO.replace("  - !ZerothOrderModifier\n    FIELDS\n", ""))
    assert "zeroth_order" not in plain.content()  # recipes without it keep their fingerprint
    one = load_recipe(_zo("estimator: cge\nworkers: 1"))
    assert one.fingerprint() != plain.fingerprint()
    assert one.fingerprint() != load_recipe(_zo("estimator: cge\nmu: 0.01")).fingerprint()
    two = load_recipe(_zo("estimator: cge\nworkers: 2"))
    assert two.fingerprint() == one.fingerprint()
    # momentum 0 is the default (recipes from before the field keep their fingerprint)
    assert load_recipe(_zo("estimator: cge\nmomentum: 0")).fingerprint() == one.fingerprint()
    momentum = load_recipe(_zo("estimator: cge\nmomentum: 0.9"))
    assert momentum.fingerprint() != one.fingerprint()
    assert "SGD momentum 0.9" in momentum.describe() and "no momentum" in one.describe()
    assert load_recipe(momentum.to_yaml()) == momentum


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("mu: 0", r"ZerothOrderModifier, line 9\) in recipe text: mu = 0: must be > 0"),
        ("mu: .nan", r"mu"),
        ("mu: -1.0e-3", r"mu = -0\.001"),
        ("num_directions: 0", r"num_directions = 0"),
        ("workers: 0", r"workers = 0"),
        ("workers: 2", r"workers = 2 splits the coordinates of estimator cge"),
        ("gradient_ratios: zo_grasp", r"zo_grasp needs a gradient_sparsity > 0"),
        ("gradient_sparsity: 1.0", r"gradient_sparsity = 1"),
        ("end_epoch: 1", r"end_epoch = 1: zeroth-order steps run for the whole run"),
        ("start_epoch: 1", r"start_epoch = 1"),
        ("estimator: rge", r"estimator = 'rge'"),
        ("mu_scale: 1", r"mu_scale"),
        ("estimator: cge\nmomentum: 1.0", r"momentum = 1(\.0)?: must be < 1"),
        ("estimator: cge\nmomentum: -0.1", r"momentum = -0\.1: must be >= 0"),
        ("estimator: cge\nmomentum: .nan", r"momentum"),
        ("estimator: cge\nmomentum: .inf", r"momentum"),
        ("momentum: 0.9", r"momentum = 0\.9 needs estimator cge"),
    ],
)
def test_bad_fields_are_named(fields: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe(_zo(fields))


def test_one_zo_modifier_and_no_gradient_scored_pruning() -> None:
    twice = _zo().replace(
        "pruning_modifiers:", "  - !ZerothOrderModifier\n    seed: 1\npruning_modifiers:"
    )
    with pytest.raises(RecipeError, match="at most one ZerothOrderModifier"):
        load_recipe(twice)
    movement = _zo().replace(
        "  - !ConstantPruningModifier\n",
        "  - !MovementPruningModifier\n    init_sparsity: 0.1\n    final_sparsity: 0.5\n"
        "    start_epoch: 0\n    end_epoch: 1\n    update_frequency: 0.5\n",
    )
    with pytest.raises(RecipeError, match="method movement scores weights from the training"):
        load_recipe(movement)


def _prune(tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path) -> Path:
    pruned = tmp_path / "pruned"
    result = runner.invoke(
        app,
        ["oneshot", "--model", str(tiny_model_dir), "--task", "sst2", "--data-dir",
         str(sst2_dir), "--output-dir", str(pruned), "--method", "magnitude", "--sparsity",
         "0.5", "--target", "intermediate\\.dense\\.weight$", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return pruned / "sparsity-0.50"


def test_run_with_a_zo_recipe_trains_the_kept_weights_with_kd_and_resumes_bit_identically(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    """Sparse MeZO + KD end to end; a run resumed from its epoch-1 checkpoint ends identical."""
    start = _prune(tiny_model_dir, sst2_dir, tmp_path)
    recipe = tmp_path / "zo.yaml"
    recipe.write_text(
        _zo("seed: 3\nnum_directions: 2")
        + "distillation_modifiers:\n  - !DistillationModifier\n    hardness: 0.5\n"
    )
    out = tmp_path / "run"
    args = [
        "run", str(recipe), "--model", str(start), "--task", "sst2", "--data-dir",
        str(sst2_dir), "--output-dir", str(out), "--batch-size", "6", "--no-progress",
        "--teacher", str(tiny_model_dir),
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    before = AutoModelForSequenceClassification.from_pretrained(start)
    after = AutoModelForSequenceClassification.from_pretrained(out)
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    assert torch.equal(before.get_parameter(name) == 0, after.get_parameter(name) == 0)
    assert not torch.equal(before.get_parameter(name), after.get_parameter(name))
    state = json.loads((out / "checkpoint-6" / "zo_state.json").read_text())
    assert state["num_directions"] == 2 and state["step"] == 6
    assert load_recipe(out / "recipe.yaml").zeroth_order is not None
    # a run killed after epoch 1: its last checkpoint and final model gone
    final = {n: p.detach().clone() for n, p in after.named_parameters()}
    shutil.rmtree(out / "checkpoint-12")
    (out / "model.safetensors").unlink()
    again = runner.invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    resumed = AutoModelForSequenceClassification.from_pretrained(out)
    for n, p in resumed.named_parameters():
        assert torch.equal(p, final[n]), n


@pytest.mark.skipif(available_cores() < 2, reason="two workers need two cores")
def test_run_with_cge_zo_grasp_and_two_workers(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    text = (
        _zo(
            "estimator: cge\ngradient_sparsity: 0.9\ngradient_ratios: zo_grasp\n"
            "grasp_directions: 4\nparams: ['re:^bert.pooler.dense.weight$', 're:^classifier']\n"
            "workers: 2"
        )
        .replace(
            "training_modifiers:",
            "training_modifiers:\n  - !TrainableParamsModifier\n    params: ['re:^bert']\n"
            "    trainable: false",
        )
        .replace("end_epoch: 2", "end_epoch: 1")
    )
    recipe = tmp_path / "cge.yaml"
    recipe.write_text(text[: text.index("pruning_modifiers:")])  # no masks: dense CGE
    out = tmp_path / "cge"
    base = [
        "run", str(recipe), "--model", str(tiny_model_dir), "--task", "sst2", "--data-dir",
        str(sst2_dir), "--batch-size", "6", "--no-progress",
    ]  # fmt: skip
    result = runner.invoke(app, [*base, "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "ZO-GraSP gradient sparsities" in result.output
    start = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    end = AutoModelForSequenceClassification.from_pretrained(out)
    assert torch.equal(start.bert.encoder.layer[0].output.dense.weight,
                       end.bert.encoder.layer[0].output.dense.weight)  # fmt: skip
    assert not torch.equal(start.classifier.bias, end.classifier.bias)
    too_many = available_cores() + 1
    recipe.write_text(recipe.read_text().replace("workers: 2", f"workers: {too_many}"))
    refused = runner.invoke(app, [*base, "--output-dir", str(tmp_path / "refused")])
    assert refused.exit_code == 2
    assert f"workers={too_many} exceeds the {available_cores()} CPU cores" in _text(refused)
    assert not (tmp_path / "refused").exists()
