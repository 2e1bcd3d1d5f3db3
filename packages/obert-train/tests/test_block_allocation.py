"""Per-layer allocation of RxC blocks (issue 19, LPViT): uniform, lpvit, obs under FLOPs/latency.

The budget is the schedule's sparsity: a step to ``s`` removes the fraction ``s`` of the targets'
dense FLOPs (their weights) or of their measured latency (``latency_table``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from block_helpers import LPVIT, OBERT, C, R, block_counts
from transformers import BertForSequenceClassification

import obert_core as oc
import obert_core.blocks as ob
from obert_train import (
    ClassificationTask,
    DataError,
    GradientSampler,
    LPViTSettings,
    MaskState,
    ObertSettings,
    RecipeError,
    StepContext,
    TargetError,
    create_method,
    load_latency_table,
    lpvit_loss,
    oneshot_prune,
    resolve_target_params,
)
from obert_train.pruning.blocks import allocate_block_ratios, cost_sparsity
from obert_train.pruning.lpvit import mean_gradients
from obert_train.recipe.pruning_modifier import settings_content


def _prune(
    model: torch.nn.Module, method: str, allocation: str, task: ClassificationTask, s: float = 0.5
) -> dict[str, tuple[int, int]]:
    extra = OBERT if method == "obert" else LPVIT if method == "lpvit" else {}
    settings = {"mask_type": f"{R}x{C}", "allocation": allocation, **extra}
    oneshot_prune(model, method, s, settings=settings, task=task, progress=False)
    return block_counts(model)


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
@pytest.mark.parametrize(
    ("method", "allocation"),
    [("magnitude", "uniform"), ("obert", "uniform"), ("obert", "obs"), ("lpvit", "lpvit")],
)
def test_allocation_meets_the_budget_within_one_block(
    tiny_bert: BertForSequenceClassification,
    task: ClassificationTask,
    method: str,
    allocation: str,
    sparsity: float,
) -> None:
    """The fewest whole blocks that meet the FLOPs budget: not one block more.

    Before the allocation worked on whole blocks, its 0.01 grid of ratios left up to 1.75
    blocks per tensor more pruned than asked (docs/results.md, the digits ViT).
    """
    counts = _prune(tiny_bert, method, allocation, task, sparsity)
    pruned = sum(k for k, _ in counts.values())
    total = sum(n for _, n in counts.values())
    assert pruned >= sparsity * total - 1e-9  # the FLOPs budget is met ...
    assert pruned - sparsity * total < 1  # ... within one block
    assert all(k < n for k, n in counts.values())  # LPViT's minimum density: no layer emptied


def test_uniform_prunes_the_same_ratio_in_every_layer(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    counts = _prune(tiny_bert, "obert", "uniform", task, 0.25)
    assert {k / n for k, n in counts.values()} == {0.25}


@pytest.mark.parametrize(("method", "allocation"), [("obert", "obs"), ("lpvit", "lpvit")])
def test_lpvit_and_obs_differ_from_uniform_and_are_deterministic(
    tiny_bert: BertForSequenceClassification,
    task: ClassificationTask,
    method: str,
    allocation: str,
) -> None:
    first = _prune(copy.deepcopy(tiny_bert), method, allocation, task)
    again = _prune(copy.deepcopy(tiny_bert), method, allocation, task)
    uniform = _prune(copy.deepcopy(tiny_bert), method, "uniform", task)
    assert first == again
    assert len({k / n for k, n in first.values()}) > 1  # layers get different ratios
    assert first != uniform


def test_gradual_steps_never_regrow_and_reach_each_target(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    settings = {"mask_type": f"{R}x{C}", "allocation": "obs", **OBERT}
    oneshot_prune(tiny_bert, "obert", 0.3, settings=settings, task=task, progress=False)
    before = {n: p.detach() != 0 for n, p in resolve_target_params(tiny_bert).items()}
    oneshot_prune(tiny_bert, "obert", 0.6, settings=settings, task=task, progress=False)
    counts = block_counts(tiny_bert)
    assert sum(k for k, _ in counts.values()) >= 0.6 * sum(n for _, n in counts.values())
    for name, p in resolve_target_params(tiny_bert).items():
        assert not torch.any((p.detach() != 0) & ~before[name])


def _write_table(path: Path, layers: dict[str, dict[str, float]]) -> Path:
    payload = {"format": "obert-latency-table/1", "unit": "ms", "machine": "test", "layers": layers}
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def test_a_latency_table_budgets_the_latency(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask, tmp_path: Path
) -> None:
    # FFN layers are slow and hardly speed up; attention layers speed up linearly
    table = _write_table(
        tmp_path / "lat.json",
        {
            "32x32": {"1.0": 1.0, "0.0": 0.0},
            "64x32": {"1.0": 4.0, "0.5": 3.9, "0.0": 3.8},
            "32x64": {"1.0": 4.0, "0.5": 3.9, "0.0": 3.8},
        },
    )
    settings = {"mask_type": f"{R}x{C}", "allocation": "uniform", "latency_table": str(table)}
    result = oneshot_prune(tiny_bert, "magnitude", 0.05, settings=settings, progress=False)
    masks = {n: p.detach().reshape(-1) != 0 for n, p in resolve_target_params(tiny_bert).items()}
    shapes = {n: tuple(p.shape) for n, p in resolve_target_params(tiny_bert).items()}
    latency = load_latency_table(table)
    assert cost_sparsity(masks, shapes, (R, C), latency) >= 0.05
    assert result.sparsity > 0.05  # weights removed > latency removed: FFNs barely speed up


def test_uncovered_latency_table_and_bad_tables_are_refused_before_any_work(
    tiny_bert: BertForSequenceClassification, tmp_path: Path
) -> None:
    start = {n: p.detach().clone() for n, p in resolve_target_params(tiny_bert).items()}
    table = _write_table(tmp_path / "lat.json", {"32x32": {"1.0": 1.0, "0.5": 0.5}})
    settings = {"mask_type": f"{R}x{C}", "allocation": "uniform", "latency_table": str(table)}
    with pytest.raises(
        TargetError, match=r"no entry for .*intermediate.dense.weight of shape 64x32"
    ):
        oneshot_prune(tiny_bert, "magnitude", 0.5, settings=settings, progress=False)
    for name, p in resolve_target_params(tiny_bert).items():
        assert torch.equal(p.detach(), start[name])  # nothing half-done
    bad = _write_table(tmp_path / "bad.json", {"32x32": {"0.5": 0.5}})
    with pytest.raises(DataError, match="no dense latency"):
        load_latency_table(bad)
    bad = _write_table(tmp_path / "bad2.json", {"32by32": {"1.0": 1.0}})
    with pytest.raises(DataError, match="'32by32' is not a shape"):
        load_latency_table(bad)
    bad = _write_table(tmp_path / "bad3.json", {"32x32": {"1.5": 1.0, "1.0": 2.0}})
    with pytest.raises(DataError, match=r"density '1\.5'"):
        load_latency_table(bad)
    (tmp_path / "other.json").write_text('{"format": "x"}', encoding="utf-8")
    with pytest.raises(DataError, match="format 'x'"):
        load_latency_table(tmp_path / "other.json")
    with pytest.raises(DataError, match="is not a file"):
        load_latency_table(tmp_path / "missing.json")


@pytest.mark.parametrize("sparsity", [0.0, 1.0, -0.1, 1.5])
def test_budgets_outside_the_open_interval_are_refused(sparsity: float) -> None:
    with pytest.raises(RecipeError, match=rf"sparsity must lie in \(0, 1\), got {sparsity}"):
        allocate_block_ratios("uniform", {"w": (16, 16)}, (8, 8), sparsity)


def test_settings_refuse_allocations_they_cannot_run() -> None:
    with pytest.raises(RecipeError, match="allocation 'uniform' spreads RxC blocks"):
        create_method("magnitude", allocation="uniform")
    with pytest.raises(RecipeError, match="method 'magnitude' cannot run allocation 'obs'"):
        create_method("magnitude", mask_type="8x8", allocation="obs")
    with pytest.raises(RecipeError, match="method 'obert' cannot run allocation 'lpvit'"):
        create_method("obert", mask_type="8x8", fisher_block_size=16, allocation="lpvit")
    with pytest.raises(RecipeError, match=r"latency_table 'x\.json' budgets an allocation"):
        create_method("magnitude", mask_type="8x8", latency_table="x.json")
    with pytest.raises(RecipeError, match="method 'lpvit' prunes RxC blocks"):
        create_method("lpvit", mask_type="unstructured", allocation="global")
    with pytest.raises(RecipeError, match="no block allocation; drop latency_table"):
        create_method("structured", latency_table="x.json")


def test_new_settings_leave_existing_fingerprints_alone() -> None:
    content = settings_content(ObertSettings())
    assert "allocation" not in content and "latency_table" not in content
    assert (
        settings_content(ObertSettings(mask_type="8x8", fisher_block_size=16, allocation="obs"))[
            "allocation"
        ]
        == "obs"
    )
    assert "allocation" not in settings_content(LPViTSettings())


def test_lpvit_gradient_is_the_mean_of_the_label_free_loss_gradients(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    features, collate = task.train_features, task.collate
    params = resolve_target_params(tiny_bert)
    sampler = GradientSampler(
        tiny_bert, features, collate, batch_size=4, num_grads=3, seed=0, loss_fn=lpvit_loss,
        progress=False,
    )  # fmt: skip
    got = mean_gradients(sampler, params)
    # the float64 reference: the same batches, the loss by hand, autograd per batch
    ref = copy.deepcopy(tiny_bert).double()
    ref_params = resolve_target_params(ref)
    total = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in ref_params.items()}
    batches = sampler._index_batches(0)
    for index in range(3):
        batch = sampler._batch(next(batches), 0, index)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        loss = ref(**inputs).logits.square().mean()
        grads = torch.autograd.grad(loss, list(ref_params.values()))
        for name, g in zip(ref_params, grads, strict=True):
            total[name] += g
    for name, g in got.items():
        np.testing.assert_allclose(g.numpy(), (total[name] / 3).numpy(), rtol=1e-4, atol=1e-9)


def test_lpvit_masks_follow_core_scores_at_the_allocated_ratios(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    start = {n: p.detach().clone() for n, p in resolve_target_params(tiny_bert).items()}
    features, collate = task.train_features, task.collate
    sampler = GradientSampler(
        copy.deepcopy(tiny_bert), features, collate, batch_size=4, num_grads=4, seed=0,
        loss_fn=lpvit_loss, progress=False,
    )  # fmt: skip
    grads = mean_gradients(sampler, resolve_target_params(sampler.model))
    plan = ob.allocate_blocks(
        {n: w.double() for n, w in start.items()}, (R, C), 0.5, method="lpvit", grads=grads,
        rule="lagrange",
    )  # fmt: skip
    _prune(tiny_bert, "lpvit", "lpvit", task)
    for name, w0 in start.items():
        scores = ob.taylor_block_scores(w0.double(), grads[name], (R, C))
        keep = ob.block_keep_mask(scores, plan.ratios[name], (R, C))
        got = resolve_target_params(tiny_bert)[name].detach()
        torch.testing.assert_close(got != 0, keep & (w0 != 0))
        torch.testing.assert_close(got[keep], w0[keep])  # no weight update


def test_movement_runs_the_uniform_allocation(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    method = create_method("movement", mask_type=f"{R}x{C}", allocation="uniform")
    params = resolve_target_params(tiny_bert)
    method.prepare(params, MaskState(params), StepContext())
    tiny_bert.train()
    tiny_bert.zero_grad()
    tiny_bert(**task.collate(task.train_features[:6])).loss.backward()
    method.after_backward(params, MaskState(params))
    tiny_bert.zero_grad()
    tiny_bert.eval()
    oneshot_prune(tiny_bert, method, 0.25, task=task, progress=False)
    assert {k / n for k, n in block_counts(tiny_bert).values()} == {0.25}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("method", "allocation"), [("obert", "obs"), ("lpvit", "lpvit")])
def test_cuda_allocation_matches_cpu(
    tiny_bert: BertForSequenceClassification,
    task: ClassificationTask,
    method: str,
    allocation: str,
) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    cpu = _prune(copy.deepcopy(tiny_bert), method, allocation, task)
    gpu = _prune(copy.deepcopy(tiny_bert).cuda(), method, allocation, task)
    assert cpu == gpu


def test_lpvit_slope_rule_misses_a_budget_the_lagrangian_rule_meets(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    """Why the allocation uses rule="lagrange" (docs/train.md §2e): the numbers quoted there."""
    params = resolve_target_params(tiny_bert)
    sampler = GradientSampler(
        tiny_bert, task.train_features, task.collate, batch_size=4, num_grads=4, seed=0,
        loss_fn=lpvit_loss, progress=False,
    )  # fmt: skip
    grads = mean_gradients(sampler, params)
    weights = {n: p.detach().double() for n, p in params.items()}
    # on whole blocks (count grids) LPViT's rule reaches 0.3 … 0.8 but not 0.2
    with pytest.raises(oc.ObertError, match=r"cannot be met: .* keeps 0\.2305 of the dense cost"):
        ob.allocate_blocks(weights, (R, C), 0.2, method="lpvit", grads=grads, rule="lpvit")
    plan = ob.allocate_blocks(weights, (R, C), 0.2, method="lpvit", grads=grads, rule="lagrange")
    assert plan.cost / plan.dense_cost == pytest.approx(51 / 256)  # 0.2 · 256 = 51.2 blocks
    plan = ob.allocate_blocks(weights, (R, C), 0.5, method="lpvit", grads=grads, rule="lpvit")
    assert plan.cost / plan.dense_cost == pytest.approx(0.5)


def test_obs_allocation_does_not_depend_on_the_memory_budget(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    """Groups processed one after another (two passes) give the same allocation and weights."""
    lines: list[str] = []
    results = []
    for budget in (None, 3_000_000):
        model = copy.deepcopy(tiny_bert)
        settings = {"mask_type": f"{R}x{C}", "allocation": "obs", "max_memory": budget, **OBERT}
        oneshot_prune(
            model, "obert", 0.5, settings=settings, task=task, progress=False, log=lines.append
        )
        results.append(resolve_target_params(model))
    assert any("groups processed one after another" in line for line in lines)
    for name, p in results[0].items():
        assert torch.equal(p != 0, results[1][name] != 0), name
        torch.testing.assert_close(p, results[1][name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("method", "allocation"), [("obert", "obs"), ("lpvit", "lpvit")])
def test_allocation_floor_keeps_each_tensor_near_its_uniform_share(
    tiny_bert: BertForSequenceClassification,
    task: ClassificationTask,
    method: str,
    allocation: str,
) -> None:
    """(B-9): every tensor keeps ceil(φ·uniform) blocks or more; φ = 1 is the uniform counts."""
    extra = OBERT if method == "obert" else LPVIT
    uniform = _prune(copy.deepcopy(tiny_bert), method, "uniform", task, 0.7)
    free = _prune(copy.deepcopy(tiny_bert), method, allocation, task, 0.7)
    # the fraction of its uniform share the most-cut tensor keeps without a floor
    lowest = min((n - k) / (n - uniform[name][0]) for name, (k, n) in free.items())
    assert lowest < 1
    binding = (1 + lowest) / 2  # a floor that lifts that tensor
    for floor in (binding, 1.0):
        model = copy.deepcopy(tiny_bert)
        settings = {"mask_type": f"{R}x{C}", "allocation": allocation, **extra,
                    "allocation_floor": floor}  # fmt: skip
        oneshot_prune(model, method, 0.7, settings=settings, task=task, progress=False)
        counts = block_counts(model)
        pruned = sum(k for k, _ in counts.values())
        total = sum(n for _, n in counts.values())
        assert 0 <= pruned - 0.7 * total < 1  # the budget, within one block
        for name, (k, n) in counts.items():
            assert n - k >= np.ceil(floor * (n - uniform[name][0]) - 1e-9), name
        if floor == 1.0:
            assert counts == uniform
        else:
            assert counts != free


def test_allocation_floor_is_checked_fingerprinted_and_shown() -> None:
    with pytest.raises(RecipeError, match=r"allocation_floor 1\.5 must lie in \[0, 1\]"):
        create_method("obert", mask_type="8x8", fisher_block_size=16, allocation="obs",
                      allocation_floor=1.5)  # fmt: skip
    with pytest.raises(RecipeError, match="allocation is 'uniform'; set allocation to 'lpvit'"):
        create_method("magnitude", mask_type="8x8", allocation="uniform", allocation_floor=0.5)
    with pytest.raises(RecipeError, match="allocation is 'global'"):
        create_method("structured", allocation_floor=0.5)
    plain = ObertSettings(mask_type="8x8", fisher_block_size=16, allocation="obs")
    assert "allocation_floor" not in settings_content(plain)  # old fingerprints stay
    floored = ObertSettings(
        mask_type="8x8", fisher_block_size=16, allocation="obs", allocation_floor=0.5
    )
    assert settings_content(floored)["allocation_floor"] == 0.5
    from obert_train.recipe import load_recipe

    text = (
        "version: 1.1.0\nmodifiers:\n  - !EpochRangeModifier\n    start_epoch: 0.0\n"
        "    end_epoch: 2.0\n  - !OBSPruningModifier\n    params: ['re:bert.encoder.layer.*.attention.self.query.weight']\n"
        "    init_sparsity: 0.5\n    final_sparsity: 0.7\n    start_epoch: 0.0\n"
        "    end_epoch: 1.0\n    update_frequency: 1.0\n    mask_type: 8x8\n"
        "    fisher_block_size: 16\n    allocation: obs\n    allocation_floor: 0.5\n"
    )
    plan = load_recipe(text).describe()
    assert "allocation_floor=0.5" in plan
    assert "every tensor keeps at least 0.5 of the blocks uniform allocation would keep" in plan
