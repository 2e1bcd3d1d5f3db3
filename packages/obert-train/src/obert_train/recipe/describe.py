"""The resolved plan of a recipe as text, for a user to read before a long run.

``obert-train recipe show RECIPE`` prints :meth:`Recipe.describe`: the run length, every
pruning step (epoch, optimizer step, method, target sparsity, mask type) with each method's
settings, the layers a ``!LayerDroppingModifier`` keeps, the learning-rate phases with their
restarts (a ``!SetLearningRateModifier`` as a constant phase), the weight decay, frozen
parameters, distillation and constant masks, the zeroth-order steps of a
``!ZerothOrderModifier``, and a SparseML file's version and evaluated variables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from obert_train.layers import evenly_spaced_layers
from obert_train.recipe._messages import fmt
from obert_train.recipe.modifiers import (
    DistillationModifier,
    EpochRangeModifier,
    LearningRateFunctionModifier,
    step_of_epoch,
)
from obert_train.recipe.pruning_modifier import PruningEvent, PruningModifier, settings_content
from obert_train.recipe.training_modifiers import (
    LayerDroppingModifier,
    TrainableParamsModifier,
    ZerothOrderModifier,
)

__all__ = ["describe_recipe"]


class _Plan(Protocol):
    """What the description reads of a ``Recipe``.

    A protocol, so this module (which ``Recipe.describe`` imports) does not import ``Recipe``.
    """

    @property
    def where(self) -> str: ...
    @property
    def num_epochs(self) -> float: ...
    @property
    def learning_rate(self) -> tuple[LearningRateFunctionModifier, ...]: ...
    @property
    def pruning(self) -> tuple[PruningModifier, ...]: ...
    @property
    def distillation(self) -> DistillationModifier | None: ...
    @property
    def epoch_range(self) -> EpochRangeModifier | None: ...
    @property
    def weight_decay(self) -> float | None: ...
    @property
    def trainable(self) -> tuple[TrainableParamsModifier, ...]: ...
    @property
    def layer_dropping(self) -> LayerDroppingModifier | None: ...
    @property
    def version(self) -> str | None: ...
    @property
    def variables(self) -> Mapping[str, Any]: ...
    @property
    def notes(self) -> tuple[str, ...]: ...
    @property
    def zeroth_order(self) -> ZerothOrderModifier | None: ...
    def fingerprint(self) -> str: ...
    def total_steps(self, steps_per_epoch: int) -> int: ...
    def pruning_events(self, steps_per_epoch: int) -> list[PruningEvent]: ...


def _epochs(values: list[float], limit: int = 12) -> str:
    shown = ", ".join(fmt(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _plural(value: float, word: str) -> str:
    return f"{fmt(value)} {word}" + ("" if value == 1 else "s")


def _at(epoch: float, spe: int | None) -> str:
    return f"epoch {fmt(epoch)}" + (f", step {step_of_epoch(epoch, spe)}" if spe else "")


def _lr(value: float) -> str:
    """A learning rate: ``1.5e-04``, ``0.1``."""
    if value == 0 or abs(value) >= 1e-2:
        return fmt(value)
    mantissa, exponent = f"{value:.6e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent):+03d}"


def _show(value: object) -> str:
    return fmt(value) if isinstance(value, float) else str(value)


def _settings(modifier: PruningModifier) -> str:
    values = settings_content(modifier.settings)
    parts = [f"{k}={_show(v)}" for k, v in values.items() if k != "targets" and v is not None]
    return " ".join(parts)


def _lr_lines(recipe: _Plan, spe: int | None, pruning_epochs: set[float]) -> list[str]:
    if not recipe.learning_rate:
        return ["Learning rate: not set by the recipe (the trainer's own schedule)"]
    lines = ["Learning rate:"]
    phases: list[LearningRateFunctionModifier] = sorted(
        recipe.learning_rate, key=lambda m: m.start_epoch
    )
    covered = 0.0
    for m in phases:
        if m.start_epoch > covered + 1e-9:
            lines.append(
                f"  epochs {fmt(covered)}-{fmt(m.start_epoch)}: the trainer's own learning rate"
            )
        text = (
            f"  epochs {fmt(m.start_epoch)}-{fmt(m.end_epoch)}: {m.lr_func} "
            f"{_lr(m.init_lr)} -> {_lr(m.final_lr)}"
        )
        if m.lr_func == "linear" and m.init_lr == m.final_lr:
            text = f"  epochs {fmt(m.start_epoch)}-{fmt(m.end_epoch)}: constant {_lr(m.init_lr)}"
        if m.cycle_epochs is not None:
            starts = m.cycle_starts()
            text += (
                f", cycles of {_plural(m.cycle_epochs, 'epoch')}; rewinds to {_lr(m.init_lr)} "
                f"at epochs {_epochs(starts)}"
            )
            rewinds = pruning_epochs & {round(s, 9) for s in starts}
            if rewinds:
                text += f" ({len(rewinds)} of them pruning steps)"
        if spe:
            a, b = step_of_epoch(m.start_epoch, spe), step_of_epoch(m.end_epoch, spe)
            text += f"; steps {a}-{b - 1}"
        lines.append(text)
        covered = max(covered, m.end_epoch)
    if covered < recipe.num_epochs - 1e-9:
        lines.append(
            f"  epochs {fmt(covered)}-{fmt(recipe.num_epochs)}: the trainer's own learning rate"
        )
    return lines


def _pruning_lines(recipe: _Plan, spe: int | None) -> list[str]:
    scheduled = [m for m in recipe.pruning if m.scheduled]
    if not scheduled:
        return ["Pruning: no pruning steps"]
    lines = ["Pruning:"]
    for m in scheduled:
        assert m.update_frequency is not None
        steps = m.schedule()
        lines.append(
            f"  {m.label()}: method {m.method_name}, {m.inter_func} {m.init_sparsity:.4f} -> "
            f"{m.final_sparsity:.4f}, epochs {fmt(m.start_epoch)}-{fmt(m.end_epoch)} every "
            f"{_plural(m.update_frequency, 'epoch')}, {len(steps)} steps"
        )
        lines += [
            f"    params: {p}" if i == 0 else f"            {p}" for i, p in enumerate(m.params)
        ]
        lines.append(f"    settings: {_settings(m)}")
        lines += _allocation_lines(m)
    head = "  #   epoch" + ("       step" if spe else "") + "  modifier  method      target  mask"
    lines.append(head)
    if spe:
        rows = [
            (e.epoch, step_of_epoch(e.epoch, spe), recipe.pruning[e.modifier], e.sparsity)
            for e in recipe.pruning_events(spe)
        ]
    else:
        flat = [(epoch, -1, m, s) for m in scheduled for epoch, s in m.schedule()]
        rows = sorted(flat, key=lambda row: (row[0], row[2].index))
    for i, (epoch, step, m, sparsity) in enumerate(rows, start=1):
        at = f"{step:>11}" if spe else ""
        lines.append(
            f"  {i:<3} {epoch:>6.2f}{at}  {m.position:>8}  {m.method_name:<10}  {sparsity:.4f}  "
            f"{m.settings.mask_type}"
        )
    last = max(m.end_epoch or 0.0 for m in scheduled)
    lines.append(
        f"  fine-tuning only after the last pruning step ({_at(last, spe)}): "
        f"{_plural(recipe.num_epochs - last, 'epoch')}"
    )
    return lines


def _allocation_lines(m: PruningModifier) -> list[str]:
    """What each step keeps per layer: structured ``uniform``, RxC ``lpvit`` / ``obs``."""
    values = m.settings.model_dump()
    if values.get("allocation") in ("lpvit", "obs"):
        curves = "LPViT's distortion" if values["allocation"] == "lpvit" else "the OBS loss"
        floor = values.get("allocation_floor")
        keep = (
            f"at least {floor:g} of the blocks uniform allocation would keep it"
            if floor is not None
            else "at least LPViT's minimum density min(0.05, (1 - target)/2)"
        )
        return [
            f"    allocation {values['allocation']}: each tensor's blocks by equal slopes of "
            f"{curves} curves; every tensor keeps {keep} (allocation_floor)",
            *_rounds_lines(values),
        ]
    if values.get("allocation") != "uniform":
        return []
    if m.settings.allocates_blocks:
        return _rounds_lines(values)
    heads = values.get("structure") == "heads"
    what = "heads" if heads else "neurons"
    rule = "" if heads else f", a multiple of {values.get('multiple')}"
    then = (
        "obert-train shrink removes them where the config has head_dim; obert-deploy export always"
        if heads
        else "obert-train shrink then writes a smaller intermediate_size"
    )
    return [
        f"    allocation uniform: every layer keeps the same number of {what}, the allowed size "
        f"nearest (1 - target)·n{rule}, its own highest-scored ones ({then})"
    ]


def _rounds_lines(values: dict[str, Any]) -> list[str]:
    """``allocation_rounds``: the rounds each step's block allocation takes (B-10)."""
    rounds = values.get("allocation_rounds", 1)
    if rounds == 1:
        return []
    spacing = (
        "equal steps of the cost removed"
        if values.get("allocation_spacing", "equal") == "equal"
        else "the kept cost falling by the same factor each round"
    )
    return [
        f"    allocation_rounds {rounds}: each step in {rounds} rounds ({spacing}), each with "
        "fresh gradients at the pruned weights, new curves and the allocation of its cumulative "
        "budget"
    ]


def _value(value: object) -> str:
    if isinstance(value, float):
        return _lr(value)
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _training_lines(recipe: _Plan) -> list[str]:
    decay = recipe.weight_decay
    lines = []
    if decay is not None:
        lines.append(
            f"Weight decay: {fmt(decay)} for the whole run (!SetWeightDecayModifier; replaces "
            "--weight-decay)"
        )
    for m in recipe.trainable:
        state = "trainable" if m.trainable else "frozen (requires_grad false)"
        strict = "" if m.params_strict else ", patterns matching nothing allowed"
        lines.append(
            f"Parameters {state} for the whole run ({m.label()}{strict}): {', '.join(m.params)}"
        )
    return lines


def _layer_lines(recipe: _Plan) -> list[str]:
    m = recipe.layer_dropping
    if m is None:
        return []
    if m.num_layers is not None:
        which = (
            f"{m.num_layers} evenly spaced layers, ending with the top one (of 6: "
            f"{_example(6, m.num_layers)}; of 12: {_example(12, m.num_layers)})"
        )
    else:
        which = f"layers {', '.join(str(i) for i in m.keep or ())}"
    return [
        f"Layers: the student keeps {which} before training ({m.label()}), renumbered from 0; "
        "the teacher stays whole; pruning params match the kept layers"
    ]


def _zo_lines(recipe: _Plan) -> list[str]:
    m = recipe.zeroth_order
    if m is None:
        return []
    if m.estimator == "spsa":
        how = (
            f"SPSA (MeZO): {_plural(m.num_directions, 'direction')} per step, 2 forwards each, "
            f"mu = {_lr(m.mu)}"
        )
    else:
        how = (
            f"coordinate-wise (DeepZero CGE): one forward per coordinate that moves, from its "
            f"stage on (feature reuse), mu = {_lr(m.mu)}, {m.workers} "
            f"process{'es' if m.workers > 1 else ''}, "
            + (f"SGD momentum {m.momentum:g}" if m.momentum > 0 else "no momentum")
        )
    lines = [
        f"Optimizer: zeroth-order for the whole run ({m.label()}): {how}; seed {m.seed}; no "
        "backward pass, weights move only where the pruning masks keep them"
    ]
    if m.estimator == "cge":
        lines.append(
            "  CGE moves a matrix only on a pruning mask or a gradient sparsity (its params); "
            "other matrices stay frozen, 1-D tensors (biases, LayerNorm) move in full"
        )
    if m.gradient_sparsity > 0:
        ratios = (
            "the same for every tensor"
            if m.gradient_ratios == "uniform"
            else f"per-tensor ZO-GraSP ratios (q = {m.grasp_directions}, mu = "
            f"{_lr(m.grasp_mu)}, first {m.grasp_examples} training examples) at the start"
        )
        targets = ", ".join(m.params) if m.params else "the encoder Linear weights"
        lines.append(
            f"  random sparse gradients: {fmt(m.gradient_sparsity)} of the coordinates of "
            f"{targets} held still, {ratios}; a fresh random mask every "
            f"{_plural(m.mask_period_epochs, 'epoch')}"
        )
    return lines


def _example(count: int, keep: int) -> str:
    if keep > count:
        return "too few layers"
    return ", ".join(str(i) for i in evenly_spaced_layers(count, keep))


def describe_recipe(recipe: _Plan, steps_per_epoch: int | None = None) -> str:
    """The plan of ``recipe`` as text (see :meth:`Recipe.describe`)."""
    spe = steps_per_epoch
    lines = [f"Recipe: {recipe.where}", f"Fingerprint: {recipe.fingerprint()[:16]}"]
    if recipe.version is not None:
        lines.append(f"SparseML recipe version: {recipe.version}")
    if recipe.variables:
        shown = ", ".join(f"{k} = {_value(v)}" for k, v in recipe.variables.items())
        lines.append(f"Variables (evaluated): {shown}")
    origin = "EpochRangeModifier" if recipe.epoch_range else "largest end_epoch of the modifiers"
    run = f"Run: {_plural(recipe.num_epochs, 'epoch')} ({origin})"
    if spe:
        run += f", {recipe.total_steps(spe)} optimizer steps at {spe} steps per epoch"
    lines.append(run)
    lines += _layer_lines(recipe)
    pruning_epochs = {round(epoch, 9) for m in recipe.pruning for epoch, _ in m.schedule()}
    lines += ["", *_pruning_lines(recipe, spe)]
    constant = [m for m in recipe.pruning if not m.scheduled]
    if constant:
        lines.append("Constant masks (the zeros of the starting model stay for the whole run):")
        for m in constant:
            lines.append(f"  {m.label()}, params:")
            lines += [f"    {p}" for p in m.params]
    lines += ["", *_lr_lines(recipe, spe, pruning_epochs), *_training_lines(recipe)]
    lines += [*_zo_lines(recipe), ""]
    kd = recipe.distillation
    if kd is None:
        lines.append("Distillation: none (task loss only)")
    else:
        kind = {0.0: " (task loss only)", 1.0: " (pure distillation)"}.get(kd.hardness, "")
        lines.append(
            f"Distillation: hardness h = {fmt(kd.hardness)}{kind}, temperature T = "
            f"{fmt(kd.temperature)}, outputs [{', '.join(kd.distill_output_keys)}], whole run; "
            "loss = (1 - h)·task + h·KL(teacher ‖ student, at T)·T²"
        )
    if recipe.notes:
        lines += ["", "Notes:", *(f"  {note}" for note in recipe.notes)]
    return "\n".join(lines)
