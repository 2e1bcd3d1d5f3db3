"""Pruning modifiers: a gradual sparsity schedule plus the settings of one pruning method.

The tag selects the method through the pruning registry (``!OBSPruningModifier`` -> ``obert``,
``!GMPruningModifier`` / ``!MagnitudePruningModifier`` -> ``magnitude``,
``!MovementPruningModifier`` -> ``movement``, ``!ConstantPruningModifier`` -> ``constant``).
The schedule fields (``init_sparsity``, ``final_sparsity``, ``start_epoch``, ``end_epoch``,
``update_frequency``, ``inter_func``, ``leave_enabled``) belong to the recipe; every other field
is a setting of the method and is validated by the method's ``Settings`` model, the one place
where method defaults live (``params`` become its ``targets``,
``grad_sampler_kwargs.batch_size`` its ``grad_batch_size``).

**Schedule** (docs/math.md §5). Pruning steps are at ``start, start + f, …`` up to
``end_epoch`` (``obert_core.pruning_steps``), and at ``end_epoch`` itself when it is not on
that grid, as SparseML prunes once more at ``end_epoch``. The target sparsity at epoch ``t`` is
``s_f + (s_i − s_f)(1 − x)³`` (``cubic``) or ``s_i + (s_f − s_i)·x`` (``linear``) with
``x = (t − start)/(end − start)``; the first step jumps one-shot to ``init_sparsity``, the
last reaches ``final_sparsity``. With ``start_epoch == end_epoch`` there is one step, to
``final_sparsity``. Masks stay in place until the end of the run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from obert_core import cubic_sparsity, linear_sparsity, pruning_steps
from obert_train.errors import RecipeError
from obert_train.pruning.method import check_nm_sparsity
from obert_train.pruning.registry import method_for_tag
from obert_train.recipe._messages import check_known_keys, explain_errors, fmt
from obert_train.recipe._yaml import RawModifier

if TYPE_CHECKING:
    from obert_train.pruning.method import MethodSettings, PruningMethod

__all__ = ["PruningEvent", "PruningModifier", "build_pruning_modifier", "pruning_fields"]

SCHEDULE_FIELDS = (
    "init_sparsity",
    "final_sparsity",
    "start_epoch",
    "end_epoch",
    "update_frequency",
    "inter_func",
    "leave_enabled",
)
CONSTANT_FIELDS = ("params", "start_epoch", "end_epoch")
_RENAMED = {"targets": "params", "grad_batch_size": "grad_sampler_kwargs.batch_size"}
_ALL_PARAMS = ("__ALL__", "__ALL_PRUNABLE__")
_BLOCK4 = ([1, 4], "block")
"""SparseML's spellings of groups of 4 consecutive weights (``mask_type: [1, 4]``, ``block``)."""
_REFUSED = {
    "mask_creator": "use mask_type: unstructured, block4, N:M or RxC (e.g. 16x16)",
}


def _is_block_list(value: object) -> bool:
    """Whether ``value`` is SparseML's ``[R, C]`` block spelling (two whole numbers)."""
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


class _Schedule(BaseModel):
    """The schedule fields of a pruning modifier (the recipe's, not the method's)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    init_sparsity: float = Field(ge=0, lt=1)
    final_sparsity: float = Field(ge=0, lt=1)
    start_epoch: float = Field(ge=0)
    end_epoch: float = Field(ge=0)
    update_frequency: float = Field(gt=0)
    inter_func: Literal["cubic", "linear"] = "cubic"
    leave_enabled: bool = True

    @field_validator("leave_enabled")
    @classmethod
    def _leave(cls, value: bool) -> bool:
        if not value:
            raise ValueError(
                "removing the masks at end_epoch is not supported (masks stay until the end "
                "of the run); remove the field or set it to true"
            )
        return value

    @model_validator(mode="after")
    def _order(self) -> _Schedule:
        if self.end_epoch < self.start_epoch:
            raise ValueError(
                f"end_epoch = {fmt(self.end_epoch)} is before start_epoch = "
                f"{fmt(self.start_epoch)}; swap them"
            )
        if self.final_sparsity < self.init_sparsity:
            raise ValueError(
                f"final_sparsity = {fmt(self.final_sparsity)} is below init_sparsity = "
                f"{fmt(self.init_sparsity)}; masks never regrow, so the schedule must not "
                "decrease"
            )
        return self


class _ConstantRange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    start_epoch: float = 0.0
    end_epoch: float | None = None

    @field_validator("end_epoch", mode="before")
    @classmethod
    def _minus_one_is_absent(cls, value: Any) -> Any:
        return None if value == -1 else value

    @field_validator("start_epoch", mode="before")
    @classmethod
    def _start_zero(cls, value: Any) -> Any:
        if value not in (None, 0, -1):
            raise ValueError(
                "a ConstantPruningModifier keeps the zeros of the starting model for the whole "
                "run; set start_epoch: 0"
            )
        return 0.0

    @field_validator("end_epoch")
    @classmethod
    def _end_positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be > 0 (or -1: the end of the run)")
        return value


ScheduleFields = _Schedule
"""The schema of the schedule fields (their types, for overrides read from text)."""


@dataclass(frozen=True)
class PruningEvent:
    """One pruning step of the run.

    Attributes:
        step: The optimizer step before which the pruning happens,
            ``step_of_epoch(epoch, steps_per_epoch)`` (``epoch·spe`` rounded half up).
        epoch: The scheduled epoch.
        modifier: Index of the modifier in ``Recipe.pruning``.
        sparsity: Target sparsity over the modifier's tensors.
        index: Running number of the event over the run (0, 1, ...).
    """

    step: int
    epoch: float
    modifier: int
    sparsity: float
    index: int


@dataclass(frozen=True)
class PruningModifier:
    """One validated pruning modifier.

    Attributes:
        tag: The recipe tag without ``!`` (``"OBSPruningModifier"``).
        index: Position in ``Recipe.pruning`` (0-based; ``PruningEvent.modifier``).
        position: 1-based position among all modifiers of the recipe file (messages).
        method_name: Registry name of the method (``"obert"``).
        params: The ``params`` entries as written (``"re:<regex>"`` or exact names).
        targets: The regexes (``re.search``) they become: ``re:X`` -> ``X``, an exact name
            ``n`` -> ``^re.escape(n)$``.
        settings: The method's validated ``Settings`` instance.
        init_sparsity: ``s_i`` (None for a method without a schedule, i.e. constant masks).
        final_sparsity: ``s_f`` (None without a schedule).
        start_epoch: First pruning epoch (0 for constant masks).
        end_epoch: Last pruning epoch (constant masks: None = the end of the run).
        update_frequency: Epochs between pruning steps (None without a schedule).
        inter_func: ``cubic`` or ``linear`` (None without a schedule).
    """

    tag: str
    index: int
    position: int
    method_name: str
    params: tuple[str, ...]
    targets: tuple[str, ...]
    settings: MethodSettings
    init_sparsity: float | None
    final_sparsity: float | None
    start_epoch: float
    end_epoch: float | None
    update_frequency: float | None
    inter_func: str | None

    @property
    def scheduled(self) -> bool:
        """Whether the modifier prunes on a schedule (False for constant masks)."""
        return self.update_frequency is not None

    def label(self) -> str:
        """``"modifier 4 (!OBSPruningModifier)"``."""
        return f"modifier {self.position} (!{self.tag})"

    def method_class(self) -> type[PruningMethod]:
        """The registered method class the tag selects."""
        cls = method_for_tag(self.tag)
        if cls is None:  # pragma: no cover - validated on load
            raise RecipeError(f"{self.label()}: no pruning method is registered for this tag")
        return cls

    def create_method(self) -> PruningMethod:
        """A fresh method instance built from :attr:`settings`."""
        return self.method_class()(settings=self.settings)

    def schedule(self) -> list[tuple[float, float]]:
        """``[(epoch, target sparsity), ...]`` of every pruning step (module docstring).

        Empty for constant masks.
        """
        if not self.scheduled:
            return []
        end, frequency = self.end_epoch, self.update_frequency
        si, sf = self.init_sparsity, self.final_sparsity
        if end is None or frequency is None or si is None or sf is None:  # pragma: no cover
            raise AssertionError("a scheduled modifier has every schedule field")
        start = self.start_epoch
        epochs = pruning_steps(start, end, frequency)
        if abs(epochs[-1] - end) <= 1e-9 * max(1.0, abs(end)):
            epochs[-1] = end
        else:
            epochs.append(end)
        curve = cubic_sparsity if self.inter_func == "cubic" else linear_sparsity
        steps = [(epoch, curve(epoch, si, sf, start, end)) for epoch in epochs[:-1]]
        return [*steps, (end, sf)]  # the last step reaches final_sparsity exactly (no rounding)

    def recipe_dict(self) -> dict[str, Any]:
        """The fields to write back to a recipe (SparseML names).

        The method settings written are those the recipe gave and those that differ from
        the method's defaults, so reading the result gives the same settings.
        """
        out: dict[str, Any] = {"params": list(self.params)}
        if self.scheduled:
            out.update(
                init_sparsity=self.init_sparsity,
                final_sparsity=self.final_sparsity,
                start_epoch=self.start_epoch,
                end_epoch=self.end_epoch,
                update_frequency=self.update_frequency,
                inter_func=self.inter_func,
            )
        else:
            out["start_epoch"] = self.start_epoch
            if self.end_epoch is not None:
                out["end_epoch"] = self.end_epoch
            return out
        values = self.settings.model_dump(mode="json")
        for name, info in type(self.settings).model_fields.items():
            if name == "targets":
                continue
            given = name in self.settings.model_fields_set
            if not given and values[name] == info.get_default(call_default_factory=True):
                continue
            if name == "grad_batch_size":
                out["grad_sampler_kwargs"] = {"batch_size": values[name]}
            else:
                out[name] = values[name]
        return out

    def content(self) -> dict[str, Any]:
        """Resolved content (fingerprints, equality): method, schedule and every setting."""
        return {
            "method": self.method_name,
            "params": list(self.params),
            "init_sparsity": self.init_sparsity,
            "final_sparsity": self.final_sparsity,
            "start_epoch": self.start_epoch,
            "end_epoch": self.end_epoch,
            "update_frequency": self.update_frequency,
            "inter_func": self.inter_func,
            "settings": settings_content(self.settings),
        }


def settings_content(settings: MethodSettings) -> dict[str, Any]:
    """Every setting, less those of ``omitted_at_default`` that keep their default."""
    out: dict[str, Any] = settings.resolved_dump()
    fields = type(settings).model_fields
    for name in type(settings).omitted_at_default:
        if name in out and getattr(settings, name) == fields[name].default:
            del out[name]
    return out


def pruning_fields(cls: type[PruningMethod]) -> list[str]:
    """The recipe fields a pruning modifier of method ``cls`` takes.

    Methods without a schedule (constant masks) take ``params``, ``start_epoch`` and
    ``end_epoch``; the others the schedule fields, ``params`` and every setting of their
    ``Settings`` model (``grad_sampler_kwargs`` for ``grad_batch_size``).
    """
    if not cls.schedules_pruning:
        return list(CONSTANT_FIELDS)
    names = ["params", *SCHEDULE_FIELDS]
    for name in cls.Settings.model_fields:
        if name == "targets":
            continue
        names.append("grad_sampler_kwargs" if name == "grad_batch_size" else name)
    return names


def _targets(value: Any, prefix: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RecipeError(
            f"{prefix}: params = {fmt(value)}: must be a non-empty list of 're:<regex>' "
            "patterns or exact parameter names"
        )
    params: list[str] = []
    regexes: list[str] = []
    for entry in value:
        if not isinstance(entry, str) or not entry.strip():
            raise RecipeError(
                f"{prefix}: params entry {fmt(entry)} must be a 're:<regex>' pattern or an "
                "exact parameter name"
            )
        if entry in _ALL_PARAMS:
            raise RecipeError(
                f"{prefix}: params {entry!r} is not supported; list the tensors to prune, e.g. "
                "'re:bert.encoder.layer.*.attention.self.query.weight'"
            )
        regex = entry[3:] if entry.startswith("re:") else "^" + re.escape(entry) + "$"
        try:
            re.compile(regex)
        except re.error as exc:
            raise RecipeError(
                f"{prefix}: params entry {entry!r} is not a valid regular expression ({exc}); "
                "fix the pattern"
            ) from None
        params.append(entry)
        regexes.append(regex)
    return tuple(params), tuple(regexes)


def _grad_batch_size(value: Any, prefix: str) -> Any:
    if not isinstance(value, Mapping):
        raise RecipeError(
            f"{prefix}: grad_sampler_kwargs = {fmt(value)}: must be a mapping such as "
            "'{batch_size: 16}'"
        )
    unknown = [key for key in value if key != "batch_size"]
    if unknown:
        raise RecipeError(
            f"{prefix}: grad_sampler_kwargs key {unknown[0]!r} is not supported; only "
            "batch_size (examples per gradient) is"
        )
    if "batch_size" not in value:
        raise RecipeError(f"{prefix}: grad_sampler_kwargs needs batch_size, e.g. 16")
    return value["batch_size"]


def build_pruning_modifier(
    raw: RawModifier, cls: type[PruningMethod], index: int, where: str
) -> PruningModifier:
    """Validate a pruning modifier: schedule fields here, every other field by ``cls.Settings``.

    Args:
        raw: The modifier as read.
        cls: The method its tag selects.
        index: Its position in ``Recipe.pruning``.
        where: The file (or ``"recipe text"``).

    Raises:
        RecipeError: Naming the modifier, the file, the field and the value.
    """
    prefix = f"{raw.label()} in {where}"
    fields = dict(raw.fields)
    check_known_keys(fields, pruning_fields(cls), prefix, _REFUSED)
    if "params" not in fields:
        raise RecipeError(
            f"{prefix}: params is required (the tensors to prune, e.g. "
            "'re:bert.encoder.layer.*.attention.self.query.weight')"
        )
    params, targets = _targets(fields.pop("params"), prefix)
    names = SCHEDULE_FIELDS if cls.schedules_pruning else CONSTANT_FIELDS[1:]
    timing = {key: fields.pop(key) for key in names if key in fields}
    if "grad_sampler_kwargs" in fields:
        fields["grad_batch_size"] = _grad_batch_size(fields.pop("grad_sampler_kwargs"), prefix)
    if fields.get("mask_type") in _BLOCK4:  # SparseML's names of 1x4 blocks
        fields["mask_type"] = "block4"
    elif _is_block_list(fields.get("mask_type")):  # SparseML's [R, C] blocks: "RxC"
        fields["mask_type"] = "{}x{}".format(*fields["mask_type"])
    try:
        spec: _Schedule | _ConstantRange = (
            _Schedule(**timing) if cls.schedules_pruning else _ConstantRange(**timing)
        )
        settings = cls.Settings(**fields, targets=list(targets))
    except ValidationError as exc:
        raise explain_errors(exc, prefix, _RENAMED, raw.overridden) from None
    common: dict[str, Any] = {
        "tag": raw.tag,
        "index": index,
        "position": raw.position,
        "method_name": cls.name,
        "params": params,
        "targets": targets,
        "settings": settings,
    }
    if isinstance(spec, _Schedule):
        modifier = PruningModifier(
            **common,
            init_sparsity=spec.init_sparsity,
            final_sparsity=spec.final_sparsity,
            start_epoch=spec.start_epoch,
            end_epoch=spec.end_epoch,
            update_frequency=spec.update_frequency,
            inter_func=spec.inter_func,
        )
    else:
        modifier = PruningModifier(
            **common,
            init_sparsity=None,
            final_sparsity=None,
            start_epoch=spec.start_epoch,
            end_epoch=spec.end_epoch,
            update_frequency=None,
            inter_func=None,
        )
    _check_method(modifier, prefix)
    return modifier


def _check_method(modifier: PruningModifier, prefix: str) -> None:
    """The method's checks that need no model, as every driver runs them before work.

    The method's own :meth:`~obert_train.PruningMethod.check` with no tensors (its settings:
    structured pruning refuses a mask type other than ``unstructured``), and every scheduled
    sparsity against an N:M mask type (which fixes the sparsity at ``1 - N/M``). So a recipe
    ``obert-train run`` would refuse fails on loading: in ``recipe show``, ``oneshot`` and the
    Python API alike, with the same message.

    Raises:
        RecipeError: Naming the modifier and the file.
    """
    method = modifier.create_method()
    try:
        method.check({})
        for _, sparsity in modifier.schedule():
            check_nm_sparsity(method.settings, sparsity)
    except RecipeError as exc:
        raise RecipeError(f"{prefix}: {exc}") from None
