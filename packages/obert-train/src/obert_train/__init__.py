"""obert-train: Optimal BERT Surgeon pruning of Hugging Face Transformers models.

Gradual pruning with distillation during fine-tuning (:class:`ObertPruningCallback` in any
``transformers.Trainer``, :class:`ObertTrainer`, :func:`run_recipe`, CLI ``obert-train run``) and
one-shot pruning (:func:`oneshot_prune`, CLI ``obert-train oneshot``), both through one pruning
lifecycle shared by every method: the second-order oBERT method (Kurtic et al. 2022, arXiv
2203.07259), gradual magnitude pruning and movement pruning.  SparseML-compatible recipes
(:func:`load_recipe`), memory-planned inverse-Fisher construction, ``torch.distributed``
sharding, task loaders with dev metrics, and plain Hugging Face checkpoints with a sparsity
report.  The math lives in ``obert_core``.
"""

from obert_train.checkpoint import save_checkpoint, sparsity_report
from obert_train.errors import (
    DataError,
    MemoryPlanError,
    MissingDependencyError,
    ObertTrainError,
    RecipeError,
    ResumeError,
    TargetError,
    TrainingError,
)
from obert_train.fisher.sampler import GradientSampler
from obert_train.hf.callback import ObertPruningCallback
from obert_train.hf.distillation import distillation_loss
from obert_train.hf.lr import recipe_lr_scheduler
from obert_train.hf.run import RunOptions, RunResult, run_recipe
from obert_train.hf.trainer import ObertTrainer
from obert_train.pruning.constant import ConstantPruning
from obert_train.pruning.magnitude import MagnitudePruning
from obert_train.pruning.masks import MaskState
from obert_train.pruning.method import MethodSettings, PruningMethod, StepContext
from obert_train.pruning.movement import MovementPruning
from obert_train.pruning.obert import ObertPruning, ObertSettings
from obert_train.pruning.oneshot import PruneResult, oneshot_prune
from obert_train.pruning.registry import METHODS, create_method, register_method
from obert_train.pruning.targets import BERT_ENCODER_PATTERNS, resolve_target_params
from obert_train.recipe import Recipe, load_recipe
from obert_train.tasks.base import ClassificationTask, Task
from obert_train.tasks.load import load_task
from obert_train.tasks.mlm import MaskedLMTask
from obert_train.tasks.squad import SquadTask

__version__ = "0.2.0"

__all__ = [
    "BERT_ENCODER_PATTERNS",
    "METHODS",
    "ClassificationTask",
    "ConstantPruning",
    "DataError",
    "GradientSampler",
    "MagnitudePruning",
    "MaskState",
    "MaskedLMTask",
    "MemoryPlanError",
    "MethodSettings",
    "MissingDependencyError",
    "MovementPruning",
    "ObertPruning",
    "ObertPruningCallback",
    "ObertSettings",
    "ObertTrainError",
    "ObertTrainer",
    "PruneResult",
    "PruningMethod",
    "Recipe",
    "RecipeError",
    "ResumeError",
    "RunOptions",
    "RunResult",
    "SquadTask",
    "StepContext",
    "TargetError",
    "Task",
    "TrainingError",
    "__version__",
    "create_method",
    "distillation_loss",
    "load_recipe",
    "load_task",
    "oneshot_prune",
    "recipe_lr_scheduler",
    "register_method",
    "resolve_target_params",
    "run_recipe",
    "save_checkpoint",
    "sparsity_report",
]
