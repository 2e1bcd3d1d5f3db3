"""Iterative block allocation, ``allocation_rounds`` (issue 19; docs/math.md §8, (B-10)).

Each round takes fresh gradients at the current pruned weights, new curves of the additional
removals and allocates that round's cumulative budget; the last round meets the step's budget
within one block and the floor holds at the final budget.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from block_helpers import LPVIT, OBERT, C, R, block_counts
from transformers import BertForSequenceClassification

import obert_core.blocks as ob
from obert_train import (
    ClassificationTask,
    LPViTSettings,
    ObertSettings,
    RecipeError,
    create_method,
    oneshot_prune,
    resolve_target_params,
)
from obert_train.pruning.blocks import allocate_block_ratios
from obert_train.recipe import load_recipe
from obert_train.recipe.pruning_modifier import settings_content


def _run(
    model: torch.nn.Module,
    method: str,
    allocation: str,
    task: ClassificationTask,
    sparsity: float,
    **extra: object,
) -> tuple[dict[str, tuple[int, int]], list[str]]:
    base = OBERT if method == "obert" else LPVIT
    settings = {"mask_type": f"{R}x{C}", "allocation": allocation, **base, **extra}
    result = oneshot_prune(model, method, sparsity, settings=settings, task=task, progress=False,
                           log=lambda _line: None)  # fmt: skip
    return block_counts(model), result.log


@pytest.mark.parametrize("spacing", ["equal", "geometric"])
@pytest.mark.parametrize(
    ("method", "allocation", "floor"),
    [("obert", "obs", 0.5), ("lpvit", "lpvit", 0.5), ("obert", "uniform", None)],
)
def test_rounds_meet_the_budget_within_one_block_and_keep_the_floor(
    tiny_bert: BertForSequenceClassification,
    task: ClassificationTask,
    method: str,
    allocation: str,
    floor: float | None,
    spacing: str,
) -> None:
    extra: dict[str, object] = {"allocation_rounds": 3, "allocation_spacing": spacing}
    if floor is not None:
        extra["allocation_floor"] = floor
    counts, log = _run(tiny_bert, method, allocation, task, 0.7, **extra)
    pruned = sum(k for k, _ in counts.values())
    total = sum(n for _, n in counts.values())
    assert 0 <= pruned - 0.7 * total < 1  # the budget, within one block
    shapes = {n: tuple(p.shape) for n, p in resolve_target_params(tiny_bert).items()}
    uniform = allocate_block_ratios("uniform", shapes, (R, C), 0.7).pruned
    if floor is not None:
        for name, (k, n) in counts.items():
            assert n - k >= np.ceil(floor * (n - uniform[name]) - 1e-9), name
    else:  # uniform rounds end where one uniform allocation does
        assert {n: k for n, (k, _) in counts.items()} == uniform
    targets = ob.round_sparsities(0.0, 0.7, 3, spacing)
    steps = [line for line in log if "round" in line or "recomputation" in line]
    assert len(steps) == 3
    for line, target in zip(steps, targets, strict=True):
        assert f"to sparsity {target:.4f}" in line


def test_rounds_change_the_allocation_and_are_deterministic(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    """Two rounds (round 1 to 0.35, then new curves at the pruned weights) allocate otherwise than
    one round to 0.7, and the same settings give the same blocks."""
    one, _ = _run(copy.deepcopy(tiny_bert), "obert", "obs", task, 0.7)
    two, _ = _run(copy.deepcopy(tiny_bert), "obert", "obs", task, 0.7, allocation_rounds=2)
    again, _ = _run(copy.deepcopy(tiny_bert), "obert", "obs", task, 0.7, allocation_rounds=2)
    assert one != two
    assert again == two


def test_equal_rounds_are_obert_recomputations(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    """For obert, K equal rounds are the K linearly spaced recomputations (same weights)."""
    a = copy.deepcopy(tiny_bert)
    b = copy.deepcopy(tiny_bert)
    _run(a, "obert", "obs", task, 0.6, allocation_rounds=3)
    _run(b, "obert", "obs", task, 0.6, num_recomputations=3)
    for (name, p), q in zip(
        resolve_target_params(a).items(), resolve_target_params(b).values(), strict=True
    ):
        assert torch.equal(p, q), name


def test_rounds_settings_are_checked_fingerprinted_and_shown() -> None:
    with pytest.raises(RecipeError, match="allocation_rounds 0 must be a whole number >= 1"):
        create_method("obert", mask_type="8x8", fisher_block_size=16, allocation="obs",
                      allocation_rounds=0)  # fmt: skip
    with pytest.raises(RecipeError, match=r"allocation_rounds 3 repeats .* allocation is 'global'"):
        create_method("obert", mask_type="8x8", fisher_block_size=16, allocation_rounds=3)
    with pytest.raises(RecipeError, match="allocation is 'global'"):
        create_method("structured", allocation_rounds=2)
    with pytest.raises(
        RecipeError, match=r"allocation_spacing 'geometric' .* allocation_rounds is 1"
    ):
        create_method("lpvit", allocation_spacing="geometric")
    with pytest.raises(RecipeError, match=r"both split a step .* set one of them"):
        create_method("obert", mask_type="8x8", fisher_block_size=16, allocation="obs",
                      allocation_rounds=2, num_recomputations=2)  # fmt: skip
    plain = ObertSettings(mask_type="8x8", fisher_block_size=16, allocation="obs")
    content = settings_content(plain)
    assert "allocation_rounds" not in content and "allocation_spacing" not in content
    assert "allocation_rounds" not in settings_content(LPViTSettings())
    rounds = LPViTSettings(allocation_rounds=3, allocation_spacing="geometric")
    assert settings_content(rounds)["allocation_rounds"] == 3
    assert settings_content(rounds)["allocation_spacing"] == "geometric"
    text = (
        "version: 1.1.0\nmodifiers:\n  - !EpochRangeModifier\n    start_epoch: 0.0\n"
        "    end_epoch: 2.0\n  - !OBSPruningModifier\n"
        "    params: ['re:bert.encoder.layer.*.attention.self.query.weight']\n"
        "    init_sparsity: 0.5\n    final_sparsity: 0.7\n    start_epoch: 0.0\n"
        "    end_epoch: 1.0\n    update_frequency: 1.0\n    mask_type: 8x8\n"
        "    fisher_block_size: 16\n    allocation: obs\n    allocation_rounds: 3\n"
        "    allocation_spacing: geometric\n"
    )
    plan = load_recipe(text).describe()
    assert "allocation_rounds=3" in plan
    assert "allocation_rounds 3: each step in 3 rounds (the kept cost falling by the same" in plan
