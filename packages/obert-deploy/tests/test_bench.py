"""Benchmark harness logic (timings are measured, never asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from obert_deploy import (
    BenchConfig,
    BenchResult,
    benchmark,
    cpu_info,
    plot_results,
    read_results_json,
    results_to_markdown,
    write_results_json,
)


def _check(result: BenchResult, *, batch: int, scenario: str, static: bool) -> None:
    lat = result.latency_ms
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert result.items_per_s > 0
    assert result.batch_size == batch and result.scenario == scenario
    assert result.static_shapes is static
    assert result.engine == "onnxruntime" and result.engine_version != "not installed"
    assert result.cpu["isa"] == cpu_info().isa
    assert 0.5 < result.weight_sparsity < 0.9  # 12 weights at 80 %, 2 dense head weights


def test_latency_and_throughput(static_onnx: Path, dynamic_onnx: Path) -> None:
    latency = benchmark(static_onnx, BenchConfig(batch_size=2, seq_len=16, iterations=5, warmup=1))
    _check(latency, batch=2, scenario="latency", static=True)
    assert latency.streams == 1 and latency.name == "tiny_static"
    throughput = benchmark(
        dynamic_onnx,
        BenchConfig(
            batch_size=4,
            seq_len=16,
            iterations=6,
            warmup=1,
            scenario="throughput",
            threads=2,
            streams=2,
        ),
        name="dyn",
    )
    _check(throughput, batch=4, scenario="throughput", static=False)
    assert throughput.streams == 2 and throughput.name == "dyn"


def test_reports_roundtrip_and_plot(tmp_path: Path, static_onnx: Path, dynamic_onnx: Path) -> None:
    results = [
        benchmark(path, BenchConfig(batch_size=2, seq_len=16, iterations=3, warmup=0))
        for path in (static_onnx, dynamic_onnx)
    ]
    table = results_to_markdown(results, baseline="tiny_dynamic")
    assert table.count("\n") == 3 and "tiny_static" in table and "1.00x" in table
    json_path = write_results_json(results, tmp_path / "r.json")
    assert read_results_json(json_path) == results
    png = plot_results(results, tmp_path / "plot.png", title="tiny")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png", "r.json"]


def test_resolved_defaults() -> None:
    config = BenchConfig(scenario="throughput", threads=2)
    assert config.resolved_streams == 2
    assert BenchConfig(threads=2).resolved_streams == 1
    assert BenchConfig().resolved_threads == cpu_info().available_cores


def test_read_results_rejects_non_list(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="JSON list"):
        read_results_json(path)


def test_latency_labels_sit_after_the_whiskers(static_onnx: Path) -> None:
    """Each p50 label starts at or after its whisker's end (p90) and stays inside its axes."""
    import dataclasses

    import matplotlib.pyplot as plt

    from obert_deploy.bench._plot import results_figure

    base = benchmark(static_onnx, BenchConfig(batch_size=2, seq_len=16, iterations=3, warmup=0))
    # A wide whisker (p90 far beyond p50) is where a label at p50 would sit on the line.
    wide = dataclasses.replace(
        base, name="wide", latency_ms={**base.latency_ms, "p50": 2.0, "p90": 9.0}
    )
    fig = results_figure([base, wide], title="whiskers")
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        lat_ax, thr_ax = fig.axes[0], fig.axes[1]
        labels = {float(t.get_text()): t for t in lat_ax.texts}
        assert set(labels) == {round(base.latency_ms["p50"], 1), 2.0}
        assert labels[2.0].get_position()[0] >= 9.0
        p90 = base.latency_ms["p90"]
        assert labels[round(base.latency_ms["p50"], 1)].get_position()[0] >= p90
        for ax in (lat_ax, thr_ax):
            box = ax.get_window_extent(renderer)
            for text in ax.texts:
                extent = text.get_window_extent(renderer)
                assert box.x0 <= extent.x0 and extent.x1 <= box.x1, text.get_text()
    finally:
        plt.close(fig)
