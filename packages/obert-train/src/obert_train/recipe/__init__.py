"""SparseML-compatible training recipes: gradual pruning with distillation.

A recipe is YAML in the format of SparseML's oBERT recipes (Kurtic et al. 2022; docs/math.md
§5; the authors' recipes,
docs/recipes.md): ``!EpochRangeModifier`` (run length), ``!LearningRateFunctionModifier``
(``linear`` / ``cyclic_linear``), pruning modifiers (``!OBSPruningModifier``,
``!GMPruningModifier``, ``!MagnitudePruningModifier``, ``!MovementPruningModifier``,
``!ConstantPruningModifier``) and ``!DistillationModifier``. The published oBERT recipes load
unchanged, and so do SparseML/SparseZoo recipes: a top-level ``version``, Markdown recipes with
YAML front matter, YAML anchors, top-level variables used as ``eval(...)`` (a safe arithmetic
evaluator), ``!SetLearningRateModifier``, ``!SetWeightDecayModifier`` and
``!TrainableParamsModifier``; :func:`convert_recipe` writes one as a plain, evaluated recipe.
obert-train's own ``!LayerDroppingModifier`` keeps some of the student's layers before
training. See ``docs/recipes.md``.

Examples:
    >>> from obert_train.recipe import load_recipe
    >>> recipe = load_recipe("minilm-sst2-obert80")
    >>> [round(s, 4) for _, s in recipe.pruning[0].schedule()]
    [0.5, 0.7111, 0.7889, 0.8]
"""

from __future__ import annotations

from obert_train.recipe.convert import convert_recipe
from obert_train.recipe.load import build_recipe, list_shipped_recipes, load_recipe
from obert_train.recipe.modifiers import (
    DistillationModifier,
    EpochRangeModifier,
    LearningRateFunctionModifier,
)
from obert_train.recipe.pruning_modifier import PruningModifier
from obert_train.recipe.recipe import PruningEvent, Recipe
from obert_train.recipe.spec import ModifierSpec
from obert_train.recipe.training_modifiers import (
    LayerDroppingModifier,
    SetLearningRateModifier,
    SetWeightDecayModifier,
    TrainableParamsModifier,
    ZerothOrderModifier,
)

__all__ = [
    "DistillationModifier",
    "EpochRangeModifier",
    "LayerDroppingModifier",
    "LearningRateFunctionModifier",
    "ModifierSpec",
    "PruningEvent",
    "PruningModifier",
    "Recipe",
    "SetLearningRateModifier",
    "SetWeightDecayModifier",
    "TrainableParamsModifier",
    "ZerothOrderModifier",
    "build_recipe",
    "convert_recipe",
    "list_shipped_recipes",
    "load_recipe",
]
