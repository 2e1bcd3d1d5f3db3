"""A pruning step on the un-inverted Fisher (obert_core.FisherBlocks) keeps today's results.

For m >= B the step keeps the damped Fisher and its diag(F^-1) instead of the explicit float32
inverse (docs/math.md §2.1); the masks must be the same and the weights equal to float32 round-off.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertForSequenceClassification, BertTokenizer

import obert_core as oc
from obert_train import GradientSampler, MaskState, load_task, resolve_target_params
from obert_train.pruning import obert as obert_module
from obert_train.pruning.method import StepContext
from obert_train.pruning.obert import ObertPruning, ObertSettings, factored_fisher


def _step(
    model: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    data: Path,
    sparsity: float,
    settings: dict[str, object],
    gradual: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, float]]:
    task = load_task("sst2", tokenizer, data_dir=data)
    sampler = GradientSampler.from_task(model, task, batch_size=2, num_grads=12, progress=False)
    params = resolve_target_params(model)
    start = {n: p.detach().clone() for n, p in params.items()}
    masks = MaskState(params)
    method = ObertPruning(num_grads=12, grad_batch_size=2, damp=1e-6, chunk_size=4, **settings)
    ctx = StepContext(sampler=sampler, log=lambda _line: None, progress=False, gradual=gradual)
    method.prune(params, masks, sparsity, ctx)
    weights = {n: p.detach().clone() for n, p in params.items()}
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(start[name])
    return weights, masks.as_dict(), dict(ctx.timings)


@pytest.mark.parametrize(("sparsity", "scope"), [(0.5, True), (0.9, True), (0.7, False)])
def test_factored_step_gives_the_explicit_steps_masks_and_weights(
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    sparsity: float,
    scope: bool,
) -> None:
    settings: dict[str, object] = {"fisher_block_size": 8, "global_sparsity": scope}
    assert factored_fisher(ObertSettings(num_grads=12, fisher_block_size=8))
    built: list[type] = []
    original = obert_module.build_inverse_fishers

    def spy(*args: object, **kwargs: object) -> dict[str, object]:
        out = original(*args, **kwargs)  # type: ignore[arg-type]
        built.extend(type(v) for v in out.values())
        return dict(out)

    monkeypatch.setattr(obert_module, "build_inverse_fishers", spy)
    new_w, new_m, _ = _step(tiny_bert, tokenizer, sst2_dir, sparsity, settings)
    assert built and all(t is oc.FisherBlocks for t in built)
    built.clear()
    monkeypatch.setattr(obert_module, "factored_fisher", lambda _settings: False)
    old_w, old_m, _ = _step(tiny_bert, tokenizer, sst2_dir, sparsity, settings)
    assert built and all(t is torch.Tensor for t in built)
    for name in old_w:
        assert torch.equal(new_m[name], old_m[name]), name
        scale = float(old_w[name].abs().max())
        torch.testing.assert_close(new_w[name], old_w[name], rtol=0, atol=2e-5 * scale)
        assert torch.all(new_w[name].reshape(-1)[~new_m[name]] == 0)


@pytest.mark.parametrize(("gradual", "expected"), [(False, "joint"), (True, "superpose")])
def test_default_update_follows_the_step_kind_at_full_rank(
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
    gradual: bool,
    expected: str,
) -> None:
    """m = 12 >= B = 8 and ``mode`` left out: a one-shot step runs the joint update, a gradual
    step (``StepContext.gradual``) the superposed one, to the bit; the two differ."""
    settings: dict[str, object] = {"fisher_block_size": 8}
    default_w, default_m, _ = _step(tiny_bert, tokenizer, sst2_dir, 0.7, settings, gradual)
    for mode in ("joint", "superpose"):
        w, m, _ = _step(tiny_bert, tokenizer, sst2_dir, 0.7, {**settings, "mode": mode}, gradual)
        same = all(torch.equal(w[n], default_w[n]) for n in w)
        assert all(torch.equal(m[n], default_m[n]) for n in m)
        assert same == (mode == expected), mode


def test_the_explicit_inverse_stays_where_the_factored_form_does_not_apply() -> None:
    assert not factored_fisher(ObertSettings(num_grads=16, fisher_block_size=50))  # m < B
    assert not factored_fisher(ObertSettings(num_grads=64, fisher_method="streaming"))
    assert factored_fisher(ObertSettings(num_grads=64, fisher_block_size=50))


@pytest.mark.parametrize(("chunks", "num_grads"), [((3, 3, 2), 8), ((4, 2), 8), ((5, 4), 8)])
def test_gradient_rows_write_the_low_rank_fishers_layout(
    chunks: tuple[int, ...], num_grads: int
) -> None:
    """m < B: chunks written into the block layout give LowRankFisher of the concatenated rows
    (fewer rows than m are cut to what came; more rows than m grow the buffer)."""
    gen = torch.Generator().manual_seed(0)
    parts = [torch.randn(n, 107, generator=gen, dtype=torch.float64) for n in chunks]
    cfg = ObertSettings(num_grads=num_grads, fisher_block_size=20, damp=1e-3)
    rows = obert_module._GradientRows(cfg)
    for part in parts:
        rows.add(part)
    got = rows.finalize()
    want = oc.LowRankFisher(torch.cat(parts).float(), 20, 1e-3, num_grads=num_grads)
    assert got.grads.shape == want.grads.shape == (6, sum(chunks), 20)
    torch.testing.assert_close(got.grads, want.grads, rtol=0, atol=0)
    torch.testing.assert_close(got.diag(), want.diag(), rtol=0, atol=0)


@pytest.mark.parametrize("scope", [True, False])
def test_gradual_step_solves_with_the_factors_kept_in_the_gram(
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    scope: bool,
) -> None:
    """A gradual step (superposed update) lets diag(F^-1) keep its factors in the Gram and
    solves with them: the same masks as refactoring each block, weights to float32 round-off."""
    settings: dict[str, object] = {"fisher_block_size": 8, "global_sparsity": scope}
    kept: list[bool] = []
    original = obert_module.build_inverse_fishers

    def spy(*args: object, **kwargs: object) -> dict[str, object]:
        out = original(*args, **kwargs)  # type: ignore[arg-type]
        kept.extend(getattr(v, "_factors", None) is not None for v in out.values())
        return dict(out)

    monkeypatch.setattr(obert_module, "build_inverse_fishers", spy)
    new_w, new_m, _ = _step(tiny_bert, tokenizer, sst2_dir, 0.6, settings, gradual=True)
    assert kept and all(kept)
    kept.clear()
    monkeypatch.setattr(obert_module, "overwrite_gram", lambda *_a, **_k: False)
    old_w, old_m, _ = _step(tiny_bert, tokenizer, sst2_dir, 0.6, settings, gradual=True)
    assert kept and not any(kept)
    for name in old_w:
        assert torch.equal(new_m[name], old_m[name]), name
        scale = float(old_w[name].abs().max())
        torch.testing.assert_close(new_w[name], old_w[name], rtol=0, atol=2e-6 * scale)


def test_the_gram_is_overwritten_only_where_nothing_reads_it_again() -> None:
    from obert_train.pruning.obert import overwrite_gram

    base = ObertSettings(num_grads=64, fisher_block_size=50)
    assert overwrite_gram(base, gradual=True, cached=False)
    assert not overwrite_gram(base, gradual=False, cached=False)  # one-shot: joint update
    assert not overwrite_gram(base, gradual=True, cached=True)  # a cache reuses the Fisher
    for extra in (
        {"mode": "joint"},
        {"diagnostics": True},
        {"num_grads": 16},  # m < B: LowRankFisher
        {"fisher_method": "streaming"},
    ):
        assert not overwrite_gram(base.model_copy(update=extra), gradual=True, cached=False), extra
    assert overwrite_gram(
        base.model_copy(update={"mode": "superpose"}), gradual=False, cached=False
    )
