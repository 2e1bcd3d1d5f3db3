"""Benchmark results as a markdown table and as a JSON list (written atomically, read back)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from obert_core.shared import atomic_write_text

from .._errors import ObertDeployError, brief
from .._format import percent
from ._bench import BenchResult

__all__ = ["read_results_json", "results_to_markdown", "write_results_json"]


def results_to_markdown(results: Sequence[BenchResult], *, baseline: str | None = None) -> str:
    """Render results as a markdown table.

    Args:
        results: Benchmark results.
        baseline: Name of the result whose p50 latency is the 1.0x reference of the speed-up
            column (matched per batch size and scenario); default: the first result of each
            (batch size, scenario) group.
    """
    lines = [
        "| model | engine | scenario | batch | seq | threads | sparsity | p50 ms | p90 ms | "
        "p99 ms | items/s | speed-up |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    reference: dict[tuple[int, str], float] = {}
    for result in results:
        key = (result.batch_size, result.scenario)
        if (baseline is None and key not in reference) or result.name == baseline:
            reference[key] = result.latency_ms["p50"]
    for r in results:
        ref = reference.get((r.batch_size, r.scenario))
        speedup = f"{ref / r.latency_ms['p50']:.2f}x" if ref else "-"
        lines.append(
            f"| {r.name} | {r.engine} | {r.scenario} | {r.batch_size} | {r.seq_len or '-'} | "
            f"{r.threads} | {percent(r.weight_sparsity, 0)} | {r.latency_ms['p50']:.2f} | "
            f"{r.latency_ms['p90']:.2f} | {r.latency_ms['p99']:.2f} | {r.items_per_s:.1f} | "
            f"{speedup} |"
        )
    return "\n".join(lines)


def write_results_json(results: Sequence[BenchResult], path: str | os.PathLike[str]) -> Path:
    """Write results as a JSON list (atomically).

    Args:
        results: Benchmark results.
        path: Destination ``.json`` file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    text = json.dumps([r.to_dict() for r in results], indent=2)
    return atomic_write_text(path, text + "\n")


def read_results_json(path: str | os.PathLike[str]) -> list[BenchResult]:
    """Read results written by :func:`write_results_json`.

    Args:
        path: A JSON file holding a list of result dicts.

    Returns:
        The results, in file order.

    Raises:
        ObertDeployError: The file is missing, not JSON, or not a list of results.
    """
    file = Path(path)
    if not file.is_file():
        raise ObertDeployError(
            f"results file {os.fspath(path)!r} does not exist; write it with "
            "`obert-deploy bench ... --json FILE`"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ObertDeployError(f"{os.fspath(path)!r} is not JSON ({brief(exc)})") from None
    if not isinstance(data, list):
        raise ObertDeployError(f"{os.fspath(path)!r} does not hold a JSON list of results")
    try:
        return [BenchResult.from_dict(item) for item in data]
    except TypeError as exc:
        raise ObertDeployError(
            f"{os.fspath(path)!r} holds a list, but not of `obert-deploy bench` results "
            f"({brief(exc)})"
        ) from None
