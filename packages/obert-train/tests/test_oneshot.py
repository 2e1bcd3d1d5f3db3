from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import BertForSequenceClassification, BertTokenizer

import obert_core as oc
from obert_train import (
    ClassificationTask,
    GradientSampler,
    OneShotConfig,
    TargetError,
    current_masks,
    load_task,
    oneshot_prune,
    resolve_target_params,
)

OBERT = {"num_grads": 8, "grad_batch_size": 4, "block_size": 16}


@pytest.fixture
def task(tokenizer: BertTokenizer, sst2_dir: Path) -> ClassificationTask:
    loaded = load_task("sst2", tokenizer, data_dir=sst2_dir)
    assert isinstance(loaded, ClassificationTask)
    return loaded


def _copy(model: BertForSequenceClassification) -> BertForSequenceClassification:
    clone = BertForSequenceClassification(model.config)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    return clone


def _zeros(model: torch.nn.Module) -> int:
    return sum(int((p == 0).sum()) for p in resolve_target_params(model).values())


def _numel(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in resolve_target_params(model).values())


@pytest.mark.parametrize("mode", ["joint", "superpose"])
def test_obert_step_equals_the_core_reference(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask, mode: str
) -> None:
    """Same batches -> explicit gradients -> obert_core functions == oneshot_prune."""
    seen: list[list[Any]] = []

    def collate(features: Sequence[Any]) -> dict[str, torch.Tensor]:
        seen.append(list(features))
        return task.collate(features)

    model = _copy(tiny_bert)
    cfg = OneShotConfig(sparsity=0.6, mode=mode, **OBERT)
    sampler = GradientSampler(model, task.train_features, collate, batch_size=4, num_grads=8)
    oneshot_prune(model, cfg, sampler=sampler, progress=False)

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
        new = oc.obs_update(p.detach().reshape(-1), finvs[name], ~masks[name], mode=mode)
        torch.testing.assert_close(
            dict(model.named_parameters())[name].detach().reshape(-1), new, rtol=1e-4, atol=1e-6
        )
    assert _zeros(model) == round(0.6 * _numel(model))


def test_obert_keeps_the_task_loss_lower_than_magnitude(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    """OBS minimises the quadratic loss model; on the training loss it must beat magnitude."""
    from obert_train import finetune

    torch.manual_seed(0)
    finetune(tiny_bert, task, epochs=6, batch_size=6, learning_rate=3e-3, progress=False)
    batch = task.collate(task.train_features)
    losses = {}
    for method, extra in (("magnitude", {}), ("obert", {**OBERT, "num_grads": 16})):
        model = _copy(tiny_bert)
        cfg = OneShotConfig(method=method, sparsity=0.5, damp=1e-4, **extra)  # type: ignore[arg-type]
        oneshot_prune(model, cfg, task=task, progress=False)
        with torch.no_grad():
            losses[method] = float(model(**batch).loss)
    assert losses["obert"] < losses["magnitude"]


def test_magnitude_removes_the_smallest_weights(
    tiny_bert: BertForSequenceClassification,
) -> None:
    before = {n: p.detach().clone() for n, p in resolve_target_params(tiny_bert).items()}
    result = oneshot_prune(tiny_bert, OneShotConfig(method="magnitude", sparsity=0.3))
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
        tiny_bert, OneShotConfig(method="magnitude", sparsity=0.3, scope="layer"), progress=False
    )
    pruned_before = {n: ~m for n, m in first.masks.items()}
    result = oneshot_prune(
        tiny_bert,
        OneShotConfig(sparsity=0.7, scope="layer", num_recomputations=3, **OBERT),
        task=task,
        progress=False,
    )
    start = max(1 - float(m.float().mean()) for m in first.masks.values())
    expected = [start + (0.7 - start) * j / 3 for j in (1, 2, 3)]
    assert result.step_sparsities == pytest.approx(expected)
    masks = current_masks(resolve_target_params(tiny_bert))
    for name, mask in masks.items():
        assert int((~mask).sum()) == round(0.7 * mask.numel())
        assert not torch.any(mask & pruned_before[name])  # earlier zeros stay zero
    with pytest.raises(ValueError, match="below the model's current layer sparsity"):
        oneshot_prune(tiny_bert, OneShotConfig(method="magnitude", sparsity=0.5, scope="layer"))


@pytest.mark.parametrize(("mask_type", "block_size"), [("block4", 32), ("2:4", 16)])
def test_structured_masks(
    tiny_bert: BertForSequenceClassification,
    task: ClassificationTask,
    mask_type: str,
    block_size: int,
) -> None:
    cfg = OneShotConfig(sparsity=0.5, mask_type=mask_type, **{**OBERT, "block_size": block_size})
    oneshot_prune(tiny_bert, cfg, task=task, progress=False)
    for p in resolve_target_params(tiny_bert).values():
        groups = (p.detach() != 0).reshape(-1, 4)
        if mask_type == "block4":
            assert torch.all(groups.all(1) | ~groups.any(1))  # whole groups of 4 go
        else:
            assert torch.all(groups.sum(1) == 2)  # exactly 2 of every 4 kept


def _finetuned(model: BertForSequenceClassification, task: ClassificationTask) -> None:
    """Train the tiny model briefly, so its gradients (and Fisher) are far from negligible."""
    from obert_train import finetune

    torch.manual_seed(0)
    finetune(model, task, epochs=3, batch_size=6, learning_rate=3e-3, progress=False)
    model.eval()


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
    for scope in ("global", "layer"):
        lines: list[str] = []
        results = []
        for budget in (None, 3_000_000):
            model = _copy(tiny_bert)
            cfg = OneShotConfig(sparsity=0.5, max_memory=budget, damp=damp, scope=scope, **OBERT)
            oneshot_prune(model, cfg, task=task, progress=False, log=lines.append)
            results.append(resolve_target_params(model))
        assert any("groups processed one after another" in line for line in lines)
        for name, p in results[0].items():
            assert torch.equal(p != 0, results[1][name] != 0), (scope, name)
            torch.testing.assert_close(p, results[1][name], rtol=1e-4, atol=1e-6)


def test_fisher_cache_reuses_the_dense_fisher(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    cache: dict[str, dict[str, torch.Tensor]] = {}
    for sparsity in (0.5, 0.7):
        fresh, cached = _copy(tiny_bert), _copy(tiny_bert)
        cfg = OneShotConfig(sparsity=sparsity, **OBERT)
        oneshot_prune(fresh, cfg, task=task, progress=False)
        result = oneshot_prune(cached, cfg, task=task, progress=False, fisher_cache=cache)
        if sparsity == 0.7:
            assert "gradients_s" not in result.timings  # no gradients collected the second time
        for name, p in resolve_target_params(fresh).items():
            torch.testing.assert_close(p, dict(cached.named_parameters())[name])


def test_fisher_cache_is_keyed_by_the_settings(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    """One cache shared by runs with another mask type or damp gives what fresh runs give."""
    cache: dict[str, dict[str, torch.Tensor]] = {}
    settings = [
        {"mask_type": "unstructured", "damp": 1e-7},
        {"mask_type": "block4", "damp": 1e-7},  # same Fisher, other scores
        {"mask_type": "unstructured", "damp": 1e-3},  # other Fisher
    ]
    for extra in settings:
        fresh, cached = _copy(tiny_bert), _copy(tiny_bert)
        cfg = OneShotConfig(sparsity=0.5, **{**OBERT, **extra})
        oneshot_prune(fresh, cfg, task=task, progress=False)
        result = oneshot_prune(cached, cfg, task=task, progress=False, fisher_cache=cache)
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
        cfg = OneShotConfig(sparsity=sparsity, **OBERT)
        oneshot_prune(fresh, cfg, task=task, progress=False)
        result = oneshot_prune(cached, cfg, task=task, progress=False, fisher_cache=cache)
        assert "gradients_s" in result.timings  # new weights: no stale cached Fisher
        for name, p in resolve_target_params(fresh).items():
            torch.testing.assert_close(p, dict(cached.named_parameters())[name])
    assert len([key for key in cache if key.startswith("finv")]) == 2


def test_bad_shapes_and_missing_data(
    tiny_bert: BertForSequenceClassification, task: ClassificationTask
) -> None:
    with pytest.raises(TargetError, match="does not divide the 1024 weights"):
        oneshot_prune(tiny_bert, OneShotConfig(sparsity=0.5, mask_type="block4", block_size=48))
    with pytest.raises(TargetError, match="exceeds the 1024 weights"):
        oneshot_prune(tiny_bert, OneShotConfig(sparsity=0.5, block_size=4096), task=task)
    with pytest.raises(ValueError, match="needs gradients"):
        oneshot_prune(tiny_bert, OneShotConfig(sparsity=0.5))
    sampler = GradientSampler.from_task(tiny_bert, task, batch_size=4, num_grads=8)
    with pytest.raises(ValueError, match=r"num_grads=8 .* num_grads=16"):
        oneshot_prune(tiny_bert, OneShotConfig(sparsity=0.5, num_grads=16), sampler=sampler)
