"""ZOTrainer: sparse MeZO-style zeroth-order fine-tuning on a tiny BERT (docs/math.md §9)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    BertForSequenceClassification,
    BertTokenizer,
    DataCollatorWithPadding,
    TrainingArguments,
)

from obert_train import (
    ArgumentError,
    ModelError,
    ModifierSpec,
    ObertPruningCallback,
    OptionError,
    ResumeError,
    TrainingError,
    build_recipe,
    resolve_target_params,
    zo_grasp_sparsities,
)
from obert_train.hf.zo import ZO_MOMENTUM_FILE, ZO_STATE_FILE, ZOSettings, ZOTrainer

from .conftest import NEGATIVE, POSITIVE, tiny_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _features(tokenizer: BertTokenizer) -> list[dict[str, Any]]:
    rows = [(s, 1) for s in POSITIVE] + [(s, 0) for s in NEGATIVE]
    return [{**tokenizer(s), "labels": y} for s, y in rows]


def _model(tokenizer: BertTokenizer) -> BertForSequenceClassification:
    torch.manual_seed(0)
    # a larger init than BERT's 0.02 gives the six sentences distinct features to separate
    config = tiny_config(
        len(tokenizer), num_labels=2, hidden_dropout_prob=0.0, initializer_range=0.3
    )
    return BertForSequenceClassification(config)


def _encoder_masks(model: torch.nn.Module, sparsity: float = 0.5) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {
        name: torch.rand(p.shape, generator=gen) >= sparsity
        for name, p in model.named_parameters()
        if ".encoder." in name and name.endswith(".weight") and p.dim() == 2
    }


def _args(out: Path, **kwargs: Any) -> TrainingArguments:
    base: dict[str, Any] = {
        "output_dir": str(out),
        "per_device_train_batch_size": 6,
        "learning_rate": 1e-3,
        "lr_scheduler_type": "constant",
        "max_steps": 120,
        "save_strategy": "no",
        "logging_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "seed": 0,
        "disable_tqdm": True,
    }
    base.update(kwargs)
    return TrainingArguments(**base)


def _trainer(
    tokenizer: BertTokenizer, out: Path, model: Any = None, *, zo: Any = None, **kwargs: Any
) -> ZOTrainer:
    model = model if model is not None else _model(tokenizer)
    masks = kwargs.pop("masks", None)
    callbacks = kwargs.pop("callbacks", None)
    return ZOTrainer(
        model=model,
        args=_args(out, **kwargs),
        train_dataset=_features(tokenizer),
        data_collator=DataCollatorWithPadding(tokenizer),
        zo=zo if zo is not None else ZOSettings(mu=1e-3, seed=3),
        masks=masks,
        callbacks=callbacks,
    )


@torch.no_grad()
def _full_loss(model: torch.nn.Module, tokenizer: BertTokenizer) -> float:
    model.eval()
    batch = DataCollatorWithPadding(tokenizer)(_features(tokenizer))
    return float(model(**batch).loss)


def test_sparse_zo_training_lowers_the_loss_and_keeps_pruned_weights_at_zero(
    tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    model = _model(tokenizer)
    masks = _encoder_masks(model)
    before_weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = _trainer(tokenizer, tmp_path, model, masks=masks)
    loss_before = _full_loss(model, tokenizer)
    trainer.train()
    loss_after = _full_loss(model, tokenizer)
    assert loss_after < 0.5 * loss_before, (loss_before, loss_after)
    named = dict(model.named_parameters())
    for name, mask in masks.items():
        p = named[name]
        assert torch.all(p[~mask] == 0), name  # pruned: exactly zero, never perturbed
        assert not torch.equal(p[mask], before_weights[name][mask]), name  # kept: trained
    # memory of inference: no gradient and no optimizer moment was ever allocated
    assert all(p.grad is None for p in model.parameters())
    assert trainer.optimizer is not None and not trainer.optimizer.state


def _gradient_sparsity(model: torch.nn.Module) -> dict[str, float]:
    return {n: 0.8 for n, p in model.named_parameters() if n.endswith(".weight") and p.dim() == 2}


def test_resume_from_a_checkpoint_is_bit_identical_to_the_uninterrupted_run(
    tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    common = {"max_steps": 8, "save_strategy": "steps", "save_steps": 4}
    sparse = _gradient_sparsity(_model(tokenizer))
    settings = ZOSettings(seed=5, num_directions=2, gradient_sparsity=sparse, mask_period=3)
    full = _trainer(tokenizer, tmp_path / "full", zo=settings, **common)
    model_full = full.model
    masks = _encoder_masks(model_full)
    full = _trainer(
        tokenizer,
        tmp_path / "full",
        model_full,
        zo=settings,
        masks=masks,
        **common,
    )
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-4"
    state = json.loads((checkpoint / ZO_STATE_FILE).read_text())
    assert state == {
        "mu": 1e-3,
        "num_directions": 2,
        "seed": 5,
        "gradient_sparsity": sparse,
        "mask_period": 3,
        "estimator": "spsa",
        "stages": None,
        "workers": 1,
        "momentum": 0.0,
        "step": 4,
    }

    model = _model(tokenizer)  # a fresh process: weights come from the checkpoint
    resumed = _trainer(
        tokenizer,
        tmp_path / "resumed",
        model,
        zo=settings,
        masks=_encoder_masks(model),
        **common,
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for (name, a), (_, b) in zip(
        model_full.named_parameters(), resumed.model.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name
    assert resumed.zo_losses == full.zo_losses[4:]


def test_resume_with_other_settings_or_a_non_zo_checkpoint_is_refused(
    tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    first = _trainer(tokenizer, tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    first.train()
    other = _trainer(tokenizer, tmp_path, zo=ZOSettings(mu=1e-3, seed=4), max_steps=4)
    with pytest.raises(ResumeError, match="trained with seed=3, this trainer has seed=4"):
        other.train(resume_from_checkpoint=True)
    (tmp_path / "checkpoint-2" / ZO_STATE_FILE).unlink()
    again = _trainer(tokenizer, tmp_path, max_steps=4)
    with pytest.raises(ResumeError, match="not written by a ZOTrainer"):
        again.train(resume_from_checkpoint=True)


def test_masks_follow_an_obert_pruning_callback(tokenizer: BertTokenizer, tmp_path: Path) -> None:
    recipe = build_recipe(
        [
            ModifierSpec.epoch_range(2.0),
            ModifierSpec.pruning(
                "magnitude",
                init_sparsity=0.5,
                final_sparsity=0.7,
                start_epoch=0.0,
                end_epoch=1.0,
                update_frequency=1.0,
            ),
        ]
    )
    callback = ObertPruningCallback(recipe, progress=False, log=lambda line: None)
    trainer = _trainer(tokenizer, tmp_path, callbacks=[callback], max_steps=4)
    trainer.train()
    assert callback.masks is not None
    assert callback.sparsity() == pytest.approx(0.7, abs=0.01)
    for name, mask in callback.masks.items():
        p = callback.masks.params[name]
        assert torch.all(p.reshape(-1)[~mask] == 0), name


def test_bad_settings_are_named(tokenizer: BertTokenizer, tmp_path: Path) -> None:
    for mu in (0.0, -1e-3, float("nan"), float("inf")):
        with pytest.raises(OptionError, match="ZOSettings: mu must be finite and > 0"):
            ZOSettings(mu=mu)
    with pytest.raises(ArgumentError, match="ZOSettings: mu='1e-3' must be a positive number"):
        ZOSettings(mu="1e-3")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="num_directions=0 must be an integer >= 1"):
        ZOSettings(num_directions=0)
    with pytest.raises(OptionError, match="seed=-1 must be an integer >= 0"):
        ZOSettings(seed=-1)
    with pytest.raises(OptionError, match="mask_period=0 must be an integer >= 1"):
        ZOSettings(mask_period=0)
    with pytest.raises(OptionError, match="estimator must be one of 'spsa', 'cge', got 'rge'"):
        ZOSettings(estimator="rge")
    with pytest.raises(ArgumentError, match="stages must be a sequence of module names"):
        ZOSettings(estimator="cge", stages="bert.embeddings")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match=r"gradient_sparsity\['w'\] must be in \[0, 1\)"):
        ZOSettings(gradient_sparsity={"w": 1.0})
    with pytest.raises(ModelError, match=r"gradient_sparsity names \['w'\]"):
        _trainer(tokenizer, tmp_path, zo=ZOSettings(gradient_sparsity={"w": 0.5}))
    with pytest.raises(OptionError, match="gradient_accumulation_steps=2"):
        _trainer(tokenizer, tmp_path, gradient_accumulation_steps=2)
    model = _model(tokenizer)
    with pytest.raises(ModelError, match=r"'encoder\.nope\.weight', which is not a parameter"):
        _trainer(tokenizer, tmp_path, model, masks={"encoder.nope.weight": torch.ones(3) > 0})
    name = "bert.encoder.layer.0.attention.self.query.weight"
    with pytest.raises(ModelError, match="has 3 entries, the parameter 1024"):
        _trainer(tokenizer, tmp_path, model, masks={name: torch.ones(3) > 0})
    with pytest.raises(ModelError, match="must be a boolean tensor"):
        _trainer(tokenizer, tmp_path, model, masks={name: torch.ones(32, 32)})
    callback = ObertPruningCallback(build_recipe([ModifierSpec.epoch_range(1.0)]))
    with pytest.raises(ArgumentError, match="not both"):
        _trainer(
            tokenizer, tmp_path, model, masks={name: torch.ones(32, 32) > 0}, callbacks=[callback]
        )
    with pytest.raises(ArgumentError, match="zo must be a ZOSettings"):
        _trainer(tokenizer, tmp_path, zo={"mu": 1e-3})


def test_a_non_finite_loss_stops_the_run_naming_the_step(
    tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    model = _model(tokenizer)
    trainer = _trainer(tokenizer, tmp_path, model, max_steps=3)
    with torch.no_grad():
        model.classifier.bias.fill_(float("nan"))
    with pytest.raises(
        TrainingError, match=r"non-finite ZO loss \(nan\) at θ \+ μz of optimizer step 0"
    ):
        trainer.train()


def test_sparse_gradients_move_only_the_period_random_coordinates(
    tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    model = _model(tokenizer)
    sparse = _gradient_sparsity(model)
    name = "bert.encoder.layer.1.output.dense.weight"
    settings = ZOSettings(seed=2, gradient_sparsity=sparse, mask_period=2)
    snapshots = []
    for steps in (0, 2, 4):
        fresh = _model(tokenizer)
        if steps:
            _trainer(tokenizer, tmp_path, fresh, zo=settings, max_steps=steps).train()
        snapshots.append(dict(fresh.named_parameters())[name].detach().clone())
    first = snapshots[1] != snapshots[0]  # moved during steps 0-1 (period 0)
    second = snapshots[2] != snapshots[1]  # moved during steps 2-3 (period 1)
    for moved in (first, second):
        assert 0.1 < moved.float().mean() < 0.3  # 80 % of the coordinates stay frozen
    assert not torch.equal(first, second)  # a fresh random mask per period
    bias = "bert.encoder.layer.1.output.dense.bias"
    trained = _model(tokenizer)
    _trainer(tokenizer, tmp_path, trained, zo=settings, max_steps=1).train()
    assert bool(
        (dict(trained.named_parameters())[bias] != dict(model.named_parameters())[bias]).all()
    )


def test_zo_grasp_sparsities_meet_the_budget_and_restore_the_weights(
    tokenizer: BertTokenizer,
) -> None:
    model = _model(tokenizer)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = DataCollatorWithPadding(tokenizer)(_features(tokenizer))
    ratios = zo_grasp_sparsities(model, batch, 0.8, q=8, seed=1)
    targets = resolve_target_params(model)
    assert list(ratios) == list(targets)
    total = sum(ratios[n] * p.numel() for n, p in targets.items())
    assert total == pytest.approx(0.8 * sum(p.numel() for p in targets.values()), abs=1)
    assert len(set(ratios.values())) > 1  # the global ranking gives layers different ratios
    assert ratios == zo_grasp_sparsities(model, batch, 0.8, q=8, seed=1)
    with pytest.raises(ArgumentError, match=r"zo_grasp_sparsities: sparsity='0\.8' must be"):
        zo_grasp_sparsities(model, batch, "0.8")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match=r"zo_grasp_sparsities: sparsity=1\.0 is outside"):
        zo_grasp_sparsities(model, batch, 1.0)
    with pytest.raises(OptionError, match="zo_grasp_sparsities: q=0 must be an integer >= 1"):
        zo_grasp_sparsities(model, batch, 0.5, q=0)
    assert model.training
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_cge_step_with_feature_reuse_is_sgd_on_the_autograd_gradient(
    tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    """DeepZero's CGE training step: reuse = full reruns (bit for bit) = autograd to O(μ)."""
    sparse = {
        n: 0.97
        for n, p in _model(tokenizer).named_parameters()
        if p.dim() == 2 and (".encoder." in n or n.startswith("classifier"))
    }
    layer = "bert.encoder.layer.1.intermediate.dense.weight"
    results = []
    for stages in (None, ()):
        model = _model(tokenizer).double()
        keep = {layer: torch.arange(2048).reshape(64, 32) % 2 == 0}
        calls = [0]

        def count(*_: Any, calls: list[int] = calls) -> None:
            calls[0] += 1

        model.bert.encoder.layer[0].attention.register_forward_hook(count)
        settings = ZOSettings(
            mu=1e-6, seed=4, estimator="cge", gradient_sparsity=sparse, stages=stages
        )
        trainer = _trainer(
            tokenizer,
            tmp_path,
            model,
            zo=settings,
            masks=keep,
            max_steps=1,
            learning_rate=1.0,
            max_grad_norm=0.0,  # the step is η·ĝ itself, not clipped
        )
        before = {n: p.detach().clone() for n, p in model.named_parameters()}  # masks applied
        trainer.train()
        assert trainer._random_masks is not None
        random = trainer._random_masks[1]
        plan = {
            n: int((random[n] & keep.get(n, torch.tensor(True))).sum())
            if n in random
            else (p.numel() if p.dim() == 1 else 0)
            for n, p in model.named_parameters()
        }
        results.append((model, before, calls[0], plan))
    (reused, before, calls_reused, plan), (full, _, calls_full, _) = results
    for (name, a), (_, b) in zip(reused.named_parameters(), full.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    first_two = sum(v for n, v in plan.items() if ".embeddings." in n or ".layer.0." in n)
    assert calls_full == 1 + sum(plan.values())  # one forward per coordinate, plus θ
    assert calls_reused == 1 + first_two  # later coordinates replay layer 0's output

    model = _model(tokenizer).double()
    with torch.no_grad():
        model.get_parameter(layer).mul_(keep_mask := (torch.arange(2048).reshape(64, 32) % 2 == 0))
    model.eval()
    batch = DataCollatorWithPadding(tokenizer)(_features(tokenizer))
    model(**batch).loss.backward()
    moved_any = False
    for name, p in reused.named_parameters():
        step = before[name] - p.detach()  # = η ĝ on the moved coordinates, 0 elsewhere
        grad = model.get_parameter(name).grad
        assert grad is not None
        moved = step != 0
        moved_any |= bool(moved.any())
        torch.testing.assert_close(step[moved], grad[moved], rtol=1e-3, atol=1e-5)
        if name == layer:
            assert torch.all(p[~keep_mask] == 0)  # pruned: exactly zero
        if p.dim() == 2 and name not in sparse and name != layer:
            assert not moved.any(), name  # 2-D without a mask: frozen under CGE
        if p.dim() == 1:
            assert moved.float().mean() > 0.5, name  # biases and LayerNorm: every coordinate
    assert moved_any


def test_cge_training_resumes_bit_identically(tokenizer: BertTokenizer, tmp_path: Path) -> None:
    def head_only(model: torch.nn.Module) -> torch.nn.Module:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(("classifier", "bert.pooler")))
        return model

    sparse = {"bert.pooler.dense.weight": 0.9, "classifier.weight": 0.5}
    settings = ZOSettings(estimator="cge", seed=1, gradient_sparsity=sparse, mask_period=2)
    common = {"max_steps": 4, "save_strategy": "steps", "save_steps": 1, "learning_rate": 0.5}
    full = _trainer(
        tokenizer, tmp_path / "full", head_only(_model(tokenizer)), zo=settings, **common
    )
    full.train()
    resumed = _trainer(
        tokenizer, tmp_path / "resumed", head_only(_model(tokenizer)), zo=settings, **common
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-3"))
    for (name, a), (_, b) in zip(
        full.model.named_parameters(), resumed.model.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name
    assert resumed.zo_losses == full.zo_losses[3:]
    assert full.zo_losses[-1] < full.zo_losses[0]


def test_a_checkpoint_written_before_the_estimator_setting_resumes(
    tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    """A ``zo_state.json`` without the later keys (``estimator``, ``stages``) reads as defaults."""
    first = _trainer(tokenizer, tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    first.train()
    state = tmp_path / "checkpoint-2" / ZO_STATE_FILE
    saved = json.loads(state.read_text(encoding="utf-8"))
    for key in ("estimator", "stages"):
        saved.pop(key, None)
    state.write_text(json.dumps(saved), encoding="utf-8")
    again = _trainer(tokenizer, tmp_path, max_steps=3)
    again.train(resume_from_checkpoint=True)
    assert again.state.global_step == 3


def test_cge_weight_decay_leaves_the_frozen_matrices_alone(
    tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    """With CGE, a trainable matrix without a mask is frozen: weight decay does not shrink it."""
    model = _model(tokenizer)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(("classifier", "bert.pooler")))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    settings = ZOSettings(estimator="cge", seed=1, gradient_sparsity={"classifier.weight": 0.5})
    trainer = _trainer(
        tokenizer, tmp_path, model, zo=settings, max_steps=2, learning_rate=0.5, weight_decay=0.1
    )
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert torch.equal(after["bert.pooler.dense.weight"], before["bert.pooler.dense.weight"])
    assert not torch.equal(after["classifier.weight"], before["classifier.weight"])


# ---------------------------------------------------------------------- CGE momentum (Z-7)


def _head_only(model: torch.nn.Module) -> torch.nn.Module:
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(("classifier", "bert.pooler")))
    return model


class _Recording(ZOTrainer):
    """A ZOTrainer that records the gradients its momentum step is fed (the CGE estimate)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fed: list[dict[str, torch.Tensor]] = []

    def _momentum_step(self, grads: Any, lr: float) -> None:
        self.fed.append({n: g.clone() for n, g in grads.items()})
        super()._momentum_step(grads, lr)


_SPARSE_HEAD = {"bert.pooler.dense.weight": 0.9, "classifier.weight": 0.5}


def test_cge_momentum_is_torch_sgd_fed_the_cge_estimate(
    tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    """Oracle: the same CGE estimates through ``torch.optim.SGD`` give the same weights, bit for
    bit (momentum 0.9, weight decay on the matrices, a keep-mask whose zeros stay 0)."""
    lr, beta, wd = 0.5, 0.9, 0.05
    keep = {"classifier.weight": torch.tensor([[True] * 16 + [False] * 16] * 2)}
    model = _head_only(_model(tokenizer))
    oracle = _head_only(_model(tokenizer))
    with torch.no_grad():
        oracle.classifier.weight.mul_(keep["classifier.weight"])
    settings = ZOSettings(
        estimator="cge", seed=1, gradient_sparsity=_SPARSE_HEAD, mask_period=2, momentum=beta
    )
    trainer = _Recording(
        model=model,
        args=_args(tmp_path, max_steps=5, learning_rate=lr, weight_decay=wd, max_grad_norm=0.0),
        train_dataset=_features(tokenizer),
        data_collator=DataCollatorWithPadding(tokenizer),
        zo=settings,
        masks=keep,
    )
    trainer.train()
    assert len(trainer.fed) == 5
    named = dict(oracle.named_parameters())
    moving = list(trainer.fed[0])
    assert "bert.pooler.dense.bias" in moving and "classifier.weight" in moving
    assert "bert.encoder.layer.0.output.dense.weight" not in moving  # frozen: requires_grad off
    sgd = torch.optim.SGD(
        [
            {"params": [named[n] for n in moving if named[n].dim() >= 2], "weight_decay": wd},
            {"params": [named[n] for n in moving if named[n].dim() < 2], "weight_decay": 0.0},
        ],
        lr=lr,
        momentum=beta,
    )
    for grads in trainer.fed:
        for n in moving:
            named[n].grad = grads[n]
        sgd.step()
    for (name, a), (_, b) in zip(model.named_parameters(), oracle.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    weight = model.classifier.weight
    assert torch.all(weight[~keep["classifier.weight"]] == 0)  # pruned: stays exactly 0
    # the estimate is 0 off the period's random mask (90 % of the pooler), the step is not:
    # the buffer and the decay move every coordinate of a matrix that has a mask
    fed = trainer.fed[-1]["bert.pooler.dense.weight"]
    assert 0.02 < float((fed != 0).float().mean()) < 0.2
    assert not torch.equal(
        model.bert.pooler.dense.weight, _model(tokenizer).bert.pooler.dense.weight
    )


def test_cge_momentum_resumes_bit_identically_and_refuses_other_settings(
    tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    settings = ZOSettings(
        estimator="cge", seed=1, gradient_sparsity=_SPARSE_HEAD, mask_period=2, momentum=0.9
    )
    common = {
        "max_steps": 5,
        "save_strategy": "steps",
        "save_steps": 1,
        "learning_rate": 0.5,
        "weight_decay": 0.05,
    }
    full = _trainer(
        tokenizer, tmp_path / "full", _head_only(_model(tokenizer)), zo=settings, **common
    )
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-3"
    assert (checkpoint / ZO_MOMENTUM_FILE).is_file()
    assert json.loads((checkpoint / ZO_STATE_FILE).read_text())["momentum"] == 0.9
    resumed = _trainer(
        tokenizer, tmp_path / "resumed", _head_only(_model(tokenizer)), zo=settings, **common
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for (name, a), (_, b) in zip(
        full.model.named_parameters(), resumed.model.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name
    assert resumed.zo_losses == full.zo_losses[3:]
    other = _trainer(
        tokenizer,
        tmp_path / "other",
        _head_only(_model(tokenizer)),
        zo=dataclasses.replace(settings, momentum=0.5),
        **common,
    )
    with pytest.raises(ResumeError, match=r"trained with momentum=0\.9, this trainer has "):
        other.train(resume_from_checkpoint=str(checkpoint))
    (checkpoint / ZO_MOMENTUM_FILE).unlink()
    again = _trainer(
        tokenizer, tmp_path / "again", _head_only(_model(tokenizer)), zo=settings, **common
    )
    with pytest.raises(ResumeError, match=f"has no {ZO_MOMENTUM_FILE}"):
        again.train(resume_from_checkpoint=str(checkpoint))


@pytest.mark.parametrize("beta", [-0.1, 1.0, 1.5, float("nan"), float("inf")])
def test_bad_momentum_is_named(beta: float) -> None:
    with pytest.raises(OptionError, match=rf"ZOSettings: momentum must be in \[0, 1\).*got {beta}"):
        ZOSettings(estimator="cge", momentum=beta)


def test_momentum_needs_cge_and_a_number() -> None:
    with pytest.raises(OptionError, match=r"momentum=0\.9 needs estimator='cge'; estimator='spsa'"):
        ZOSettings(momentum=0.9)
    with pytest.raises(ArgumentError, match=r"ZOSettings: momentum='0\.9' must be a number"):
        ZOSettings(estimator="cge", momentum="0.9")  # type: ignore[arg-type]
    assert ZOSettings(estimator="cge", momentum=0).momentum == 0.0


# ---------------------------------------------------------------------- max_grad_norm


def _one_step(
    tokenizer: BertTokenizer, out: Path, zo: ZOSettings, **kwargs: Any
) -> tuple[ZOTrainer, dict[str, torch.Tensor]]:
    """One logged ZO step from the same float64 weights: the trainer and each tensor's update."""
    model = _head_only(_model(tokenizer).double())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = _trainer(tokenizer, out, model, zo=zo, max_steps=1, logging_steps=1,
                       logging_strategy="steps", **kwargs)  # fmt: skip
    trainer.train()
    return trainer, {n: before[n] - p.detach() for n, p in model.named_parameters()}


def _logged_grad_norm(trainer: ZOTrainer) -> float:
    return float(next(h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h))


def test_cge_clips_the_estimate_to_max_grad_norm_and_logs_the_pre_clip_norm(
    tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    cge = ZOSettings(estimator="cge", seed=1, gradient_sparsity=_SPARSE_HEAD)
    lr = 0.5
    free, step = _one_step(tokenizer, tmp_path / "a", cge, learning_rate=lr, max_grad_norm=0.0)
    # float64 reference: the pre-clip norm is that of the estimate, the update over η
    norm = float(torch.cat([(d.double() / lr).reshape(-1) for d in step.values()]).norm())
    assert free.zo_grad_norms[0] == pytest.approx(norm, rel=1e-5)
    assert _logged_grad_norm(free) == pytest.approx(norm, rel=1e-6)
    limit = norm / 4
    clipped, small = _one_step(
        tokenizer, tmp_path / "b", cge, learning_rate=lr, max_grad_norm=limit
    )
    assert clipped.zo_grad_norms[0] == free.zo_grad_norms[0]  # logged before clipping
    assert _logged_grad_norm(clipped) == pytest.approx(norm, rel=1e-6)
    for name, d in step.items():
        torch.testing.assert_close(small[name], d * (limit / (norm + 1e-6)), rtol=1e-9, atol=1e-15)
    _, same = _one_step(tokenizer, tmp_path / "c", cge, learning_rate=lr, max_grad_norm=2 * norm)
    for name, d in step.items():
        assert torch.equal(same[name], d), name  # under the limit: not touched


def test_spsa_logs_the_estimate_norm_and_does_not_clip(
    tokenizer: BertTokenizer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spsa = ZOSettings(mu=1e-3, seed=3)
    lr = 1e-3
    free, step = _one_step(tokenizer, tmp_path / "a", spsa, learning_rate=lr, max_grad_norm=0.0)
    # q = 1: the update is η·ĝ·z, so ‖update‖ / η = |ĝ|·‖z‖
    norm = float(torch.cat([(d.double() / lr).reshape(-1) for d in step.values()]).norm())
    assert free.zo_grad_norms[0] == pytest.approx(norm, rel=1e-3)
    assert _logged_grad_norm(free) == free.zo_grad_norms[0]
    with caplog.at_level("WARNING", logger="obert_train"):
        clipped, same = _one_step(
            tokenizer, tmp_path / "b", spsa, learning_rate=lr, max_grad_norm=norm / 100
        )
    assert "is not applied to SPSA steps" in caplog.text
    for name, d in step.items():
        assert torch.equal(same[name], d), name
    assert clipped.zo_grad_norms == free.zo_grad_norms
