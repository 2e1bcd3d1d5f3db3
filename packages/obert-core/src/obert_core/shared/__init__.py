"""What obert-train and obert-deploy both need, kept once: pure Python, no NumPy math.

obert-deploy depends on obert-core for these and nothing else of it; obert-train and the
``obert`` application use them too.  The rule (``docs/architecture.md``): a fact two packages
need lives here, and nowhere else.

- atomic file output: :func:`atomic_write_bytes`, :func:`atomic_write_text`,
  :func:`atomic_output`, :func:`atomic_outputs` (:class:`OutputIsFolderError`,
  :class:`NothingWrittenError`);
- the latency-table file format :data:`LATENCY_TABLE_FORMAT` (obert-deploy writes it,
  obert-train reads it); the image data layout: :data:`IMAGE_EXTENSIONS`, :data:`IMAGE_NPZ_KEYS`;
- the CPU a measurement ran on: :class:`CpuInfo`, :func:`cpu_info`, :func:`cpu_flags`,
  :func:`available_cores`, :func:`load_average`;
- where FFN neurons and attention heads are, per model family: :data:`FFN_LAYOUTS`,
  :data:`ATTENTION_LAYOUTS`;
- GLUE TSV column names: :data:`GLUE_TEXT_COLUMNS`, :data:`GLUE_LABEL_COLUMNS`;
- the official SQuAD v1.1 metric: :func:`squad_scores`, :func:`squad_normalize_answer`;
- SQuAD context windows (:func:`squad_windows`, :func:`squad_doc_stride`), span post-processing
  (:func:`squad_predictions`, :func:`squad_best_span`) and the
  one evaluation subset rule (:func:`eval_subset`: the first N);
- each metric's unit and the one number formatter: :func:`format_metric`,
  :func:`metric_unit`, :data:`PERCENT_METRICS`;
- the output-folder policy (``docs/train.md``): one lock on an output folder,
  :func:`folder_lock` (:class:`FolderInUseError`, :func:`folder_lock_holder`), and
  :func:`check_output_not_input` (:class:`OutputOverlapError`);
- a full disk as one ``OSError`` naming the folder: :func:`disk_full_errors`,
  :func:`is_disk_full`, :func:`no_space_error`;
- quiet command lines: :func:`quiet_third_party` (third-party warnings and load reports,
  the loggers in :data:`NOISY_LOGGERS`);
- one vocabulary across the command lines: :func:`canonical_args` with
  :data:`OPTION_ALIASES` and :data:`TASK_ALIASES` (old spellings as hidden aliases),
  comma-separated ``--text-column`` values (:func:`split_columns`), and the
  one training-subset rule :func:`train_subset` (``--max-train-samples``).
"""

from __future__ import annotations

from ._disk import disk_full_errors, is_disk_full, no_space_error
from ._glue import GLUE_LABEL_COLUMNS, GLUE_TEXT_COLUMNS, glue_text_columns
from ._images import IMAGE_EXTENSIONS, IMAGE_NPZ_KEYS
from ._io import (
    NothingWrittenError,
    OutputIsFolderError,
    atomic_output,
    atomic_outputs,
    atomic_write_bytes,
    atomic_write_text,
)
from ._latency import LATENCY_TABLE_FORMAT
from ._layouts import (
    ATTENTION_LAYOUTS,
    FFN_LAYOUTS,
    AttentionLayout,
    FfnLayout,
    describe_layouts,
)
from ._lock import FolderInUseError, folder_lock, folder_lock_holder
from ._machine import CpuInfo, available_cores, cpu_flags, cpu_info, load_average
from ._metrics import PERCENT_METRICS, format_bytes, format_metric, metric_unit
from ._overlap import OutputOverlapError, check_output_not_input
from ._quiet import NOISY_LOGGERS, quiet_third_party
from ._squad import squad_normalize_answer, squad_scores
from ._squad_spans import (
    SQUAD_MAX_ANSWER_LENGTH,
    SQUAD_N_BEST,
    eval_subset,
    squad_best_span,
    squad_predictions,
)
from ._squad_windows import (
    SQUAD_DOC_STRIDE,
    SQUAD_MAX_QUERY_LENGTH,
    squad_doc_stride,
    squad_windows,
)
from ._subset import train_subset
from ._vocabulary import OPTION_ALIASES, TASK_ALIASES, canonical_args, split_columns

__all__ = [
    "ATTENTION_LAYOUTS",
    "FFN_LAYOUTS",
    "GLUE_LABEL_COLUMNS",
    "GLUE_TEXT_COLUMNS",
    "IMAGE_EXTENSIONS",
    "IMAGE_NPZ_KEYS",
    "LATENCY_TABLE_FORMAT",
    "NOISY_LOGGERS",
    "OPTION_ALIASES",
    "PERCENT_METRICS",
    "SQUAD_DOC_STRIDE",
    "SQUAD_MAX_ANSWER_LENGTH",
    "SQUAD_MAX_QUERY_LENGTH",
    "SQUAD_N_BEST",
    "TASK_ALIASES",
    "AttentionLayout",
    "CpuInfo",
    "FfnLayout",
    "FolderInUseError",
    "NothingWrittenError",
    "OutputIsFolderError",
    "OutputOverlapError",
    "atomic_output",
    "atomic_outputs",
    "atomic_write_bytes",
    "atomic_write_text",
    "available_cores",
    "canonical_args",
    "check_output_not_input",
    "cpu_flags",
    "cpu_info",
    "describe_layouts",
    "disk_full_errors",
    "eval_subset",
    "folder_lock",
    "folder_lock_holder",
    "format_bytes",
    "format_metric",
    "glue_text_columns",
    "is_disk_full",
    "load_average",
    "metric_unit",
    "no_space_error",
    "quiet_third_party",
    "split_columns",
    "squad_best_span",
    "squad_doc_stride",
    "squad_normalize_answer",
    "squad_predictions",
    "squad_scores",
    "squad_windows",
    "train_subset",
]
