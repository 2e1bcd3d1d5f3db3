"""The report's plots: the accuracy title fits inside the figure (issue 21: it was cut off)."""

from __future__ import annotations

from typing import Any

import pytest

from obert.report import _accuracy_figure, _accuracy_title

pytest.importorskip("matplotlib")


def _report(model: str, data_name: str, examples: int) -> dict[str, Any]:
    curve = [{"sparsity": s, "metric": 0.9 - s / 4} for s in (0.5, 0.7, 0.9)]
    return {
        "metric": "accuracy",
        "model": model,
        "data_name": data_name,
        "train_examples": examples,
        "models": {
            "dense": {"pytorch": {"accuracy": 0.9}},
            "oBERT 90 %": {"curve": curve},
            "GMP 90 %": {"curve": [{**p, "metric": p["metric"] - 0.1} for p in curve]},
        },
    }


@pytest.mark.parametrize(
    ("model", "data_name", "examples"),
    [
        ("sentence-transformers/all-MiniLM-L6-v2", "the shipped synthetic sentiment data", 2000),
        ("bert-base-uncased", "glue:sst2", 67349),
        ("an/extremely-long-model-name-that-no-line-could-hold-on-its-own-at-all", "x", 1),
    ],
)
def test_accuracy_title_fits_inside_the_figure(model: str, data_name: str, examples: int) -> None:
    import matplotlib.pyplot as plt

    report = _report(model, data_name, examples)
    fig = _accuracy_figure(report)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        title = fig.axes[0].title
        assert title.get_text() == _accuracy_title(report)
        assert f"dev accuracy vs sparsity ({examples} training examples)" in title.get_text()
        box, extent = fig.bbox, title.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1, (extent, box)
        assert box.y0 <= extent.y0 and extent.y1 <= box.y1, (extent, box)
    finally:
        plt.close(fig)
