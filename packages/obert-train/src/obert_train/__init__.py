"""obert-train: Optimal BERT Surgeon pruning of Hugging Face Transformers models.

One-shot pruning (:func:`oneshot_prune`, CLI ``obert-train oneshot``) with the second-order oBERT
method (Kurtic et al. 2022, arXiv 2203.07259) or magnitude pruning, memory-planned inverse-Fisher
construction, ``torch.distributed`` sharding, task data loaders with dev metrics, and standard
Hugging Face checkpoints with a sparsity report.  The math lives in ``obert_core``.
"""

from obert_train._checkpoint import (
    atomic_directory,
    atomic_write_text,
    save_checkpoint,
    sparsity_report,
)
from obert_train._config import OneShotConfig, parse_memory, parse_nm
from obert_train._data import (
    ClassificationExample,
    DataError,
    SquadExample,
    read_glue_tsv,
    read_raw_text,
    read_squad_json,
)
from obert_train._distributed import DistContext, shard_by_size
from obert_train._finetune import FinetuneResult, finetune
from obert_train._grads import GradientSampler, LossFn
from obert_train._hub import MissingDependencyError, load_hub_split
from obert_train._memory import (
    MemoryPlan,
    MemoryPlanError,
    available_bytes,
    default_budget_bytes,
    format_bytes,
    gram_precision,
    group_peak_bytes,
    plan_memory,
)
from obert_train._methods import MagnitudePruning, PruningMethod, StepContext, select_masks
from obert_train._mlm import MaskedLMTask
from obert_train._obert import (
    ObertPruning,
    apply_obs_update,
    build_inverse_fishers,
    obert_scores,
    obs_updated,
)
from obert_train._oneshot import METHODS, PruneResult, current_masks, oneshot_prune, register_method
from obert_train._params import BERT_ENCODER_PATTERNS, TargetError, resolve_target_params
from obert_train._squad import SquadTask, squad_metrics, squad_normalize_answer
from obert_train._taskload import TASK_NAMES, load_task
from obert_train._tasks import ClassificationTask, Feature, Task

__version__ = "0.1.0"

__all__ = [
    "BERT_ENCODER_PATTERNS",
    "METHODS",
    "TASK_NAMES",
    "ClassificationExample",
    "ClassificationTask",
    "DataError",
    "DistContext",
    "Feature",
    "FinetuneResult",
    "GradientSampler",
    "LossFn",
    "MagnitudePruning",
    "MaskedLMTask",
    "MemoryPlan",
    "MemoryPlanError",
    "MissingDependencyError",
    "ObertPruning",
    "OneShotConfig",
    "PruneResult",
    "PruningMethod",
    "SquadExample",
    "SquadTask",
    "StepContext",
    "TargetError",
    "Task",
    "__version__",
    "apply_obs_update",
    "atomic_directory",
    "atomic_write_text",
    "available_bytes",
    "build_inverse_fishers",
    "current_masks",
    "default_budget_bytes",
    "finetune",
    "format_bytes",
    "gram_precision",
    "group_peak_bytes",
    "load_hub_split",
    "load_task",
    "obert_scores",
    "obs_updated",
    "oneshot_prune",
    "parse_memory",
    "parse_nm",
    "plan_memory",
    "read_glue_tsv",
    "read_raw_text",
    "read_squad_json",
    "register_method",
    "resolve_target_params",
    "save_checkpoint",
    "select_masks",
    "shard_by_size",
    "sparsity_report",
    "squad_metrics",
    "squad_normalize_answer",
]
