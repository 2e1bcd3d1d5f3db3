"""The training stages: dense fine-tuning and gradual pruning with distillation.

The structured stage's model is also written physically smaller (:func:`shrink_stage`:
obert-train's :func:`~obert_train.shrink_model`, the zero neurons removed, checked against the
trained model after a reload with plain ``transformers``).

Both run a recipe through obert-train's harness (:func:`obert_train.run_recipe`: the HF
Trainer, :class:`~obert_train.ObertPruningCallback`, the recipe's LR schedule and KD loss).
A gradual-pruning run also carries :class:`AccuracyCurve`, a ``TrainerCallback`` that evaluates
the model on the dev set right before each pruning step after the first, i.e. after the
previous step's recovery; with the final evaluation this gives one accuracy-vs-sparsity point
per pruning step from ONE run.

Metrics are fractions here, for every task, as obert-train and obert-deploy both compute them
(accuracy, SQuAD F1 / exact match in ``[0, 1]``), printed by
:func:`obert_core.shared.format_metric`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from obert_core.shared import atomic_write_text
from obert_train import Recipe, RunOptions, Task, run_recipe, steps_per_epoch

__all__ = [
    "PERCENT_SCALE_BEFORE_ISSUE_18",
    "AccuracyCurve",
    "CurvePoint",
    "shrink_stage",
    "target_names",
    "train_stage",
    "zero_fraction",
]

MODEL_DIR = "model"
"""The trained checkpoint inside a training stage's folder."""
SHRUNK_DIR = "shrunk"
"""The physically smaller checkpoint inside the structured stage's folder."""
_AUTO_CLASSES = {
    "sequence-classification": "AutoModelForSequenceClassification",
    "question-answering": "AutoModelForQuestionAnswering",
}
"""obert-deploy task -> the ``transformers`` class a user loads the shrunk checkpoint with."""
CURVE_FILE = "curve.jsonl"
"""The accuracy-curve points so far, one JSON line each (read back when a stage resumes)."""
PERCENT_SCALE_BEFORE_ISSUE_18: dict[str, tuple[str, ...]] = {"squad": ("exact_match", "f1")}
"""obert-train task name -> the metrics that obert-train versions before issue 18 gave in percent
(a stage cached with them is never reused: the pipeline's ``metric_scale`` key)."""


@dataclass(frozen=True)
class CurvePoint:
    """One point of the accuracy-vs-sparsity curve.

    Attributes:
        step: Optimizer step at which the model was evaluated.
        epoch: Epoch at that step.
        sparsity: Fraction of zeros over the recipe's pruned tensors.
        metric: The task's primary metric on the dev set (accuracy, F1), a fraction.
    """

    step: int
    epoch: float
    sparsity: float
    metric: float

    def to_dict(self) -> dict[str, float]:
        """JSON form."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "sparsity": self.sparsity,
            "metric": self.metric,
        }


def _line(point: CurvePoint) -> str:
    return json.dumps(point.to_dict()) + "\n"


def target_names(recipe: Recipe, model: torch.nn.Module) -> list[str]:
    """Names of the tensors the recipe's pruning modifiers select, in model order."""
    names = [n for n, _ in model.named_parameters()]
    chosen = {n for group in recipe.check_targets(names) for n in group}
    return [n for n in names if n in chosen]


_STEP_KEYS = ("epoch", "step", "target_sparsity", "atom_sparsity", "sparsity", "seconds")
"""A pruning step's record: ``sparsity`` is the weight sparsity over the pruned tensors; a
structured step adds ``atom_sparsity``, the fraction of neurons/heads removed (its target's
unit)."""


def zero_fraction(model: torch.nn.Module, names: Sequence[str]) -> float:
    """Fraction of exact zeros over the tensors ``names`` of ``model``."""
    params = dict(model.named_parameters())
    total = sum(params[n].numel() for n in names)
    zeros = sum(int((params[n] == 0).sum()) for n in names)
    return zeros / total if total else 0.0


class AccuracyCurve(TrainerCallback):
    """Evaluate on the dev set after each pruning step's recovery (before the next step).

    Args:
        recipe: The recipe being run (its pruning events give the steps).
        task: The task (dev set and metric).
        names: The pruned tensors (for the measured sparsity).
        batch_size: Dev batch size.
        progress: Unused (kept for symmetry): the evaluation runs inside the Trainer's bar.
        log: Receives one line per point.
    """

    def __init__(
        self,
        recipe: Recipe,
        task: Task,
        names: Sequence[str],
        *,
        batch_size: int = 64,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        file: Path | None = None,
    ) -> None:
        self.file = file
        self.recipe = recipe
        self.task = task
        self.names = list(names)
        self.batch_size = batch_size
        self.progress = progress
        self._log = log or (lambda _line: None)
        self.eval_steps: set[int] = set()
        self.points: list[CurvePoint] = []

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Find the optimizer steps of the pruning events (all but the first get an eval)."""
        spe = steps_per_epoch(kwargs["train_dataloader"], args)
        steps = sorted({event.step for event in self.recipe.pruning_events(spe)})
        self.eval_steps = set(steps[1:])
        if self.file is not None and self.file.is_file():  # a resumed run: the points so far
            rows = [json.loads(line) for line in self.file.read_text().splitlines() if line]
            self.points = [CurvePoint(**r) for r in rows if r["step"] <= state.global_step]
            atomic_write_text(self.file, "".join(_line(p) for p in self.points))

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Evaluate when the next optimizer step is a pruning step."""
        if state.global_step not in self.eval_steps:
            return
        model = kwargs["model"]
        was_training = model.training
        metrics = self.task.evaluate(model, batch_size=self.batch_size, progress=False)
        model.train(was_training)
        point = CurvePoint(
            step=state.global_step,
            epoch=float(state.epoch or 0.0),
            sparsity=zero_fraction(model, self.names),
            metric=float(metrics[self.task.primary_metric]),
        )
        self.points.append(point)
        if self.file is not None:
            with self.file.open("a", encoding="utf-8") as handle:
                handle.write(_line(point))
        self._log(
            f"  after recovery at sparsity {point.sparsity:.4f}: dev "
            f"{self.task.primary_metric} {point.metric:.4f} (step {point.step})"
        )


def train_stage(
    folder: Path,
    *,
    recipe: Recipe,
    student: torch.nn.Module,
    task: Task,
    tokenizer: Any,
    model_name: str,
    options: RunOptions,
    teacher: torch.nn.Module | None = None,
    curve: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``recipe`` on ``student`` into ``folder/model`` and describe the result.

    Args:
        folder: The stage folder.
        recipe: Dense or pruning recipe.
        student: The model to train (in place).
        task: Training and dev data.
        tokenizer: Saved with the model.
        model_name: Where the student came from (recorded in ``run.json``).
        options: Batch size, seed, logging, progress.
        teacher: The distillation teacher (for recipes with a ``!DistillationModifier``).
        curve: Evaluate after each pruning step's recovery (:class:`AccuracyCurve`).
        log: Progress lines.

    Returns:
        The stage outputs: model folder (relative), dev metrics (fractions,
        fractions), sparsity, pruning steps, curve points, training seconds.
    """
    emit = log or print
    names = target_names(recipe, student)
    callbacks: list[TrainerCallback] = []
    tracker: AccuracyCurve | None = None
    if curve and recipe.pruning:
        tracker = AccuracyCurve(
            recipe,
            task,
            names,
            batch_size=options.eval_batch_size,
            progress=options.progress,
            log=emit,
            file=folder / CURVE_FILE,
        )
        callbacks.append(tracker)
    out = folder / MODEL_DIR
    resume = (out / "run.json").is_file()  # an interrupted run of this stage: continue it
    result = run_recipe(
        recipe,
        student,
        task,
        out,
        model_name=model_name,
        tokenizer=tokenizer,
        teacher=teacher,
        options=options,
        callbacks=callbacks,
        log=emit,
        resume=resume,
    )
    for checkpoint in out.glob("checkpoint-*"):  # the resume points, not the result
        if checkpoint.is_dir():
            shutil.rmtree(checkpoint)
    if tracker is not None and tracker.file is not None:
        tracker.file.unlink(missing_ok=True)
    metric = task.primary_metric
    metrics = dict(result.metrics)
    points = [p.to_dict() for p in tracker.points] if tracker is not None else []
    if recipe.pruning and metric in metrics:
        final = CurvePoint(
            step=-1,
            epoch=recipe.num_epochs,
            sparsity=zero_fraction(student, names),
            metric=float(metrics[metric]),
        )
        points.append(final.to_dict())
    return {
        "model": MODEL_DIR,
        "metric": metric,
        "metrics": metrics,
        "sparsity": zero_fraction(student, names) if names else 0.0,
        "pruned_tensors": len(names),
        **({"atom_sparsity": result.atom_sparsity} if result.atom_sparsity is not None else {}),
        "pruning_steps": [
            {k: step.get(k) for k in _STEP_KEYS if k in step} for step in result.pruning_steps
        ],
        "curve": points,
        "train_seconds": result.train_seconds,
        "resumed_from": (None if result.resumed_from is None else Path(result.resumed_from).name),
        "recipe_fingerprint": recipe.fingerprint(),
    }


def _probe_batch(task: Task, count: int = 8) -> dict[str, torch.Tensor]:
    """Up to ``count`` dev (else training) examples as model inputs (no labels)."""
    features = list(getattr(task, "dev_features", None) or task.train_features)[:count]
    keys = ("input_ids", "attention_mask", "token_type_ids")
    return task.collate([{k: f[k] for k in keys if k in f} for f in features])


def shrink_stage(
    folder: Path, *, task: Task, deploy_task: str, tokenizer: Any, seed: int
) -> dict[str, Any]:
    """Write ``folder/model`` (a structurally pruned checkpoint) physically smaller.

    :func:`obert_train.shrink_model` removes the zero FFN neurons (every layer keeps the same
    number with ``allocation: uniform``; BERT-like models keep their removed heads as zeros),
    the result goes to ``folder/shrunk`` with its ``shrink.json``, is loaded back with plain
    ``transformers`` (``AutoModelForSequenceClassification.from_pretrained``; question
    answering: ``AutoModelForQuestionAnswering``) and must give the trained model's outputs on
    dev examples, as ``obert-train shrink`` checks.

    Args:
        folder: The structured stage's folder (holds ``model/``).
        task: The obert-train task (its head class, the dev examples compared).
        deploy_task: obert-deploy's task name (the ``transformers`` class of the reload).
        tokenizer: Saved with the shrunk checkpoint.
        seed: Seed of the model loading.

    Returns:
        ``{"shrunk_model": "shrunk", "shrink": {...}}``: the sizes before and after, the
        kept neurons and heads per layer, the fractions of neurons and heads removed, the
        ``transformers`` class that loads it and the largest output difference; when the model
        cannot be shrunk (e.g. only heads removed, no FFN neuron), ``{"shrink": {"error": ...}}``
        instead (the ONNX export still removes every zero).

    Raises:
        StageError: If the reloaded checkpoint's outputs differ from the trained model's.
    """
    import copy

    import transformers

    from obert.errors import StageError
    from obert_train import ModelError, check_same_outputs, load_model, save_shrunk, shrink_model

    source = folder / MODEL_DIR
    model = load_model(task, str(source), seed, warn=False)
    trained = copy.deepcopy(model).eval()
    try:
        report = shrink_model(model)
    except ModelError as exc:
        return {"shrink": {"error": str(exc)}}
    out = folder / SHRUNK_DIR
    auto = _AUTO_CLASSES[deploy_task]
    # The stage folder is renamed into place when it ends: the source as a relative path.
    save_shrunk(model, out, {"source": f"../{MODEL_DIR}", **report}, tokenizer=tokenizer)
    reloaded = getattr(transformers, auto).from_pretrained(out)
    batch = _probe_batch(task)
    try:
        diff = check_same_outputs(reloaded, trained, batch)
    except ModelError as exc:
        raise StageError(
            f"the shrunk checkpoint of the structured model, loaded with transformers.{auto}: {exc}"
        ) from None
    sizes, heads = report["intermediate_size"], report["num_attention_heads"]
    layers = max(1, len(report["kept_neurons"]))
    return {
        "shrunk_model": SHRUNK_DIR,
        "shrink": {
            **report,
            "neurons_removed": 1 - sum(report["kept_neurons"]) / (layers * sizes["before"]),
            "heads_removed": (
                1 - sum(report["kept_heads"]) / (len(report["kept_heads"]) * heads["before"])
                if report["kept_heads"] and heads["before"]
                else None
            ),
            "loads_with": f"transformers.{auto}",
            "max_output_difference": diff,
            "compared_examples": int(next(iter(batch.values())).shape[0]),
        },
    }
