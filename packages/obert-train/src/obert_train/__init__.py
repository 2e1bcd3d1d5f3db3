"""obert-train: Optimal BERT Surgeon pruning of Hugging Face Transformers models.

Gradual pruning with distillation during fine-tuning (:class:`ObertPruningCallback` in any
``transformers.Trainer``, :class:`ObertTrainer`, :func:`run_recipe`, CLI ``obert-train run``) and
one-shot pruning (:func:`oneshot_prune`, CLI ``obert-train oneshot``), both through one pruning
lifecycle shared by every method: the second-order oBERT method (Kurtic et al. 2022, arXiv
2203.07259), gradual magnitude pruning and movement pruning.  SparseML-compatible recipes
(:func:`load_recipe`, or built in Python with :func:`build_recipe`), memory-planned
inverse-Fisher construction, ``torch.distributed`` sharding, task loaders with dev metrics
(:func:`load_task` with one :class:`DataOptions`), layer dropping (:func:`drop_layers`, CLI
``obert-train drop-layers``), physically smaller structurally pruned checkpoints
(:func:`shrink_model`, CLI ``obert-train shrink``), and plain Hugging Face checkpoints with a
sparsity report.  The math lives in ``obert_core``.

``__all__`` is the public surface (plus the module :mod:`obert_train.checks`); every other
module is internal.  Every error raised on purpose is an :class:`ObertTrainError`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from obert_train.checkpoint import check_output_dir, save_checkpoint, sparsity_report
    from obert_train.checks import (
        check_finite_weights,
        check_model_fits_task,
        check_tokens_known,
        distillable_outputs,
    )
    from obert_train.cli.common import parse_sets
    from obert_train.cli.data_options import with_data_options
    from obert_train.cli.group import VocabularyGroup, version_callback
    from obert_train.cli.models import check_model_source, load_model, load_tokenizer
    from obert_train.errors import (
        ArgumentError,
        DataError,
        MemoryPlanError,
        MissingDependencyError,
        ModelError,
        ObertTrainError,
        OptionError,
        OutputDirError,
        RecipeError,
        ResumeError,
        TargetError,
        TrainingError,
    )
    from obert_train.fisher.sampler import GradientSampler
    from obert_train.hf.callback import ObertPruningCallback, steps_per_epoch
    from obert_train.hf.distillation import distillation_loss
    from obert_train.hf.lr import recipe_lr_scheduler
    from obert_train.hf.run import RunOptions, RunResult, run_recipe
    from obert_train.hf.trainer import ObertTrainer
    from obert_train.hf.zo import ZOSettings, ZOTrainer
    from obert_train.layers import drop_layers
    from obert_train.pruning.blocks import load_latency_table
    from obert_train.pruning.constant import ConstantPruning
    from obert_train.pruning.lpvit import LPViTPruning, LPViTSettings, lpvit_loss
    from obert_train.pruning.magnitude import MagnitudePruning
    from obert_train.pruning.masks import MaskState
    from obert_train.pruning.method import MethodSettings, PruningMethod, StepContext
    from obert_train.pruning.movement import MovementPruning
    from obert_train.pruning.obert import ObertPruning, ObertSettings
    from obert_train.pruning.oneshot import PruneResult, oneshot_prune
    from obert_train.pruning.registry import METHODS, create_method, method_for_tag, register_method
    from obert_train.pruning.structured import StructuredPruning, StructuredSettings
    from obert_train.pruning.targets import BERT_ENCODER_PATTERNS, resolve_target_params
    from obert_train.pruning.zo_grasp import zo_grasp_sparsities
    from obert_train.recipe import ModifierSpec, Recipe, build_recipe, load_recipe
    from obert_train.shrink import check_same_outputs, save_shrunk, shrink_model
    from obert_train.tasks.base import ClassificationTask, Task
    from obert_train.tasks.data import read_glue_tsv, read_raw_text, read_squad_json
    from obert_train.tasks.load import load_task
    from obert_train.tasks.mlm import MaskedLMTask
    from obert_train.tasks.options import DataOptions
    from obert_train.tasks.squad import SquadTask

_EXPORTS: dict[str, str] = {
    "ArgumentError": "obert_train.errors",
    "BERT_ENCODER_PATTERNS": "obert_train.pruning.targets",
    "ClassificationTask": "obert_train.tasks.base",
    "ConstantPruning": "obert_train.pruning.constant",
    "DataError": "obert_train.errors",
    "DataOptions": "obert_train.tasks.options",
    "GradientSampler": "obert_train.fisher.sampler",
    "METHODS": "obert_train.pruning.registry",
    "LPViTPruning": "obert_train.pruning.lpvit",
    "LPViTSettings": "obert_train.pruning.lpvit",
    "MagnitudePruning": "obert_train.pruning.magnitude",
    "MaskState": "obert_train.pruning.masks",
    "MaskedLMTask": "obert_train.tasks.mlm",
    "MemoryPlanError": "obert_train.errors",
    "MethodSettings": "obert_train.pruning.method",
    "MissingDependencyError": "obert_train.errors",
    "ModelError": "obert_train.errors",
    "ModifierSpec": "obert_train.recipe",
    "MovementPruning": "obert_train.pruning.movement",
    "ObertPruning": "obert_train.pruning.obert",
    "ObertPruningCallback": "obert_train.hf.callback",
    "ObertSettings": "obert_train.pruning.obert",
    "ObertTrainError": "obert_train.errors",
    "ObertTrainer": "obert_train.hf.trainer",
    "OptionError": "obert_train.errors",
    "OutputDirError": "obert_train.errors",
    "PruneResult": "obert_train.pruning.oneshot",
    "PruningMethod": "obert_train.pruning.method",
    "Recipe": "obert_train.recipe",
    "RecipeError": "obert_train.errors",
    "ResumeError": "obert_train.errors",
    "RunOptions": "obert_train.hf.run",
    "RunResult": "obert_train.hf.run",
    "SquadTask": "obert_train.tasks.squad",
    "StepContext": "obert_train.pruning.method",
    "StructuredPruning": "obert_train.pruning.structured",
    "StructuredSettings": "obert_train.pruning.structured",
    "TargetError": "obert_train.errors",
    "Task": "obert_train.tasks.base",
    "TrainingError": "obert_train.errors",
    "build_recipe": "obert_train.recipe",
    "check_model_source": "obert_train.cli.models",
    "check_output_dir": "obert_train.checkpoint",
    "create_method": "obert_train.pruning.registry",
    "distillation_loss": "obert_train.hf.distillation",
    "drop_layers": "obert_train.layers",
    "load_model": "obert_train.cli.models",
    "lpvit_loss": "obert_train.pruning.lpvit",
    "load_latency_table": "obert_train.pruning.blocks",
    "load_recipe": "obert_train.recipe",
    "load_task": "obert_train.tasks.load",
    "load_tokenizer": "obert_train.cli.models",
    "method_for_tag": "obert_train.pruning.registry",
    "oneshot_prune": "obert_train.pruning.oneshot",
    "parse_sets": "obert_train.cli.common",
    "read_glue_tsv": "obert_train.tasks.data",
    "read_raw_text": "obert_train.tasks.data",
    "read_squad_json": "obert_train.tasks.data",
    "recipe_lr_scheduler": "obert_train.hf.lr",
    "register_method": "obert_train.pruning.registry",
    "shrink_model": "obert_train.shrink",
    "save_shrunk": "obert_train.shrink",
    "check_same_outputs": "obert_train.shrink",
    "resolve_target_params": "obert_train.pruning.targets",
    "run_recipe": "obert_train.hf.run",
    "save_checkpoint": "obert_train.checkpoint",
    "sparsity_report": "obert_train.checkpoint",
    "steps_per_epoch": "obert_train.hf.callback",
    "with_data_options": "obert_train.cli.data_options",
    "VocabularyGroup": "obert_train.cli.group",
    "check_finite_weights": "obert_train.checks",
    "check_model_fits_task": "obert_train.checks",
    "check_tokens_known": "obert_train.checks",
    "distillable_outputs": "obert_train.checks",
    "version_callback": "obert_train.cli.group",
    "ZOSettings": "obert_train.hf.zo",
    "ZOTrainer": "obert_train.hf.zo",
    "zo_grasp_sparsities": "obert_train.pruning.zo_grasp",
}
"""Public name -> the module defining it (imported on first use: ``--help`` stays fast)."""

__version__ = "0.2.0"

__all__ = [
    "BERT_ENCODER_PATTERNS",
    "METHODS",
    "ArgumentError",
    "ClassificationTask",
    "ConstantPruning",
    "DataError",
    "DataOptions",
    "GradientSampler",
    "LPViTPruning",
    "LPViTSettings",
    "MagnitudePruning",
    "MaskState",
    "MaskedLMTask",
    "MemoryPlanError",
    "MethodSettings",
    "MissingDependencyError",
    "ModelError",
    "ModifierSpec",
    "MovementPruning",
    "ObertPruning",
    "ObertPruningCallback",
    "ObertSettings",
    "ObertTrainError",
    "ObertTrainer",
    "OptionError",
    "OutputDirError",
    "PruneResult",
    "PruningMethod",
    "Recipe",
    "RecipeError",
    "ResumeError",
    "RunOptions",
    "RunResult",
    "SquadTask",
    "StepContext",
    "StructuredPruning",
    "StructuredSettings",
    "TargetError",
    "Task",
    "TrainingError",
    "VocabularyGroup",
    "ZOSettings",
    "ZOTrainer",
    "__version__",
    "build_recipe",
    "check_finite_weights",
    "check_model_fits_task",
    "check_model_source",
    "check_output_dir",
    "check_same_outputs",
    "check_tokens_known",
    "create_method",
    "distillable_outputs",
    "distillation_loss",
    "drop_layers",
    "load_latency_table",
    "load_model",
    "load_recipe",
    "load_task",
    "load_tokenizer",
    "lpvit_loss",
    "method_for_tag",
    "oneshot_prune",
    "parse_sets",
    "read_glue_tsv",
    "read_raw_text",
    "read_squad_json",
    "recipe_lr_scheduler",
    "register_method",
    "resolve_target_params",
    "run_recipe",
    "save_checkpoint",
    "save_shrunk",
    "shrink_model",
    "sparsity_report",
    "steps_per_epoch",
    "version_callback",
    "with_data_options",
    "zo_grasp_sparsities",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'obert_train' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
