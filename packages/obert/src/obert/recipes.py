"""The quickstart's recipes: dense, pruning (oBERT), the same-budget baseline, structured.

Recipes are obert-train recipes (SparseML format, :func:`obert_train.load_recipe`). The
baseline is derived from the pruning recipe: every scheduled pruning modifier is rewritten with
the baseline's tag (``!GMPruningModifier``: gradual magnitude pruning) keeping its tensors,
schedule, mask type and global ranking, and the run length, learning-rate modifiers and
distillation stay as they are, so both methods get the same budget and the same pruning steps.
Method-specific settings (oBERT's ``num_grads``, ``damp``, ...) are dropped. The structured
stage's recipe (``quickstart-structured``) removes FFN neurons and attention heads
(``!StructuredPruningModifier`` only), the model that runs faster on any CPU.

The shipped pruning recipes distil the ``logits`` of a classifier; for ``--task squad`` it is
loaded with :data:`TASK_DISTILL_KEYS` (``start_logits``, ``end_logits``) instead, through the
same override mechanism as ``--set`` (which still wins). A recipe given by the user keeps its
keys: the preflight checks them against the model's outputs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from obert.defaults import DENSE_RECIPE, PRUNING_RECIPE, STRUCTURED_RECIPE, shipped_recipe
from obert.errors import PipelineInputError
from obert_train import ModifierSpec, Recipe, build_recipe, load_recipe, method_for_tag

__all__ = ["TASK_DISTILL_KEYS", "baseline_recipe", "load_stage_recipe"]

TASK_DISTILL_KEYS: dict[str, tuple[str, ...]] = {"squad": ("start_logits", "end_logits")}
"""Model outputs the shipped pruning recipe distils for a task other than classification."""
_DISTILL_KEYS_FIELD = "DistillationModifier.distill_output_keys"

_KEEP_SETTINGS = ("mask_type", "global_sparsity")
"""Settings every pruning method shares; the baseline keeps them."""


def load_stage_recipe(
    source: str | os.PathLike[str] | None,
    *,
    dense: bool,
    overrides: Mapping[str, Any] | None = None,
    task: str = "sst2",
    structured: bool = False,
) -> Recipe:
    """The dense, pruning or structured recipe: ``source`` (file, YAML text, shipped name).

    ``source`` may also name a recipe shipped with ``obert`` (``quickstart-obert``) besides
    obert-train's shipped names. A pruning recipe shipped with ``obert`` distils the outputs
    of ``task`` (:data:`TASK_DISTILL_KEYS`) unless ``overrides`` set ``distill_output_keys``.

    Args:
        source: Recipe file, YAML text or shipped name; None = the shipped default.
        dense: The dense stage's recipe (no pruning, no distillation) or the pruning one.
        overrides: ``--set`` style field overrides.
        task: The obert-train task the recipe is run on.
        structured: The structured stage's recipe (``--structured-recipe``; with
            ``dense=False``): scheduled ``!StructuredPruningModifier`` pruning only.

    Raises:
        RecipeError: If the recipe or an override is invalid (names the file and the field).
        PipelineInputError: If a pruning recipe has no pruning modifier, a dense recipe has
            pruning or distillation modifiers, or a structured recipe has no scheduled
            structured pruning modifier or another method's modifier.
    """
    ours = source is None or (
        isinstance(source, str) and "\n" not in source and shipped_recipe(source).is_file()
    )
    if source is None:
        default = STRUCTURED_RECIPE if structured else PRUNING_RECIPE
        source = shipped_recipe(DENSE_RECIPE if dense else default)
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
    if structured and not dense:
        _check_structured(recipe, scheduled)
    elif not dense and not scheduled:
        raise PipelineInputError(
            f"--recipe {recipe.where} has no scheduled pruning modifier (e.g. "
            "!OBSPruningModifier with init_sparsity/final_sparsity); the pruning stage needs one"
        )
    return recipe


def _check_structured(recipe: Recipe, scheduled: list[Any]) -> None:
    """The structured stage prunes FFN neurons / heads only, on a schedule.

    Raises:
        PipelineInputError: Naming the recipe and the modifiers that are not structured.
    """
    others = sorted({f"!{m.tag}" for m in recipe.pruning if m.method_name != "structured"})
    if others:
        raise PipelineInputError(
            f"--structured-recipe {recipe.where} has {', '.join(others)}; the structured stage "
            "removes whole FFN neurons and attention heads (!StructuredPruningModifier only), "
            "the model that runs faster on any CPU: move the other methods to --recipe"
        )
    if not scheduled:
        raise PipelineInputError(
            f"--structured-recipe {recipe.where} has no scheduled !StructuredPruningModifier "
            "(structure: neurons or heads, with init_sparsity/final_sparsity); the structured "
            "stage needs one, or turn the stage off with --no-structured"
        )


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
    name = tag.removeprefix("!")
    shared = [k for k in _KEEP_SETTINGS if k in cls.Settings.model_fields]
    pruning: list[ModifierSpec] = []
    for modifier in recipe.pruning:
        if not modifier.scheduled:
            pruning.append(ModifierSpec(modifier.tag, modifier.recipe_dict()))
            continue
        si, sf = modifier.init_sparsity, modifier.final_sparsity
        end, frequency = modifier.end_epoch, modifier.update_frequency
        if si is None or sf is None or end is None or frequency is None:  # pragma: no cover
            raise AssertionError("a scheduled modifier has every schedule field")
        pruning.append(
            ModifierSpec.pruning(
                name,
                params=modifier.params,
                init_sparsity=si,
                final_sparsity=sf,
                start_epoch=modifier.start_epoch,
                end_epoch=end,
                update_frequency=frequency,
                inter_func=modifier.inter_func or "cubic",
                **{k: getattr(modifier.settings, k) for k in shared},
            )
        )
    replaced = iter(pruning)
    modifiers = [
        next(replaced) if m.group == "pruning_modifiers" else m for m in recipe.modifiers()
    ]
    return build_recipe(modifiers, source=f"{recipe.where} with !{name}")
