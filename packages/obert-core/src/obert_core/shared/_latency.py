"""The latency-table file format: obert-deploy writes it, obert-train's allocator reads it.

A latency table maps each Linear weight shape ``"OUTxIN"`` to its measured latency at a few
fractions of ``r×c`` blocks kept (docs/train.md §2e; written by ``obert-deploy latency-table``,
read by :func:`obert_train.load_latency_table`).
"""

from __future__ import annotations

__all__ = ["LATENCY_TABLE_FORMAT"]

LATENCY_TABLE_FORMAT = "obert-latency-table/1"
"""The ``format`` field of a latency table file."""
