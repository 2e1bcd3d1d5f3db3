"""Method settings: the one copy of every default, validated the same way for every caller."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from pydantic import ValidationError

from obert_train import (
    MagnitudePruning,
    MethodSettings,
    ObertPruning,
    ObertSettings,
    RecipeError,
    create_method,
)
from obert_train.fisher.memory import parse_memory
from obert_train.pruning.method import nm_pattern


def test_defaults_follow_the_paper() -> None:
    cfg = ObertSettings()
    assert (cfg.fisher_block_size, cfg.damp, cfg.num_grads, cfg.grad_batch_size) == (
        50,
        1e-7,
        1024,
        16,
    )
    assert (cfg.mode, cfg.num_recomputations, cfg.fisher_method) == (None, 1, "batched")
    assert cfg.update_mode(gradual=False) == "joint"  # one-shot, m = 1024 >= B = 50
    assert cfg.update_mode(gradual=True) == "superpose"  # gradual: SparseML's update
    assert (cfg.mask_type, cfg.global_sparsity, cfg.targets) == ("unstructured", True, None)
    assert cfg.group_size == 1
    assert cfg.nm is None
    assert cfg.scope == "global"
    method = create_method("obert")
    assert isinstance(method, ObertPruning)
    assert method.settings == cfg


def test_derived_properties() -> None:
    assert ObertSettings(mask_type="block4", fisher_block_size=32).group_size == 4
    assert ObertSettings(mask_type="2:4").nm == (2, 4)
    assert ObertSettings(mask_type="2:4").group_size == 1
    assert ObertSettings(global_sparsity=False).scope == "layer"
    assert create_method("obert", global_sparsity=False).settings.scope == "layer"


@pytest.mark.parametrize(
    ("kwargs", "message", "recipe_message"),
    [
        ({"mask_type": "block8"}, "mask_type 'block8' unknown", "mask_type = 'block8'"),
        ({"mask_type": "4:2"}, "1 <= N < M", "mask_type = '4:2'"),
        ({"mask_type": "0:4"}, "1 <= N < M", "mask_type = '0:4'"),
        ({"mask_type": "block4", "fisher_block_size": 50}, "divisible by 4", "divisible by 4"),
        ({"damp": 0.0}, "greater than 0", "damp = 0.0"),
        ({"num_grads": 0}, "greater than or equal to 1", "num_grads = 0"),
        ({"fisher_block_size": 0}, "greater than or equal to 1", "fisher_block_size = 0"),
        ({"num_recomputations": 0}, "greater than or equal to 1", "num_recomputations = 0"),
        ({"mode": "exact"}, "'joint', 'superpose' or 'auto'", "mode = 'exact'"),
        ({"fisher_method": "dense"}, "'batched' or 'streaming'", "fisher_method = 'dense'"),
        ({"max_memory": "lots"}, "cannot parse memory size", "cannot parse memory size"),
        ({"global_sparsity": "layer"}, "valid boolean", "global_sparsity = 'layer'"),
        ({"typo": 1}, "Extra inputs", "unknown setting 'typo'"),
        ({"block_size": 32}, "Extra inputs", "unknown setting 'block_size'"),  # the old name
        ({"scope": "layer"}, "Extra inputs", "unknown setting 'scope'"),
    ],
)
def test_bad_settings_name_the_value(
    kwargs: dict[str, object], message: str, recipe_message: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ObertSettings(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match="method 'obert': ") as info:
        create_method("obert", **kwargs)
    assert recipe_message in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"damp": 0.0}, r"method 'obert': damp = 0\.0: .*greater than 0"),
        ({"mask_type": "block8"}, r"method 'obert': mask_type = 'block8': mask_type 'block8'"),
        ({"typo": 1}, r"method 'obert': unknown setting 'typo'; allowed: \[.*'fisher_block_size'"),
    ],
)
def test_create_method_messages_name_the_method_setting_and_value(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(RecipeError, match=message) as info:
        create_method("obert", **kwargs)
    assert "https://" not in str(info.value)  # no pydantic URLs in user-facing messages


def test_settings_are_validated_by_the_method_that_owns_them() -> None:
    """Magnitude has only the shared settings; oBERT's are refused there, not ignored."""
    assert set(MethodSettings.model_fields) == {
        "mask_type",
        "global_sparsity",
        "targets",
        "allocation",
        "latency_table",
        "allocation_floor",
        "allocation_rounds",
        "allocation_spacing",
    }
    assert isinstance(create_method("magnitude", mask_type="2:4"), MagnitudePruning)
    with pytest.raises(RecipeError, match=r"method 'magnitude': unknown setting 'damp'") as info:
        create_method("magnitude", damp=1e-4)
    allowed = (
        "['allocation', 'allocation_floor', 'allocation_rounds', 'allocation_spacing', "
        "'global_sparsity', 'latency_table', 'mask_type', 'targets']"
    )
    assert allowed in str(info.value)
    with pytest.raises(TypeError, match="needs ObertSettings"):
        ObertPruning(MethodSettings())
    with pytest.raises(TypeError, match="not both"):
        ObertPruning(ObertSettings(), damp=1e-4)


def test_settings_are_frozen() -> None:
    cfg = ObertSettings()
    with pytest.raises(ValidationError, match="frozen"):
        cfg.damp = 1e-3


def test_yaml_round_trip_and_string_numbers() -> None:
    """Settings dumped as YAML (recipe fields) read back to the same settings."""
    cfg = ObertSettings(
        mask_type="block4",
        fisher_block_size=32,
        max_memory="2GB",  # type: ignore[arg-type]  # parsed by the validator
        global_sparsity=False,
    )
    assert cfg.max_memory == 2 * 2**30
    text = yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False)
    assert ObertSettings(**yaml.safe_load(text)) == cfg
    loaded = yaml.safe_load("damp: 1e-7\nnum_grads: '64'\n")  # YAML 1.1 reads 1e-7 as a string
    assert loaded["damp"] == "1e-7"
    cfg = ObertSettings(**loaded)
    assert (cfg.damp, cfg.num_grads) == (1e-7, 64)
    assert create_method("obert", **loaded).settings == cfg


def test_parsers() -> None:
    assert nm_pattern("2:4") == (2, 4)
    assert nm_pattern("unstructured") is None
    assert nm_pattern("block4") is None
    assert nm_pattern("2:x") is None
    assert parse_memory("512MiB") == 512 * 2**20
    assert parse_memory("1.5G") == int(1.5 * 2**30)
    assert parse_memory("2GB") == 2 * 2**30
    assert parse_memory(123) == 123
    with pytest.raises(ValueError, match="cannot parse memory size"):
        parse_memory("lots")


def test_settings_added_later_enter_the_fingerprint_only_when_set() -> None:
    """``unseen_curvature``, ``diagnostics`` (oBERT) and ``allocation`` (structured) leave the
    fingerprints of recipes that do not set them unchanged, so earlier runs still resume."""
    from obert_train import load_recipe

    base = load_recipe("minilm-sst2-obert90")
    same = load_recipe("minilm-sst2-obert90", {"unseen_curvature": "damp", "diagnostics": False})
    assert same.fingerprint() == base.fingerprint()
    for override in ({"unseen_curvature": "mean"}, {"diagnostics": True}):
        assert load_recipe("minilm-sst2-obert90", override).fingerprint() != base.fingerprint()


@pytest.mark.parametrize(
    ("num_grads", "block", "mode", "gradual", "expected"),
    [
        (1024, 50, None, False, "joint"),
        (50, 50, None, False, "joint"),
        (49, 50, None, False, "superpose"),
        (16, 50, None, False, "superpose"),
        (32, 32, None, False, "joint"),
        (1024, 50, None, True, "superpose"),
        (50, 50, None, True, "superpose"),
        (16, 50, None, True, "superpose"),
        (16, 50, "joint", True, "joint"),
        (16, 50, "joint", False, "joint"),
        (1024, 50, "superpose", False, "superpose"),
        (1024, 50, "joint", True, "joint"),
        (16, 50, "auto", False, "auto"),
    ],
)
def test_default_update_is_joint_only_one_shot_at_full_rank(
    num_grads: int, block: int, mode: str | None, gradual: bool, expected: str
) -> None:
    """With ``mode`` left out the update is the joint one in a one-shot step with ``m >= B`` and
    the superposed one in gradual steps and below full rank; a given ``mode`` always wins. A
    recipe's settings resolve as its gradual steps do."""
    settings = ObertSettings(num_grads=num_grads, fisher_block_size=block, mode=mode)
    assert settings.update_mode(gradual=gradual) == expected
    assert settings.resolved_dump()["mode"] == settings.update_mode(gradual=True)


def test_recipe_fingerprint_names_the_update_its_steps_run() -> None:
    """A recipe without ``mode`` has the fingerprint of ``mode: superpose`` at every m (its
    steps are gradual), not that of ``mode: joint``; the printed plan and a converted recipe say
    which."""
    from obert_train import load_recipe

    for overrides in ({}, {"num_grads": 16}):
        base = load_recipe("minilm-sst2-obert90", overrides)
        assert base.pruning[0].settings.mode is None
        superposed = load_recipe("minilm-sst2-obert90", {**overrides, "mode": "superpose"})
        joint = load_recipe("minilm-sst2-obert90", {**overrides, "mode": "joint"})
        assert base.fingerprint() == superposed.fingerprint()
        assert base.fingerprint() != joint.fingerprint()
        assert " mode=superpose " in base.describe()
        again = load_recipe(base.to_yaml())
        assert again == base
        assert again.fingerprint() == base.fingerprint()


def test_unseen_curvature_mean_needs_the_batched_build_only_when_m_is_below_b() -> None:
    from obert_train import ObertSettings

    with pytest.raises(ValidationError, match="fisher_method 'streaming' and num_grads 16"):
        ObertSettings(unseen_curvature="mean", fisher_method="streaming", num_grads=16)
    # m >= B: nothing is unseen, the setting has no effect and streaming is fine
    ObertSettings(unseen_curvature="mean", fisher_method="streaming", num_grads=64)


def test_apply_obs_update_passes_num_grads_to_the_auto_rule() -> None:
    """``apply_obs_update`` writes what ``obs_updated`` returns, ``mode="auto"`` included (which
    needs ``num_grads``: m = 2 < B = 4 here, so both rules occur across the blocks)."""
    import torch

    from obert_train.pruning.obert import apply_obs_update, obs_updated

    gen = torch.Generator().manual_seed(0)
    m, block = 2, 4
    grads = torch.randn(m, 2, block, generator=gen, dtype=torch.float64)
    fisher = torch.einsum("mbi,mbj->bij", grads, grads) / m + 1e-3 * torch.eye(block)
    finvs = {"w": torch.linalg.inv(fisher).float()}
    weight = torch.nn.Parameter(torch.randn(1, 2 * block, generator=gen))
    old = {"w": torch.ones(2 * block, dtype=torch.bool)}
    new = {"w": torch.tensor([False, False, True, True, False, True, True, True])}
    expected = obs_updated({"w": weight}, finvs, old, new, mode="auto", num_grads=m)["w"]
    apply_obs_update({"w": weight}, finvs, old, new, mode="auto", num_grads=m)
    assert torch.equal(weight.detach(), expected)
    assert bool((weight.detach().reshape(-1)[~new["w"]] == 0).all())


def test_default_update_is_joint_when_eq_u_fills_the_unseen_directions() -> None:
    """``unseen_curvature="mean"`` gives every block full rank (Eq. U), so the default update is
    the joint one there too (the setting that makes the joint solve well-posed at m < B); with
    ``"damp"`` at m < B it is the superposed one, and a given ``mode`` still wins."""
    from obert_train import load_recipe

    filled = ObertSettings(num_grads=16, fisher_block_size=50, unseen_curvature="mean")
    assert filled.update_mode(gradual=False) == "joint"
    assert filled.update_mode(gradual=True) == "joint"
    assert filled.resolved_dump()["mode"] == "joint"
    damp = ObertSettings(num_grads=16, fisher_block_size=50, unseen_curvature="damp")
    assert damp.update_mode(gradual=False) == "superpose"
    chosen = ObertSettings(
        num_grads=16, fisher_block_size=50, unseen_curvature="mean", mode="superpose"
    )
    assert chosen.update_mode(gradual=False) == "superpose"
    eq_u = {"num_grads": 16, "unseen_curvature": "mean"}
    recipe = load_recipe("minilm-sst2-obert90", eq_u)
    assert recipe.pruning[0].settings.update_mode(gradual=True) == "joint"
    joint = load_recipe("minilm-sst2-obert90", {**eq_u, "mode": "joint"})
    assert recipe.fingerprint() == joint.fingerprint()


def test_unseen_curvature_mean_leaves_the_default_update_alone_at_full_rank() -> None:
    """At m >= B Eq. U fills nothing (the Fisher is the same, bit for bit), so
    ``unseen_curvature="mean"`` does not change the update either: superposed in gradual steps,
    joint in one-shot steps, as with ``"damp"``."""
    for unseen in ("damp", "mean"):
        settings = ObertSettings(num_grads=128, fisher_block_size=50, unseen_curvature=unseen)
        assert settings.update_mode(gradual=True) == "superpose", unseen
        assert settings.update_mode(gradual=False) == "joint", unseen
        assert settings.resolved_dump()["mode"] == "superpose", unseen
