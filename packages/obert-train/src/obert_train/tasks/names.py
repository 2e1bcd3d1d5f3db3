"""Names of the tasks with loaders (no heavy imports: the command line's help reads them)."""

from __future__ import annotations

__all__ = ["TASK_NAMES"]

TASK_NAMES = ("sst2", "glue-tsv", "squad", "mlm")
"""Task names accepted by :func:`~obert_train.load_task` and the CLI."""
