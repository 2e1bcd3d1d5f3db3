"""The validated recipe: run length, learning-rate phases, pruning schedules and distillation.

Recipe-level rules (docs/math.md §5; docs/recipes.md): at most one ``!EpochRangeModifier``
(without one the run length is the largest ``end_epoch`` of all modifiers) and at most one
``!DistillationModifier``; learning-rate modifiers do not overlap and end by the run end;
every pruning step comes before the run end (at least one optimizer step follows it); constant
masks cover the whole run; a ``!ZerothOrderModifier`` covers the whole run and refuses a pruning
method that scores from the training gradients (movement: a ZO step has none). Which
tensors each pruning modifier selects can only be checked against a model:
:meth:`Recipe.check_targets`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from obert_train.errors import ModelError, RecipeError
from obert_train.pruning.method import PruningMethod
from obert_train.pruning.registry import METHODS, method_for_tag
from obert_train.recipe._messages import explain_errors, fmt, suggest
from obert_train.recipe._yaml import RawModifier
from obert_train.recipe.describe import describe_recipe
from obert_train.recipe.modifiers import (
    CORE_MODIFIERS,
    DistillationModifier,
    EpochRangeModifier,
    LearningRateFunctionModifier,
    check_steps_per_epoch,
    step_of_epoch,
    validate_core,
)
from obert_train.recipe.pruning_modifier import (
    PruningEvent,
    PruningModifier,
    build_pruning_modifier,
)
from obert_train.recipe.spec import ModifierSpec, recipe_yaml
from obert_train.recipe.training_modifiers import (
    REFUSED_MODIFIERS,
    TRAINING_MODIFIERS,
    LayerDroppingModifier,
    SetLearningRateModifier,
    SetWeightDecayModifier,
    TrainableParamsModifier,
    ZerothOrderModifier,
    refuse_modifier,
    validate_training,
)

__all__ = ["PruningEvent", "Recipe", "known_tags", "validate_recipe"]

_FORMAT = 1
"""Version of the canonical content behind :meth:`Recipe.fingerprint`."""


class _Parameter(Protocol):
    def requires_grad_(self, requires_grad: bool = True) -> Any: ...


class _Model(Protocol):
    def named_parameters(self) -> Any: ...


def known_tags() -> list[str]:
    """Every modifier tag a recipe may use (core modifiers and registered pruning methods)."""
    tags = set(CORE_MODIFIERS) | set(TRAINING_MODIFIERS)
    for cls in METHODS.values():
        tags.update(cls.recipe_tags)
    return sorted(tags)


@dataclass(frozen=True, eq=False)
class Recipe:
    """A validated recipe (use :func:`~obert_train.recipe.load_recipe` to make one).

    Two recipes are equal when their resolved content is (:meth:`fingerprint`): the file they
    came from and the order of modifier groups do not matter.

    Attributes:
        path: The file it was read from (None for YAML text).
        num_epochs: Run length in epochs.
        learning_rate: The learning-rate modifiers, in file order.
        pruning: The pruning modifiers, in file order (``PruningModifier.index`` is the
            position here).
        distillation: The distillation modifier, or None.
        epoch_range: The ``!EpochRangeModifier``, or None when the run length came from the
            other modifiers.
        source: How messages name the recipe (``"shipped recipe 'minilm-sst2-obert80'"``);
            None: the path, or ``"recipe text"``.
        weight_decay: The AdamW weight decay of a ``!SetWeightDecayModifier`` (None: the
            trainer's, ``--weight-decay``).
        trainable: The ``!TrainableParamsModifier`` s (frozen or unfrozen parameters), in file
            order; :meth:`apply_trainable` applies them.
        layer_dropping: The ``!LayerDroppingModifier`` (the student's layers kept before
            training), or None; :meth:`apply_layer_dropping` applies it.
        version: SparseML's top-level ``version`` of the file, if it had one (not part of the
            content).
        variables: The evaluated top-level variables of the file (not part of the content:
            what they set is in the modifiers).
        notes: What the file had that does not run here and changes nothing (SparseML's
            ``log_types``), one line each; :meth:`describe` prints them.
        zeroth_order: The ``!ZerothOrderModifier`` (the run's steps are zeroth-order,
            :class:`~obert_train.ZOTrainer`), or None (backprop).
    """

    path: str | None
    num_epochs: float
    learning_rate: tuple[LearningRateFunctionModifier, ...]
    pruning: tuple[PruningModifier, ...]
    distillation: DistillationModifier | None = None
    epoch_range: EpochRangeModifier | None = None
    source: str | None = None
    weight_decay: float | None = None
    trainable: tuple[TrainableParamsModifier, ...] = ()
    layer_dropping: LayerDroppingModifier | None = None
    version: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    zeroth_order: ZerothOrderModifier | None = None

    @property
    def where(self) -> str:
        """The recipe as messages name it: the shipped name, the file or ``"recipe text"``."""
        if self.source is not None:
            return self.source
        return self.path if self.path is not None else "recipe text"

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the run: ``step_of_epoch(num_epochs, spe)``."""
        return step_of_epoch(self.num_epochs, check_steps_per_epoch(steps_per_epoch))

    def lr_at(self, step: int, steps_per_epoch: int) -> float | None:
        """Learning rate of optimizer step ``step``, or None when no modifier covers it.

        When None, the trainer keeps its own learning rate. See
        :class:`LearningRateFunctionModifier` for the step-exact definition.
        """
        for modifier in self.learning_rate:
            lr = modifier.lr_at(step, steps_per_epoch)
            if lr is not None:
                return lr
        return None

    def pruning_events(self, steps_per_epoch: int) -> list[PruningEvent]:
        """Every pruning step of the run, sorted by (step, modifier).

        Raises:
            RecipeError: If two steps of one modifier land on the same optimizer step, or a
                step lands at or after the last optimizer step (too few steps per epoch for
                the schedule).
        """
        spe = check_steps_per_epoch(steps_per_epoch)
        total = self.total_steps(spe)
        found: list[tuple[int, int, float, float]] = []
        for modifier in self.pruning:
            previous: tuple[int, float] | None = None
            for epoch, sparsity in modifier.schedule():
                step = step_of_epoch(epoch, spe)
                if previous is not None and step == previous[0]:
                    raise RecipeError(
                        f"{modifier.label()} in {self.where}: the pruning steps at epochs "
                        f"{fmt(previous[1])} and {fmt(epoch)} both land on optimizer step "
                        f"{step} at {spe} steps per epoch; use a larger update_frequency "
                        "or more steps per epoch"
                    )
                if step >= total:
                    raise RecipeError(
                        f"{modifier.label()} in {self.where}: the pruning step at epoch "
                        f"{fmt(epoch)} lands on optimizer step {step}, at or after the end of "
                        f"the run ({total} steps at {spe} steps per epoch); end pruning earlier"
                    )
                previous = (step, epoch)
                found.append((step, modifier.index, epoch, sparsity))
        found.sort(key=lambda item: (item[0], item[1]))
        return [
            PruningEvent(step=step, epoch=epoch, modifier=mod, sparsity=sparsity, index=i)
            for i, (step, mod, epoch, sparsity) in enumerate(found)
        ]

    def check_targets(self, names: Sequence[str]) -> list[list[str]]:
        """Resolve every pruning modifier's ``params`` against a model's parameter names.

        Args:
            names: The model's parameter names (``model.named_parameters()``).

        Returns:
            For each modifier of :attr:`pruning`, the names it selects, in model order.

        Raises:
            RecipeError: If a ``params`` entry matches no parameter, or two modifiers select
                the same tensor.
        """
        names = list(names)
        sample = [n for n in names if n.endswith("weight")][:4] or names[:4]
        owner: dict[str, PruningModifier] = {}
        selected: list[list[str]] = []
        for modifier in self.pruning:
            chosen: set[str] = set()
            for entry, regex in zip(modifier.params, modifier.targets, strict=True):
                pattern = re.compile(regex)
                hits = [n for n in names if pattern.search(n)]
                if not hits:
                    close = suggest(entry.removeprefix("re:"), names).removesuffix(";")
                    raise RecipeError(
                        f"{modifier.label()} in {self.where}: params {entry!r} match no "
                        f"parameter of the model ({len(names)} parameters; e.g. {sample})"
                        f"{close}; fix the pattern"
                    )
                chosen.update(hits)
            ordered = [n for n in names if n in chosen]
            for name in ordered:
                other = owner.get(name)
                if other is not None:
                    shared = [n for n in ordered if owner.get(n) is other]
                    raise RecipeError(
                        f"{other.label()} and {modifier.label()} in {self.where} both select "
                        f"{name!r} ({len(shared)} shared tensor(s)); a tensor may belong to "
                        "one pruning modifier only: narrow the params"
                    )
            for name in ordered:
                owner[name] = modifier
            selected.append(ordered)
        return selected

    def trainable_plan(self, names: Sequence[str]) -> dict[str, bool]:
        """Parameter name -> ``requires_grad`` for the parameters ``trainable`` selects.

        Later modifiers win for a parameter two of them select.

        Raises:
            RecipeError: If a strict entry matches no parameter, or a frozen parameter is one a
                scheduled pruning modifier prunes (its scores need gradients).
        """
        names = list(names)
        plan: dict[str, bool] = {}
        for modifier in self.trainable:
            for name in modifier.select(names, self.where):
                plan[name] = modifier.trainable
        if not plan:
            return plan
        for pruner, selected in zip(self.pruning, self.check_targets(names), strict=True):
            frozen = [n for n in selected if plan.get(n) is False]
            if pruner.scheduled and frozen:
                raise RecipeError(
                    f"{pruner.label()} in {self.where} prunes {frozen[0]!r}, which a "
                    f"!TrainableParamsModifier freezes ({len(frozen)} such tensor(s)); a pruned "
                    "tensor must stay trainable: narrow the frozen params"
                )
        return plan

    def apply_trainable(self, model: _Model) -> dict[str, bool]:
        """Freeze or unfreeze ``model``'s parameters as the ``!TrainableParamsModifier`` s say.

        Call it before the optimizer is built (``run_recipe`` does).

        Returns:
            :meth:`trainable_plan` of the model (what was set).

        Raises:
            RecipeError: As :meth:`trainable_plan`, before any parameter is changed.
        """
        named = dict(model.named_parameters())
        plan = self.trainable_plan(list(named))
        for name, trainable in plan.items():
            parameter: _Parameter = named[name]
            parameter.requires_grad_(trainable)
        return plan

    def apply_layer_dropping(self, model: Any) -> list[int] | None:
        """Keep only the ``!LayerDroppingModifier``'s layers of ``model`` (in place).

        Call it before the pruning modifiers' targets are resolved and the optimizer is built
        (``run_recipe`` does); the teacher is not touched.

        Returns:
            The indices of the kept layers (of the original model), or None without the
            modifier.

        Raises:
            RecipeError: If the model has fewer layers than the modifier keeps.
            ModelError: If the model has no known layer list (:func:`obert_train.drop_layers`);
                the model is then unchanged.
        """
        modifier = self.layer_dropping
        if modifier is None:
            return None
        from obert_train.layers import drop_layers, find_layers

        try:
            _, layers = find_layers(model)
            kept = modifier.kept(len(layers), self.where)
            drop_layers(model, kept)
        except ModelError as exc:  # no layer list, or a config that cannot describe them
            raise ModelError(f"{modifier.label()} in {self.where}: {exc}") from None
        return kept

    def content(self) -> dict[str, Any]:
        """The resolved content: what :meth:`fingerprint` hashes and equality compares.

        The weight decay, trainable parameters, layer dropping and zeroth-order steps are
        included only when the recipe sets them, so the fingerprints of recipes without them
        did not change.
        """
        extra: dict[str, Any] = {}
        if self.weight_decay is not None:
            extra["weight_decay"] = self.weight_decay
        if self.trainable:
            extra["trainable"] = [m.recipe_dict() for m in self.trainable]
        if self.layer_dropping is not None:
            extra["layer_dropping"] = self.layer_dropping.recipe_dict()
        if self.zeroth_order is not None:
            # the whole run always; workers do not change the estimate (a resume may change them);
            # momentum 0 (the default) left out: recipes from before the field keep their print
            fields = self.zeroth_order.recipe_dict().items()
            zo = {
                k: v
                for k, v in fields
                if "epoch" not in k and k != "workers" and not (k == "momentum" and v == 0)
            }
            extra["zeroth_order"] = zo
        return {**self._content(), **extra}

    def _content(self) -> dict[str, Any]:
        kd = self.distillation
        return {
            "format": _FORMAT,
            "num_epochs": self.num_epochs,
            "learning_rate": [m.recipe_dict() for m in self.learning_rate],
            "pruning": [
                {**m.content(), "end_epoch": m.end_epoch if m.scheduled else self.num_epochs}
                for m in self.pruning
            ],
            "distillation": None
            if kd is None
            else {
                "hardness": kd.hardness,
                "temperature": kd.temperature,
                "distill_output_keys": list(kd.distill_output_keys),
            },
        }

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`content`.

        A checkpoint stores it, so a run is not resumed with another recipe.
        """
        text = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Recipe):
            return NotImplemented
        return self.content() == other.content()

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def modifiers(self) -> list[ModifierSpec]:
        """The resolved modifiers as specs: run length, learning rate, pruning, distillation.

        Each has the fields a recipe file needs to give the same modifier (method settings:
        those given and those that differ from the method's defaults), so
        ``build_recipe(recipe.modifiers()) == recipe``; replace some to derive another recipe.
        """
        epoch_range = self.epoch_range or EpochRangeModifier(end_epoch=self.num_epochs)
        core: list[Any] = [epoch_range]
        if self.layer_dropping is not None:
            core.append(self.layer_dropping)
        core += self.learning_rate
        if self.weight_decay is not None:
            core.append(SetWeightDecayModifier(weight_decay=self.weight_decay, start_epoch=0))
        core += self.trainable
        if self.zeroth_order is not None:
            core.append(self.zeroth_order)
        kd = [self.distillation] if self.distillation is not None else []
        return [
            *(ModifierSpec(m.tag, m.recipe_dict()) for m in core),
            *(ModifierSpec(m.tag, m.recipe_dict()) for m in self.pruning),
            *(ModifierSpec(m.tag, m.recipe_dict()) for m in kd),
        ]

    def to_yaml(self) -> str:
        """The recipe as SparseML-format YAML (same tags and groups) that loads back equal."""
        source = f" (resolved from {self.path})" if self.path else ""
        header = f"# obert-train recipe{source}\n# fingerprint {self.fingerprint()}\n\n"
        return header + recipe_yaml(self.modifiers())

    def describe(self, steps_per_epoch: int | None = None) -> str:
        """The resolved plan as text (run length, pruning steps, LR phases, distillation).

        Args:
            steps_per_epoch: If given, optimizer steps are shown next to epochs.
        """
        return describe_recipe(self, steps_per_epoch)


def _unknown_tag(raw: RawModifier, where: str) -> RecipeError:
    tags = known_tags()
    return RecipeError(
        f"{raw.label()} in {where}: unknown modifier tag !{raw.tag}{suggest(raw.tag, tags)} "
        f"known tags: {['!' + t for t in tags]}"
    )


def _single(
    found: Sequence[
        EpochRangeModifier
        | DistillationModifier
        | SetWeightDecayModifier
        | LayerDroppingModifier
        | ZerothOrderModifier
    ],
    kind: str,
    where: str,
) -> None:
    if len(found) > 1:
        raise RecipeError(
            f"{found[1].label()} in {where}: a recipe has at most one {kind}, "
            f"{found[0].label()} is one already; remove one"
        )


def validate_recipe(raws: Sequence[RawModifier], path: str | None, where: str) -> Recipe:
    """Validate the modifiers of a recipe and the rules between them (module docstring).

    Args:
        raws: The modifiers as read, in file order.
        path: The file (None for text).
        where: The file (or ``"recipe text"``) for messages.

    Raises:
        RecipeError: Naming the file, the modifier, the field and the value.
    """
    ranges: list[EpochRangeModifier] = []
    rates: list[LearningRateFunctionModifier] = []
    kds: list[DistillationModifier] = []
    pruning: list[PruningModifier] = []
    set_rates: list[SetLearningRateModifier] = []
    decays: list[SetWeightDecayModifier] = []
    trainable: list[TrainableParamsModifier] = []
    dropping: list[LayerDroppingModifier] = []
    zeroth: list[ZerothOrderModifier] = []
    for raw in raws:
        if raw.tag in REFUSED_MODIFIERS:
            raise refuse_modifier(raw, where)
        if raw.tag in TRAINING_MODIFIERS:
            extra = validate_training(raw, where)
            if isinstance(extra, SetLearningRateModifier):
                set_rates.append(extra)
            elif isinstance(extra, SetWeightDecayModifier):
                decays.append(extra)
            elif isinstance(extra, LayerDroppingModifier):
                dropping.append(extra)
            elif isinstance(extra, ZerothOrderModifier):
                zeroth.append(extra)
            else:
                trainable.append(extra)
            continue
        if raw.tag in CORE_MODIFIERS:
            modifier = validate_core(raw, where)
            if isinstance(modifier, EpochRangeModifier):
                ranges.append(modifier)
            elif isinstance(modifier, LearningRateFunctionModifier):
                rates.append(modifier)
            else:
                kds.append(modifier)
            continue
        cls = method_for_tag(raw.tag)
        if cls is None:
            raise _unknown_tag(raw, where)
        pruning.append(build_pruning_modifier(raw, cls, len(pruning), where))
    _single(ranges, "EpochRangeModifier", where)
    _single(kds, "DistillationModifier", where)
    _single(decays, "SetWeightDecayModifier", where)
    _single(dropping, "LayerDroppingModifier", where)
    _single(zeroth, "ZerothOrderModifier", where)
    if ranges:
        num_epochs = ranges[0].end_epoch
        source = f"{ranges[0].label()}"
    else:
        ends = [m.end_epoch for m in rates] + [m.end_epoch or 0.0 for m in pruning]
        ends += [m.end_epoch or 0.0 for m in kds] + [m.end_epoch for m in set_rates]
        ends += [m.end_epoch for m in zeroth]
        num_epochs = max(ends, default=0.0)
        source = "the largest end_epoch of the modifiers (no EpochRangeModifier)"
        if num_epochs <= 0:
            raise RecipeError(
                f"{where}: the run length is unknown; add '- !EpochRangeModifier' with "
                "start_epoch: 0 and end_epoch: <epochs>"
            )
    rates += _constant_rates(set_rates, rates, num_epochs, where)
    rates.sort(key=lambda m: m.position)
    _check_run(num_epochs, source, rates, pruning, kds[0] if kds else None, where)
    if zeroth:
        _check_zeroth_order(zeroth[0], num_epochs, source, pruning, where)
    return Recipe(
        path=path,
        num_epochs=num_epochs,
        learning_rate=tuple(rates),
        pruning=tuple(pruning),
        distillation=kds[0] if kds else None,
        epoch_range=ranges[0] if ranges else None,
        source=where,
        weight_decay=decays[0].weight_decay if decays else None,
        trainable=tuple(trainable),
        layer_dropping=dropping[0] if dropping else None,
        zeroth_order=zeroth[0] if zeroth else None,
    )


def _check_zeroth_order(
    zo: ZerothOrderModifier,
    num_epochs: float,
    source: str,
    pruning: Sequence[PruningModifier],
    where: str,
) -> None:
    """ZO steps cover the whole run; pruning may not score from the training gradients."""
    if zo.end_epoch != -1 and abs(zo.end_epoch - num_epochs) > 1e-9:
        raise RecipeError(
            f"{zo.label()} in {where}: end_epoch = {fmt(zo.end_epoch)}: zeroth-order steps run "
            f"for the whole run; the run ends at epoch {fmt(num_epochs)} ({source}): set "
            f"end_epoch: {fmt(num_epochs)} or -1"
        )
    for mod in pruning:
        cls = METHODS[mod.method_name]
        if cls.after_backward is not PruningMethod.after_backward:
            raise RecipeError(
                f"{mod.label()} and {zo.label()} in {where}: method {mod.method_name} scores "
                "weights from the training gradients, and a zeroth-order step computes none; "
                "prune with a method that samples its own gradients (!OBSPruningModifier, "
                "!GMPruningModifier) or hold an existing mask (!ConstantPruningModifier)"
            )


def _constant_rates(
    set_rates: Sequence[SetLearningRateModifier],
    rates: Sequence[LearningRateFunctionModifier],
    num_epochs: float,
    where: str,
) -> list[LearningRateFunctionModifier]:
    """Each ``!SetLearningRateModifier`` as a constant learning-rate phase.

    It lasts until its ``end_epoch``, else until the next learning-rate modifier starts, else
    to the end of the run (SparseML sets the rate once and it holds until changed).
    """
    starts = [m.start_epoch for m in rates] + [max(m.start_epoch, 0.0) for m in set_rates]
    out = []
    for m in set_rates:
        start = max(m.start_epoch, 0.0)
        later = [s for s in starts if s > start + 1e-9]
        end = m.end_epoch if m.end_epoch >= 0 else min(later, default=num_epochs)
        label = f"modifier {m.position} (!SetLearningRateModifier) in {where}"
        if end <= start + 1e-9:
            raise RecipeError(
                f"{label}: it would set the learning rate from epoch {fmt(start)} to "
                f"{fmt(end)}, an empty phase; start it before the end of the run and of "
                "its end_epoch"
            )
        try:
            out.append(
                LearningRateFunctionModifier(
                    start_epoch=start,
                    end_epoch=end,
                    lr_func="linear",
                    init_lr=m.learning_rate,
                    final_lr=m.learning_rate,
                    position=m.position,
                )
            )
        except ValidationError as exc:
            raise explain_errors(exc, label) from None
    return out


def _check_run(
    num_epochs: float,
    source: str,
    rates: Sequence[LearningRateFunctionModifier],
    pruning: Sequence[PruningModifier],
    kd: DistillationModifier | None,
    where: str,
) -> None:
    run = f"the run ends at epoch {fmt(num_epochs)} ({source})"
    for rate in rates:
        if rate.end_epoch > num_epochs + 1e-9:
            raise RecipeError(
                f"{rate.label()} in {where}: end_epoch = {fmt(rate.end_epoch)} is past the "
                f"end of the run; {run}"
            )
    ordered = sorted(rates, key=lambda m: m.start_epoch)
    for first, second in itertools.pairwise(ordered):
        if second.start_epoch < first.end_epoch - 1e-9:
            raise RecipeError(
                f"{first.label()} and {second.label()} in {where} overlap (epochs "
                f"{fmt(first.start_epoch)}-{fmt(first.end_epoch)} and "
                f"{fmt(second.start_epoch)}-{fmt(second.end_epoch)}); one learning-rate "
                "modifier per epoch"
            )
    for mod in pruning:
        if mod.scheduled:
            assert mod.end_epoch is not None
            if mod.end_epoch >= num_epochs - 1e-9:
                raise RecipeError(
                    f"{mod.label()} in {where}: end_epoch = {fmt(mod.end_epoch)} is not before "
                    f"the end of the run; {run}. The last pruning step needs training after "
                    "it: end pruning earlier or lengthen the run"
                )
        elif mod.end_epoch is not None and abs(mod.end_epoch - num_epochs) > 1e-9:
            raise RecipeError(
                f"{mod.label()} in {where}: end_epoch = {fmt(mod.end_epoch)}: constant masks are "
                f"kept for the whole run; {run}: set end_epoch: {fmt(num_epochs)} or -1"
            )
    if kd is not None and kd.end_epoch is not None and abs(kd.end_epoch - num_epochs) > 1e-9:
        raise RecipeError(
            f"{kd.label()} in {where}: end_epoch = {fmt(kd.end_epoch)}: distillation over part "
            f"of the run is not supported; {run}: set end_epoch: {fmt(num_epochs)} or -1"
        )
