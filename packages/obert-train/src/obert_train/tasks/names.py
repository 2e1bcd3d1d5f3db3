"""Names of the tasks with loaders (no heavy imports: the command line's help reads them)."""

from __future__ import annotations

__all__ = ["SST2_LABELS", "TASK_NAMES"]

TASK_NAMES = ("sst2", "glue-tsv", "squad", "mlm", "image-classification")
"""Task names accepted by :func:`~obert_train.load_task` and the CLI."""

SST2_LABELS = ("0", "1")
"""The labels of task ``sst2`` in id order: ``0`` negative, ``1`` positive (GLUE SST-2;
``docs/train.md``, "Labels"); a row with any other label is refused."""
