"""The quickstart's recipes: dense, pruning (oBERT by default) and the same-budget baseline.

Recipes are obert-train recipes (SparseML format, :func:`obert_train.load_recipe`). The
baseline is derived from the pruning recipe: every scheduled pruning modifier is rewritten with
the baseline's tag (``!GMPruningModifier``: gradual magnitude pruning) keeping its tensors,
schedule, mask type and global ranking, and the run length, learning-rate modifiers and
distillation stay as they are, so both methods get the same budget and the same pruning steps.
Method-specific settings (oBERT's ``num_grads``, ``damp``, ...) are dropped.

The shipped pruning recipe distils the ``logits`` of a classifier; for ``--task squad`` it is
loaded with :data:`TASK_DISTILL_KEYS` (``start_logits``, ``end_logits``) instead, through the
same override mechanism as ``--set`` (which still wins). A recipe given by the user keeps its
keys: the preflight checks them against the model's outputs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import yaml

from obert.defaults import DENSE_RECIPE, PRUNING_RECIPE, shipped_recipe
from obert.errors import PipelineInputError
from obert_train.pruning.registry import method_for_tag
from obert_train.recipe import Recipe, load_recipe
from obert_train.recipe.pruning_modifier import pruning_fields

__all__ = ["TASK_DISTILL_KEYS", "baseline_recipe", "load_stage_recipe", "recipe_text"]

TASK_DISTILL_KEYS: dict[str, tuple[str, ...]] = {"squad": ("start_logits", "end_logits")}
"""Model outputs the shipped pruning recipe distils for a task other than classification."""
_DISTILL_KEYS_FIELD = "DistillationModifier.distill_output_keys"

_KEEP_SETTINGS = ("mask_type", "global_sparsity")
"""Settings every pruning method shares; the baseline keeps them."""
_SCHEDULE = (
    "params",
    "init_sparsity",
    "final_sparsity",
    "start_epoch",
    "end_epoch",
    "update_frequency",
    "inter_func",
)
"""The schedule fields of a pruning modifier (and its tensors)."""


def load_stage_recipe(
    source: str | os.PathLike[str] | None,
    *,
    dense: bool,
    overrides: Mapping[str, Any] | None = None,
    task: str = "sst2",
) -> Recipe:
    """The dense or pruning recipe: ``source`` (file, YAML text, shipped name) or the default.

    ``source`` may also name a recipe shipped with ``obert`` (``quickstart-obert``) besides
    obert-train's shipped names. A pruning recipe shipped with ``obert`` distils the outputs
    of ``task`` (:data:`TASK_DISTILL_KEYS`) unless ``overrides`` set ``distill_output_keys``.

    Args:
        source: Recipe file, YAML text or shipped name; None = the shipped default.
        dense: The dense stage's recipe (no pruning, no distillation) or the pruning one.
        overrides: ``--set`` style field overrides.
        task: The obert-train task the recipe is run on.

    Raises:
        RecipeError: If the recipe or an override is invalid (names the file and the field).
        PipelineInputError: If a pruning recipe has no pruning modifier, or a dense recipe has
            pruning or distillation modifiers.
    """
    ours = source is None or (
        isinstance(source, str) and "\n" not in source and shipped_recipe(source).is_file()
    )
    if source is None:
        source = shipped_recipe(DENSE_RECIPE if dense else PRUNING_RECIPE)
    elif ours:
        source = shipped_recipe(str(source))
    keys = TASK_DISTILL_KEYS.get(task)
    if ours and not dense and keys is not None:
        overrides = {_DISTILL_KEYS_FIELD: list(keys), **(overrides or {})}
    recipe = load_recipe(source, overrides or None)
    scheduled = [m for m in recipe.pruning if m.scheduled]
    if dense and recipe.pruning:
        raise PipelineInputError(
            f"--dense-recipe {recipe.where} has pruning modifiers; the dense stage only "
            "fine-tunes: give a recipe without pruning_modifiers"
        )
    if dense and recipe.distillation is not None:
        raise PipelineInputError(
            f"--dense-recipe {recipe.where} has a !DistillationModifier; the dense stage has "
            "no teacher (it makes the pruning stages' teacher): remove distillation_modifiers"
        )
    if not dense and not scheduled:
        raise PipelineInputError(
            f"--recipe {recipe.where} has no scheduled pruning modifier (e.g. "
            "!OBSPruningModifier with init_sparsity/final_sparsity); the pruning stage needs one"
        )
    return recipe


def _tagged(tag: str, fields: Mapping[str, Any]) -> str:
    body = yaml.safe_dump(dict(fields), sort_keys=False, default_flow_style=False).rstrip()
    indented = "\n".join(f"    {line}" for line in body.splitlines())
    return f"  - !{tag}\n{indented}"


def recipe_text(
    recipe: Recipe, pruning: list[tuple[str, Mapping[str, Any]]], header: str = ""
) -> str:
    """YAML text of ``recipe`` with its pruning modifiers replaced by ``pruning``."""
    groups: list[tuple[str, list[str]]] = []
    epoch = recipe.epoch_range
    groups.append(
        (
            "modifiers",
            [_tagged("EpochRangeModifier", {"start_epoch": 0.0, "end_epoch": recipe.num_epochs})]
            if epoch is None
            else [_tagged(epoch.tag, epoch.recipe_dict())],
        )
    )
    rates = [_tagged(m.tag, m.recipe_dict()) for m in recipe.learning_rate]
    groups.append(("training_modifiers", rates))
    groups.append(("pruning_modifiers", [_tagged(tag, fields) for tag, fields in pruning]))
    if recipe.distillation is not None:
        kd = recipe.distillation
        groups.append(("distillation_modifiers", [_tagged(kd.tag, kd.recipe_dict())]))
    body = "\n\n".join(f"{name}:\n" + "\n".join(items) for name, items in groups if items)
    return header + body + "\n"


def baseline_recipe(recipe: Recipe, tag: str) -> Recipe:
    """``recipe`` with every scheduled pruning modifier's method replaced by ``tag``'s.

    Args:
        recipe: The pruning recipe.
        tag: A pruning modifier tag without ``!`` (``"GMPruningModifier"``).

    Returns:
        The baseline recipe (same tensors, schedule, LR and distillation).

    Raises:
        PipelineInputError: If ``tag`` names no scheduled pruning method.
    """
    cls = method_for_tag(tag.removeprefix("!"))
    if cls is None or not cls.schedules_pruning:
        raise PipelineInputError(
            f"--baseline {tag!r} is not the tag of a gradual pruning method; use "
            "GMPruningModifier (magnitude), MovementPruningModifier, or none"
        )
    allowed = set(pruning_fields(cls))
    modifiers: list[tuple[str, Mapping[str, Any]]] = []
    for modifier in recipe.pruning:
        fields = modifier.recipe_dict()
        if not modifier.scheduled:
            modifiers.append((modifier.tag, fields))
            continue
        kept = {k: v for k, v in fields.items() if k in allowed and k in _SCHEDULE}
        settings = modifier.settings.model_dump(mode="json")
        kept.update({k: settings[k] for k in _KEEP_SETTINGS if k in allowed and k in settings})
        modifiers.append((tag.removeprefix("!"), kept))
    source = recipe.where
    header = (
        f"# Baseline of {source}: the same tensors, schedule, LR and distillation, with "
        f"!{tag.removeprefix('!')} pruning.\n\n"
    )
    text = recipe_text(recipe, modifiers, header)
    return load_recipe(text)
