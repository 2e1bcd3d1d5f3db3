"""Recipes: the published SparseML oBERT recipes load unchanged; schedules, LR, validation.

The four ``PUBLISHED_*`` constants are verbatim copies of recipe files of neuralmagic/sparseml
(``research/optimal_BERT_surgeon_oBERT/recipes/``, commit 1c04a016), kept as test data.
"""

from __future__ import annotations

import importlib.resources
import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obert_train.errors import RecipeError
from obert_train.pruning.registry import method_for_tag
from obert_train.recipe import (
    DistillationModifier,
    EpochRangeModifier,
    LearningRateFunctionModifier,
    PruningEvent,
    PruningModifier,
    Recipe,
    list_shipped_recipes,
    load_recipe,
)

# --- verbatim published recipes -------------------------------------------------------------

# 30epochs_unstructured90_squad.yaml
PUBLISHED_UNSTRUCTURED90_SQUAD = """\
modifiers:
  - !EpochRangeModifier
    start_epoch: 0
    end_epoch: 30

training_modifiers:
  - !LearningRateFunctionModifier
    start_epoch: 0.0
    end_epoch: 2.0
    lr_func: linear
    init_lr: 8e-5
    final_lr: 8e-6
  - !LearningRateFunctionModifier
    start_epoch: 2.0
    end_epoch: 30.0
    lr_func: cyclic_linear
    cycle_epochs: 4.0
    init_lr: 8e-5
    final_lr: 8e-6

  - !OBSPruningModifier
    params: [
      "re:bert.encoder.layer.*.attention.self.query.weight",
      "re:bert.encoder.layer.*.attention.self.key.weight",
      "re:bert.encoder.layer.*.attention.self.value.weight",
      "re:bert.encoder.layer.*.attention.output.dense.weight",
      "re:bert.encoder.layer.*.intermediate.dense.weight",
      "re:bert.encoder.layer.*.output.dense.weight",
    ]
    init_sparsity: 0.7
    final_sparsity: 0.9
    start_epoch: 2
    end_epoch: 26
    update_frequency: 4.0
    inter_func: cubic
    global_sparsity: True
    mask_type: unstructured
    num_grads: 1024
    damp: 1e-7
    fisher_block_size: 50
    grad_sampler_kwargs:
      batch_size: 8

distillation_modifiers:
  - !DistillationModifier
     hardness: 1.0
     temperature: 2.0
     distill_output_keys: [start_logits, end_logits]
"""

# 3epochs_unstructured97_mlm.yaml
PUBLISHED_UNSTRUCTURED97_MLM = """\
modifiers:
  - !EpochRangeModifier
    start_epoch: 0
    end_epoch: 3

training_modifiers:
  - !LearningRateFunctionModifier
    start_epoch: 0.0
    end_epoch: 3.0
    lr_func: cyclic_linear
    cycle_epochs: 0.25
    init_lr: 5e-4
    final_lr: 5e-6

  - !OBSPruningModifier
    params: [
      "re:bert.encoder.layer.*.attention.self.query.weight",
      "re:bert.encoder.layer.*.attention.self.key.weight",
      "re:bert.encoder.layer.*.attention.self.value.weight",
      "re:bert.encoder.layer.*.attention.output.dense.weight",
      "re:bert.encoder.layer.*.intermediate.dense.weight",
      "re:bert.encoder.layer.*.output.dense.weight",
    ]
    init_sparsity: 0.7
    final_sparsity: 0.97
    start_epoch: 0
    end_epoch: 2.75
    update_frequency: 0.25
    inter_func: cubic
    global_sparsity: True
    mask_type: unstructured
    num_grads: 1024
    damp: 1e-7
    fisher_block_size: 50
    grad_sampler_kwargs:
      batch_size: 16

distillation_modifiers:
  - !DistillationModifier
     hardness: 1.0
     temperature: 5.5
     distill_output_keys: [logits]
"""

# 8epochs_sparse_transfer_squad.yaml
PUBLISHED_SPARSE_TRANSFER_SQUAD = """\
training_modifiers:
  - !EpochRangeModifier
    start_epoch: 0
    end_epoch: 8

  - !LearningRateFunctionModifier
      start_epoch: 0
      end_epoch: 8
      lr_func: linear
      init_lr: 1.5e-4
      final_lr: 1.5e-6

pruning_modifiers:
  - !ConstantPruningModifier
    start_epoch: 0
    end_epoch: 8
    params:
      - re:bert.encoder.layer.*.attention.self.query.weight
      - re:bert.encoder.layer.*.attention.self.key.weight
      - re:bert.encoder.layer.*.attention.self.value.weight
      - re:bert.encoder.layer.*.attention.output.dense.weight
      - re:bert.encoder.layer.*.intermediate.dense.weight
      - re:bert.encoder.layer.*.output.dense.weight

distillation_modifiers:
  - !DistillationModifier
     hardness: 1.0
     temperature: 5.5
     distill_output_keys: [start_logits, end_logits]"""

# 30epochs_4block80_squad.yaml
PUBLISHED_4BLOCK80_SQUAD = """\
modifiers:
  - !EpochRangeModifier
    start_epoch: 0
    end_epoch: 30

training_modifiers:
  - !LearningRateFunctionModifier
    start_epoch: 0.0
    end_epoch: 2.0
    lr_func: linear
    init_lr: 8e-5
    final_lr: 8e-6
  - !LearningRateFunctionModifier
    start_epoch: 2.0
    end_epoch: 30.0
    lr_func: cyclic_linear
    cycle_epochs: 4.0
    init_lr: 8e-5
    final_lr: 8e-6

  - !OBSPruningModifier
    params: [
      "re:bert.encoder.layer.*.attention.self.query.weight",
      "re:bert.encoder.layer.*.attention.self.key.weight",
      "re:bert.encoder.layer.*.attention.self.value.weight",
      "re:bert.encoder.layer.*.attention.output.dense.weight",
      "re:bert.encoder.layer.*.intermediate.dense.weight",
      "re:bert.encoder.layer.*.output.dense.weight",
    ]
    init_sparsity: 0.7
    final_sparsity: 0.8
    start_epoch: 2
    end_epoch: 26
    update_frequency: 4.0
    inter_func: cubic
    global_sparsity: True
    mask_type: block4
    num_grads: 1024
    damp: 1e-7
    fisher_block_size: 32
    grad_sampler_kwargs:
      batch_size: 8

distillation_modifiers:
  - !DistillationModifier
     hardness: 1.0
     temperature: 2.0
     distill_output_keys: [start_logits, end_logits]
"""

PUBLISHED = {
    "30epochs_unstructured90_squad": (PUBLISHED_UNSTRUCTURED90_SQUAD, "paper-squad-unstructured90"),
    "3epochs_unstructured97_mlm": (PUBLISHED_UNSTRUCTURED97_MLM, "paper-mlm-unstructured97"),
    "8epochs_sparse_transfer_squad": (PUBLISHED_SPARSE_TRANSFER_SQUAD, "paper-squad-transfer"),
    "30epochs_4block80_squad": (PUBLISHED_4BLOCK80_SQUAD, "paper-squad-block4-80"),
}

# Reference brief §2.1 / §6.16: per-step target sparsities at epochs 2, 6, ..., 26.
PAPER_EPOCHS = [2.0, 6.0, 10.0, 14.0, 18.0, 22.0, 26.0]
REF_SCHEDULES = {
    (0.7, 0.9): ([0.7000, 0.7843, 0.8407, 0.8750, 0.8926, 0.8991, 0.9000], 4),
    (0.7, 0.8): ([0.700, 0.742, 0.770, 0.788, 0.796, 0.800, 0.800], 3),
    (0.7, 0.97): ([0.700, 0.814, 0.890, 0.936, 0.960, 0.969, 0.970], 3),
    (0.3, 0.8): ([0.300, 0.511, 0.652, 0.738, 0.782, 0.798, 0.800], 3),
    (0.3, 0.9): ([0.300, 0.553, 0.722, 0.825, 0.878, 0.897, 0.900], 3),
}
SIX = [
    "attention.self.query.weight",
    "attention.self.key.weight",
    "attention.self.value.weight",
    "attention.output.dense.weight",
    "intermediate.dense.weight",
    "output.dense.weight",
]


def bert_names(layers: int = 2) -> list[str]:
    names = ["bert.embeddings.word_embeddings.weight"]
    for i in range(layers):
        for part in SIX:
            names.append(f"bert.encoder.layer.{i}.{part}")
            names.append(f"bert.encoder.layer.{i}.{part[: -len('weight')]}bias")
    return [*names, "classifier.weight", "classifier.bias"]


def cfg(modifier: PruningModifier) -> Any:
    """The method settings (typed as the oBERT settings in these tests)."""
    return modifier.settings


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- the published recipes load unchanged ---------------------------------------------------


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_recipe_loads_unchanged(name: str, tmp_path: Path) -> None:
    text, _ = PUBLISHED[name]
    recipe = load_recipe(write(tmp_path, text, name + ".yaml"))
    assert recipe == load_recipe(text)  # file and YAML text give the same recipe
    assert recipe.path == str(tmp_path / (name + ".yaml"))
    kd = recipe.distillation
    assert isinstance(kd, DistillationModifier)
    assert kd.hardness == 1.0
    if name.startswith("30epochs"):
        assert recipe.num_epochs == 30
        (obs,) = recipe.pruning
        assert obs.tag == "OBSPruningModifier"
        assert obs.method_name == "obert"
        assert isinstance(cfg(obs).damp, float)
        assert cfg(obs).damp == 1e-7
        assert cfg(obs).grad_batch_size == 8
        assert cfg(obs).num_grads == 1024
        assert obs.settings.global_sparsity is True
        block = name == "30epochs_4block80_squad"
        assert obs.settings.mask_type == ("block4" if block else "unstructured")
        assert cfg(obs).fisher_block_size == (32 if block else 50)
        assert [e for e, _ in obs.schedule()] == PAPER_EPOCHS
        expected, _ = REF_SCHEDULES[(0.7, 0.8 if block else 0.9)]
        assert [s for _, s in obs.schedule()] == pytest.approx(expected, abs=6e-4)
        assert kd.distill_output_keys == ("start_logits", "end_logits")
        assert kd.temperature == 2.0
        assert [m.lr_func for m in recipe.learning_rate] == ["linear", "cyclic_linear"]
        assert recipe.learning_rate[0].init_lr == 8e-5
        assert isinstance(recipe.learning_rate[0].init_lr, float)
    elif name == "3epochs_unstructured97_mlm":
        assert recipe.num_epochs == 3
        (obs,) = recipe.pruning
        assert [e for e, _ in obs.schedule()] == [0.25 * i for i in range(12)]
        assert obs.schedule()[-1] == (2.75, 0.97)
        assert cfg(obs).grad_batch_size == 16
        assert kd.temperature == 5.5
        assert recipe.learning_rate[0].cycle_epochs == 0.25
    else:
        (const,) = recipe.pruning
        assert const.method_name == "constant"
        assert not const.scheduled
        assert const.schedule() == []
        assert recipe.pruning_events(100) == []
        assert recipe.learning_rate[0].init_lr == 1.5e-4


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_shipped_paper_recipe_equals_published(name: str) -> None:
    text, shipped = PUBLISHED[name]
    assert load_recipe(shipped) == load_recipe(text)
    assert load_recipe(shipped).fingerprint() == load_recipe(text).fingerprint()


def test_published_params_become_targets() -> None:
    recipe = load_recipe(PUBLISHED_UNSTRUCTURED90_SQUAD)
    obs = recipe.pruning[0]
    assert obs.params[0] == "re:bert.encoder.layer.*.attention.self.query.weight"
    assert obs.targets[0] == "bert.encoder.layer.*.attention.self.query.weight"
    assert obs.settings.targets == list(obs.targets)
    (selected,) = recipe.check_targets(bert_names(3))
    assert len(selected) == 18
    assert all(name.endswith(".weight") and "encoder" in name for name in selected)


def test_search_selects_what_sparseml_match_selects_on_bert() -> None:
    """SparseML matches ``re:`` patterns with re.match, obert-train with re.search (docs §8)."""
    import re

    names = bert_names(12)
    for pattern in load_recipe(PUBLISHED_UNSTRUCTURED90_SQUAD).pruning[0].targets:
        assert [n for n in names if re.search(pattern, n)] == [
            n for n in names if re.match(pattern, n)
        ]


@pytest.mark.parametrize(("init", "final"), sorted(REF_SCHEDULES))
def test_cubic_schedule_matches_reference(init: float, final: float) -> None:
    text = PUBLISHED_UNSTRUCTURED90_SQUAD.replace("init_sparsity: 0.7", f"init_sparsity: {init}")
    text = text.replace("final_sparsity: 0.9", f"final_sparsity: {final}")
    schedule = load_recipe(text).pruning[0].schedule()
    expected, digits = REF_SCHEDULES[(init, final)]
    assert [e for e, _ in schedule] == PAPER_EPOCHS
    if digits == 4:
        assert [round(s, 4) for _, s in schedule] == expected
    else:  # the brief's 3-decimal values are rounded from 4 decimals (0.78148 -> 0.7815 -> 0.782)
        assert [s for _, s in schedule] == pytest.approx(expected, abs=6e-4)
    assert schedule[-1][1] == final


# --- learning rate ----------------------------------------------------------------------------


def test_cyclic_lr_restarts_at_every_pruning_epoch() -> None:
    """Reference brief §6.19: cycle boundaries coincide with pruning epochs 2, 6, ..., 26."""
    recipe = load_recipe("paper-squad-unstructured90")
    spe = 37
    events = recipe.pruning_events(spe)
    assert [e.epoch for e in events] == PAPER_EPOCHS
    for event in events:
        assert recipe.lr_at(event.step, spe) == pytest.approx(8e-5, rel=1e-12)
        assert recipe.lr_at(event.step - 1, spe) == pytest.approx(8e-6, rel=1e-12)
    cyclic = recipe.learning_rate[1]
    assert cyclic.cycle_starts() == PAPER_EPOCHS
    restarts = [s for s in range(recipe.total_steps(spe)) if recipe.lr_at(s, spe) == 8e-5]
    assert restarts == [0] + [e.step for e in events]


def test_lr_hand_computed_values() -> None:
    recipe = load_recipe("minilm-sst2-obert80")  # linear 0-1, cyclic 1-6 with 1-epoch cycles
    spe = 10
    lr = [recipe.lr_at(s, spe) for s in range(60)]
    init, final = 5e-5, 5e-6
    assert lr[0] == init
    assert lr[4] == pytest.approx(init - 4 / 9 * (init - final))
    assert lr[9] == pytest.approx(final)
    for start in (10, 20, 30, 40, 50):
        assert lr[start] == init
        assert lr[start + 5] == pytest.approx(init - 5 / 9 * (init - final))
        assert lr[start + 9] == pytest.approx(final)
    assert recipe.lr_at(60, spe) is None
    assert recipe.total_steps(spe) == 60


def test_lr_partial_last_cycle_and_fractional_cycles() -> None:
    text = """\
modifiers:
  - !EpochRangeModifier
    end_epoch: 3
training_modifiers:
  - !LearningRateFunctionModifier
    start_epoch: 0
    end_epoch: 2.5
    lr_func: cyclic_linear
    cycle_epochs: 1
    init_lr: 1.0
    final_lr: 0.0
"""
    recipe = load_recipe(text)
    lr = [recipe.lr_at(s, 4) for s in range(12)]
    assert lr[:8] == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0] * 2)
    assert lr[8:10] == [1.0, 0.0]  # last cycle: 2 steps
    assert lr[10:] == [None, None]  # epochs 2.5-3: no modifier, the trainer keeps its own
    quarter = load_recipe(text.replace("cycle_epochs: 1", "cycle_epochs: 0.25"))
    # boundaries round-half-up(0.25 j * 10) = 0, 3 (2.5), 5, 8 (7.5), 10, ...
    rates = [quarter.lr_at(s, 10) for s in range(10)]
    assert rates == [1.0, 0.5, 0.0, 1.0, 0.0, 1.0, 0.5, 0.0, 1.0, 0.0]


def test_linear_lr_reaches_final_at_last_step() -> None:
    recipe = load_recipe("minilm-sst2-dense")
    assert recipe.lr_at(0, 7) == 5e-5
    assert recipe.lr_at(20, 7) == pytest.approx(5e-6)
    assert recipe.lr_at(21, 7) is None
    assert recipe.pruning == ()
    assert recipe.distillation is None


# --- pruning events ---------------------------------------------------------------------------

TWO_METHODS = """\
modifiers:
  - !EpochRangeModifier
    end_epoch: 4
pruning_modifiers:
  - !OBSPruningModifier
    params: ["re:layer.0.*weight"]
    init_sparsity: 0.5
    final_sparsity: 0.9
    start_epoch: 1
    end_epoch: 2
    update_frequency: 0.5
  - !GMPruningModifier
    params: ["re:layer.1.*weight"]
    init_sparsity: 0.1
    final_sparsity: 0.3
    start_epoch: 0
    end_epoch: 2.5
    update_frequency: 1
    inter_func: linear
"""


def test_pruning_events_sorted_and_numbered() -> None:
    recipe = load_recipe(TWO_METHODS)
    events = recipe.pruning_events(4)
    assert [(e.step, e.modifier) for e in events] == [
        (0, 1),
        (4, 0),
        (4, 1),
        (6, 0),
        (8, 0),
        (8, 1),
        (10, 1),
    ]
    assert [e.index for e in events] == list(range(7))
    assert all(isinstance(e, PruningEvent) for e in events)
    # off-grid end: GMP steps at 0, 1, 2 and at end_epoch 2.5 itself (as SparseML), linear
    assert recipe.pruning[1].schedule() == [
        (0.0, 0.1),
        (1.0, pytest.approx(0.18)),
        (2.0, pytest.approx(0.26)),
        (2.5, 0.3),
    ]
    assert recipe.pruning[1].method_name == "magnitude"
    assert recipe.pruning[0].index == 0
    assert recipe.pruning[1].index == 1
    assert [len(x) for x in recipe.check_targets(bert_names(2))] == [6, 6]


def test_events_on_the_same_step_are_refused() -> None:
    recipe = load_recipe(TWO_METHODS)
    with pytest.raises(RecipeError, match=r"modifier 2 \(!OBSPruningModifier\).*same|both land"):
        recipe.pruning_events(1)


def test_one_shot_modifier_prunes_once_to_final() -> None:
    text = TWO_METHODS.replace("end_epoch: 2\n", "end_epoch: 1\n")
    assert load_recipe(text).pruning[0].schedule() == [(1.0, 0.9)]


def test_constant_masks_cover_the_run() -> None:
    recipe = load_recipe("minilm-sst2-transfer")
    (const,) = recipe.pruning
    assert const.method_name == "constant"
    assert const.settings.targets == list(const.targets)
    method = const.create_method()
    assert method.name == "constant"
    assert not type(method).schedules_pruning


def test_create_method_uses_the_validated_settings() -> None:
    recipe = load_recipe("minilm-sst2-obert-block4-80")
    obs = recipe.pruning[0]
    method = obs.create_method()
    assert type(method) is method_for_tag("OBSPruningModifier")
    assert method.settings == obs.settings
    assert obs.settings.mask_type == "block4"
    assert cfg(obs).fisher_block_size == 32
    assert cfg(obs).num_grads == 128
    assert obs.create_method() is not method


def test_method_defaults_come_from_the_settings_model() -> None:
    text = TWO_METHODS.replace("    update_frequency: 0.5\n", "    update_frequency: 0.5\n", 1)
    obs = load_recipe(text).pruning[0]
    defaults = method_for_tag("OBSPruningModifier").Settings()  # type: ignore[union-attr]
    for field in ("num_grads", "grad_batch_size", "fisher_block_size", "damp", "mode"):
        assert getattr(obs.settings, field) == getattr(defaults, field)
    assert obs.settings.mask_type == "unstructured"
    assert obs.settings.global_sparsity is True


# --- sources, overrides, fingerprint ---------------------------------------------------------


def test_shipped_recipes_are_package_data() -> None:
    folder = importlib.resources.files("obert_train").joinpath("recipes")
    files = sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))
    assert [f.removesuffix(".yaml") for f in files] == list_shipped_recipes()
    expected = {
        "minilm-sst2-dense",
        "minilm-sst2-obert80",
        "minilm-sst2-obert90",
        "minilm-sst2-obert-block4-80",
        "minilm-sst2-gmp80",
        "minilm-sst2-gmp90",
        "minilm-sst2-movement90",
        "minilm-sst2-transfer",
        "minilm-sst2-compound-l3-structured",
        "minilm-sst2-zo-sparse",
        "paper-squad-dense",
        "paper-mlm-unstructured90",
        "paper-mlm-unstructured97",
        "paper-squad-transfer",
        "paper-glue-transfer",
    }
    expected |= {
        f"paper-{t}-unstructured{p}" for t in ("squad", "mnli", "qqp") for p in (80, 90, 97)
    }
    expected |= {f"paper-squad-{i}block4-{p}" for i in ("", "init30-") for p in (80, 90)}
    expected |= {f"paper-squad-init30-unstructured{p}" for p in (80, 90)}
    assert set(list_shipped_recipes()) == expected


@pytest.mark.parametrize("name", list_shipped_recipes())
def test_shipped_recipe_loads_round_trips_and_documents_itself(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe == load_recipe(name + ".yaml")
    again = load_recipe(recipe.to_yaml())
    assert again == recipe
    assert again.fingerprint() == recipe.fingerprint()
    assert again.to_yaml().split("\n", 2)[2] == recipe.to_yaml().split("\n", 2)[2]
    text = Path(str(recipe.path)).read_text()
    assert text.startswith("# ")
    assert "Source:" in text
    assert "Schedule:" in text
    for event in recipe.pruning_events(50):
        assert f"{event.sparsity:.4f}" in text
    names = bert_names(12)
    selected = recipe.check_targets(names)  # the six encoder weights of every layer, once
    assert not selected or sum(len(group) for group in selected) == 72


def test_minilm_recipes_share_one_budget() -> None:
    pruned = [
        n
        for n in list_shipped_recipes()
        if n.startswith("minilm-sst2-") and n[12:14] in ("ob", "gm", "mo")
    ]
    assert len(pruned) == 6
    recipes = [load_recipe(n) for n in pruned]
    for recipe in recipes:
        assert recipe.num_epochs == 6
        assert recipe.learning_rate == recipes[0].learning_rate
        assert recipe.distillation == recipes[0].distillation
        (mod,) = recipe.pruning
        assert [e for e, _ in mod.schedule()] == [1.0, 2.0, 3.0, 4.0]
        assert mod.schedule()[0][1] == 0.5
        assert mod.settings.global_sparsity is True
    methods = {load_recipe(n).pruning[0].method_name for n in pruned}
    assert methods == {"obert", "magnitude", "movement"}
    obert90 = load_recipe("minilm-sst2-obert90").pruning[0]
    assert [round(s, 4) for _, s in obert90.schedule()] == [0.5, 0.7815, 0.8852, 0.9]


def test_source_kinds(tmp_path: Path) -> None:
    path = write(tmp_path, PUBLISHED_UNSTRUCTURED90_SQUAD)
    by_path = load_recipe(path)
    by_str = load_recipe(str(path))
    by_text = load_recipe(PUBLISHED_UNSTRUCTURED90_SQUAD)
    assert by_path == by_str == by_text
    assert by_text.path is None
    assert load_recipe("minilm-sst2-obert80").path.endswith("minilm-sst2-obert80.yaml")  # type: ignore[union-attr]


def test_plain_mapping_form_and_json() -> None:
    data = {
        "modifiers": [
            {"EpochRangeModifier": {"end_epoch": 4}},
            {
                "OBSPruningModifier": {
                    "params": ["re:layer.0.*weight"],
                    "init_sparsity": 0.5,
                    "final_sparsity": 0.9,
                    "start_epoch": 1,
                    "end_epoch": 2,
                    "update_frequency": 0.5,
                }
            },
            {
                "!GMPruningModifier": {
                    "params": ["re:layer.1.*weight"],
                    "init_sparsity": 0.1,
                    "final_sparsity": 0.3,
                    "start_epoch": 0,
                    "end_epoch": 2.5,
                    "update_frequency": 1,
                    "inter_func": "linear",
                }
            },
        ]
    }
    assert load_recipe(json.dumps(data, indent=1)) == load_recipe(TWO_METHODS)


def test_overrides() -> None:
    base = load_recipe("minilm-sst2-obert80")
    changed = load_recipe(
        "minilm-sst2-obert80",
        {
            "final_sparsity": "0.9",
            "num_grads": 256,
            "num_epochs": "7",
            "OBSPruningModifier.damp": "1e-6",
        },
    )
    obs = changed.pruning[0]
    assert obs.final_sparsity == 0.9
    assert cfg(obs).num_grads == 256
    assert cfg(obs).damp == 1e-6
    assert changed.num_epochs == 7
    assert changed != base
    assert changed.fingerprint() != base.fingerprint()
    assert load_recipe(changed.to_yaml()) == changed
    assert load_recipe("minilm-sst2-obert90") == load_recipe(
        "minilm-sst2-obert80", {"final_sparsity": 0.9}
    )
    # scoped override with a list value given as text; num_epochs adds a run length
    kd = load_recipe("minilm-sst2-obert80", {"DistillationModifier.distill_output_keys": "[a, b]"})
    assert kd.distillation is not None
    assert kd.distillation.distill_output_keys == ("a", "b")
    no_range = "training_modifiers:\n  - !LearningRateFunctionModifier\n    start_epoch: 0\n    end_epoch: 2\n    lr_func: linear\n    init_lr: 0.1\n    final_lr: 0.0\n"
    assert load_recipe(no_range).num_epochs == 2
    assert load_recipe(no_range).epoch_range is None
    assert load_recipe(no_range, {"num_epochs": 5}).num_epochs == 5


def test_fingerprint_is_stable_and_content_based(tmp_path: Path) -> None:
    a = load_recipe("paper-squad-unstructured90")
    b = load_recipe(write(tmp_path, a.to_yaml()))
    assert a.fingerprint() == b.fingerprint()
    assert len(a.fingerprint()) == 64
    assert hash(a) == hash(b)
    assert a.fingerprint() != load_recipe("paper-squad-unstructured80").fingerprint()
    assert a.fingerprint() != load_recipe(a.to_yaml(), {"num_recomputations": 2}).fingerprint()
    assert a.fingerprint() != load_recipe(a.to_yaml(), {"mode": "joint"}).fingerprint()


def test_yaml_one_one_quirks() -> None:
    text = PUBLISHED_UNSTRUCTURED90_SQUAD.replace("damp: 1e-7", "damp: 1E-7")
    assert cfg(load_recipe(text).pruning[0]).damp == 1e-7
    assert load_recipe(PUBLISHED_UNSTRUCTURED90_SQUAD).learning_rate[1].final_lr == 8e-6
    # the trailing comma inside the flow list of params
    assert len(load_recipe(PUBLISHED_UNSTRUCTURED90_SQUAD).pruning[0].params) == 6


def test_describe_lists_the_plan() -> None:
    recipe = load_recipe("paper-squad-unstructured90")
    text = recipe.describe()
    for value in REF_SCHEDULES[(0.7, 0.9)][0]:
        assert f"{value:.4f}" in text
    assert "30 epochs" in text
    assert "cyclic_linear" in text
    assert "rewinds to 8e-05 at epochs 2, 6, 10, 14, 18, 22, 26 (7 of them pruning steps)" in text
    assert "num_grads=1024" in text
    assert "damp=1e-07" in text
    assert "fisher_block_size=50" in text
    assert "temperature T = 2" in text
    with_steps = recipe.describe(steps_per_epoch=100)
    assert "3000 optimizer steps at 100 steps per epoch" in with_steps
    assert "2600" in with_steps  # step of the last pruning at epoch 26
    transfer = load_recipe("minilm-sst2-transfer").describe()
    assert "Constant masks" in transfer
    assert "ConstantPruningModifier" in transfer


# --- every bad input ------------------------------------------------------------------------

BASE = load_recipe("minilm-sst2-obert80").to_yaml()


def _append(text: str, extra: str) -> Any:
    return lambda base: base + extra


BAD: list[tuple[str, Any, list[str]]] = [
    (
        "unknown tag",
        lambda t: t.replace("!OBSPruningModifier", "!OBSPrunningModifier"),
        [
            "modifier 4 (!OBSPrunningModifier",
            "unknown modifier tag",
            "did you mean 'OBSPruningModifier'",
            "!GMPruningModifier",
        ],
    ),
    (
        "unknown key",
        lambda t: t.replace("fisher_block_size:", "fisher_blok_size:"),
        [
            "modifier 4 (!OBSPruningModifier",
            "unknown field 'fisher_blok_size'",
            "did you mean 'fisher_block_size'?",
            "allowed: [",
        ],
    ),
    (
        "sparsity >= 1",
        lambda t: t.replace("final_sparsity: 0.8", "final_sparsity: 1.0"),
        ["modifier 4 (!OBSPruningModifier", "final_sparsity = 1", "must be < 1"],
    ),
    (
        "negative epoch",
        lambda t: t.replace(
            "start_epoch: 1.0\n    end_epoch: 4.0", "start_epoch: -1.0\n    end_epoch: 4.0"
        ),
        ["modifier 4 (!OBSPruningModifier", "start_epoch = -1", ">= 0"],
    ),
    (
        "update_frequency 0",
        lambda t: t.replace("update_frequency: 1.0", "update_frequency: 0"),
        ["update_frequency = 0", "must be > 0"],
    ),
    (
        "damp 0",
        lambda t: t.replace("damp: 1.0e-07", "damp: 0.0"),
        ["modifier 4 (!OBSPruningModifier", "damp = 0", "> 0"],
    ),
    (
        "not a number",
        lambda t: t.replace("num_grads: 128", "num_grads: many"),
        ["num_grads = 'many'", "whole number"],
    ),
    (
        "start > end",
        lambda t: t.replace("end_epoch: 4.0", "end_epoch: 0.5"),
        ["modifier 4 (!OBSPruningModifier", "end_epoch = 0.5 is before start_epoch = 1"],
    ),
    (
        "final < init",
        lambda t: t.replace("final_sparsity: 0.8", "final_sparsity: 0.3"),
        ["final_sparsity = 0.3 is below init_sparsity = 0.5", "never regrow"],
    ),
    (
        "end past run",
        lambda t: t.replace("end_epoch: 4.0", "end_epoch: 6.0"),
        [
            "modifier 4 (!OBSPruningModifier",
            "end_epoch = 6 is not before the end of the run",
            "epoch 6",
        ],
    ),
    (
        "bad inter_func",
        lambda t: t.replace("inter_func: cubic", "inter_func: exponential"),
        ["inter_func = 'exponential'", "'cubic' or 'linear'"],
    ),
    (
        "leave_enabled false",
        lambda t: t.replace("inter_func: cubic", "inter_func: cubic\n    leave_enabled: false"),
        ["leave_enabled = False", "not supported"],
    ),
    (
        "__ALL_PRUNABLE__",
        lambda t: t.replace(
            "- re:bert.encoder.layer.*.attention.self.query.weight", "- __ALL_PRUNABLE__"
        ),
        ["params '__ALL_PRUNABLE__' is not supported", "list the tensors"],
    ),
    (
        "bad regex",
        lambda t: t.replace("- re:bert.encoder.layer.*.attention.self.query.weight", "- re:bert(("),
        ["'re:bert(('", "not a valid regular expression"],
    ),
    (
        "grad_sampler_kwargs key",
        lambda t: t.replace("batch_size: 16", "batch_size: 16\n      shuffle: true"),
        ["grad_sampler_kwargs key 'shuffle'", "only batch_size"],
    ),
    (
        "two distillation",
        lambda t: t + "  - !DistillationModifier\n    hardness: 0.5\n",
        ["modifier 6 (!DistillationModifier)", "at most one DistillationModifier"],
    ),
    (
        "two epoch ranges",
        lambda t: t.replace(
            "modifiers:\n  - !EpochRangeModifier",
            "modifiers:\n  - !EpochRangeModifier\n    end_epoch: 7\n  - !EpochRangeModifier",
            1,
        ),
        ["modifier 2 (!EpochRangeModifier)", "at most one EpochRangeModifier"],
    ),
    (
        "param_groups",
        lambda t: t.replace("lr_func: linear", "lr_func: linear\n    param_groups: [0]"),
        ["modifier 2 (!LearningRateFunctionModifier", "'param_groups' is not supported"],
    ),
    (
        "cosine",
        lambda t: t.replace("lr_func: linear", "lr_func: cosine"),
        ["lr_func = 'cosine'", "'linear' or 'cyclic_linear'"],
    ),
    (
        "cyclic without cycle",
        lambda t: t.replace("    cycle_epochs: 1.0\n", ""),
        ["needs cycle_epochs"],
    ),
    (
        "lr overlap",
        lambda t: t.replace(
            "end_epoch: 1.0\n    lr_func: linear", "end_epoch: 1.5\n    lr_func: linear"
        ),
        [
            "modifier 2 (!LearningRateFunctionModifier) and modifier 3 (!LearningRateFunctionModifier)",
            "overlap",
        ],
    ),
    (
        "hardness",
        lambda t: t.replace("hardness: 1.0", "hardness: 2.0"),
        ["modifier 5 (!DistillationModifier", "hardness = 2", "<= 1"],
    ),
    (
        "temperature",
        lambda t: t.replace("temperature: 2.0", "temperature: 0"),
        ["temperature = 0", "> 0"],
    ),
    (
        "partial distillation",
        lambda t: t.replace("hardness: 1.0", "hardness: 1.0\n    end_epoch: 3"),
        ["part of the run is not supported"],
    ),
    (
        "top-level variable shadowing a field",
        lambda t: "damp: 1.0e-06\n" + t,
        [
            "line 1",
            "variable 'damp' = 1e-06 shadows the field 'damp'",
            "modifier 4 (!OBSPruningModifier",
        ],
    ),
    (
        "eval() of an unknown variable",
        lambda t: t.replace("end_epoch: 6.0", "end_epoch: eval(num_epochs)"),
        ["line 5", "'eval(num_epochs)'", "unknown variable 'num_epochs'"],
    ),
    (
        "duplicate key",
        lambda t: t.replace("damp: 1.0e-07", "damp: 1.0e-07\n    damp: 1.0e-06"),
        ["key 'damp' twice"],
    ),
    (
        "yaml syntax",
        lambda t: t.replace("damp: 1.0e-07", "damp: [1.0e-07"),
        ["invalid recipe YAML at line"],
    ),
    ("empty", lambda t: "", ["the recipe is empty"]),
    (
        "no run length",
        lambda t: "training_modifiers:\n",
        ["run length is unknown", "EpochRangeModifier"],
    ),
    (
        "unsafe tag",
        lambda t: "modifiers: !!python/object:os.system {}\n",
        ["invalid recipe YAML", "python/object"],
    ),
    (
        "constant field",
        lambda t: t.replace("!OBSPruningModifier", "!ConstantPruningModifier"),
        [
            "modifier 4 (!ConstantPruningModifier",
            "unknown field 'init_sparsity'",
            "allowed: ['end_epoch', 'params', 'start_epoch']",
        ],
    ),
    (
        "mask type",
        lambda t: t.replace("mask_type: unstructured", "mask_type: block8"),
        ["mask_type = 'block8'"],
    ),
    (
        "block4 needs B % 4",
        lambda t: t.replace("mask_type: unstructured", "mask_type: block4"),
        ["fisher_block_size", "50"],
    ),
    (
        "N:M is a string, not a YAML 1.1 base-60 int",
        lambda t: t.replace("mask_type: unstructured", "mask_type: 4:2"),
        ["mask_type = '4:2'"],
    ),
]


@pytest.mark.parametrize(("case", "mutate", "parts"), BAD, ids=[c[0] for c in BAD])
def test_bad_recipe_is_refused_with_a_clear_message(
    case: str, mutate: Any, parts: list[str], tmp_path: Path
) -> None:
    text = mutate(BASE)
    assert text != BASE
    path = write(tmp_path, text, "bad.yaml")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message
    for part in parts:
        assert part in message, (part, message)
    assert "pydantic" not in message
    assert "http" not in message
    assert "Input should" not in message


@pytest.mark.parametrize(
    ("overrides", "parts"),
    [
        (
            {"fianl_sparsity": 0.9},
            [
                "override 'fianl_sparsity' applies to no modifier",
                "shipped recipe 'minilm-sst2-obert80'",
            ],
        ),
        ({"DistillationModifier.damp": 1e-6}, ["applies to no !DistillationModifier"]),
        ({"Nope.damp": 1e-6}, ["unknown modifier tag 'Nope'"]),
        ({"final_sparsity": "1.5"}, ["final_sparsity = 1.5 (set by an override)", "< 1"]),
        ({"num_epochs": 3}, ["end_epoch = 6 is past the end of the run", "epoch 3"]),
        ({"damp": "[1e-7"}, ["override 'damp'", "invalid recipe YAML"]),
    ],
)
def test_bad_override_is_refused(overrides: dict[str, Any], parts: list[str]) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe("minilm-sst2-obert80", overrides)
    for part in parts:
        assert part in str(info.value), (part, str(info.value))


def test_unknown_shipped_name_lists_the_shipped_ones() -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe("minilm-sst2-obert8")
    message = str(info.value)
    assert "'minilm-sst2-obert8'" in message
    assert "did you mean 'minilm-sst2-obert80'" in message
    assert "paper-squad-unstructured90" in message
    with pytest.raises(RecipeError, match="not found"):
        load_recipe("missing/recipe.yaml")


def test_check_targets_errors() -> None:
    recipe = load_recipe(TWO_METHODS)
    with pytest.raises(RecipeError) as info:
        recipe.check_targets(
            ["bert.encoder.layer.0.attention.self.query.weight", "classifier.weight"]
        )
    message = str(info.value)
    assert "modifier 3 (!GMPruningModifier)" in message
    assert "params 're:layer.1.*weight' match no parameter of the model" in message
    assert "classifier.weight" in message
    overlap = load_recipe(TWO_METHODS.replace("re:layer.1.*weight", "re:layer.*query.weight"))
    with pytest.raises(RecipeError) as info:
        overlap.check_targets(bert_names(2))
    message = str(info.value)
    assert "modifier 2 (!OBSPruningModifier) and modifier 3 (!GMPruningModifier)" in message
    assert "'bert.encoder.layer.0.attention.self.query.weight'" in message
    exact = load_recipe(
        TWO_METHODS.replace("re:layer.1.*weight", "bert.encoder.layer.1.output.dense.weight")
    )
    assert exact.pruning[1].targets == (r"^bert\.encoder\.layer\.1\.output\.dense\.weight$",)
    assert exact.check_targets(bert_names(2))[1] == ["bert.encoder.layer.1.output.dense.weight"]


def test_steps_per_epoch_must_be_positive() -> None:
    recipe = load_recipe("minilm-sst2-obert80")
    with pytest.raises(ValueError, match="steps_per_epoch"):
        recipe.lr_at(0, 0)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        recipe.pruning_events(0)


def test_public_surface() -> None:
    import obert_train.recipe as module

    assert sorted(module.__all__) == sorted(
        [
            "DistillationModifier",
            "LayerDroppingModifier",
            "EpochRangeModifier",
            "LearningRateFunctionModifier",
            "ModifierSpec",
            "PruningEvent",
            "PruningModifier",
            "Recipe",
            "SetLearningRateModifier",
            "SetWeightDecayModifier",
            "TrainableParamsModifier",
            "ZerothOrderModifier",
            "build_recipe",
            "convert_recipe",
            "list_shipped_recipes",
            "load_recipe",
        ]
    )
    recipe = load_recipe("minilm-sst2-obert80")
    assert isinstance(recipe, Recipe)
    assert isinstance(recipe.epoch_range, EpochRangeModifier)
    assert all(isinstance(m, LearningRateFunctionModifier) for m in recipe.learning_rate)
    assert all(isinstance(m, PruningModifier) for m in recipe.pruning)


# --- property: to_yaml / load round trip ------------------------------------------------------

epochs = st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0])
sparsity = st.floats(min_value=0.0, max_value=0.99, allow_nan=False)


@st.composite
def recipes(draw: st.DrawFn) -> str:
    start = draw(epochs)
    length = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 4.0]))
    end = start + length
    freq = draw(st.sampled_from([0.25, 0.5, 1.0, 3.0]))
    s0 = draw(sparsity)
    s1 = draw(st.floats(min_value=s0, max_value=0.99, allow_nan=False))
    run = end + draw(st.sampled_from([0.5, 1.0, 2.0]))
    tag = draw(
        st.sampled_from(
            [
                "OBSPruningModifier",
                "GMPruningModifier",
                "MagnitudePruningModifier",
                "MovementPruningModifier",
            ]
        )
    )
    mask = draw(st.sampled_from(["unstructured", "block4", "2:4"]))
    if mask == "2:4":  # an N:M mask fixes the sparsity (any other is refused on loading)
        s0 = s1 = 0.5
    extra = ""
    if tag == "OBSPruningModifier":
        extra = (
            f"    num_grads: {draw(st.integers(1, 4096))}\n"
            f"    damp: {draw(st.floats(1e-10, 1.0))!r}\n"
            f"    fisher_block_size: {4 * draw(st.integers(1, 32))}\n"
            f"    grad_sampler_kwargs:\n      batch_size: {draw(st.integers(1, 64))}\n"
            f"    mode: {draw(st.sampled_from(['joint', 'superpose']))}\n"
        )
    lr_end = draw(st.sampled_from([run / 2, run]))
    cyclic = draw(st.booleans())
    lr = (
        "training_modifiers:\n  - !LearningRateFunctionModifier\n"
        f"    start_epoch: 0\n    end_epoch: {lr_end!r}\n"
        f"    lr_func: {'cyclic_linear' if cyclic else 'linear'}\n"
        + (f"    cycle_epochs: {draw(st.sampled_from([0.25, 1.0, 2.0]))}\n" if cyclic else "")
        + f"    init_lr: {draw(st.floats(1e-6, 1e-2))!r}\n    final_lr: {draw(st.floats(0.0, 1e-6))!r}\n"
    )
    kd = ""
    if draw(st.booleans()):
        kd = (
            "distillation_modifiers:\n  - !DistillationModifier\n"
            f"    hardness: {draw(st.floats(0.0, 1.0))!r}\n    temperature: {draw(st.floats(0.5, 10.0))!r}\n"
        )
    return (
        f"modifiers:\n  - !EpochRangeModifier\n    end_epoch: {run!r}\n"
        + lr
        + f"pruning_modifiers:\n  - !{tag}\n    params: ['re:encoder.*weight', 'x.y']\n"
        f"    init_sparsity: {s0!r}\n    final_sparsity: {s1!r}\n"
        f"    start_epoch: {start!r}\n    end_epoch: {end!r}\n    update_frequency: {freq!r}\n"
        f"    inter_func: {draw(st.sampled_from(['cubic', 'linear']))}\n    mask_type: {mask}\n"
        f"    global_sparsity: {draw(st.booleans())}\n" + extra + kd
    )


@settings(max_examples=60, deadline=None)
@given(recipes())
def test_to_yaml_round_trip(text: str) -> None:
    recipe = load_recipe(text)
    again = load_recipe(recipe.to_yaml())
    assert again == recipe
    assert again.fingerprint() == recipe.fingerprint()
    (mod,) = recipe.pruning
    schedule = mod.schedule()
    assert schedule[-1] == (mod.end_epoch, mod.final_sparsity)
    assert all(a[1] <= b[1] + 1e-12 for a, b in itertools.pairwise(schedule))
    assert all(a[0] < b[0] for a, b in itertools.pairwise(schedule))
    events = recipe.pruning_events(100)
    assert [e.sparsity for e in events] == [s for _, s in schedule]
    assert all(0 <= e.step < recipe.total_steps(100) for e in events)
    assert (
        math.isclose(events[0].sparsity, mod.init_sparsity or 0.0, abs_tol=1e-12)
        or mod.start_epoch == mod.end_epoch
    )


# --- recipes built in Python (ModifierSpec, build_recipe) ---------------------------------------

# The recipe of a one-shot result as `obert-train oneshot` wrote it by hand (yaml.safe_dump of
# untagged modifiers) before the builder: a built recipe must have the same fingerprint.
ONESHOT_HAND_BUILT = """\
modifiers:
- EpochRangeModifier:
    start_epoch: 0.0
    end_epoch: 1.0
pruning_modifiers:
- OBSPruningModifier:
    params:
    - re:attention
    init_sparsity: 0.5
    final_sparsity: 0.5
    start_epoch: 0.0
    end_epoch: 0.0
    update_frequency: 1.0
    grad_sampler_kwargs:
      batch_size: 4
    mask_type: '2:4'
    num_grads: 64
    damp: 1.0e-06
"""


def test_a_built_recipe_has_the_fingerprint_of_the_hand_built_yaml() -> None:
    from obert_train import ModifierSpec, build_recipe

    built = build_recipe(
        [
            ModifierSpec.epoch_range(1.0),
            ModifierSpec.pruning(
                "obert", params=["re:attention"], init_sparsity=0.5, final_sparsity=0.5,
                start_epoch=0.0, end_epoch=0.0, update_frequency=1.0, mask_type="2:4",
                num_grads=64, grad_batch_size=4, damp=1e-6,
            ),
        ]
    )  # fmt: skip
    assert built.fingerprint() == load_recipe(ONESHOT_HAND_BUILT).fingerprint()
    again = load_recipe(built.to_yaml())
    assert again == built
    assert again.fingerprint() == built.fingerprint()
    (modifier,) = built.pruning
    assert modifier.tag == "OBSPruningModifier"
    assert modifier.settings.grad_batch_size == 4  # type: ignore[attr-defined]
    assert built.where == "built recipe"


def test_oneshot_writes_the_recipe_it_wrote_by_hand() -> None:
    from obert_train.cli.oneshot import oneshot_recipe_yaml
    from obert_train.pruning.oneshot import PruneResult
    from obert_train.pruning.registry import create_method

    settings = create_method(
        "obert", num_grads=64, grad_batch_size=4, damp=1e-6, mask_type="2:4", targets=["attention"]
    ).settings
    result = PruneResult("obert", settings, 0.5, 0.5, {}, {}, {}, [])
    text = oneshot_recipe_yaml(result, "tiny", "sst2")
    assert text.startswith("# one-shot obert pruning of tiny (task sst2) to sparsity 0.5000")
    # the one-shot step (m = 64 >= B = 50) ran the joint update, and its recipe names it
    assert "mode: joint" in text
    hand_built = load_recipe(ONESHOT_HAND_BUILT, {"mode": "joint"})
    assert load_recipe(text).fingerprint() == hand_built.fingerprint()


@pytest.mark.parametrize("name", list_shipped_recipes())
def test_every_shipped_recipe_rebuilds_from_its_modifiers(name: str) -> None:
    from obert_train import build_recipe

    recipe = load_recipe(name)
    rebuilt = build_recipe(recipe.modifiers(), source=recipe.where)
    assert rebuilt == recipe
    assert rebuilt.fingerprint() == recipe.fingerprint()
    assert rebuilt.to_yaml() == recipe.to_yaml().replace(f" (resolved from {recipe.path})", "")


def test_a_built_recipe_is_checked_like_a_file() -> None:
    from obert_train import ModifierSpec, build_recipe

    pruning = ModifierSpec.pruning(
        "magnitude", init_sparsity=0.5, final_sparsity=0.9, start_epoch=0.0, end_epoch=1.0,
        update_frequency=0.5, damp=1e-6,
    )  # fmt: skip
    with pytest.raises(
        RecipeError, match=r"modifier 2 \(!GMPruningModifier\) in built recipe.*damp"
    ):
        build_recipe([ModifierSpec.epoch_range(2.0), pruning])
    with pytest.raises(RecipeError, match="unknown modifier tag !Nope"):
        build_recipe([ModifierSpec.epoch_range(2.0), ModifierSpec("Nope")], source="mine")
    kd = ModifierSpec.distillation(distill_output_keys=("start_logits", "end_logits"))
    lr = ModifierSpec.learning_rate(
        lr_func="cyclic_linear", init_lr=1e-4, final_lr=1e-5, start_epoch=0.0, end_epoch=2.0,
        cycle_epochs=0.5,
    )  # fmt: skip
    recipe = build_recipe([kd, ModifierSpec.epoch_range(2.0), lr])
    assert recipe.distillation is not None
    assert recipe.distillation.distill_output_keys == ("start_logits", "end_logits")
    assert recipe.learning_rate[0].cycle_epochs == 0.5
    assert recipe.to_yaml().index("modifiers:") < recipe.to_yaml().index("distillation_modifiers")
