"""Recipe-driven layer dropping and the compound structured recipe (issue 21).

``!LayerDroppingModifier`` keeps some of the student's layers before training (the teacher stays
whole); the shipped ``minilm-sst2-compound-l3-structured`` drops 6 -> 3 layers and prunes FFN
neurons and heads gradually with uniform allocation and KD; ``obert-train shrink`` then writes a
checkpoint that plain transformers loads with the run's outputs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification
from typer.testing import CliRunner

from obert_train import (
    ModelError,
    RecipeError,
    RunOptions,
    TargetError,
    build_recipe,
    drop_layers,
    load_recipe,
    load_task,
    run_recipe,
)
from obert_train.cli import app
from obert_train.hf.callback import _check_layers_dropped
from obert_train.recipe import LayerDroppingModifier, ModifierSpec
from obert_train.shrink import max_output_difference

from .conftest import tiny_config

runner = CliRunner()
COMPOUND = "minilm-sst2-compound-l3-structured"

BASE = """
modifiers:
  - !EpochRangeModifier {start_epoch: 0.0, end_epoch: 2.0}
  - !LayerDroppingModifier {FIELDS}
distillation_modifiers:
  - !DistillationModifier {hardness: 1.0, temperature: 2.0, distill_output_keys: [logits]}
"""


def _recipe(fields: str = "{num_layers: 2}") -> str:
    return BASE.replace("{FIELDS}", fields)


def _model(tokenizer: Any, layers: int = 4, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = tiny_config(
        len(tokenizer), num_labels=2, num_hidden_layers=layers, num_attention_heads=4
    )
    return BertForSequenceClassification(config).eval()


def _opts() -> RunOptions:
    return RunOptions(batch_size=4, progress=False, logging_steps=50)


# --- the modifier -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("{}", "exactly one of them"),
        ("{num_layers: 2, keep: [0, 1]}", "exactly one of them"),
        ("{keep: [2, 0]}", "increasing order"),
        ("{keep: [0, 0]}", "each layer once"),
        ("{keep: [-1, 2]}", "start at 0"),
        ("{num_layers: 0}", "num_layers"),
        ("{num_layers: 2, start_epoch: 1.0}", "before training"),
        ("{num_layers: 2, end_epoch: 2.0}", "whole run"),
        ("{num_layers: 2, layers: [a]}", "layers"),
    ],
)
def test_bad_fields_are_refused_naming_the_modifier(fields: str, message: str) -> None:
    with pytest.raises(RecipeError, match="LayerDroppingModifier") as info:
        load_recipe(_recipe(fields))
    assert message in str(info.value)


def test_one_modifier_only_and_the_sparseml_tag_points_to_it() -> None:
    twice = _recipe().replace(
        "  - !LayerDroppingModifier {num_layers: 2}\n",
        "  - !LayerDroppingModifier {num_layers: 2}\n  - !LayerDroppingModifier {keep: [0]}\n",
    )
    with pytest.raises(RecipeError, match="at most one LayerDroppingModifier"):
        load_recipe(twice)
    sparseml = _recipe().replace(
        "!LayerDroppingModifier {num_layers: 2}", "!LayerPruningModifier {}"
    )
    with pytest.raises(RecipeError, match=r"!LayerDroppingModifier \{keep: \[0, 2, 4\]\}"):
        load_recipe(sparseml)


def test_content_round_trip_and_fingerprints_of_other_recipes_unchanged() -> None:
    recipe = load_recipe(_recipe("{keep: [0, 3]}"))
    assert recipe.layer_dropping == LayerDroppingModifier(keep=(0, 3), position=2)
    assert load_recipe(recipe.to_yaml()) == recipe
    assert "layer_dropping" in recipe.content()
    plain = load_recipe(_recipe().replace("  - !LayerDroppingModifier {num_layers: 2}\n", ""))
    assert "layer_dropping" not in plain.content() and plain != recipe
    built = build_recipe(
        [*plain.modifiers(), ModifierSpec("LayerDroppingModifier", {"keep": [0, 3]})]
    )
    assert built == recipe
    assert "Layers: the student keeps layers 0, 3 before training" in recipe.describe()
    assert load_recipe(_recipe("{num_layers: 3}")).layer_dropping.kept(6) == [1, 3, 5]  # type: ignore[union-attr]


def test_apply_layer_dropping_and_its_errors(tokenizer: Any) -> None:
    model = _model(tokenizer, layers=4)
    reference = copy.deepcopy(model)
    assert load_recipe(_recipe()).apply_layer_dropping(model) == [1, 3]
    assert model.config.num_hidden_layers == 2 and len(model.bert.encoder.layer) == 2
    drop_layers(reference, [1, 3])
    assert max_output_difference(model, reference) == 0.0
    with pytest.raises(RecipeError, match=r"num_layers = 5, but the model has 4 layers"):
        load_recipe(_recipe("{num_layers: 5}")).apply_layer_dropping(_model(tokenizer))
    with pytest.raises(RecipeError, match=r"keep names layer\(s\) \[4\]"):
        load_recipe(_recipe("{keep: [0, 4]}")).apply_layer_dropping(_model(tokenizer))
    with pytest.raises(ModelError, match=r"LayerDroppingModifier.*no known list"):
        load_recipe(_recipe()).apply_layer_dropping(torch.nn.Linear(2, 2))
    with pytest.raises(RecipeError, match="keeps 2 layers, but the model being trained has 4"):
        _check_layers_dropped(load_recipe(_recipe()), _model(tokenizer))


# --- run_recipe -------------------------------------------------------------------------------


def test_a_run_drops_the_students_layers_and_distils_from_the_whole_teacher(
    tokenizer: Any, sst2_dir: Path, tmp_path: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    student, teacher = _model(tokenizer), _model(tokenizer)
    out = tmp_path / "run"
    result = run_recipe(
        load_recipe(_recipe()), student, task, out, teacher=teacher, tokenizer=tokenizer,
        options=_opts(), log=lambda _l: None,
    )  # fmt: skip
    assert result.metrics
    assert len(teacher.bert.encoder.layer) == 4  # the teacher stays whole
    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert loaded.config.num_hidden_layers == 2
    assert max_output_difference(loaded, student) <= 1e-6


def test_a_resumed_run_drops_the_layers_again_before_loading_the_checkpoint(
    tokenizer: Any, sst2_dir: Path, tmp_path: Path
) -> None:
    import shutil

    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    out = tmp_path / "run"
    recipe = load_recipe(_recipe())
    run_recipe(
        recipe, _model(tokenizer), task, out, teacher=_model(tokenizer), options=_opts(),
        model_name="tiny", log=lambda _l: None,
    )  # fmt: skip
    last = max(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    shutil.rmtree(last)  # interrupted after the first epoch's checkpoint
    student = _model(tokenizer)
    result = run_recipe(
        recipe, student, task, out, teacher=_model(tokenizer), options=_opts(), resume=True,
        model_name="tiny", log=lambda _l: None,
    )  # fmt: skip
    assert result.resumed_from is not None and result.resumed_from.endswith("checkpoint-9")
    assert len(student.bert.encoder.layer) == 2
    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert loaded.config.num_hidden_layers == 2
    assert max_output_difference(loaded, student) <= 1e-6


def test_a_refused_run_puts_the_layers_back_and_writes_nothing(
    tokenizer: Any, sst2_dir: Path, tmp_path: Path
) -> None:
    """A uniform head budget that empties the (dropped) layers: refused before the folder."""
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    text = _recipe() + (
        "pruning_modifiers:\n  - !StructuredPruningModifier\n"
        "    params: ['re:attention\\.output\\.dense\\.weight']\n"
        "    init_sparsity: 0.9\n    final_sparsity: 0.9\n    start_epoch: 0.0\n"
        "    end_epoch: 1.0\n    update_frequency: 1.0\n    structure: heads\n"
        "    allocation: uniform\n"
    )
    student = _model(tokenizer)
    state = {k: v.clone() for k, v in student.state_dict().items()}
    out = tmp_path / "run"
    with pytest.raises(TargetError, match="every layer would be empty"):
        run_recipe(
            load_recipe(text), student, task, out, teacher=_model(tokenizer),
            options=_opts(), log=lambda _l: None,
        )  # fmt: skip
    assert not out.exists()
    assert student.config.num_hidden_layers == 4 and len(student.bert.encoder.layer) == 4
    assert student.state_dict().keys() == state.keys()
    assert all(torch.equal(state[k], v) for k, v in student.state_dict().items())


# --- the shipped compound recipe --------------------------------------------------------------


def test_the_shipped_compound_recipe_loads_and_explains_itself() -> None:
    recipe = load_recipe(COMPOUND)
    assert recipe.layer_dropping is not None and recipe.layer_dropping.num_layers == 3
    assert recipe.distillation is not None and recipe.num_epochs == 6
    settings = [m.create_method().settings.model_dump() for m in recipe.pruning]
    assert [s["structure"] for s in settings] == ["neurons", "heads"]
    assert {s["allocation"] for s in settings} == {"uniform"}
    plan = recipe.describe(63)
    assert "Layers: the student keeps 3 evenly spaced layers" in plan
    assert plan.count("allocation uniform: every layer keeps the same number") == 2
    result = runner.invoke(app, ["recipe", "show", COMPOUND], prog_name="obert-train")
    assert result.exit_code == 0 and "of 6: 1, 3, 5" in result.output


@pytest.mark.slow
def test_the_compound_recipe_end_to_end_on_a_tiny_model(
    tokenizer: Any, sst2_dir: Path, tmp_path: Path
) -> None:
    """6 -> 3 layers, neurons and heads pruned uniformly with KD, shrunk, loaded plainly."""
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    student, teacher = _model(tokenizer, layers=6), _model(tokenizer, layers=6)
    out = tmp_path / "run"
    result = run_recipe(
        load_recipe(COMPOUND), student, task, out, teacher=teacher, tokenizer=tokenizer,
        options=_opts(), log=lambda _l: None,
    )  # fmt: skip
    assert len(result.pruning_steps) == 8
    small = tmp_path / "small"
    shrunk = runner.invoke(
        app, ["shrink", str(out), "--output-dir", str(small), "--no-progress"],
        prog_name="obert-train",
    )  # fmt: skip
    assert shrunk.exit_code == 0, shrunk.output
    report = json.loads((small / "shrink.json").read_text())
    assert report["kept_neurons"] == [16, 16, 16] and report["kept_heads"] == [2, 2, 2]
    loaded = AutoModelForSequenceClassification.from_pretrained(small)
    assert (loaded.config.num_hidden_layers, loaded.config.intermediate_size) == (3, 16)
    batch = task.collate(task.train_features[:6])
    batch.pop("labels", None)
    assert max_output_difference(loaded, student, batch) <= 1e-5
