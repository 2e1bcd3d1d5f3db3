"""Bar plots of benchmark results (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from obert_core.shared import atomic_output

from .._errors import ObertDeployError
from ._bench import BenchResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_results", "results_figure"]

#: The x axes reach this factor beyond the longest bar or whisker: room for its value label.
_LABEL_ROOM = 1.18


def plot_results(
    results: Sequence[BenchResult],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Plot p50 latency (whiskers to p90) and items/s per model, one panel row per batch size.

    Bars are coloured by engine. Each panel row holds one ``(batch size, scenario)`` group so
    that only comparable numbers share an axis.

    Args:
        results: Results to plot (any mix of engines, batch sizes and scenarios).
        path: Destination PNG.
        title: Figure title.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results:
        raise ObertDeployError("no benchmark results to plot; pass at least one BenchResult")
    fig = results_figure(results, title=title)
    out = Path(path)
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return out


def results_figure(results: Sequence[BenchResult], *, title: str | None = None) -> Figure:
    """The figure of :func:`plot_results`, laid out, not saved (the caller closes it).

    Each latency value is written after the end of its whisker (p90), never on it, and the
    x axes leave room for the labels.
    """
    import matplotlib.pyplot as plt

    groups: dict[tuple[int, str, int], list[BenchResult]] = {}
    for result in results:
        groups.setdefault((result.batch_size, result.scenario, result.seq_len), []).append(result)
    engines = sorted({r.engine for r in results})
    colours = dict(zip(engines, ("tab:blue", "tab:orange", "tab:green"), strict=False))
    height = sum(0.35 * len(g) + 1.0 for g in groups.values())
    fig, axes = plt.subplots(
        len(groups),
        2,
        figsize=(11, max(2.5, height)),
        squeeze=False,
        gridspec_kw={"height_ratios": [len(g) + 1 for g in groups.values()]},
    )
    for row, ((batch, scenario, seq_len), group) in enumerate(groups.items()):
        labels = [f"{r.name} [{r.engine}]" for r in group]
        ys = list(range(len(group)))[::-1]
        p50 = [r.latency_ms["p50"] for r in group]
        p90 = [r.latency_ms["p90"] for r in group]
        colour = [colours[r.engine] for r in group]
        lat_ax, thr_ax = axes[row]
        lat_ax.barh(
            ys,
            p50,
            color=colour,
            xerr=[[0] * len(group), [b - a for a, b in zip(p50, p90, strict=True)]],
        )
        lat_ax.set_yticks(ys, labels, fontsize=8)
        lat_ax.set_xlabel("latency p50 (ms), whisker to p90")
        shape = f"batch {batch}, seq {seq_len}" if seq_len else f"batch {batch}"
        lat_ax.set_title(f"{shape}, {scenario}", fontsize=9)
        # The p50 value goes after the whisker's end (p90), where it cannot sit on the line.
        for y, value, end in zip(ys, p50, p90, strict=True):
            lat_ax.text(max(value, end), y, f" {value:.1f}", va="center", fontsize=7)
        lat_ax.set_xlim(0, _LABEL_ROOM * max(max(p50), max(p90)))
        throughput = [r.items_per_s for r in group]
        thr_ax.barh(ys, throughput, color=colour)
        thr_ax.set_yticks(ys, [""] * len(group))
        thr_ax.set_xlabel("items / s")
        for y, value in zip(ys, throughput, strict=True):
            thr_ax.text(value, y, f" {value:.0f}", va="center", fontsize=7)
        thr_ax.set_xlim(0, _LABEL_ROOM * max(throughput))
    from matplotlib.patches import Patch

    handles = [Patch(color=colours[e]) for e in engines]
    fig.legend(handles, engines, loc="upper right", fontsize=8)
    cpu = results[0].cpu
    subtitle = f"{cpu.get('brand', '?')}, {results[0].threads} threads, {cpu.get('isa', '?')}"
    fig.suptitle(f"{title or 'obert-deploy bench'}\n{subtitle}", fontsize=10)
    fig.tight_layout()
    return fig
