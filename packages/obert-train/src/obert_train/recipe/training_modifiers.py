"""SparseML's other training modifiers: what runs here, and what another command does.

SparseML BERT recipes carry, besides pruning, distillation, the learning-rate function and the
epoch range (docs/recipes.md, "Compatibility"):

* ``!SetLearningRateModifier``: a constant learning rate from ``start_epoch`` until the next
  learning-rate modifier (or ``end_epoch``, or the end of the run). It runs as a constant
  phase of the recipe's learning-rate schedule (a ``linear`` phase from ``learning_rate`` to
  itself).
* ``!SetWeightDecayModifier``: the optimizer's weight decay from the start of the run (it
  replaces ``--weight-decay``). A change in the middle of the run is refused.
* ``!TrainableParamsModifier``: freezes (``trainable: false``) or unfreezes the parameters its
  ``params`` select for the whole run (e.g. the embeddings). A change in the middle of the run
  is refused.
* ``!LayerDroppingModifier`` (obert-train's own, not SparseML's): keep ``num_layers`` evenly
  spaced layers (or the layers ``keep``) of the model before training starts
  (:func:`obert_train.drop_layers`, Kurtic et al. 2022's 6- and 3-layer models); the teacher
  stays whole, so the smaller model is distilled from the full one in the same run.
* ``!ZerothOrderModifier`` (obert-train's own): the run's optimizer steps are zeroth-order
  (:class:`~obert_train.ZOTrainer`: MeZO's SPSA or DeepZero's coordinate-wise estimate, forward
  passes only, on the kept weights of the pruning modifiers' masks), with DeepZero's random
  sparse gradients at uniform or ZO-GraSP layer ratios and its forward parallelism.
* ``!LayerPruningModifier``, ``!QuantizationModifier`` and a few others are refused up front
  with the command that does their job (:data:`REFUSED_MODIFIERS`).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from obert_train.errors import RecipeError
from obert_train.layers import evenly_spaced_layers
from obert_train.recipe._yaml import RawModifier
from obert_train.recipe.modifiers import _Modifier, validate_as

__all__ = [
    "REFUSED_MODIFIERS",
    "TRAINING_MODIFIERS",
    "LayerDroppingModifier",
    "SetLearningRateModifier",
    "SetWeightDecayModifier",
    "TrainableParamsModifier",
    "ZerothOrderModifier",
    "refuse_modifier",
    "validate_training",
]

_ALL = "__ALL__"
_WHOLE_RUN = "must be -1 or 0: the setting applies to the whole run here"

REFUSED_MODIFIERS: dict[str, str] = {
    "QuantizationModifier": (
        "quantization-aware training is obert-deploy's job: run this recipe without the "
        "modifier, then `obert-deploy qat CHECKPOINT -o model.onnx` on the pruned checkpoint "
        "(docs/deploy.md)"
    ),
    "LegacyQuantizationModifier": (
        "quantization-aware training is obert-deploy's job: run this recipe without the "
        "modifier, then `obert-deploy qat CHECKPOINT -o model.onnx` on the pruned checkpoint"
    ),
    "LayerPruningModifier": (
        "layers are dropped before training here: replace it with '!LayerDroppingModifier "
        "{keep: [0, 2, 4]}' (the layers kept; or num_layers: K), or run `obert-train "
        "drop-layers MODEL --output-dir SMALLER --keep 0,2,4`, then this recipe without the "
        "modifier with --model SMALLER"
    ),
    "LearningRateModifier": (
        "step learning-rate schedules are not supported; use !LearningRateFunctionModifier "
        "(linear or cyclic_linear) or !SetLearningRateModifier"
    ),
    "SetParamModifier": "setting parameter values is not supported; remove the modifier",
    "GradualParamModifier": "setting parameter values is not supported; remove the modifier",
    "PerLayerDistillationModifier": (
        "per-layer distillation is not supported; use !DistillationModifier (output logits)"
    ),
}
"""SparseML modifiers refused up front -> which command does their job (or what to use)."""


class SetLearningRateModifier(_Modifier):
    """A constant learning rate from ``start_epoch`` (SparseML's ``SetLearningRateModifier``).

    It holds until ``end_epoch`` if given, else until the next learning-rate modifier starts,
    else to the end of the run; it runs as a ``linear`` phase from ``learning_rate`` to itself.

    Attributes:
        learning_rate: The learning rate (>= 0).
        start_epoch: First epoch (-1: the start of the run).
        end_epoch: -1 (see above) or the end epoch.
    """

    tag: ClassVar[str] = "SetLearningRateModifier"
    refused: ClassVar[dict[str, str]] = {
        "param_groups": "the learning rate applies to every parameter group; remove it",
    }
    learning_rate: float = Field(ge=0)
    start_epoch: float = -1.0
    end_epoch: float = -1.0

    @field_validator("start_epoch", "end_epoch")
    @classmethod
    def _epoch(cls, value: float) -> float:
        if value < 0 and value != -1:
            raise ValueError("must be >= 0 or -1")
        return value


class SetWeightDecayModifier(_Modifier):
    """The optimizer's weight decay for the whole run (SparseML's ``SetWeightDecayModifier``).

    Attributes:
        weight_decay: The AdamW weight decay (>= 0); it replaces ``--weight-decay``.
        start_epoch: -1 or 0 (a change in the middle of the run is not supported).
        end_epoch: -1 (SparseML: unused).
    """

    tag: ClassVar[str] = "SetWeightDecayModifier"
    refused: ClassVar[dict[str, str]] = {
        "param_groups": "the weight decay applies to every parameter group; remove it",
    }
    weight_decay: float = Field(ge=0)
    start_epoch: float = -1.0
    end_epoch: float = -1.0

    @field_validator("start_epoch")
    @classmethod
    def _start(cls, value: float) -> float:
        if value not in (-1, 0):
            raise ValueError(
                "changing the weight decay in the middle of the run is not supported; use -1 "
                "or 0 (the whole run)"
            )
        return value

    @field_validator("end_epoch")
    @classmethod
    def _end(cls, value: float) -> float:
        if value != -1:
            raise ValueError("must be -1 (SparseML does not use it)")
        return value


class TrainableParamsModifier(_Modifier):
    """Freeze or unfreeze parameters for the whole run (SparseML's ``TrainableParamsModifier``).

    Attributes:
        params: Exact parameter names or ``re:<regex>`` patterns (``re.search``); ``__ALL__``:
            every parameter.
        trainable: False freezes them (``requires_grad = False``), True unfreezes them.
        params_strict: True: every entry must match a parameter of the model.
        start_epoch: -1 or 0.
        end_epoch: -1 (the whole run).
    """

    tag: ClassVar[str] = "TrainableParamsModifier"
    params: tuple[str, ...] = Field(min_length=1)
    trainable: bool
    params_strict: bool = True
    start_epoch: float = -1.0
    end_epoch: float = -1.0

    @field_validator("params", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("params")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if not entry.strip():
                raise ValueError("entries must be parameter names or 're:<regex>' patterns")
            if entry.startswith("re:"):
                try:
                    re.compile(entry[3:])
                except re.error as exc:
                    raise ValueError(
                        f"{entry!r} is not a valid regular expression ({exc})"
                    ) from None
        return value

    @field_validator("start_epoch")
    @classmethod
    def _start(cls, value: float) -> float:
        if value not in (-1, 0):
            raise ValueError(_WHOLE_RUN + " (freezing in the middle of the run is not supported)")
        return value

    @field_validator("end_epoch")
    @classmethod
    def _end(cls, value: float) -> float:
        if value != -1:
            raise ValueError(
                "must be -1: parameters stay frozen (or trainable) for the whole run here"
            )
        return value

    def regexes(self) -> list[str]:
        """The ``re.search`` pattern of every entry (``__ALL__``: every name)."""
        out = []
        for entry in self.params:
            if entry == _ALL:
                out.append(".*")
            elif entry.startswith("re:"):
                out.append(entry[3:])
            else:
                out.append("^" + re.escape(entry) + "$")
        return out

    def select(self, names: list[str], where: str) -> list[str]:
        """The parameter names the modifier selects, in model order.

        Raises:
            RecipeError: With ``params_strict``, for an entry that matches no parameter.
        """
        chosen: set[str] = set()
        for entry, regex in zip(self.params, self.regexes(), strict=True):
            hits = [n for n in names if re.search(regex, n)]
            if not hits and self.params_strict:
                raise RecipeError(
                    f"{self.label()} in {where}: params {entry!r} match no parameter of the "
                    f"model (e.g. {names[:3]}); fix the pattern or set params_strict: false"
                )
            chosen.update(hits)
        return [n for n in names if n in chosen]


class LayerDroppingModifier(_Modifier):
    """Keep some of the model's transformer layers before training (obert-train's own modifier).

    Before the first optimizer step the student keeps only these layers, weights unchanged
    (:func:`obert_train.drop_layers`: config, per-layer lists and layer indices updated); the
    teacher of a ``!DistillationModifier`` stays whole, so the smaller model is distilled from
    the full one in the same run, and the final checkpoint has ``num_hidden_layers`` = the
    kept count (plain ``from_pretrained`` loads it).  Pruning modifiers' ``params`` match the
    layers after dropping (renumbered ``0 .. k-1``).

    Attributes:
        num_layers: Keep this many evenly spaced layers, ending with the top one
            (:func:`obert_train.evenly_spaced_layers`: 6 -> 3 keeps 1, 3, 5).
        keep: Instead: the indices of the layers kept, increasing, from 0.
        start_epoch: -1 or 0 (layers are dropped before training).
        end_epoch: -1 (the whole run).
    """

    tag: ClassVar[str] = "LayerDroppingModifier"
    num_layers: int | None = Field(default=None, ge=1)
    keep: tuple[int, ...] | None = Field(default=None, min_length=1)
    start_epoch: float = -1.0
    end_epoch: float = -1.0

    @field_validator("keep")
    @classmethod
    def _keep(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is None:
            return value
        if any(i < 0 for i in value):
            raise ValueError("layer indices start at 0")
        if list(value) != sorted(set(value)):
            raise ValueError(
                "give each layer once, in increasing order (layers cannot be reordered)"
            )
        return value

    @field_validator("start_epoch")
    @classmethod
    def _start(cls, value: float) -> float:
        if value not in (-1, 0):
            raise ValueError(_WHOLE_RUN + " (layers are dropped before training)")
        return value

    @field_validator("end_epoch")
    @classmethod
    def _end(cls, value: float) -> float:
        if value != -1:
            raise ValueError("must be -1: the dropped layers stay dropped for the whole run")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> LayerDroppingModifier:
        if (self.num_layers is None) == (self.keep is None):
            raise ValueError(
                "give num_layers (how many evenly spaced layers) or keep (their indices), "
                "exactly one of them"
            )
        return self

    def kept(self, count: int, where: str = "the recipe") -> list[int]:
        """The indices of the kept layers of a model with ``count`` layers.

        Args:
            count: The model's layers.
            where: The recipe, for messages.

        Raises:
            RecipeError: If ``num_layers`` exceeds ``count`` or an index of ``keep`` is out of
                range (naming the modifier and the model's layer count).
        """
        if self.num_layers is not None:
            if self.num_layers > count:
                raise RecipeError(
                    f"{self.label()} in {where}: num_layers = {self.num_layers}, but the model has "
                    f"{count} layers; keep at most {count}"
                )
            return evenly_spaced_layers(count, self.num_layers)
        assert self.keep is not None
        outside = [i for i in self.keep if i >= count]
        if outside:
            raise RecipeError(
                f"{self.label()} in {where}: keep names layer(s) {outside}, but the model "
                f"has {count} layers, numbered 0 to {count - 1}"
            )
        return list(self.keep)

    def recipe_dict(self) -> dict[str, Any]:
        """The fields to write back (``keep`` as a list)."""
        out = super().recipe_dict()
        if self.keep is not None:
            out["keep"] = list(self.keep)
        return out


class ZerothOrderModifier(_Modifier):
    """Zeroth-order optimizer steps for the whole run (obert-train's own modifier).

    ``obert-train run`` trains with :class:`~obert_train.ZOTrainer` instead of backprop: each
    optimizer step estimates the gradient from forward passes (docs/math.md §9: MeZO's SPSA,
    (Z-6), or DeepZero's coordinate-wise estimate, (Z-2), with feature reuse), restricted to the
    kept weights of the pruning modifiers' masks (sparse ZO: a ``!ConstantPruningModifier``
    holds the zeros of an already pruned model). The recipe's learning-rate functions set
    ``η`` and its ``!DistillationModifier`` makes the loss ``(1 − h)·task + h·KD``.

    Attributes:
        estimator: ``spsa`` (two forwards per direction) or ``cge`` (one forward per
            coordinate that moves).
        mu: The perturbation scale ``μ`` > 0 (MeZO: 1e-3).
        num_directions: SPSA directions ``q`` per step (>= 1).
        seed: The seed of the directions and random masks (>= 0).
        gradient_sparsity: DeepZero's random sparse gradients: the fraction of the ``params``
            tensors' coordinates *not* perturbed in a mask period, in [0, 1) (0: all move).
        gradient_ratios: ``uniform`` (every tensor at ``gradient_sparsity``) or ``zo_grasp``
            (per-tensor ratios of one global ZO-GraSP ranking at that sparsity, computed from
            forward passes on the first ``grasp_examples`` training examples at the start of
            the run, :func:`~obert_train.zo_grasp_sparsities`).
        params: The tensors the gradient sparsity applies to (``re:<regex>`` or exact names;
            None: the six encoder Linear weights per layer).
        grasp_directions: ZO-GraSP's directions ``q`` (DeepZero: 192).
        grasp_mu: ZO-GraSP's ``μ`` (DeepZero: 5e-3).
        grasp_examples: Training examples in ZO-GraSP's batch.
        mask_period_epochs: Epochs between two random masks (DeepZero: 5), converted to
            optimizer steps (at least one).
        workers: ``cge`` only: processes evaluating a step's coordinates (DeepZero's forward
            parallelism), at most the CPU cores.
        momentum: ``cge`` only: DeepZero's SGD momentum in [0, 1) (DeepZero: 0.9; 0: none):
            the step is ``torch.optim.SGD`` with this momentum and the run's weight decay, fed
            the CGE estimate (docs/math.md (Z-7); :class:`~obert_train.ZOSettings`).
        start_epoch: -1 or 0 (the whole run).
        end_epoch: -1 or the run end.
    """

    tag: ClassVar[str] = "ZerothOrderModifier"
    estimator: Literal["spsa", "cge"] = "spsa"
    mu: float = Field(default=1e-3, gt=0)
    num_directions: int = Field(default=1, ge=1)
    seed: int = Field(default=0, ge=0)
    gradient_sparsity: float = Field(default=0.0, ge=0, lt=1)
    gradient_ratios: Literal["uniform", "zo_grasp"] = "uniform"
    params: tuple[str, ...] | None = Field(default=None, min_length=1)
    grasp_directions: int = Field(default=192, ge=1)
    grasp_mu: float = Field(default=5e-3, gt=0)
    grasp_examples: int = Field(default=32, ge=1)
    mask_period_epochs: float = Field(default=1.0, gt=0)
    workers: int = Field(default=1, ge=1)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    start_epoch: float = -1.0
    end_epoch: float = -1.0

    @field_validator("params", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("start_epoch")
    @classmethod
    def _start(cls, value: float) -> float:
        if value not in (-1, 0):
            raise ValueError(_WHOLE_RUN + " (ZO steps for part of the run are not supported)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ZerothOrderModifier:
        if self.workers > 1 and self.estimator != "cge":
            raise ValueError(
                f"workers = {self.workers} splits the coordinates of estimator cge across "
                "processes; spsa runs its directions one after another: use workers: 1 or "
                "estimator: cge"
            )
        if self.momentum > 0 and self.estimator != "cge":
            raise ValueError(
                f"momentum = {self.momentum:g} needs estimator cge; spsa (MeZO) keeps the "
                "memory of inference, which a momentum buffer per trained tensor would end: use "
                "momentum: 0 or estimator: cge"
            )
        if self.gradient_ratios == "zo_grasp" and self.gradient_sparsity == 0:
            raise ValueError(
                "gradient_ratios zo_grasp needs a gradient_sparsity > 0 (the global fraction "
                "of coordinates not perturbed, e.g. 0.9)"
            )
        return self

    def recipe_dict(self) -> dict[str, Any]:
        """The fields to write back (``params`` as a list)."""
        out = super().recipe_dict()
        if self.params is not None:
            out["params"] = list(self.params)
        return out

    def regexes(self) -> list[str] | None:
        """The ``re.search`` patterns of ``params`` (None: the default encoder weights)."""
        if self.params is None:
            return None
        return [p[3:] if p.startswith("re:") else "^" + re.escape(p) + "$" for p in self.params]

    def mask_period_steps(self, steps_per_epoch: int) -> int:
        """``mask_period_epochs`` in optimizer steps (at least 1)."""
        return max(1, round(self.mask_period_epochs * steps_per_epoch))


TrainingModifier = (
    SetLearningRateModifier
    | SetWeightDecayModifier
    | TrainableParamsModifier
    | LayerDroppingModifier
    | ZerothOrderModifier
)
TRAINING_MODIFIERS: dict[str, type[TrainingModifier]] = {
    cls.tag: cls
    for cls in (
        SetLearningRateModifier,
        SetWeightDecayModifier,
        TrainableParamsModifier,
        LayerDroppingModifier,
        ZerothOrderModifier,
    )
}
"""The SparseML training modifiers that run here, by tag."""


def validate_training(raw: RawModifier, where: str) -> TrainingModifier:
    """Validate a modifier of :data:`TRAINING_MODIFIERS`.

    Raises:
        RecipeError: For an unknown or refused field or an invalid value.
    """
    return validate_as(TRAINING_MODIFIERS[raw.tag], raw, where)


def refuse_modifier(raw: RawModifier, where: str) -> RecipeError:
    """The error for a modifier of :data:`REFUSED_MODIFIERS` (its label, line and the command)."""
    return RecipeError(
        f"{raw.label()} in {where}: !{raw.tag} does not run here: {REFUSED_MODIFIERS[raw.tag]}"
    )
