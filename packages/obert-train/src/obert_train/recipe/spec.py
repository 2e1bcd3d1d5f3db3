"""Recipes built in Python: one modifier as its tag and fields, and the one YAML writer.

A :class:`ModifierSpec` is what a recipe file writes for one modifier (``!OBSPruningModifier``
and its fields), before validation; its constructors take the fields by name and the pruning
method's settings by their ``Settings`` names. :func:`obert_train.build_recipe` validates a list
of them into a :class:`~obert_train.Recipe` as :func:`obert_train.load_recipe` validates a
file, and :meth:`~obert_train.Recipe.to_yaml` writes one back
(:func:`recipe_yaml`, the one writer of recipe YAML).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from obert_train.pruning.registry import METHODS
from obert_train.pruning.targets import BERT_ENCODER_PATTERNS
from obert_train.recipe._yaml import RawModifier, dump_groups

__all__ = ["GROUPS", "ModifierSpec", "recipe_yaml"]

GROUPS: dict[str, str] = {
    "EpochRangeModifier": "modifiers",
    "LearningRateFunctionModifier": "training_modifiers",
    "SetLearningRateModifier": "training_modifiers",
    "SetWeightDecayModifier": "training_modifiers",
    "TrainableParamsModifier": "training_modifiers",
    "LayerDroppingModifier": "modifiers",
    "ZerothOrderModifier": "training_modifiers",
    "DistillationModifier": "distillation_modifiers",
}
"""The group a recipe file lists a modifier under, by tag (any other tag: ``pruning_modifiers``)."""
_ORDER = ("modifiers", "training_modifiers", "pruning_modifiers", "distillation_modifiers")


def _plain(value: Any) -> Any:
    """A value as YAML would give it back: tuples as lists, mappings as dicts."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class ModifierSpec:
    """One recipe modifier before validation: its tag and its fields as a recipe file has them.

    Make one with a constructor (:meth:`epoch_range`, :meth:`learning_rate`, :meth:`pruning`,
    :meth:`distillation`) or directly with any tag a recipe may use, e.g.
    ``ModifierSpec("ConstantPruningModifier", {"params": ["re:.*weight$"]})``. Nothing is
    checked here: :func:`obert_train.build_recipe` validates the modifiers (the messages name
    the modifier, the field and the value).

    Attributes:
        tag: The recipe tag without ``!`` (``"OBSPruningModifier"``).
        fields: Its fields under their recipe (SparseML) names.
    """

    tag: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """The group a recipe file lists the modifier under (``pruning_modifiers``, ...)."""
        return GROUPS.get(self.tag, "pruning_modifiers")

    def raw(self, position: int) -> RawModifier:
        """The modifier as the recipe reader gives it (position: 1-based, for messages)."""
        return RawModifier(self.tag, _plain(self.fields), position, None, self.group)

    @classmethod
    def epoch_range(cls, end_epoch: float, *, start_epoch: float = 0.0) -> ModifierSpec:
        """``!EpochRangeModifier``: the run lasts ``end_epoch`` epochs (it starts at 0)."""
        return cls("EpochRangeModifier", {"start_epoch": start_epoch, "end_epoch": end_epoch})

    @classmethod
    def learning_rate(
        cls,
        *,
        lr_func: str,
        init_lr: float,
        final_lr: float,
        start_epoch: float,
        end_epoch: float,
        cycle_epochs: float | None = None,
    ) -> ModifierSpec:
        """``!LearningRateFunctionModifier``: ``linear`` or ``cyclic_linear`` (with its cycle).

        Args:
            lr_func: ``"linear"`` or ``"cyclic_linear"``.
            init_lr: Learning rate at the start of the phase (of each cycle).
            final_lr: Learning rate at its end.
            start_epoch: First epoch of the phase.
            end_epoch: Its end.
            cycle_epochs: ``cyclic_linear`` only: the length of a cycle.

        Returns:
            The modifier.
        """
        fields: dict[str, Any] = {
            "start_epoch": start_epoch,
            "end_epoch": end_epoch,
            "lr_func": lr_func,
            "init_lr": init_lr,
            "final_lr": final_lr,
        }
        if cycle_epochs is not None:
            fields["cycle_epochs"] = cycle_epochs
        return cls("LearningRateFunctionModifier", fields)

    @classmethod
    def pruning(
        cls,
        method: str,
        *,
        init_sparsity: float,
        final_sparsity: float,
        start_epoch: float,
        end_epoch: float,
        update_frequency: float,
        inter_func: str = "cubic",
        params: Sequence[str] | None = None,
        **settings: Any,
    ) -> ModifierSpec:
        """A gradual pruning modifier: a sparsity schedule and the method's settings.

        Args:
            method: The method's registry name (``"obert"``, ``"magnitude"``; its first recipe
                tag is written) or a recipe tag (``"GMPruningModifier"``, kept as given).
            init_sparsity: Sparsity of the first pruning step.
            final_sparsity: Sparsity of the last one.
            start_epoch: Epoch of the first step.
            end_epoch: Epoch of the last step.
            update_frequency: Epochs between steps.
            inter_func: ``"cubic"`` or ``"linear"`` sparsity schedule.
            params: The tensors to prune (``"re:<regex>"`` or exact names); None: the six
                encoder Linear weights per layer
                (:data:`~obert_train.BERT_ENCODER_PATTERNS`).
            **settings: The method's settings by their ``Settings`` names (``num_grads=64``,
                ``grad_batch_size=8``, ``mask_type="block4"``); ``obert-train methods`` lists
                them.

        Returns:
            The modifier.
        """
        tag = METHODS[method].recipe_tags[0] if method in METHODS else method.removeprefix("!")
        patterns = (
            list(params) if params is not None else [f"re:{p}" for p in BERT_ENCODER_PATTERNS]
        )
        fields: dict[str, Any] = {
            "params": patterns,
            "init_sparsity": init_sparsity,
            "final_sparsity": final_sparsity,
            "start_epoch": start_epoch,
            "end_epoch": end_epoch,
            "update_frequency": update_frequency,
            "inter_func": inter_func,
        }
        for name, value in settings.items():
            if name == "grad_batch_size":
                fields["grad_sampler_kwargs"] = {"batch_size": value}
            else:
                fields[name] = value
        return cls(tag, fields)

    @classmethod
    def distillation(
        cls,
        *,
        hardness: float = 1.0,
        temperature: float = 2.0,
        distill_output_keys: Sequence[str] = ("logits",),
    ) -> ModifierSpec:
        """``!DistillationModifier``: knowledge distillation from a teacher over the whole run.

        Args:
            hardness: Weight of the distillation loss (1: distillation only).
            temperature: Softmax temperature.
            distill_output_keys: The model outputs compared with the teacher's.

        Returns:
            The modifier.
        """
        return cls(
            "DistillationModifier",
            {
                "hardness": hardness,
                "temperature": temperature,
                "distill_output_keys": list(distill_output_keys),
            },
        )


def recipe_yaml(modifiers: Sequence[ModifierSpec]) -> str:
    """SparseML-format YAML of modifiers: one block per group, in the usual group order.

    The groups are ``modifiers`` (run length), ``training_modifiers`` (learning rate),
    ``pruning_modifiers`` and ``distillation_modifiers``; within a group the modifiers keep
    their order. Floats are written so that any YAML loader reads them back exactly.

    Args:
        modifiers: The modifiers.

    Returns:
        The YAML text (no header).
    """
    groups: dict[str, list[tuple[str, Mapping[str, Any]]]] = {name: [] for name in _ORDER}
    for spec in modifiers:
        groups[spec.group].append((spec.tag, _plain(spec.fields)))
    return dump_groups(groups)
