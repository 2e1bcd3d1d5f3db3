"""``ObertTrainer``: the smallest ``transformers.Trainer`` subclass a recipe needs.

On top of :class:`~obert_train.ObertPruningCallback` (which works in any Trainer) it adds:

* distillation (``compute_loss``): ``(1 - hardness) * task + hardness * KD`` from a dense
  teacher run without gradients, over the recipe's ``distill_output_keys``;
* the recipe's learning-rate functions as the Trainer's scheduler (``create_scheduler``);
* a stop at the first non-finite loss, naming the optimizer step (the checkpoints written so far
  stay; nothing is saved from the broken state);
* log entries for the sparsity and the task / KD parts of the loss;
* a full disk as one ``OSError`` naming the run folder (torch reports it as ``RuntimeError:
  ... unexpected pos``), the checkpoint it left half-written removed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from obert_core.shared import is_disk_full, no_space_error
from obert_train.errors import TrainingError
from obert_train.hf.callback import COMPLETE_FILE, ObertPruningCallback, steps_per_epoch
from obert_train.hf.distillation import distillation_loss
from obert_train.hf.lr import recipe_lr_scheduler
from obert_train.recipe import Recipe

__all__ = ["ObertTrainer", "disk_full_named", "prepare_teacher", "recipe_scheduler"]


def prepare_teacher(
    recipe: Recipe | None, teacher: torch.nn.Module | None, device: Any
) -> torch.nn.Module | None:
    """The distillation teacher on ``device``, in eval mode, its parameters frozen.

    Raises:
        TrainingError: the recipe has a ``!DistillationModifier`` and no teacher is given.
    """
    if recipe is not None and recipe.distillation is not None and teacher is None:
        raise TrainingError(
            "the recipe has a !DistillationModifier but no teacher was given; pass a dense "
            "teacher model (--teacher) or remove the modifier"
        )
    if teacher is not None:
        teacher.to(device)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    return teacher


def recipe_scheduler(
    trainer: Trainer, recipe: Recipe | None, optimizer: torch.optim.Optimizer | None
) -> Any:
    """The recipe's LR functions as ``trainer``'s scheduler, or None.

    None when the trainer has a scheduler already or the recipe sets no LR; what
    :class:`ObertTrainer` and :class:`~obert_train.ZOTrainer` use.
    """
    if trainer.lr_scheduler is not None or recipe is None or not recipe.learning_rate:
        return None
    opt = optimizer if optimizer is not None else trainer.optimizer
    assert opt is not None, "create_optimizer runs before create_scheduler"
    spe = steps_per_epoch(trainer.get_train_dataloader(), trainer.args)
    trainer.lr_scheduler = recipe_lr_scheduler(opt, recipe, spe)
    return trainer.lr_scheduler


@contextmanager
def disk_full_named(out: Path) -> Iterator[None]:
    """A full disk inside the block is ``OSError(ENOSPC)`` naming ``out``, nothing half-written.

    A ``checkpoint-N`` folder begun inside the block without its completion marker is removed;
    the complete ones stay for ``--resume`` (:class:`ObertTrainer` and
    :class:`~obert_train.ZOTrainer` train inside it).

    Raises:
        OSError: ``no space left on device in OUT`` when the disk (or quota) is full.
    """
    before = {p.name for p in out.glob("checkpoint-*")} if out.is_dir() else set()
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        for folder in out.glob("checkpoint-*"):
            if folder.name not in before and not (folder / COMPLETE_FILE).is_file():
                shutil.rmtree(folder, ignore_errors=True)
        raise no_space_error(out) from exc


class ObertTrainer(Trainer):
    """A ``Trainer`` running a recipe: pruning callback, KD loss, recipe LR schedule.

    Args:
        *args: Passed to ``transformers.Trainer``.
        recipe: The recipe (its distillation and LR modifiers are used here; pass the
            matching :class:`ObertPruningCallback` in ``callbacks`` for its pruning).
        teacher: A dense HF model with the student's head; required when the recipe has a
            ``!DistillationModifier``.
        **kwargs: Passed to ``transformers.Trainer``.

    Raises:
        TrainingError: If the recipe distils but no teacher is given.
    """

    def __init__(
        self,
        *args: Any,
        recipe: Recipe,
        teacher: torch.nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.recipe = recipe
        self.kd = recipe.distillation
        self.teacher = prepare_teacher(recipe, teacher, self.args.device)
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, ObertPruningCallback):
                callback.managed = True
        self._parts: dict[str, float] = {}
        self._parts_count = 0
        # compute_loss returns the mean loss of one micro-batch (it ignores num_items_in_batch),
        # so the Trainer must divide it by the gradient-accumulation steps.
        self.loss_is_scaled_for_ga = False

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``; a full disk is ``OSError(ENOSPC)`` naming the run folder.

        A ``checkpoint-N`` this call began but could not complete (no completion marker) is
        removed, so nothing half-written stays; the complete ones stay for ``--resume``.

        Raises:
            OSError: ``no space left on device in DIR`` when the disk (or quota) is full.
        """
        with disk_full_named(Path(self.args.output_dir or ".")):
            return super().train(*args, **kwargs)

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> Any:
        """The recipe's LR functions (the base LR is ``args.learning_rate``)."""
        scheduler = recipe_scheduler(self, self.recipe, optimizer)
        if scheduler is not None:
            return scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """Task loss, or the KD mix with the teacher; refuses a non-finite loss."""
        outputs = model(**inputs)
        task_loss = outputs.get("loss") if isinstance(outputs, dict) else outputs.loss
        if self.kd is None or self.teacher is None:
            if task_loss is None:
                raise TrainingError(
                    f"the model returned no loss; the batches need labels (keys: {sorted(inputs)})"
                )
            loss = task_loss
            self._record(task=float(task_loss.detach()))
        else:
            teacher_inputs = {k: v for k, v in inputs.items() if k != "labels"}
            with torch.no_grad():
                teacher_outputs = self.teacher(**teacher_inputs)
            loss, kd = distillation_loss(
                outputs,
                teacher_outputs,
                task_loss=task_loss,
                hardness=self.kd.hardness,
                temperature=self.kd.temperature,
                output_keys=list(self.kd.distill_output_keys),
            )
            parts = {"kd": float(kd.detach())}
            if task_loss is not None:
                parts["task"] = float(task_loss.detach())
            self._record(**parts)
        if not torch.isfinite(loss.detach()).all():
            raise TrainingError(
                f"non-finite training loss ({float(loss.detach())}) at optimizer step "
                f"{self.state.global_step} (epoch {self.state.epoch or 0.0:.4f}); training "
                f"stopped, the checkpoints saved so far in {self.args.output_dir} are the last "
                "good states (lower the learning rate, check the data and the model weights)"
            )
        return (loss, outputs) if return_outputs else loss

    def _record(self, **parts: float) -> None:
        for key, value in parts.items():
            self._parts[key] = self._parts.get(key, 0.0) + value
        self._parts_count += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the sparsity and the mean task / KD loss parts since the last log."""
        if "loss" in logs and self._parts_count:
            for key, total in self._parts.items():
                logs[f"{key}_loss"] = total / self._parts_count
            self._parts.clear()
            self._parts_count = 0
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, ObertPruningCallback) and callback.masks is not None:
                logs["sparsity"] = round(callback.sparsity(), 6)
                logs.update(callback.pending_log)
                callback.pending_log = {}
        super().log(logs, start_time)
