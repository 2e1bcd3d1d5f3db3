from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from transformers import BertForSequenceClassification

import obert_core as oc
from obert_train import (
    ClassificationTask,
    GradientSampler,
    ObertPruning,
    RecipeError,
    TargetError,
    oneshot_prune,
    resolve_target_params,
)

OBERT = {"num_grads": 8, "grad_batch_size": 4, "fisher_block_size": 16}


def _copy(model: BertForSequenceClassification) -> BertForSequenceClassification:
    clone = BertForSequenceClassification(model.config)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    return clone


def _zeros(model: torch.nn.Module) -> int:
    return sum(int((p == 0).sum()) for p in resolve_target_params(model).values())


def _numel(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in resolve_target_params(model).values())


def _train(
    model: torch.nn.Module, task: ClassificationTask, *, epochs: int, batch_size: int, lr: float
) -> None:
    """A few AdamW steps (linear warm-up and decay), so gradients and Fisher are far from tiny."""
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(0)
    steps = epochs * (len(task.train_features) // batch_size)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "LayerNorm" not in n]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2 or "LayerNorm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}], lr=lr
    )
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.06 * steps), steps)
    batches = task.infinite_batches(batch_size, seed=0)
    model.train()
    for _ in range(steps):
        model(**next(batches)).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


@pytest.mark.parametrize("mode", ["joint", "superpose", "auto"])
def test_obert_step_equals_the_core_reference(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask, mode: str
) -> None:
    """Same batches -> explicit gradients -> obert_core functions == oneshot_prune."""
    seen: list[list[Any]] = []

    def collate(features: Sequence[Any]) -> dict[str, torch.Tensor]:
        seen.append(list(features))
        return task.collate(features)

    model = _copy(tiny_bert)
    sampler = GradientSampler(model, task.train_features, collate, batch_size=4, num_grads=8)
    result = oneshot_prune(
        model, "obert", 0.6, settings={"mode": mode, **OBERT}, sampler=sampler, progress=False
    )
    assert result.method == "obert"
    assert getattr(result.settings, "mode", None) == mode
    assert result.target_sparsity == 0.6
    assert len(seen) == 8  # exactly num_grads batches, all at the starting weights

    ref = _copy(tiny_bert)
    params = resolve_target_params(ref)
    grads: dict[str, list[torch.Tensor]] = {n: [] for n in params}
    for batch in seen:
        loss = ref(**task.collate(batch)).loss
        for name, g in zip(params, torch.autograd.grad(loss, list(params.values())), strict=True):
            grads[name].append(g.reshape(-1))
    finvs = {n: oc.block_fisher_inverse(torch.stack(g), 16, 1e-7) for n, g in grads.items()}
    scores = {n: oc.obs_saliency(params[n].detach().reshape(-1), finvs[n]) for n in params}
    masks = oc.select_mask(scores, 0.6)
    for name, p in params.items():
        new = oc.obs_update(
            p.detach().reshape(-1), finvs[name], ~masks[name], mode=mode, num_grads=8
        )
        torch.testing.assert_close(
            dict(model.named_parameters())[name].detach().reshape(-1), new, rtol=1e-4, atol=1e-6
        )
    assert _zeros(model) == round(0.6 * _numel(model))


def test_obert_keeps_the_task_loss_lower_than_magnitude(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    """OBS minimises the quadratic loss model; on the training loss it must beat magnitude."""
    _train(tiny_bert, task, epochs=6, batch_size=6, lr=3e-3)
    batch = task.collate(task.train_features)
    losses = {}
    extras: dict[str, dict[str, Any]] = {
        "magnitude": {},
        "obert": {**OBERT, "num_grads": 16, "damp": 1e-4},
    }
    for method, extra in extras.items():
        model = _copy(tiny_bert)
        oneshot_prune(model, method, 0.5, settings=extra, task=task, progress=False)
        with torch.no_grad():
            losses[method] = float(model(**batch).loss)
    assert losses["obert"] < losses["magnitude"]


def test_magnitude_removes_the_smallest_weights(
    tiny_bert: BertForSequenceClassification,
) -> None:
    before = {n: p.detach().clone() for n, p in resolve_target_params(tiny_bert).items()}
    result = oneshot_prune(tiny_bert, "magnitude", 0.3)
    everything = torch.cat([w.reshape(-1).abs() for w in before.values()])
    threshold = everything.kthvalue(round(0.3 * everything.numel())).values
    for name, p in resolve_target_params(tiny_bert).items():
        kept = p.detach() != 0
        assert torch.equal(p.detach()[kept], before[name][kept])  # no update for magnitude
        assert torch.all(before[name][~kept].abs() <= threshold)
    assert result.sparsity == pytest.approx(round(0.3 * everything.numel()) / everything.numel())


def test_recomputations_layer_scope_and_existing_masks(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    first = oneshot_prune(
        tiny_bert, "magnitude", 0.3, settings={"global_sparsity": False}, progress=False
    )
    pruned_before = {n: ~m for n, m in first.masks.items()}
    result = oneshot_prune(
        tiny_bert,
        "obert",
        0.7,
        settings={"global_sparsity": False, "num_recomputations": 3, **OBERT},
        task=task,
        progress=False,
    )
    start = max(1 - float(m.float().mean()) for m in first.masks.values())
    expected = [start + (0.7 - start) * j / 3 for j in (1, 2, 3)]
    steps = [
        re.fullmatch(r"recomputation (\d)/3: to sparsity ([0-9.]+)", line)
        for line in result.log
        if line.startswith("recomputation")
    ]
    assert [int(m.group(1)) for m in steps if m] == [1, 2, 3]
    assert [float(m.group(2)) for m in steps if m] == pytest.approx(expected, abs=1e-4)
    params = resolve_target_params(tiny_bert)
    for name, mask in result.masks.items():
        assert torch.equal(mask, (params[name].detach() != 0).reshape(-1))
        assert int((~mask).sum()) == round(0.7 * mask.numel())
        assert not torch.any(mask & pruned_before[name])  # earlier zeros stay zero
        assert result.tensor_sparsity[name] == pytest.approx(0.7, abs=1 / mask.numel())
    with pytest.raises(ValueError, match="below the model's current layer sparsity"):
        oneshot_prune(tiny_bert, "magnitude", 0.5, settings={"global_sparsity": False})


def test_recomputations_take_fresh_gradients_per_sub_step(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    """Each of k sub-steps collects its own m gradients on new batches (global scope)."""
    seen: list[list[Any]] = []

    def collate(features: Sequence[Any]) -> dict[str, torch.Tensor]:
        seen.append(list(features))
        return task.collate(features)

    sampler = GradientSampler(tiny_bert, task.train_features, collate, batch_size=4, num_grads=8)
    result = oneshot_prune(
        tiny_bert,
        "obert",
        0.6,
        settings={"num_recomputations": 2, **OBERT},
        sampler=sampler,
        progress=False,
    )
    assert len(seen) == 16
    assert seen[:8] != seen[8:]  # the second sub-step sees other batches
    assert _zeros(tiny_bert) == round(0.6 * _numel(tiny_bert))
    assert result.sparsity == pytest.approx(_zeros(tiny_bert) / _numel(tiny_bert))


@pytest.mark.parametrize(("mask_type", "block_size"), [("block4", 32), ("2:4", 16)])
def test_structured_masks(
    tiny_bert: BertForSequenceClassification,
    task: ClassificationTask,
    mask_type: str,
    block_size: int,
) -> None:
    settings = {**OBERT, "mask_type": mask_type, "fisher_block_size": block_size}
    result = oneshot_prune(tiny_bert, "obert", 0.5, settings=settings, task=task, progress=False)
    assert result.sparsity == pytest.approx(0.5)
    for p in resolve_target_params(tiny_bert).values():
        groups = (p.detach() != 0).reshape(-1, 4)
        if mask_type == "block4":
            assert torch.all(groups.all(1) | ~groups.any(1))  # whole groups of 4 go
        else:
            assert torch.all(groups.sum(1) == 2)  # exactly 2 of every 4 kept


def _finetuned(model: BertForSequenceClassification, task: ClassificationTask) -> None:
    """Train the tiny model briefly, so its gradients (and Fisher) are far from negligible."""
    _train(model, task, epochs=3, batch_size=6, lr=3e-3)


def _fisher_scale(model: torch.nn.Module, task: ClassificationTask) -> float:
    """Mean diagonal of the empirical Fisher (mean squared gradient) of the target tensors."""
    sampler = GradientSampler.from_task(model, task, batch_size=4, num_grads=8, progress=False)
    params = resolve_target_params(model)
    squares = [g.pow(2).mean() for c in sampler.chunks(params, chunk_size=8) for g in c.values()]
    return float(torch.stack(squares).mean())


def test_grouped_processing_matches_one_group(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    """A budget that forces several groups (two passes) gives the same masks and weights.

    The model is fine-tuned first and the damp is 1 % of the Fisher's mean diagonal, so F^-1 is
    far from I/damp and the update depends on where the gradients are taken: a pass that saw
    earlier groups already updated would give other weights.
    """
    _finetuned(tiny_bert, task)
    damp = 1e-2 * _fisher_scale(tiny_bert, task)
    for global_sparsity in (True, False):
        lines: list[str] = []
        results = []
        for budget in (None, 3_000_000):
            model = _copy(tiny_bert)
            settings = {
                "max_memory": budget, "damp": damp, "global_sparsity": global_sparsity, **OBERT,
            }  # fmt: skip
            oneshot_prune(
                model, "obert", 0.5, settings=settings, task=task, progress=False, log=lines.append
            )
            results.append(resolve_target_params(model))
        assert any("groups processed one after another" in line for line in lines)
        for name, p in results[0].items():
            assert torch.equal(p != 0, results[1][name] != 0), (global_sparsity, name)
            torch.testing.assert_close(p, results[1][name], rtol=1e-4, atol=1e-6)


def test_fisher_cache_reuses_the_dense_fisher(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    cache: dict[str, dict[str, torch.Tensor]] = {}
    for sparsity in (0.5, 0.7):
        fresh, cached = _copy(tiny_bert), _copy(tiny_bert)
        oneshot_prune(fresh, "obert", sparsity, settings=OBERT, task=task, progress=False)
        result = oneshot_prune(
            cached, "obert", sparsity, settings=OBERT, task=task, progress=False, fisher_cache=cache
        )
        if sparsity == 0.7:
            assert "gradients_s" not in result.timings  # no gradients collected the second time
            assert any("reusing the cached inverse Fisher" in line for line in result.log)
        for name, p in resolve_target_params(fresh).items():
            torch.testing.assert_close(p, dict(cached.named_parameters())[name])


def test_fisher_cache_is_keyed_by_the_settings(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    """One cache shared by runs with another mask type or damp gives what fresh runs give."""
    cache: dict[str, dict[str, torch.Tensor]] = {}
    settings: list[dict[str, Any]] = [
        {"mask_type": "unstructured", "damp": 1e-7},
        {"mask_type": "block4", "damp": 1e-7},  # same Fisher, other scores
        {"mask_type": "unstructured", "damp": 1e-3},  # other Fisher
    ]
    for extra in settings:
        fresh, cached = _copy(tiny_bert), _copy(tiny_bert)
        cfg = {**OBERT, **extra}
        oneshot_prune(fresh, "obert", 0.5, settings=cfg, task=task, progress=False)
        result = oneshot_prune(
            cached, "obert", 0.5, settings=cfg, task=task, progress=False, fisher_cache=cache
        )
        assert ("gradients_s" in result.timings) == (extra == settings[0] or extra["damp"] > 1e-7)
        for name, p in resolve_target_params(fresh).items():
            torch.testing.assert_close(p, dict(cached.named_parameters())[name])
    assert len([key for key in cache if key.startswith("finv")]) == 2
    assert len([key for key in cache if key.startswith("scores")]) == 3


def test_fisher_cache_is_keyed_by_the_weights(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    """Re-pruning one model object in place with a shared cache gives what a fresh run gives."""
    cache: dict[str, dict[str, torch.Tensor]] = {}
    fresh, cached = _copy(tiny_bert), _copy(tiny_bert)
    for sparsity in (0.5, 0.7):
        oneshot_prune(fresh, "obert", sparsity, settings=OBERT, task=task, progress=False)
        result = oneshot_prune(
            cached, "obert", sparsity, settings=OBERT, task=task, progress=False, fisher_cache=cache
        )
        assert "gradients_s" in result.timings  # new weights: no stale cached Fisher
        for name, p in resolve_target_params(fresh).items():
            torch.testing.assert_close(p, dict(cached.named_parameters())[name])
    assert len([key for key in cache if key.startswith("finv")]) == 2


def test_bad_shapes_and_missing_data(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    # Shape errors come before the missing gradient source is noticed (no task given).
    with pytest.raises(TargetError, match="does not divide the 1024 weights"):
        oneshot_prune(
            tiny_bert, "obert", 0.5, settings={"mask_type": "block4", "fisher_block_size": 48}
        )
    with pytest.raises(TargetError, match="exceeds the 1024 weights"):
        oneshot_prune(tiny_bert, "obert", 0.5, settings={"fisher_block_size": 4096}, task=task)
    with pytest.raises(ValueError, match="needs gradients"):
        oneshot_prune(tiny_bert, "obert", 0.5)
    sampler = GradientSampler.from_task(tiny_bert, task, batch_size=4, num_grads=8)
    with pytest.raises(ValueError, match=r"num_grads=8 .* num_grads=16"):
        oneshot_prune(tiny_bert, "obert", 0.5, settings={"num_grads": 16}, sampler=sampler)
    assert _zeros(tiny_bert) == 0  # nothing was pruned by the refused calls


def test_bad_arguments(tiny_bert: BertForSequenceClassification) -> None:
    for sparsity in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"sparsity .* is outside \[0, 1\)"):
            oneshot_prune(tiny_bert, "magnitude", sparsity)
    with pytest.raises(RecipeError, match="pruning method 'random' unknown"):
        oneshot_prune(tiny_bert, "random", 0.5)
    with pytest.raises(RecipeError, match="unknown setting 'block_size'"):
        oneshot_prune(tiny_bert, "obert", 0.5, settings={"block_size": 16})
    with pytest.raises(TypeError, match="settings apply to a method given by name"):
        oneshot_prune(tiny_bert, ObertPruning(), 0.5, settings={"damp": 1e-4})
    with pytest.raises(TargetError, match="matched no parameter"):
        oneshot_prune(tiny_bert, "magnitude", 0.5, settings={"targets": [r"nothing\.weight"]})
    assert _zeros(tiny_bert) == 0


def test_group_sizes_are_checked_for_every_method() -> None:
    """A tensor that does not split into groups of 4 is a TargetError for magnitude too."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 3))
    for mask_type in ("block4", "2:4"):
        with pytest.raises(TargetError, match="has 9 weights, not divisible"):
            oneshot_prune(
                model, "magnitude", 0.5, settings={"mask_type": mask_type, "targets": ["weight"]}
            )


def test_a_method_instance_is_used_as_given(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    method = ObertPruning(num_grads=8, grad_batch_size=4, fisher_block_size=16, damp=1e-5)
    result = oneshot_prune(tiny_bert, method, 0.4, task=task, progress=False)
    assert result.settings is method.settings
    assert result.sparsity == pytest.approx(0.4, abs=1 / _numel(tiny_bert))


def test_diagnostics_record_the_quadratic_model_and_auto_is_joint_at_m_ge_b(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    """``diagnostics`` records ½δwᵀF̂δw and the update size; with m ≥ B auto == joint exactly."""
    settings = {"num_grads": 16, "grad_batch_size": 4, "fisher_block_size": 16}
    out: dict[str, BertForSequenceClassification] = {}
    results = {}
    for mode in ("joint", "auto"):
        out[mode] = _copy(tiny_bert)
        results[mode] = oneshot_prune(
            out[mode],
            "obert",
            0.7,
            settings={**settings, "mode": mode, "diagnostics": mode == "auto"},
            task=task,
            progress=False,
        )
    for (name, a), b in zip(
        out["joint"].state_dict().items(), out["auto"].state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert results["joint"].diagnostics == {}
    diag = results["auto"].diagnostics
    assert set(diag) == {"predicted_increase", "update_sq", "kept_sq", "removed_sq"}
    assert diag["predicted_increase"] > 0 and diag["update_sq"] > 0
    assert 0 < diag["removed_sq"] < diag["kept_sq"] + diag["removed_sq"]


def test_unseen_curvature_mean_changes_only_rank_deficient_fishers(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    """``unseen_curvature: mean`` fills the Fisher's null space only when m < B."""

    def pruned(m: int, unseen: str) -> dict[str, torch.Tensor]:
        model = _copy(tiny_bert)
        settings = {"num_grads": m, "grad_batch_size": 4, "fisher_block_size": 16}
        oneshot_prune(
            model,
            "obert",
            0.6,
            settings={**settings, "unseen_curvature": unseen},
            task=task,
            progress=False,
        )
        return {n: p.detach().clone() for n, p in resolve_target_params(model).items()}

    full_damp, full_mean = pruned(16, "damp"), pruned(16, "mean")
    assert all(torch.equal(full_damp[n], full_mean[n]) for n in full_damp)
    low_damp, low_mean = pruned(4, "damp"), pruned(4, "mean")
    assert any(not torch.equal(low_damp[n], low_mean[n]) for n in low_damp)
    assert _zeros_of(low_mean) == _zeros_of(low_damp)


def _zeros_of(tensors: dict[str, torch.Tensor]) -> int:
    return sum(int((t == 0).sum()) for t in tensors.values())
