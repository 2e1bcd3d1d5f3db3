"""The shipped recipes and the same-budget baseline derived from a pruning recipe."""

from __future__ import annotations

from typing import Any

import pytest

from obert.defaults import shipped_recipe
from obert.errors import PipelineInputError
from obert.recipes import baseline_recipe, load_stage_recipe
from obert_train import Recipe, RecipeError


def test_shipped_recipes_load_and_the_pruning_schedule_is_50_to_90() -> None:
    dense = load_stage_recipe(None, dense=True)
    pruning = load_stage_recipe(None, dense=False)
    assert not dense.pruning and dense.num_epochs == 2
    (modifier,) = pruning.pruning
    assert modifier.method_name == "obert"
    assert [round(s, 4) for _, s in modifier.schedule()] == [0.5, 0.6333, 0.7667, 0.9]
    assert pruning.distillation is not None
    assert load_stage_recipe("quickstart-obert", dense=False) == pruning


def test_baseline_keeps_tensors_schedule_lr_and_distillation() -> None:
    pruning = load_stage_recipe(None, dense=False, overrides={"final_sparsity": 0.8})
    baseline = baseline_recipe(pruning, "GMPruningModifier")
    (ours,), (theirs,) = pruning.pruning, baseline.pruning
    assert theirs.method_name == "magnitude" and theirs.tag == "GMPruningModifier"
    assert theirs.params == ours.params
    assert theirs.schedule() == ours.schedule()
    assert [e.step for e in baseline.pruning_events(50)] == [
        e.step for e in pruning.pruning_events(50)
    ]
    assert baseline.learning_rate == pruning.learning_rate
    assert baseline.distillation == pruning.distillation
    assert baseline.num_epochs == pruning.num_epochs
    assert theirs.settings.mask_type == ours.settings.mask_type


def test_overrides_reach_the_pruning_recipe() -> None:
    recipe = load_stage_recipe(
        None, dense=False, overrides={"num_grads": 64, "final_sparsity": 0.8}
    )
    assert recipe.pruning[0].settings.num_grads == 64  # type: ignore[attr-defined]
    assert recipe.pruning[0].final_sparsity == 0.8


def test_wrong_kinds_of_recipe_are_refused() -> None:
    with pytest.raises(PipelineInputError, match="has pruning modifiers"):
        load_stage_recipe("quickstart-obert", dense=True)
    with pytest.raises(PipelineInputError, match="no scheduled pruning modifier"):
        load_stage_recipe("quickstart-dense", dense=False)
    with pytest.raises(PipelineInputError, match="not the tag of a gradual pruning method"):
        baseline_recipe(load_stage_recipe(None, dense=False), "ConstantPruningModifier")
    with pytest.raises(RecipeError, match="no recipe file or shipped recipe"):
        load_stage_recipe("no-such-recipe", dense=False)


def test_shipped_structured_recipe_has_the_pruning_recipes_budget_and_removes_atoms() -> None:
    structured = load_stage_recipe(None, dense=False, structured=True)
    pruning = load_stage_recipe(None, dense=False)
    assert load_stage_recipe("quickstart-structured", dense=False, structured=True) == structured
    neurons, heads = structured.pruning
    assert (neurons.settings.structure, heads.settings.structure) == ("neurons", "heads")  # type: ignore[attr-defined]
    for modifier in (neurons, heads):
        settings: Any = modifier.settings
        assert modifier.method_name == "structured" and settings.allocation == "uniform"
        assert settings.score == "heapr" and settings.correct
    assert [round(s, 4) for _, s in neurons.schedule()] == [0.3, 0.6167, 0.7333, 0.75]
    assert [round(s, 4) for _, s in heads.schedule()] == [0.25, 0.4259, 0.4907, 0.5]
    steps = [e.step for e in pruning.pruning_events(38)]
    assert sorted({e.step for e in structured.pruning_events(38)}) == steps
    assert structured.learning_rate == pruning.learning_rate
    kd, theirs = structured.distillation, pruning.distillation
    assert kd is not None and theirs is not None
    assert (kd.hardness, kd.temperature, kd.distill_output_keys) == (
        theirs.hardness,
        theirs.temperature,
        theirs.distill_output_keys,
    )
    assert structured.num_epochs == pruning.num_epochs
    squad = load_stage_recipe(None, dense=False, task="squad", structured=True)
    assert squad.distillation is not None
    assert tuple(squad.distillation.distill_output_keys) == ("start_logits", "end_logits")


def test_a_structured_recipe_prunes_atoms_only() -> None:
    with pytest.raises(PipelineInputError, match="has !OBSPruningModifier; the structured stage"):
        load_stage_recipe("quickstart-obert", dense=False, structured=True)
    with pytest.raises(PipelineInputError, match="no scheduled !StructuredPruningModifier"):
        load_stage_recipe("quickstart-dense", dense=False, structured=True)


def test_squad_distils_start_and_end_logits_with_the_shipped_recipe_only() -> None:
    def keys(recipe: Recipe) -> tuple[str, ...]:
        assert recipe.distillation is not None
        return tuple(recipe.distillation.distill_output_keys)

    squad = load_stage_recipe(None, dense=False, task="squad")
    assert keys(squad) == ("start_logits", "end_logits")
    assert keys(baseline_recipe(squad, "GMPruningModifier")) == ("start_logits", "end_logits")
    assert keys(load_stage_recipe("quickstart-obert", dense=False, task="squad")) == keys(squad)
    assert keys(load_stage_recipe(None, dense=False, task="sst2")) == ("logits",)
    mine = load_stage_recipe(
        None, dense=False, task="squad", overrides={"distill_output_keys": ["start_logits"]}
    )
    assert keys(mine) == ("start_logits",)  # --set wins
    text = shipped_recipe("quickstart-obert").read_text()
    assert keys(load_stage_recipe(text, dense=False, task="squad")) == ("logits",)  # the user's


# The GMP baseline of quickstart-obert as obert wrote it by hand before the recipe builder (the
# YAML text it loaded): the stage cache keys the baseline stage by the recipe's fingerprint, so a
# baseline built with obert-train's builder must have the same one.
HAND_BUILT_GMP_BASELINE = """\
modifiers:
  - !EpochRangeModifier
    start_epoch: 0.0
    end_epoch: 1.0

training_modifiers:
  - !LearningRateFunctionModifier
    start_epoch: 0.0
    end_epoch: 1.0
    lr_func: cyclic_linear
    init_lr: 0.0001
    final_lr: 1.0e-05
    cycle_epochs: 0.25

pruning_modifiers:
  - !GMPruningModifier
    params:
    - re:encoder\\.layer\\.\\d+\\.attention\\.self\\.query\\.weight$
    - re:encoder\\.layer\\.\\d+\\.attention\\.self\\.key\\.weight$
    - re:encoder\\.layer\\.\\d+\\.attention\\.self\\.value\\.weight$
    - re:encoder\\.layer\\.\\d+\\.attention\\.output\\.dense\\.weight$
    - re:encoder\\.layer\\.\\d+\\.intermediate\\.dense\\.weight$
    - re:encoder\\.layer\\.\\d+\\.output\\.dense\\.weight$
    init_sparsity: 0.5
    final_sparsity: 0.9
    start_epoch: 0.0
    end_epoch: 0.75
    update_frequency: 0.25
    inter_func: linear
    mask_type: unstructured
    global_sparsity: true

distillation_modifiers:
  - !DistillationModifier
    hardness: 1.0
    temperature: 2.0
    distill_output_keys:
    - logits
"""


def test_the_built_baseline_has_the_fingerprint_of_the_hand_built_one() -> None:
    from obert_train import load_recipe

    baseline = baseline_recipe(load_stage_recipe(None, dense=False), "GMPruningModifier")
    assert baseline.fingerprint() == load_recipe(HAND_BUILT_GMP_BASELINE).fingerprint()
    assert load_recipe(baseline.to_yaml()).fingerprint() == baseline.fingerprint()
    assert "with !GMPruningModifier" in baseline.where
