"""``ObertPruningCallback``: any recipe's pruning lifecycle inside a Hugging Face ``Trainer``.

The callback drives every pruning modifier of a recipe through the shared lifecycle
(:mod:`obert_train.pruning.method`) on the Trainer's events:

* ``on_train_begin``: resolve each modifier's tensors, build one :class:`MaskState`, call
  ``prepare``, register gradient masking hooks; on a resumed run restore masks, method state
  and schedule position from ``checkpoint-N/obert_state.pt``.
* ``on_step_begin``: at each scheduled optimizer step (``round(epoch * steps_per_epoch)``) call
  ``prune``: oBERT collects fresh loss gradients of the training data (task loss, hard labels,
  eval mode) and rebuilds the inverse Fisher with the memory planner.
* ``on_pre_optimizer_step``: ``after_backward`` (movement scores).
* ``on_optimizer_step``: re-zero the pruned weights (masks never regrow; gradients of pruned
  weights are already zero from the hooks, so moments, weight decay and clipping see none).
* ``on_save``: write the pruning state into the Trainer's checkpoint folder, then a completion
  marker (a checkpoint without it is incomplete and never resumed from).
* ``on_train_end``: ``finalize``, masks applied, hooks removed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from obert_train.checkpoint import atomic_write_text
from obert_train.errors import ObertTrainError, RecipeError, ResumeError, TrainingError
from obert_train.fisher.distributed import DistContext
from obert_train.fisher.sampler import GradientSampler, LossFn
from obert_train.pruning.masks import MaskState
from obert_train.pruning.method import PruningMethod, StepContext, check_nm_sparsity
from obert_train.pruning.targets import resolve_target_params
from obert_train.recipe import PruningEvent, Recipe, load_recipe

__all__ = ["STATE_FILE", "ObertPruningCallback", "steps_per_epoch"]

STATE_FILE = "obert_state.pt"
"""Pruning state inside each ``checkpoint-N`` folder."""
COMPLETE_FILE = "obert_complete.json"
"""Written last into a checkpoint folder: the checkpoint is complete."""


def steps_per_epoch(train_dataloader: Any, args: TrainingArguments) -> int:
    """Optimizer steps per epoch, as the Trainer counts them."""
    batches = len(train_dataloader)
    accum = max(1, args.gradient_accumulation_steps)
    return max(batches // accum + int(batches % accum > 0), 1)


class ObertPruningCallback(TrainerCallback):
    """Runs a recipe's pruning modifiers in a ``transformers.Trainer``.

    Example::

        callback = ObertPruningCallback("minilm-sst2-obert90", train_dataset=features,
                                        data_collator=collate)
        trainer = Trainer(model=model, args=args, train_dataset=features,
                          data_collator=collate, callbacks=[callback])
        trainer.train()

    Args:
        recipe: A :class:`~obert_train.recipe.Recipe`, a recipe file, YAML text or a shipped
            recipe name.
        train_dataset: Examples the gradient sampler draws from (default: the Trainer's
            training dataset).
        data_collator: Turns a list of examples into a batch with labels (default: the Trainer's
            collator).
        loss_fn: Loss of a batch for the Fisher gradients (default ``model(**batch).loss``).
        progress: Show progress bars of gradient collection.
        log: Receives progress lines (default: printed on rank 0).
        model_name: Recorded in the checkpoint state; resuming with another model is refused.
    """

    def __init__(
        self,
        recipe: Recipe | str | os.PathLike[str],
        *,
        train_dataset: Sequence[Any] | None = None,
        data_collator: Callable[[Sequence[Any]], dict[str, torch.Tensor]] | None = None,
        loss_fn: LossFn | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        model_name: str | None = None,
    ) -> None:
        self.recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
        self.train_dataset = train_dataset
        self.data_collator = data_collator
        self.loss_fn = loss_fn
        self.progress = progress
        self.model_name = model_name
        self._log = log
        self.dist = DistContext.current()
        self.methods: list[PruningMethod] = []
        self.params: list[dict[str, torch.nn.Parameter]] = []
        self.masks: MaskState | None = None
        self.views: list[MaskState] = []
        self.samplers: list[GradientSampler | None] = []
        self.events: list[PruningEvent] = []
        self.next_event = 0
        self.steps_per_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.timings: dict[str, float] = {}
        self.output_dir: Path | None = None
        self.resume_dir: Path | None = None
        """The checkpoint the Trainer resumes from (default: ``output_dir/checkpoint-N``)."""
        self.managed = False
        """Set by :class:`ObertTrainer`, which applies the recipe's LR and KD modifiers."""
        self.pending_log: dict[str, float] = {}
        """Facts of the last pruning step for the next Trainer log entry (``ObertTrainer.log``)."""

    # ------------------------------------------------------------------ helpers
    def log(self, line: str) -> None:
        """Emit a progress line (rank 0 only)."""
        if self.dist.rank != 0:
            return
        if self._log is not None:
            self._log(line)
        else:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def sparsity(self) -> float:
        """Current fraction of pruned weights over every modifier's tensors."""
        return self.masks.sparsity() if self.masks is not None else 0.0

    def _data(self, train_dataloader: Any) -> tuple[Sequence[Any], Callable[..., Any]]:
        dataset = self.train_dataset
        collate = self.data_collator
        if dataset is None:
            dataset = getattr(train_dataloader, "dataset", None)
        if collate is None:
            collate = getattr(train_dataloader, "collate_fn", None)
        if dataset is None or collate is None:
            raise ObertTrainError(
                "ObertPruningCallback needs the training examples and collator for the Fisher "
                "gradients: pass train_dataset= and data_collator="
            )
        return dataset, collate

    # ------------------------------------------------------------------ events
    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Resolve tensors, build masks, prepare methods, restore state when resuming."""
        model = kwargs["model"]
        self.dist = DistContext.current()
        self.output_dir = Path(str(args.output_dir))
        self.steps_per_epoch = steps_per_epoch(kwargs["train_dataloader"], args)
        recipe = self.recipe
        _check_layers_dropped(recipe, model)
        names = [n for n, _ in model.named_parameters()]
        recipe.check_targets(names)
        self.events = recipe.pruning_events(self.steps_per_epoch)
        self.methods = [modifier.create_method() for modifier in recipe.pruning]
        self.params = [resolve_target_params(model, m.settings.targets) for m in self.methods]
        union: dict[str, torch.nn.Parameter] = {}
        for group in self.params:
            union.update(group)
        self.masks = MaskState(union)
        self.views = [self.masks.view(list(group)) for group in self.params]
        dataset, collate = self._data(kwargs["train_dataloader"])
        self.samplers = [
            m.gradient_sampler(
                model,
                dataset,
                collate,
                loss_fn=self.loss_fn,
                progress=self.progress,
                dist_ctx=self.dist,
            )
            for m in self.methods
        ]
        for event in self.events:
            check_nm_sparsity(self.methods[event.modifier].settings, event.sparsity)
            method = self.methods[event.modifier]
            method.check_sparsity(model, self.params[event.modifier], event.sparsity)
        for method, group, view, sampler in zip(
            self.methods, self.params, self.views, self.samplers, strict=True
        ):
            method.check(group)
            method.prepare(group, view, self._context(sampler, 0))
        last = max((e.step for e in self.events), default=-1)
        if state.max_steps and last >= state.max_steps:
            raise RecipeError(
                f"the Trainer runs {state.max_steps} optimizer steps, but the recipe "
                f"{recipe.path or '(text)'} prunes until step {last} (epoch "
                f"{self.events[-1].epoch:g}) and runs {recipe.num_epochs:g} epochs; set "
                f"num_train_epochs={recipe.num_epochs:g} (ObertTrainer / run_recipe do)"
            )
        if not self.managed and (recipe.learning_rate or recipe.distillation is not None):
            self.log(
                "note: the recipe's learning-rate and distillation modifiers are applied by "
                "ObertTrainer; this Trainer only runs its pruning (see recipe_lr_scheduler and "
                "distillation_loss to add them)"
            )
        if not self.managed and (recipe.weight_decay is not None or recipe.trainable):
            self.log(
                "note: the recipe's !SetWeightDecayModifier / !TrainableParamsModifier are "
                "applied by run_recipe; with your own Trainer set TrainingArguments.weight_decay "
                "and call recipe.apply_trainable(model) before training"
            )
        if state.global_step > 0:
            folder = (
                self.resume_dir or Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
            )
            self._restore(Path(folder))
        else:
            self.next_event = 0
        self.masks.mask_gradients()
        self.masks.apply()
        self.log(
            f"pruning plan: {len(self.events)} pruning steps, {self.steps_per_epoch} optimizer "
            f"steps per epoch; {len(union)} tensors, sparsity now {self.sparsity():.4f}"
        )

    def _context(self, sampler: GradientSampler | None, round_index: int) -> StepContext:
        return StepContext(
            sampler=sampler,
            dist=self.dist,
            round_index=round_index,
            timings={},
            log=self.log,
            progress=self.progress,
            gradual=True,
        )

    def on_step_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Run every pruning step scheduled at (or before) this optimizer step."""
        while self.next_event < len(self.events) and (
            self.events[self.next_event].step <= state.global_step
        ):
            self._prune(self.events[self.next_event], state, kwargs.get("optimizer"))
            self.next_event += 1

    def _clear_optimizer_state(self, optimizer: Any, names: list[str]) -> None:
        """Zero the optimizer's per-weight state (Adam moments) of the pruned weights."""
        if optimizer is None or self.masks is None:
            return
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the optimizer
        state = getattr(inner, "state", {})
        with torch.no_grad():
            for name in names:
                p = self.masks.params[name]
                for value in state.get(p, {}).values():
                    if isinstance(value, torch.Tensor) and value.shape == p.shape:
                        value.mul_(self.masks[name].view(p.shape).to(value.dtype))

    def _prune(self, event: PruningEvent, state: TrainerState, optimizer: Any = None) -> None:
        assert self.masks is not None
        index = event.modifier
        method, group, view = self.methods[index], self.params[index], self.views[index]
        ctx = self._context(self.samplers[index], event.index)
        before = view.sparsity()
        self.log(
            f"pruning step {event.index + 1}/{len(self.events)} at epoch {event.epoch:.4g} "
            f"(optimizer step {state.global_step}): {method.name} {before:.4f} -> "
            f"{event.sparsity:.4f}"
        )
        start = time.perf_counter()
        method.prune(group, view, event.sparsity, ctx)
        seconds = time.perf_counter() - start
        for key, value in ctx.timings.items():
            self.timings[key] = self.timings.get(key, 0.0) + value
        self.timings["prune_s"] = self.timings.get("prune_s", 0.0) + seconds
        self._clear_optimizer_state(optimizer, list(group))
        record = {
            "index": event.index,
            "epoch": event.epoch,
            "step": state.global_step,
            "method": method.name,
            "target_sparsity": event.sparsity,
            "sparsity": view.sparsity(),
            "total_sparsity": self.masks.sparsity(),
            "seconds": seconds,
            # structured: the fraction of atoms removed, the target's unit (issue 18)
            **_atoms(method),
            "timings": {k: round(v, 4) for k, v in ctx.timings.items()},
        }
        if ctx.stats:
            record["diagnostics"] = dict(ctx.stats)
        self.history.append(record)
        self.pending_log = {
            "pruning_step": float(event.index + 1),
            "pruning_target_sparsity": event.sparsity,
            "pruning_seconds": round(seconds, 3),
            **{f"pruning_{k}": round(v, 3) for k, v in ctx.timings.items()},
        }
        self._check_ranks_agree(event)
        if self.dist.rank == 0 and self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with (self.output_dir / "pruning_log.jsonl").open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def _check_ranks_agree(self, event: PruningEvent) -> None:
        """Under torch.distributed every rank must hold the same masks after a pruning step."""
        if not self.dist.active or self.masks is None:
            return
        device = next(iter(self.masks.params.values())).device  # NCCL needs device tensors
        digest = torch.zeros(2 * len(self.masks), dtype=torch.float64, device=device)
        for i, (_, mask) in enumerate(self.masks.items()):
            kept = mask.to(torch.float64)
            digest[2 * i] = kept.sum()
            positions = torch.arange(kept.numel(), dtype=torch.float64, device=device)
            digest[2 * i + 1] = (kept * positions).sum()
        low, high = digest.clone(), digest.clone()
        torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
        torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise TrainingError(
                f"after pruning step {event.index + 1} the ranks hold different masks; the "
                "model replicas diverged (report this with the recipe)"
            )

    def on_pre_optimizer_step(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Hand the gradients to methods that track training (movement scores)."""
        for method, group, view in zip(self.methods, self.params, self.views, strict=True):
            method.after_backward(group, view)

    def on_optimizer_step(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Pruned weights back to exactly zero after the optimizer moved them."""
        if self.masks is not None:
            self.masks.apply()

    def on_save(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Write the pruning state, then the completion marker, into ``checkpoint-N``."""
        if self.masks is None or not args.should_save:
            return
        folder = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
        if not folder.is_dir():
            return
        payload = {
            "format": 1,
            "recipe_fingerprint": self.recipe.fingerprint(),
            "model_name": self.model_name,
            "global_step": state.global_step,
            "next_event": self.next_event,
            "masks": self.masks.state_dict(),
            "methods": [m.state_dict() for m in self.methods],
            "history": self.history,
            "timings": self.timings,
        }
        tmp = folder / f".{STATE_FILE}.tmp"
        torch.save(payload, tmp)
        tmp.replace(folder / STATE_FILE)
        atomic_write_text(
            folder / COMPLETE_FILE,
            json.dumps({"global_step": state.global_step, "sparsity": self.sparsity()}, indent=2)
            + "\n",
        )

    def _restore(self, folder: Path) -> None:
        assert self.masks is not None
        file = folder / STATE_FILE
        if not file.is_file():
            raise ResumeError(
                f"cannot resume: {folder} has no {STATE_FILE} (the checkpoint was not written by "
                "a run with ObertPruningCallback, or it is incomplete); if the Trainer resumes "
                "from another folder, set the callback's resume_dir to it"
            )
        payload = torch.load(file, map_location="cpu", weights_only=False)
        check_resumable(payload, self.recipe, self.model_name, folder)
        self.masks.load_state_dict(payload["masks"])
        self.views = [self.masks.view(list(group)) for group in self.params]
        for method, state in zip(self.methods, payload["methods"], strict=True):
            method.load_state_dict(state)
        self.next_event = int(payload["next_event"])
        self.history = list(payload.get("history", []))
        if self.dist.rank == 0 and self.output_dir is not None:
            # Steps replayed after this checkpoint must not appear twice in the log.
            lines = "".join(json.dumps(record) + "\n" for record in self.history)
            atomic_write_text(self.output_dir / "pruning_log.jsonl", lines)
        self.timings = dict(payload.get("timings", {}))
        self.log(
            f"resumed from {folder}: sparsity {self.sparsity():.4f}, "
            f"{self.next_event}/{len(self.events)} pruning steps done"
        )

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Finalize every method, apply the masks one last time, remove the hooks."""
        if self.masks is None:
            return
        for method, group, view in zip(self.methods, self.params, self.views, strict=True):
            method.finalize(group, view)
        self.masks.apply()
        self.masks.remove_hooks()


def check_resumable(
    payload: Mapping[str, Any], recipe: Recipe, model_name: str | None, folder: Path
) -> None:
    """Refuse a checkpoint of another recipe or model, naming both.

    Raises:
        ResumeError: On a recipe or model mismatch.
    """
    if payload.get("recipe_fingerprint") != recipe.fingerprint():
        raise ResumeError(
            f"cannot resume from {folder}: it was written by another recipe (fingerprint "
            f"{str(payload.get('recipe_fingerprint'))[:12]}, this run's recipe "
            f"{recipe.path or '(text)'} has {recipe.fingerprint()[:12]}); use the recipe the run "
            "started with, or a new --output-dir"
        )
    saved = payload.get("model_name")
    if model_name is not None and saved is not None and saved != model_name:
        raise ResumeError(
            f"cannot resume from {folder}: it was written for model {saved!r}, this run uses "
            f"{model_name!r}; use the same --model, or a new --output-dir"
        )


def latest_complete_checkpoint(output_dir: Path) -> Path | None:
    """The ``checkpoint-N`` folder with the highest N that holds the completion marker."""
    best: tuple[int, Path] | None = None
    if not output_dir.is_dir():
        return None
    for child in output_dir.iterdir():
        if not child.name.startswith("checkpoint-") or not (child / COMPLETE_FILE).is_file():
            continue
        try:
            step = int(child.name.removeprefix("checkpoint-"))
        except ValueError:
            continue
        if best is None or step > best[0]:
            best = (step, child)
    return None if best is None else best[1]


def _atoms(method: PruningMethod) -> dict[str, float]:
    """``{"atom_sparsity": ...}`` for a structured method after a step, else nothing."""
    atoms = getattr(method, "atom_sparsity", None)
    return {} if atoms is None else {"atom_sparsity": float(atoms)}


def _check_layers_dropped(recipe: Recipe, model: torch.nn.Module) -> None:
    """A recipe with a ``!LayerDroppingModifier`` trains a model that has only the kept layers.

    ``run_recipe`` drops them before the Trainer is built; with another Trainer the caller
    calls ``recipe.apply_layer_dropping(model)`` first.

    Raises:
        RecipeError: If the model has another number of layers than the modifier keeps.
    """
    drop = recipe.layer_dropping
    if drop is None:
        return
    from obert_train.layers import find_layers

    _, layers = find_layers(model)
    want = drop.num_layers if drop.num_layers is not None else len(drop.keep or ())
    if len(layers) != want:
        raise RecipeError(
            f"{drop.label()} in {recipe.where} keeps {want} layers, but the model being trained "
            f"has {len(layers)}: call recipe.apply_layer_dropping(model) before building the "
            "Trainer (run_recipe does)"
        )
