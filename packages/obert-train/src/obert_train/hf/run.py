"""``run_recipe``: one recipe, one model, one task -> a trained (pruned) HF checkpoint.

The driver behind ``obert-train run``: checks the output folder and the teacher before any long
stage, builds ``TrainingArguments`` from the recipe (epochs, base LR), runs :class:`ObertTrainer`
(:class:`~obert_train.ZOTrainer` for a recipe with a ``!ZerothOrderModifier``: forward passes
only, on the kept weights) with :class:`ObertPruningCallback`, resumes from the newest complete
``checkpoint-N`` with ``resume=True``, and writes into ``output_dir`` itself: the final model
(``from_pretrained`` works in plain transformers), ``recipe.yaml`` (the recipe as run, loadable
again), ``sparsity.json``, ``metrics.json``, ``run.json``, ``pruning_log.jsonl`` and the training
logs.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainingArguments

from obert_train._validate import check_bool, check_int, check_number, check_path, check_str
from obert_train.checkpoint import atomic_write_text, check_output_dir, json_text, save_into
from obert_train.checks import (
    check_finite_weights,
    check_model_fits_task,
    check_tokens_known,
    distillable_outputs,
)
from obert_train.errors import (
    ArgumentError,
    OptionError,
    OutputDirError,
    ResumeError,
    TrainingError,
)
from obert_train.hf.callback import (
    STATE_FILE,
    ObertPruningCallback,
    latest_complete_checkpoint,
)
from obert_train.hf.trainer import ObertTrainer
from obert_train.hf.zo import ZOSettings, ZOTrainer
from obert_train.outputs import check_not_input, locked_output
from obert_train.pruning.method import check_nm_sparsity
from obert_train.pruning.targets import resolve_target_params
from obert_train.pruning.zo_grasp import zo_grasp_sparsities
from obert_train.recipe import Recipe, ZerothOrderModifier
from obert_train.tasks.base import Task

__all__ = ["RunOptions", "RunResult", "run_recipe"]

RUN_FILE = "run.json"
# Files and folders a run writes into its output folder (the only ones --overwrite removes).
_OWN_FILES = (
    RUN_FILE,
    "recipe.yaml",
    "sparsity.json",
    "metrics.json",
    "pruning_log.jsonl",
    "train_log.jsonl",
    "log_history.json",
    "train_log.csv",
)
# The final model's files, removed by --overwrite only in a folder that holds a run.json.
_MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


@dataclass(frozen=True)
class RunOptions:
    """Training settings that are not in the recipe.

    Attributes:
        batch_size: Examples per optimizer step (per process).
        learning_rate: Base LR when the recipe has no ``!LearningRateFunctionModifier``
            (then linear decay to 0, the Trainer's default); with LR modifiers the recipe rules.
        weight_decay: AdamW weight decay.
        max_grad_norm: Gradient clipping norm.
        seed: Seed of the data order, dropout and new heads.
        save_steps: Checkpoint every N optimizer steps; None = once per epoch.
        save_checkpoints: False writes no ``checkpoint-N`` at all (the Trainer's
            ``save_strategy="no"``; ``save_steps`` is then unused): the run cannot be resumed,
            and its disk use is the final model alone, for callers that resume by other means.
        save_total_limit: Checkpoints kept (the newest); at least 2, so a complete one survives
            while the next is being written.
        logging_steps: Log every N optimizer steps.
        report_to: Trainer integrations (``"tensorboard"``, ...); ``train_log.jsonl`` is
            always written.
        eval_batch_size: Dev batch size.
        evaluate: Evaluate the final model on the dev set.
        progress: Show progress bars.
    """

    batch_size: int = 32
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    save_steps: int | None = None
    save_checkpoints: bool = True
    save_total_limit: int = 2
    logging_steps: int = 25
    report_to: tuple[str, ...] = ()
    eval_batch_size: int = 64
    evaluate: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        """Refuse values the Trainer would fail on late (or silently misuse).

        Raises:
            OptionError: Naming the field, its CLI flag and the value.
            ArgumentError: For a field of the wrong type (``batch_size="32"``).
        """
        for name in ("batch_size", "eval_batch_size", "logging_steps", "save_total_limit", "seed"):
            check_int(getattr(self, name), name, "RunOptions")
        if self.save_steps is not None:
            check_int(self.save_steps, "save_steps", "RunOptions")
        for name in ("learning_rate", "max_grad_norm", "weight_decay"):
            check_number(getattr(self, name), name, "RunOptions")
        for name in ("save_checkpoints", "evaluate", "progress"):
            check_bool(getattr(self, name), name, "RunOptions")
        at_least_one = {
            "batch_size": self.batch_size,
            "eval_batch_size": self.eval_batch_size,
            "logging_steps": self.logging_steps,
            "save_total_limit": self.save_total_limit,
            "save_steps": 1 if self.save_steps is None else self.save_steps,
        }
        for name, value in at_least_one.items():
            if value < 1:
                raise OptionError(f"{name} (--{name.replace('_', '-')}) {value}: must be >= 1")
        positive = {"learning_rate": self.learning_rate, "max_grad_norm": self.max_grad_norm}
        for name, number in positive.items():
            if not math.isfinite(number) or number <= 0:
                raise OptionError(f"{name} (--{name.replace('_', '-')}) {number}: must be > 0")
        if not math.isfinite(self.weight_decay) or self.weight_decay < 0:
            raise OptionError(f"weight_decay (--weight-decay) {self.weight_decay}: must be >= 0")


@dataclass
class RunResult:
    """What :func:`run_recipe` did.

    Attributes:
        output_dir: Where the final model is.
        metrics: Dev metrics of the final model (empty without evaluation).
        sparsity: Final sparsity over the pruned tensors.
        pruning_steps: One record per pruning step (epoch, target, achieved, seconds).
        train_seconds: Wall time of training.
        resumed_from: The checkpoint the run continued from, if any.
    """

    output_dir: Path
    metrics: dict[str, float]
    sparsity: float
    pruning_steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def atom_sparsity(self) -> float | None:
        """Fraction of neurons/heads removed by the last structured pruning step, else ``None``.

        A structured step's target is a fraction of atoms; its ``sparsity`` record is the weight
        sparsity over the pruned tensors, which is smaller (biases and other shapes count too).
        """
        atoms = [float(s["atom_sparsity"]) for s in self.pruning_steps if "atom_sparsity" in s]
        return atoms[-1] if atoms else None

    train_seconds: float = 0.0
    resumed_from: str | None = None


class _LogFile(TrainerCallback):
    """Appends every Trainer log entry to ``train_log.jsonl`` (rank 0)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """On a resumed run drop the entries after the checkpoint (they are logged again)."""
        if not state.is_world_process_zero or not self.path.is_file():
            return
        kept = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= state.global_step
        ]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        entry = {"step": state.global_step, "epoch": state.epoch, **logs}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json_text(entry, indent=None) + "\n")


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _refuse_non_empty(out: Path, *, resume: bool, overwrite: bool) -> list[str]:
    """Refuse a non-empty folder unless resuming or overwriting (read only: every rank runs it).

    Returns:
        The folder's entries.
    """
    check_output_dir(out)
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if entries and not resume and not overwrite:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputDirError(
            f"--output-dir {str(out)!r} is not empty ({shown}); pass --resume to continue the "
            "run it holds, --overwrite to replace this tool's outputs there, or a new folder"
        )
    return entries


def _prepare_output_dir(out: Path, entries: list[str], *, resume: bool, overwrite: bool) -> None:
    """Remove this tool's earlier outputs with ``overwrite``; check the folder is writable.

    Only the main process runs it (after every rank has checked the folder).
    """
    if overwrite and not resume:
        ours = (out / RUN_FILE).is_file()  # a run folder of this tool: its model files are ours
        for name in entries:
            path = out / name
            if path.is_dir():
                written = (path / "trainer_state.json").is_file() or (path / STATE_FILE).is_file()
                checkpoint = name.startswith("checkpoint-") and written
                leftover = name.startswith(".final.") and name.endswith(".tmp")
                if checkpoint or leftover:
                    shutil.rmtree(path)
            elif name in _OWN_FILES or (ours and name in _MODEL_FILES):
                path.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out)
        os.close(fd)
        Path(probe).unlink()
    except OSError as exc:
        raise OutputDirError(
            f"--output-dir {str(out)!r} is not writable ({exc.strerror}); choose another folder"
        ) from None


def check_teacher(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    batch: Mapping[str, Any],
    keys: Sequence[str],
) -> None:
    """The teacher must share the student's vocabulary and the shape of every distilled output.

    Args:
        student: The model being trained.
        teacher: The distillation teacher.
        batch: A collated batch of the task's training features.
        keys: The recipe's ``distill_output_keys``.

    Raises:
        TrainingError: Naming the mismatch: vocabulary sizes, an output one model lacks (with
            the outputs it has and the ``--set`` that uses the shared ones), or the output and
            both shapes.
        ModelError: If a model returns a tuple instead of named outputs.
    """
    s_vocab = getattr(getattr(student, "config", None), "vocab_size", None)
    t_vocab = getattr(getattr(teacher, "config", None), "vocab_size", None)
    if s_vocab is not None and t_vocab is not None and s_vocab != t_vocab:
        raise TrainingError(
            f"teacher vocabulary ({t_vocab} tokens) differs from the student's ({s_vocab}); "
            "distillation needs a teacher with the student's tokenizer"
        )
    s_out, t_out = distillable_outputs(student, batch), distillable_outputs(teacher, batch)
    for key in keys:
        s, t = s_out.get(key), t_out.get(key)
        if s is None or t is None:
            who, have = ("student", s_out) if s is None else ("teacher", t_out)
            shared = [k for k in s_out if k in t_out]
            fix = (
                f"set distill_output_keys to outputs both models have, e.g. --set "
                f"distill_output_keys=[{','.join(shared)}]"
                if shared
                else "the two models share no output to distill: give a teacher with the "
                "student's head"
            )
            raise TrainingError(
                f"the {who} model has no output {key!r} to distill (its outputs: {list(have)}); "
                + fix
            )
        if s.shape != t.shape:
            raise TrainingError(
                f"teacher output {key!r} has shape {tuple(t.shape)}, the student's "
                f"{tuple(s.shape)}; the teacher needs the student's head (same task and labels)"
            )


def check_teacher_tokenizer(student: Any, teacher: Any, who: str = "the teacher") -> None:
    """The teacher's tokenizer must map every token to the student's id (``get_vocab()``).

    Distillation compares outputs position by position on the student's token ids; a teacher
    trained with another vocabulary reads those ids as other tokens (even at the same size).

    Raises:
        TrainingError: Naming the sizes and a few tokens whose ids differ.
    """
    s_vocab, t_vocab = dict(student.get_vocab()), dict(teacher.get_vocab())
    if s_vocab == t_vocab:
        return
    differ = sorted(
        (tok for tok in s_vocab.keys() | t_vocab.keys() if s_vocab.get(tok) != t_vocab.get(tok)),
        key=lambda tok: min(s_vocab.get(tok, 1 << 62), t_vocab.get(tok, 1 << 62)),
    )
    shown = ", ".join(
        f"{tok!r} is {t_vocab.get(tok, 'absent')} for the teacher and "
        f"{s_vocab.get(tok, 'absent')} for the student"
        for tok in differ[:2]
    )
    raise TrainingError(
        f"{who}: its tokenizer differs from the student's: {len(t_vocab)} vs {len(s_vocab)} "
        f"tokens, {len(differ)} with other ids, e.g. {shown}; distillation needs a teacher "
        "with the student's tokenizer (fine-tuned from the same base model)"
    )


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The Trainer's log history as CSV (one column per key that appears in any row)."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _run_info(recipe: Recipe, model_name: str, task: Task, opts: RunOptions) -> dict[str, Any]:
    return {
        "recipe": recipe.path,
        "recipe_fingerprint": recipe.fingerprint(),
        "model": model_name,
        "task": task.name,
        "train_examples": len(task.train_features),
        "options": asdict(opts),
    }


def _check_same_run(out: Path, info: Mapping[str, Any]) -> None:
    file = out / RUN_FILE
    if not file.is_file():
        raise ResumeError(
            f"--resume: nothing to resume in {str(out)!r} (no {RUN_FILE} of an earlier run); "
            "check the folder, or drop --resume to start a new run"
        )
    try:
        old = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResumeError(
            f"--resume: {str(file)!r} cannot be read ({exc}); it is not a run of this tool, or "
            "it was damaged: use a new --output-dir"
        ) from None
    if old.get("recipe_fingerprint") != info["recipe_fingerprint"]:
        raise ResumeError(
            f"cannot resume in {str(out)!r}: it holds a run of recipe {old.get('recipe')!r}, "
            f"this one is {info['recipe']!r} (a different recipe or different overrides); use "
            "the same recipe and overrides, or a new --output-dir"
        )
    for key, label in (("task", "task"), ("train_examples", "training examples")):
        if old.get(key) != info[key]:
            raise ResumeError(
                f"cannot resume in {str(out)!r}: its run used {label} {old.get(key)!r}, this one "
                f"{info[key]!r}; resume with the same data options, or use a new --output-dir"
            )
    old_opts, new_opts = old.get("options", {}), info["options"]
    for key in ("batch_size", "seed", "learning_rate", "weight_decay", "max_grad_norm"):
        if key in old_opts and old_opts[key] != new_opts[key]:
            raise ResumeError(
                f"cannot resume in {str(out)!r}: its run used {key} {old_opts[key]!r}, this one "
                f"{new_opts[key]!r} (the schedule and the result would change); resume with the "
                "same options, or use a new --output-dir"
            )
    if old.get("model") != info["model"]:
        raise ResumeError(
            f"cannot resume in {str(out)!r}: it holds a run of model {old.get('model')!r}, this "
            f"one is {info['model']!r}; use the same --model, or a new --output-dir"
        )


def _check_run_arguments(
    recipe: object,
    model: object,
    task: object,
    output_dir: object,
    model_name: object,
    options: object,
    resume: object,
    overwrite: object,
) -> None:
    """The argument types of :func:`run_recipe`, before anything is read or written."""
    expected = {
        "recipe": (recipe, Recipe, "a Recipe (load_recipe or build_recipe)"),
        "model": (model, torch.nn.Module, "a torch.nn.Module"),
        "task": (task, Task, "a Task (load_task)"),
    }
    for name, (value, kind, what) in expected.items():
        if not isinstance(value, kind):
            raise ArgumentError(
                f"run_recipe: {name}={value!r} must be {what}, got {type(value).__name__}"
            )
    if options is not None and not isinstance(options, RunOptions):
        raise ArgumentError(
            f"run_recipe: options={options!r} must be a RunOptions (or None), got "
            f"{type(options).__name__}"
        )
    check_path(output_dir, "output_dir", "run_recipe")
    check_str(model_name, "model_name", "run_recipe")
    check_bool(resume, "resume", "run_recipe")
    check_bool(overwrite, "overwrite", "run_recipe")


def _check_schedule(recipe: Recipe, model: torch.nn.Module, task: Task, opts: RunOptions) -> None:
    """The pruning steps the callback will run, checked before the folder is touched.

    Colliding steps (``update_frequency`` below one optimizer step) and N:M masks asked for a
    sparsity they cannot have are refused here, not after ``run.json`` is written.

    Raises:
        RecipeError: As :meth:`Recipe.pruning_events` and :func:`check_nm_sparsity`.
        TargetError: A target the model cannot take (``PruningMethod.check_sparsity``:
            structured pruning with ``allocation: uniform`` that would empty every layer).
    """
    if not recipe.pruning:
        return
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    per_step = opts.batch_size * world
    steps = max(1, -(-len(task.train_features) // per_step))
    events = recipe.pruning_events(steps)
    methods = [modifier.create_method() for modifier in recipe.pruning]
    targets = [resolve_target_params(model, m.settings.targets) for m in methods]
    for event in events:
        check_nm_sparsity(methods[event.modifier].settings, event.sparsity)
        method = methods[event.modifier]
        method.check_sparsity(model, targets[event.modifier], event.sparsity)


def run_recipe(
    recipe: Recipe,
    model: torch.nn.Module,
    task: Task,
    output_dir: str | os.PathLike[str],
    *,
    model_name: str = "model",
    tokenizer: Any = None,
    teacher: torch.nn.Module | None = None,
    options: RunOptions | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Train ``model`` on ``task`` following ``recipe`` (pruning, LR, distillation).

    Args:
        recipe: The recipe.
        model: The student (its head must fit ``task``); trained in place.
        task: Training features (with labels), collate and dev metric.
        output_dir: Run folder: ``checkpoint-N/`` during training, the final model at the end.
        model_name: Name recorded for resume checks (a path or hub id).
        tokenizer: Saved with the final model.
        teacher: Dense teacher for the recipe's ``!DistillationModifier``.
        options: Batch size, seed, checkpointing, logging.
        resume: Continue from the newest complete checkpoint in ``output_dir``.
        overwrite: Replace this tool's earlier outputs in ``output_dir``.
        callbacks: Extra Trainer callbacks.
        log: Progress lines (default: printed).

    Returns:
        Metrics, sparsity and the pruning steps.

    Raises:
        OutputDirError: For a non-empty or unwritable output folder.
        ModelError: For non-finite weights or sequences longer than the model takes.
        ObertTrainError: For a teacher that does not fit
            the student, a resume of another run, or a non-finite loss (TrainingError).
    """
    _check_run_arguments(recipe, model, task, output_dir, model_name, options, resume, overwrite)
    opts = options or RunOptions()
    out = Path(output_dir)
    emit = log or _print
    is_main = int(os.environ.get("RANK", "0")) == 0
    # Every check that can fail comes before the folder is touched (nothing half-written; a
    # refused run leaves the folder exactly as it was: docs/train.md, "Output folders").
    check_not_input(out, {"model's folder (model_name)": model_name})
    entries = _refuse_non_empty(out, resume=resume, overwrite=overwrite)
    info = _run_info(recipe, model_name, task, opts)
    if resume:
        _check_same_run(out, info)
    check_finite_weights(model, "the student")
    check_model_fits_task(model, task, "the student")
    check_tokens_known(task)
    # !LayerDroppingModifier: the student's layers go first (the checks below see the model
    # that trains); a refused run puts them back, so the caller's model is as it was
    undo = _drop_layers(recipe, model, emit)
    with contextlib.ExitStack() as held:
        try:
            _check_model_and_teacher(recipe, model, task, opts, teacher)
            _barrier()
            if is_main:  # a second run into this folder is refused while this one writes there
                held.enter_context(locked_output(out, "obert-train run"))
                entries = _refuse_non_empty(out, resume=resume, overwrite=overwrite)
                _prepare_output_dir(out, entries, resume=resume, overwrite=overwrite)
        except BaseException:
            undo()
            raise
        recipe.apply_trainable(model)  # before the optimizer is built
        return _train(
            recipe,
            model,
            task,
            out,
            opts,
            model_name,
            tokenizer,
            teacher,
            info,
            resume,
            callbacks,
            emit,
            is_main,
        )


def _drop_layers(
    recipe: Recipe, model: torch.nn.Module, emit: Callable[[str], None]
) -> Callable[[], None]:
    """Apply the recipe's ``!LayerDroppingModifier``; returns what puts the layers back."""
    if recipe.layer_dropping is None:
        return lambda: None
    from obert_train.layers import find_layers

    name, layers = find_layers(model)
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    attr = name.rpartition(".")[2]
    config = getattr(model, "config", None)
    saved = dict(vars(config)) if config is not None else {}
    indices = [
        (m, m.layer_idx) for m in layers.modules() if isinstance(getattr(m, "layer_idx", None), int)
    ]
    kept = recipe.apply_layer_dropping(model)
    emit(f"layers: the student keeps {kept} of its {len(layers)} ({name}), renumbered from 0")

    def undo() -> None:
        setattr(parent, attr, layers)
        if config is not None:
            vars(config).update(saved)
        for module, index in indices:
            setattr(module, "layer_idx", index)  # noqa: B010 (module attributes)

    return undo


def _check_model_and_teacher(
    recipe: Recipe,
    model: torch.nn.Module,
    task: Task,
    opts: RunOptions,
    teacher: torch.nn.Module | None,
) -> None:
    """Every check of the (layer-dropped) student, the recipe on it, and the teacher."""
    recipe.check_targets([n for n, _ in model.named_parameters()])
    # !TrainableParamsModifier: checked here, applied only once every check has passed (a
    # refused run leaves the caller's requires_grad as they were)
    recipe.trainable_plan([n for n, _ in model.named_parameters()])
    for modifier in recipe.pruning:  # the methods' own checks (shapes, constant masks' zeros)
        method = modifier.create_method()
        targets = resolve_target_params(model, method.settings.targets)
        method.check(targets)
        method.check_model(model, targets)
    _check_schedule(recipe, model, task, opts)
    if recipe.zeroth_order is not None:  # the settings (workers vs cores, targets) up front
        _zo_settings(recipe.zeroth_order, model, task, opts, lambda _: None, probe=True)
    kd = recipe.distillation
    if kd is not None:
        if teacher is None:
            raise TrainingError(
                "the recipe has a !DistillationModifier but no teacher was given (--teacher)"
            )
        check_finite_weights(teacher, "the teacher")
        check_model_fits_task(teacher, task, "the teacher")
        check_teacher(
            model, teacher, task.collate(task.train_features[:2]), list(kd.distill_output_keys)
        )


def _zo_settings(
    modifier: ZerothOrderModifier,
    model: torch.nn.Module,
    task: Task,
    opts: RunOptions,
    emit: Callable[[str], None],
    *,
    probe: bool = False,
) -> ZOSettings:
    """The :class:`ZOSettings` of a ``!ZerothOrderModifier`` for this model and data.

    ``gradient_ratios: zo_grasp`` runs ZO-GraSP on the starting weights (a resumed run starts
    from the same weights, so it gets the same ratios); ``probe`` checks the settings without
    those forwards.

    Raises:
        OptionError: ``workers`` above the cores (and the other :class:`ZOSettings` checks).
        TargetError: ``params`` matching no parameter of the model.
    """
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    spe = max(1, -(-len(task.train_features) // (opts.batch_size * world)))
    sparsity: dict[str, float] | None = None
    if modifier.gradient_sparsity > 0:
        targets = resolve_target_params(model, modifier.regexes())
        sparsity = dict.fromkeys(targets, modifier.gradient_sparsity)
        if modifier.gradient_ratios == "zo_grasp" and not probe:
            batch = task.collate(task.train_features[: modifier.grasp_examples])
            device = next(model.parameters()).device
            batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
            sparsity = zo_grasp_sparsities(
                model,
                batch,
                modifier.gradient_sparsity,
                params=targets,
                q=modifier.grasp_directions,
                mu=modifier.grasp_mu,
                seed=modifier.seed,
            )
            # a tensor ranked wholly out still moves one coordinate per period (ZOSettings
            # takes fractions below 1)
            sparsity = {n: min(r, 1.0 - 1.0 / targets[n].numel()) for n, r in sparsity.items()}
            low, high = min(sparsity.values()), max(sparsity.values())
            emit(
                f"ZO-GraSP gradient sparsities: {low:.4f}-{high:.4f} over {len(sparsity)} "
                f"tensors (global {modifier.gradient_sparsity:g})"
            )
    return ZOSettings(
        mu=modifier.mu,
        num_directions=modifier.num_directions,
        seed=modifier.seed,
        gradient_sparsity=sparsity,
        mask_period=modifier.mask_period_steps(spe),
        estimator=modifier.estimator,
        workers=modifier.workers,
        momentum=modifier.momentum,
    )


def _train(
    recipe: Recipe,
    model: torch.nn.Module,
    task: Task,
    out: Path,
    opts: RunOptions,
    model_name: str,
    tokenizer: Any,
    teacher: torch.nn.Module | None,
    info: Mapping[str, Any],
    resume: bool,
    callbacks: Sequence[TrainerCallback],
    emit: Callable[[str], None],
    is_main: bool,
) -> RunResult:
    """Train into the prepared (and, on the main process, locked) folder ``out``."""
    checkpoint: Path | None = None
    if resume:
        checkpoint = latest_complete_checkpoint(out)
        if checkpoint is None:
            emit(f"no complete checkpoint in {out}; starting from the beginning")
    # The scheduler scales the optimizer's LR by lr_at(step) / base: the base must not be 0.
    peaks = [max(m.init_lr, m.final_lr) for m in recipe.learning_rate]
    base_lr = max(peaks) if peaks and max(peaks) > 0 else opts.learning_rate
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    args = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=recipe.num_epochs,
        per_device_train_batch_size=opts.batch_size,
        learning_rate=base_lr,
        weight_decay=opts.weight_decay if recipe.weight_decay is None else recipe.weight_decay,
        max_grad_norm=opts.max_grad_norm,
        warmup_steps=0,
        lr_scheduler_type="linear",
        seed=opts.seed,
        data_seed=opts.seed,
        save_strategy=(
            "no" if not opts.save_checkpoints else "steps" if opts.save_steps else "epoch"
        ),
        save_steps=opts.save_steps or 500,
        save_total_limit=max(2, opts.save_total_limit),
        logging_strategy="steps",
        logging_steps=opts.logging_steps,
        logging_first_step=True,
        report_to=list(opts.report_to) or "none",
        disable_tqdm=not opts.progress,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        ddp_backend="gloo" if distributed and not torch.cuda.is_available() else None,
    )
    pruning = ObertPruningCallback(
        recipe,
        train_dataset=task.train_features,
        data_collator=task.collate,
        progress=opts.progress,
        log=emit,
        model_name=model_name,
    )
    pruning.resume_dir = checkpoint
    if is_main:
        atomic_write_text(out / RUN_FILE, json_text(info) + "\n")
    trainer: ObertTrainer | ZOTrainer
    if recipe.zeroth_order is not None:
        trainer = ZOTrainer(
            model=model,
            args=args,
            train_dataset=task.train_features,
            data_collator=task.collate,
            recipe=recipe,
            teacher=teacher,
            zo=_zo_settings(recipe.zeroth_order, model, task, opts, emit),
            callbacks=[pruning, _LogFile(out / "train_log.jsonl"), *callbacks],
        )
    else:
        trainer = ObertTrainer(
            model=model,
            args=args,
            train_dataset=task.train_features,
            data_collator=task.collate,
            recipe=recipe,
            teacher=teacher,
            callbacks=[pruning, _LogFile(out / "train_log.jsonl"), *callbacks],
        )
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    seconds = time.perf_counter() - start
    model.eval()
    metrics: dict[str, float] = {}
    if opts.evaluate and is_main:
        metrics = task.evaluate(model, batch_size=opts.eval_batch_size, progress=opts.progress)
    result = RunResult(
        output_dir=out,
        metrics=metrics,
        sparsity=pruning.sparsity(),
        pruning_steps=list(pruning.history),
        train_seconds=seconds,
        resumed_from=str(checkpoint) if checkpoint is not None else None,
    )
    if is_main:
        patterns = sorted({p for m in pruning.methods for p in (m.settings.targets or [])}) or None
        metrics_doc = {
            "model": model_name,
            "task": task.name,
            "recipe": recipe.path,
            "metrics": metrics,
            "sparsity": result.sparsity,
            "pruning_steps": result.pruning_steps,
            "train_seconds": seconds,
            "pruning_timings": pruning.timings,
            "resumed_from": result.resumed_from,
        }
        save_into(
            model,
            out,
            tokenizer=tokenizer,
            patterns=patterns,
            extra_files={
                "recipe.yaml": recipe.to_yaml(),
                "log_history.json": json_text(trainer.state.log_history) + "\n",
                "train_log.csv": _csv(trainer.state.log_history),
                "metrics.json": json_text(metrics_doc) + "\n",
            },
        )
    return result
