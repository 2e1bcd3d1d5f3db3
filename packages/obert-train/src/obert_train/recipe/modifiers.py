"""The run-length, learning-rate and distillation modifiers (SparseML names and semantics).

Reference brief §2.1: the oBERT recipes run 30 epochs (``!EpochRangeModifier``), use a linear
learning rate for 2 epochs and then a ``cyclic_linear`` one that rewinds to ``init_lr`` at every
pruning step (``!LearningRateFunctionModifier``), and distil from a dense teacher with hardness
1 and temperature 2 (``!DistillationModifier``).

**Steps and epochs.** Epoch ``e`` of a run with ``spe`` optimizer steps per epoch is optimizer
step ``step_of_epoch(e, spe)`` = ``e·spe`` rounded to the nearest integer (halves up). A
modifier over epochs ``[start, end)`` covers the optimizer steps ``a <= step < b`` with
``a = step_of_epoch(start)`` and ``b = step_of_epoch(end)``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from obert_train.errors import OptionError
from obert_train.recipe._messages import check_known_keys, explain_errors, fmt
from obert_train.recipe._yaml import RawModifier

__all__ = [
    "DistillationModifier",
    "EpochRangeModifier",
    "LearningRateFunctionModifier",
    "step_of_epoch",
]


def step_of_epoch(epoch: float, steps_per_epoch: int) -> int:
    """The optimizer step at which epoch ``epoch`` begins: ``epoch·spe``, rounded half up.

    A tolerance of 1e-9 absorbs float error (``0.35 * 10`` is ``3.4999…`` and gives 4).

    Args:
        epoch: A (fractional) epoch >= 0.
        steps_per_epoch: Optimizer steps per epoch, >= 1.
    """
    return math.floor(epoch * steps_per_epoch + 0.5 + 1e-9)


def check_steps_per_epoch(steps_per_epoch: int) -> int:
    """``steps_per_epoch`` if it is an int >= 1, else :class:`~obert_train.OptionError`."""
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int):
        raise OptionError(f"steps_per_epoch must be an int >= 1, got {steps_per_epoch!r}")
    if steps_per_epoch < 1:
        raise OptionError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    return steps_per_epoch


class _Modifier(BaseModel):
    """Base of the validated modifiers: frozen, unknown fields refused, finite numbers only."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    tag: ClassVar[str]
    refused: ClassVar[dict[str, str]] = {}
    """SparseML fields that are not supported -> what to do instead."""

    position: int = Field(default=0, exclude=True, repr=False)
    """1-based position among all modifiers of the recipe file (used in messages)."""

    @classmethod
    def recipe_fields(cls) -> list[str]:
        """The fields a recipe may give, in declaration order."""
        return [name for name in cls.model_fields if name != "position"]

    def label(self) -> str:
        """``"modifier 2 (!LearningRateFunctionModifier)"``."""
        return f"modifier {self.position} (!{self.tag})"

    def recipe_dict(self) -> dict[str, Any]:
        """The fields to write back to a recipe (None values left out)."""
        return {k: v for k, v in self.model_dump(mode="json").items() if v is not None}


class EpochRangeModifier(_Modifier):
    """The run length: training goes from epoch 0 to ``end_epoch``.

    Attributes:
        start_epoch: Must be 0 (training always starts at epoch 0).
        end_epoch: Epochs of the run (> 0; may be fractional).
    """

    tag: ClassVar[str] = "EpochRangeModifier"
    start_epoch: float = 0.0
    end_epoch: float = Field(gt=0)

    @field_validator("start_epoch")
    @classmethod
    def _start_zero(cls, value: float) -> float:
        if value != 0:
            raise ValueError("training always starts at epoch 0; set start_epoch: 0")
        return value


class LearningRateFunctionModifier(_Modifier):
    """Sets the learning rate of every optimizer step in ``[start_epoch, end_epoch)``.

    With ``a``, ``b`` the first and one-past-last optimizer steps of the modifier (module
    docstring) the learning rate of step ``t`` is, for a segment ``[lo, hi)``,
    ``init_lr − (t − lo)/(hi − lo − 1)·(init_lr − final_lr)`` (``init_lr`` when the segment
    has one step), so it is ``init_lr`` at the first step of a segment and ``final_lr`` at its
    last. The segments are

    * ``linear``: the whole modifier, ``[a, b)``;
    * ``cyclic_linear`` (the authors' recipes, docs/recipes.md): the cycles ``[c_j, c_{j+1})`` with
      ``c_j = step_of_epoch(start_epoch + j·cycle_epochs)``; the last one ends at ``b`` and may
      be partial. The rate rewinds to ``init_lr`` at every cycle boundary.

    SparseML's ``linear`` uses ``(t − a)/(b − a)`` and so reaches ``final_lr`` one step after
    the modifier; the difference is one step in ``b − a``.

    Attributes:
        start_epoch: First epoch (>= 0).
        end_epoch: End epoch (> start_epoch), not included.
        lr_func: ``linear`` or ``cyclic_linear``.
        init_lr: Learning rate at the start of the modifier (and of every cycle).
        final_lr: Learning rate at the last step of the modifier (of every cycle).
        cycle_epochs: Cycle length in epochs; required for ``cyclic_linear``, refused for
            ``linear``.
    """

    tag: ClassVar[str] = "LearningRateFunctionModifier"
    refused: ClassVar[dict[str, str]] = {
        "param_groups": "the learning rate applies to every parameter group; remove it",
        "update_frequency": "the learning rate is set at every optimizer step; remove it",
    }
    start_epoch: float = Field(ge=0)
    end_epoch: float = Field(ge=0)
    lr_func: Literal["linear", "cyclic_linear"]
    init_lr: float = Field(ge=0)
    final_lr: float = Field(ge=0)
    cycle_epochs: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> LearningRateFunctionModifier:
        if self.end_epoch <= self.start_epoch:
            raise ValueError(
                f"end_epoch = {fmt(self.end_epoch)} must be greater than start_epoch = "
                f"{fmt(self.start_epoch)}"
            )
        if self.lr_func == "cyclic_linear" and self.cycle_epochs is None:
            raise ValueError("lr_func cyclic_linear needs cycle_epochs (the cycle length)")
        if self.lr_func == "linear" and self.cycle_epochs is not None:
            raise ValueError(
                "cycle_epochs only applies to lr_func: cyclic_linear; remove it or change lr_func"
            )
        return self

    def cycle_starts(self) -> list[float]:
        """Epochs where a segment starts (``[start_epoch]`` for ``linear``)."""
        if self.cycle_epochs is None:
            return [self.start_epoch]
        count = math.ceil((self.end_epoch - self.start_epoch) / self.cycle_epochs - 1e-9)
        return [self.start_epoch + j * self.cycle_epochs for j in range(max(count, 1))]

    def lr_at(self, step: int, steps_per_epoch: int) -> float | None:
        """Learning rate of optimizer step ``step`` (0-based), or None outside the modifier.

        Args:
            step: Optimizer step, counted from the start of the run.
            steps_per_epoch: Optimizer steps per epoch.
        """
        spe = check_steps_per_epoch(steps_per_epoch)
        a, b = step_of_epoch(self.start_epoch, spe), step_of_epoch(self.end_epoch, spe)
        if not a <= step < b:
            return None
        lo, hi = a, b
        if self.cycle_epochs is not None:
            cycle = self.cycle_epochs

            def boundary(j: int) -> int:
                return step_of_epoch(self.start_epoch + j * cycle, spe)

            j = max(int((step - a) / (cycle * spe)), 0)
            while j > 0 and boundary(j) > step:
                j -= 1
            while boundary(j + 1) <= step:
                j += 1
            lo, hi = boundary(j), min(boundary(j + 1), b)
        if hi - lo <= 1:
            return self.init_lr
        return self.init_lr - (step - lo) / (hi - lo - 1) * (self.init_lr - self.final_lr)


class DistillationModifier(_Modifier):
    """Knowledge distillation from a teacher over the whole run.

    As in the authors' recipes (``docs/recipes.md``).

    Loss: ``(1 − hardness)·task_loss + hardness·KD`` with ``KD`` the mean over
    ``distill_output_keys`` of ``KL(softmax(teacher/T) ‖ softmax(student/T))·T²``.

    Attributes:
        hardness: Weight of the distillation term, in [0, 1].
        temperature: T > 0.
        distill_output_keys: Model outputs distilled (``logits``; ``start_logits``,
            ``end_logits`` for SQuAD).
        start_epoch: Absent, -1 or 0 (distillation runs over the whole run).
        end_epoch: Absent, -1 or the run end.
    """

    tag: ClassVar[str] = "DistillationModifier"
    hardness: float = Field(default=1.0, ge=0, le=1)
    temperature: float = Field(default=2.0, gt=0)
    distill_output_keys: tuple[str, ...] = Field(default=("logits",), min_length=1)
    start_epoch: float | None = None
    end_epoch: float | None = None

    @field_validator("start_epoch", "end_epoch", mode="before")
    @classmethod
    def _minus_one_is_absent(cls, value: Any) -> Any:
        return None if value == -1 else value

    @field_validator("distill_output_keys")
    @classmethod
    def _keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not key for key in value):
            raise ValueError("output keys must be non-empty names such as 'logits'")
        return value

    @field_validator("start_epoch")
    @classmethod
    def _start(cls, value: float | None) -> float | None:
        if value not in (None, 0):
            raise ValueError(
                "distillation over part of the run is not supported; use 0 or -1 (whole run)"
            )
        return value

    def recipe_dict(self) -> dict[str, Any]:
        """The fields to write back (output keys as a list)."""
        out = super().recipe_dict()
        out["distill_output_keys"] = list(self.distill_output_keys)
        return out


CoreModifier = EpochRangeModifier | LearningRateFunctionModifier | DistillationModifier
CORE_MODIFIERS: dict[str, type[CoreModifier]] = {
    cls.tag: cls for cls in (EpochRangeModifier, LearningRateFunctionModifier, DistillationModifier)
}


def validate_core(raw: RawModifier, where: str) -> CoreModifier:
    """Validate a run-length, learning-rate or distillation modifier.

    Args:
        raw: The modifier as read (its tag is one of :data:`CORE_MODIFIERS`).
        where: The file (or ``"recipe text"``).

    Raises:
        RecipeError: For an unknown or refused field or an invalid value.
    """
    return validate_as(CORE_MODIFIERS[raw.tag], raw, where)


M = TypeVar("M", bound=_Modifier)


def validate_as(cls: type[M], raw: RawModifier, where: str) -> M:
    """``raw`` validated as the modifier class ``cls`` (the one way every modifier is built).

    Args:
        cls: The modifier's class.
        raw: The modifier as read.
        where: The file (or ``"recipe text"``).

    Raises:
        RecipeError: For an unknown or refused field or an invalid value, naming the modifier.
    """
    prefix = f"{raw.label()} in {where}"
    check_known_keys(raw.fields, cls.recipe_fields(), prefix, cls.refused)
    try:
        return cls(**raw.fields, position=raw.position)
    except ValidationError as exc:
        raise explain_errors(exc, prefix, overridden=raw.overridden) from None
