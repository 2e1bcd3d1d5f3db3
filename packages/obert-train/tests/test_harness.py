"""The gradual-pruning harness on the Hugging Face Trainer: callback, KD, LR, resume, bad input."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from obert_train import (
    ObertPruningCallback,
    ObertTrainer,
    RecipeError,
    ResumeError,
    RunOptions,
    TrainingError,
    distillation_loss,
    load_recipe,
    load_task,
    resolve_target_params,
    run_recipe,
)
from obert_train.errors import ObertTrainError
from obert_train.hf.distillation import kd_divergence
from obert_train.pruning import obert as obert_module

WORKER = Path(__file__).with_name("run_worker.py")

# 36 training rows, batch 4: 9 optimizer steps per epoch.
GMP = """
modifiers:
  - !EpochRangeModifier
    start_epoch: 0
    end_epoch: 3
pruning_modifiers:
  - !GMPruningModifier
    params: ["re:bert.encoder.layer.*.attention.self.query.weight",
             "re:bert.encoder.layer.*.intermediate.dense.weight",]
    init_sparsity: 0.3
    final_sparsity: 0.7
    start_epoch: 0.5
    end_epoch: 2
    update_frequency: 0.5
    inter_func: cubic
    global_sparsity: True
"""

OBS = """
modifiers:
  - !EpochRangeModifier
    start_epoch: 0
    end_epoch: 3
training_modifiers:
  - !LearningRateFunctionModifier
    start_epoch: 0.0
    end_epoch: 1.0
    lr_func: linear
    init_lr: 2e-3
    final_lr: 2e-4
  - !LearningRateFunctionModifier
    start_epoch: 1.0
    end_epoch: 3.0
    lr_func: cyclic_linear
    cycle_epochs: 1.0
    init_lr: 2e-3
    final_lr: 2e-4
  - !OBSPruningModifier
    params: ["re:bert.encoder.layer.*.attention.self.query.weight",
             "re:bert.encoder.layer.*.attention.self.key.weight",
             "re:bert.encoder.layer.*.intermediate.dense.weight",
             "re:bert.encoder.layer.*.output.dense.weight",]
    init_sparsity: 0.3
    final_sparsity: 0.6
    start_epoch: 1
    end_epoch: 2
    update_frequency: 0.5
    inter_func: cubic
    global_sparsity: True
    mask_type: unstructured
    num_grads: 4
    damp: 1e-4
    fisher_block_size: 16
    grad_sampler_kwargs:
      batch_size: 4
distillation_modifiers:
  - !DistillationModifier
     hardness: 0.5
     temperature: 2.0
     distill_output_keys: [logits]
"""


def _targets(model: torch.nn.Module, recipe_text: str) -> dict[str, torch.nn.Parameter]:
    recipe = load_recipe(recipe_text)
    out: dict[str, torch.nn.Parameter] = {}
    for modifier in recipe.pruning:
        out.update(resolve_target_params(model, modifier.settings.targets))
    return out


class _Spy(TrainerCallback):
    """Records, after every optimizer step, which target weights are zero."""

    def __init__(self, params: dict[str, torch.nn.Parameter]) -> None:
        self.params = params
        self.zeros: list[dict[str, torch.Tensor]] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.zeros.append({n: (p.detach() == 0).clone() for n, p in self.params.items()})


def test_callback_runs_a_recipe_in_a_plain_trainer(
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
    tmp_path: Path,
) -> None:
    """GMP in the user's own Trainer: exact final sparsity, zeros kept through AdamW weight decay
    and clipping, masks never regrow, pruning at the scheduled optimizer steps."""
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    params = _targets(tiny_bert, GMP)
    spy = _Spy(params)
    callback = ObertPruningCallback(
        GMP, train_dataset=task.train_features, data_collator=task.collate, progress=False,
        log=lambda _line: None,
    )  # fmt: skip
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=3, per_device_train_batch_size=4,
        learning_rate=5e-3, weight_decay=0.1, max_grad_norm=0.5, save_strategy="no",
        report_to="none", disable_tqdm=True, use_cpu=True, seed=1, remove_unused_columns=False,
    )  # fmt: skip
    trainer = Trainer(
        model=tiny_bert, args=args, train_dataset=task.train_features,
        data_collator=task.collate, callbacks=[callback, spy],
    )  # fmt: skip
    trainer.train()
    assert callback.steps_per_epoch == 9
    # epochs 0.5, 1, 1.5, 2 at 9 steps per epoch; half steps round up (4.5 -> 5)
    assert [r["step"] for r in callback.history] == [5, 9, 14, 18]
    expected = [0.3 + (0.7 - 0.3) * (1 - (1 - x) ** 3) for x in (0.0, 1 / 3, 2 / 3, 1.0)]
    assert [r["target_sparsity"] for r in callback.history] == pytest.approx(expected)
    total = sum(p.numel() for p in params.values())
    zeros = sum(int((p.detach() == 0).sum()) for p in params.values())
    assert zeros == round(0.7 * total)
    for before, after in zip(spy.zeros, spy.zeros[1:], strict=False):
        for name in params:
            assert bool((before[name] & ~after[name]).sum() == 0), "a pruned weight regrew"
    assert callback.masks is not None
    for name, p in params.items():
        assert torch.equal(p.detach() != 0, callback.masks[name].view_as(p))


def test_obert_trainer_prunes_distils_and_follows_the_recipe_lr(
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    out = tmp_path / "run"
    teacher = AutoModelForSequenceClassification.from_config(tiny_bert.config)
    teacher.load_state_dict(tiny_bert.state_dict())
    recipe = load_recipe(OBS)
    kinds: list[bool] = []
    updated = obert_module._updated

    def spy(*args: Any) -> Any:
        kinds.append(args[-1].gradual)  # the step's StepContext
        return updated(*args)

    monkeypatch.setattr(obert_module, "_updated", spy)
    result = run_recipe(
        recipe, tiny_bert, task, out, model_name="tiny", tokenizer=tokenizer, teacher=teacher,
        options=RunOptions(batch_size=4, seed=3, logging_steps=1, progress=False),
        log=lambda _line: None,
    )  # fmt: skip
    assert kinds == [True, True, True]  # the recipe's steps are gradual (default update)
    steps = [r["step"] for r in result.pruning_steps]
    assert steps == [9, 14, 18]  # epochs 1, 1.5, 2 at 9 steps per epoch (13.5 rounds up to 14)
    assert result.pruning_steps[-1]["target_sparsity"] == pytest.approx(0.6)
    assert result.sparsity == pytest.approx(0.6, abs=1e-3)
    history = json.loads((out / "log_history.json").read_text())
    lrs = {e["step"]: e["learning_rate"] for e in history if "learning_rate" in e}
    assert lrs, "no learning rates were logged"
    for step, lr in lrs.items():  # the LR logged at step g is the one used by step g - 1
        assert lr == pytest.approx(recipe.lr_at(step - 1, 9), rel=1e-6)
    assert lrs[10] == pytest.approx(2e-3)  # cyclic rewind at epoch 1 (optimizer step 9)
    pruned = [e for e in history if "pruning_step" in e]
    assert [e["pruning_step"] for e in pruned] == [1.0, 2.0, 3.0]
    assert all(e["pruning_seconds"] > 0 and "pruning_gradients_s" in e for e in pruned)
    assert "pruning_seconds" in (out / "train_log.csv").read_text().splitlines()[0].split(",")
    parts = [e for e in history if "kd_loss" in e]
    assert parts and all("task_loss" in e and "sparsity" in e for e in parts)
    assert {"model.safetensors", "recipe.yaml", "sparsity.json", "metrics.json"} <= {
        p.name for p in out.iterdir()
    }
    reloaded = AutoModelForSequenceClassification.from_pretrained(out)
    for name, p in resolve_target_params(reloaded, recipe.pruning[0].settings.targets).items():
        assert torch.equal(p != 0, dict(tiny_bert.named_parameters())[name].detach() != 0)
    again = load_recipe(str(out / "recipe.yaml"))
    assert again.fingerprint() == recipe.fingerprint()
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["metrics"]["accuracy"] <= 1.0
    assert [
        json.loads(line)["step"] for line in (out / "pruning_log.jsonl").read_text().splitlines()
    ] == steps


def test_kd_loss_matches_a_hand_computation() -> None:
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[0.5, 2.5, 0.0], [1.0, -1.0, 2.0]])
    t = 2.0
    by_hand = 0.0
    for s_row, t_row in zip(student, teacher, strict=True):
        p = torch.softmax(t_row / t, -1)
        q = torch.softmax(s_row / t, -1)
        by_hand += float((p * (p.log() - q.log())).sum())
    by_hand = by_hand / 2 * t**2
    assert float(kd_divergence(student, teacher, t)) == pytest.approx(by_hand, rel=1e-6)
    assert float(kd_divergence(student, student, t)) == pytest.approx(0.0, abs=1e-7)
    task = torch.tensor(0.7)
    loss, _kd = distillation_loss(
        {"logits": student}, {"logits": teacher}, task_loss=task, hardness=0.25, temperature=t,
        output_keys=["logits"],
    )  # fmt: skip
    assert float(loss) == pytest.approx(0.75 * 0.7 + 0.25 * by_hand, rel=1e-6)
    hard, _ = distillation_loss(
        {"logits": student}, {"logits": teacher}, task_loss=task, hardness=0.0, temperature=t,
        output_keys=["logits"],
    )  # fmt: skip
    assert float(hard) == pytest.approx(0.7)
    with pytest.raises(TrainingError, match=r"shape \(2, 3\).*\(2, 2\)"):
        kd_divergence(student, teacher[:, :2], t)
    with pytest.raises(TrainingError, match="no 'start_logits'"):
        distillation_loss(
            {"logits": student}, {"logits": teacher}, task_loss=task, hardness=1.0,
            temperature=t, output_keys=["start_logits"],
        )  # fmt: skip


def test_output_dir_is_refused_when_not_empty_and_resume_of_another_recipe(
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
    tmp_path: Path,
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    out = tmp_path / "busy"
    out.mkdir()
    (out / "NOTES.txt").write_text("keep me")
    opts = RunOptions(batch_size=4, progress=False, evaluate=False)
    with pytest.raises(ObertTrainError, match=r"not empty.*NOTES\.txt.*--resume.*--overwrite"):
        run_recipe(load_recipe(GMP), tiny_bert, task, out, options=opts, log=lambda _l: None)
    assert (out / "NOTES.txt").read_text() == "keep me"
    run_recipe(
        load_recipe(GMP), tiny_bert, task, out, options=opts, overwrite=True,
        model_name="tiny", log=lambda _l: None,
    )  # fmt: skip
    assert (out / "NOTES.txt").read_text() == "keep me"  # --overwrite keeps what we did not write
    with pytest.raises(ResumeError, match="recipe"):
        run_recipe(
            load_recipe(GMP, {"final_sparsity": 0.8}), tiny_bert, task, out,
            options=opts, resume=True, model_name="tiny", log=lambda _l: None,
        )  # fmt: skip
    with pytest.raises(ResumeError, match=r"model 'tiny'.*'other'"):
        run_recipe(
            load_recipe(GMP), tiny_bert, task, out, options=opts, resume=True,
            model_name="other", log=lambda _l: None,
        )  # fmt: skip


def test_save_checkpoints_false_writes_no_checkpoint_even_at_the_last_step(
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
    tmp_path: Path,
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    short = {"num_epochs": 1, "GMPruningModifier.start_epoch": 0.0}
    recipe = load_recipe(GMP, {**short, "GMPruningModifier.end_epoch": 0.5})
    fresh = copy.deepcopy(tiny_bert)
    kept = tmp_path / "kept"
    opts = RunOptions(batch_size=4, progress=False, evaluate=False, save_steps=10**9)
    run_recipe(recipe, tiny_bert, task, kept, options=opts, log=lambda _l: None)
    # A save_steps that never comes still saves at the final step (the Trainer's default flow).
    assert [p.name for p in kept.glob("checkpoint-*")] == ["checkpoint-9"]
    none = tmp_path / "none"
    opts = RunOptions(batch_size=4, progress=False, evaluate=False, save_checkpoints=False)
    run_recipe(recipe, fresh, task, none, options=opts, log=lambda _l: None)
    assert not list(none.glob("checkpoint-*"))
    assert (none / "model.safetensors").is_file() and (none / "sparsity.json").is_file()
    assert json.loads((none / "run.json").read_text())["options"]["save_checkpoints"] is False


def test_teacher_with_another_head_is_refused_before_training(
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
    tmp_path: Path,
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    config = tiny_bert.config.__class__(**{**tiny_bert.config.to_dict(), "num_labels": 3})
    teacher = BertForSequenceClassification(config)
    with pytest.raises(TrainingError, match=r"teacher output 'logits' has shape \(2, 3\)"):
        run_recipe(
            load_recipe(OBS), tiny_bert, task, tmp_path / "out", teacher=teacher,
            options=RunOptions(batch_size=4, progress=False), log=lambda _l: None,
        )  # fmt: skip
    with pytest.raises(TrainingError, match="no teacher"):
        run_recipe(
            load_recipe(OBS), tiny_bert, task, tmp_path / "out2",
            options=RunOptions(batch_size=4, progress=False), log=lambda _l: None,
        )  # fmt: skip


def test_non_finite_loss_stops_with_the_step_and_writes_no_model(
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
    tmp_path: Path,
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    calls = {"train": 0}

    def nan_from_the_third_step(module: torch.nn.Module, args: Any, output: Any) -> Any:
        # The weights are finite (checked up front); the loss goes non-finite in training.
        if module.training:
            calls["train"] += 1
            if calls["train"] > 2:
                return output * math.nan
        return None

    tiny_bert.classifier.register_forward_hook(nan_from_the_third_step)
    out = tmp_path / "nan"
    with pytest.raises(TrainingError, match=r"non-finite training loss.*optimizer step 2"):
        run_recipe(
            load_recipe(GMP), tiny_bert, task, out,
            options=RunOptions(batch_size=4, progress=False), log=lambda _l: None,
        )  # fmt: skip
    assert not (out / "model.safetensors").exists()


def _worker(model: Path, data: Path, out: Path, recipe: Path, *extra: str) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, str(WORKER), str(model), str(data), str(out), str(recipe), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode not in (0, -9):
        raise AssertionError(proc.stderr[-6000:])
    return proc.returncode


def _final_state(out: Path) -> dict[str, torch.Tensor]:
    model = AutoModelForSequenceClassification.from_pretrained(out)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill", "label"),
    [
        (["--kill-step", "11"], "between pruning steps (after the checkpoint at step 10)"),
        (["--kill-grad", "6"], "during the second pruning step's gradient collection"),
    ],
)
def test_sigkill_then_resume_gives_the_uninterrupted_masks_and_weights(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path, kill: list[str], label: str
) -> None:
    recipe = tmp_path / "obs.yaml"
    recipe.write_text(OBS)
    reference = tmp_path / "reference"
    assert _worker(tiny_model_dir, sst2_dir, reference, recipe) == 0
    out = tmp_path / "killed"
    assert _worker(tiny_model_dir, sst2_dir, out, recipe, *kill) == -9, label
    assert not (out / "model.safetensors").exists()
    assert _worker(tiny_model_dir, sst2_dir, out, recipe, "--resume") == 0
    want, got = _final_state(reference), _final_state(out)
    assert set(want) == set(got)
    for name in want:
        assert torch.equal(want[name], got[name]), f"{name} differs after resume ({label})"
    resumed = json.loads((out / "metrics.json").read_text())["resumed_from"]
    assert resumed is not None and "checkpoint-" in resumed
    # Steps replayed after the checkpoint are not logged twice.
    pruning = [json.loads(x) for x in (out / "pruning_log.jsonl").read_text().splitlines()]
    assert [r["index"] for r in pruning] == [0, 1, 2]

    def logged(folder: Path) -> list[int]:
        lines = (folder / "train_log.jsonl").read_text().splitlines()
        return [json.loads(x)["step"] for x in lines]

    assert logged(out) == logged(reference), "train_log.jsonl differs after the resume"


@pytest.mark.slow
@pytest.mark.distributed
def test_run_under_torchrun_with_two_gloo_ranks(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    """`torchrun --nproc-per-node 2 -m obert_train run`: the Fisher work is sharded, every rank
    ends with the same masks (checked by the callback after each step), one final model."""
    recipe = tmp_path / "obs.yaml"
    recipe.write_text(OBS)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "obert_train", "run", str(recipe), "--model", str(tiny_model_dir),
        "--teacher", str(tiny_model_dir), "--task", "sst2", "--data-dir", str(sst2_dir),
        "--output-dir", str(out), "--batch-size", "2", "--no-progress", "--no-eval",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-6000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["pruning_steps"]) == 3
    assert metrics["sparsity"] == pytest.approx(0.6, abs=1e-3)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    recipe_obj = load_recipe(OBS)
    params = resolve_target_params(model, recipe_obj.pruning[0].settings.targets)
    zeros = sum(int((p == 0).sum()) for p in params.values())
    assert zeros == round(0.6 * sum(p.numel() for p in params.values()))


def test_gradient_accumulation_equals_the_larger_batch(
    tokenizer: BertTokenizer, sst2_dir: Path, tmp_path: Path
) -> None:
    """Batch 2 x 2 accumulation steps trains like batch 4 (loss divided by the steps), and the
    pruning steps land on the same optimizer steps."""
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    finals = []
    for batch, accum in ((4, 1), (2, 2)):
        torch.manual_seed(0)
        model = BertForSequenceClassification(config)
        callback = ObertPruningCallback(
            GMP, train_dataset=task.train_features, data_collator=task.collate, progress=False,
            log=lambda _line: None,
        )  # fmt: skip
        args = TrainingArguments(
            output_dir=str(tmp_path / f"ga{accum}"), num_train_epochs=3,
            per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
            learning_rate=1e-3, save_strategy="no", report_to="none", disable_tqdm=True,
            use_cpu=True, seed=1, remove_unused_columns=False,
        )  # fmt: skip
        trainer = ObertTrainer(
            model=model, args=args, train_dataset=task.train_features,
            data_collator=task.collate, callbacks=[callback], recipe=load_recipe(GMP),
        )  # fmt: skip
        trainer.train()
        assert [r["step"] for r in callback.history] == [5, 9, 14, 18]
        finals.append({n: p.detach().clone() for n, p in model.named_parameters()})
    for name, value in finals[0].items():
        torch.testing.assert_close(finals[1][name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_review_cases_resume_options_overwrite_order_short_trainer_and_zero_lr(
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
    tmp_path: Path,
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    out = tmp_path / "done"
    opts = RunOptions(batch_size=4, progress=False, evaluate=False, logging_steps=1)
    warmup = GMP.replace(
        "pruning_modifiers:",
        "training_modifiers:\n  - !LearningRateFunctionModifier\n    start_epoch: 0\n"
        "    end_epoch: 3\n    lr_func: linear\n    init_lr: 0.0\n    final_lr: 1e-3\n"
        "pruning_modifiers:",
    )
    recipe = load_recipe(warmup)
    run_recipe(recipe, tiny_bert, task, out, options=opts, model_name="tiny", log=lambda _l: None)
    history = json.loads((out / "log_history.json").read_text())
    lrs = {e["step"]: e["learning_rate"] for e in history if "learning_rate" in e}
    assert lrs[27] == pytest.approx(1e-3) and lrs[1] == pytest.approx(0.0)  # warm-up from 0
    for step, lr in lrs.items():
        assert lr == pytest.approx(recipe.lr_at(step - 1, 9), abs=1e-12)
    # Resuming with another batch size would move every pruning step: refused.
    with pytest.raises(ResumeError, match="batch_size 4, this one 2"):
        run_recipe(
            recipe, tiny_bert, task, out, options=RunOptions(batch_size=2, progress=False),
            resume=True, model_name="tiny", log=lambda _l: None,
        )  # fmt: skip
    # --overwrite with a teacher that does not fit: refused before anything is deleted.
    before = sorted(p.name for p in out.iterdir())
    config = tiny_bert.config.__class__(**{**tiny_bert.config.to_dict(), "num_labels": 3})
    with pytest.raises(TrainingError, match="teacher output"):
        run_recipe(
            load_recipe(OBS), tiny_bert, task, out, teacher=BertForSequenceClassification(config),
            options=opts, overwrite=True, model_name="tiny", log=lambda _l: None,
        )  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == before


def test_a_trainer_shorter_than_the_recipe_is_refused_and_moments_of_pruned_weights_are_zero(
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
    tmp_path: Path,
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)

    def trainer(epochs: int) -> tuple[Trainer, ObertPruningCallback]:
        callback = ObertPruningCallback(
            GMP, train_dataset=task.train_features, data_collator=task.collate, progress=False,
            log=lambda _line: None,
        )  # fmt: skip
        args = TrainingArguments(
            output_dir=str(tmp_path / f"e{epochs}"), num_train_epochs=epochs,
            per_device_train_batch_size=4, learning_rate=5e-3, save_strategy="no",
            report_to="none", disable_tqdm=True, use_cpu=True, remove_unused_columns=False,
        )  # fmt: skip
        return Trainer(
            model=tiny_bert, args=args, train_dataset=task.train_features,
            data_collator=task.collate, callbacks=[callback],
        ), callback  # fmt: skip

    short, _ = trainer(2)
    with pytest.raises(RecipeError, match=r"runs 18 optimizer steps.*until step 18"):
        short.train()
    full, callback = trainer(3)
    full.train()
    assert callback.masks is not None
    for name, p in callback.masks.params.items():
        state = full.optimizer.state[p]
        pruned = ~callback.masks[name].view(p.shape)
        assert bool((state["exp_avg"][pruned] == 0).all()), name
        assert bool((state["exp_avg_sq"][pruned] == 0).all()), name
