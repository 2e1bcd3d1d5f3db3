"""``obert-deploy bench``: latency percentiles and items/s of ONNX models, with the CPU flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from obert_core.shared import atomic_outputs

from .._errors import ObertDeployError
from .common import (
    DEFAULT_ENGINE,
    DEFAULT_SCENARIO,
    EngineOpt,
    JsonOpt,
    OverwriteOpt,
    Scenario,
    SeqLenOpt,
    ThreadsOpt,
    at_least,
    check_outputs,
    fail,
    write_failed,
)

__all__ = ["bench"]


def bench(
    models: Annotated[list[Path], typer.Argument(help="ONNX models to benchmark.")],
    engine: EngineOpt = DEFAULT_ENGINE,
    batch_size: Annotated[
        int, typer.Option("--batch-size", callback=at_least(1), help="Items per inference call.")
    ] = 1,
    seq_len: SeqLenOpt = 128,
    threads: ThreadsOpt = None,
    scenario: Annotated[
        Scenario,
        typer.Option(
            "--scenario", help="latency: one request at a time; throughput: concurrent streams."
        ),
    ] = DEFAULT_SCENARIO,
    iterations: Annotated[
        int,
        typer.Option("--iterations", callback=at_least(1), help="Timed inference calls per model."),
    ] = 100,
    warmup: Annotated[
        int, typer.Option("--warmup", callback=at_least(0), help="Untimed calls before timing.")
    ] = 10,
    streams: Annotated[
        int | None,
        typer.Option(
            "--streams", callback=at_least(1), help="Concurrent streams (--scenario throughput)."
        ),
    ] = None,
    json_path: JsonOpt = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Write the table here.")] = (
        None
    ),
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG bar plot here.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Latency percentiles and items/s of each model (with CPU flags)."""
    from obert_core.shared import cpu_info

    from ..bench._bench import BenchConfig, benchmark, check_models
    from ..bench._results import results_to_markdown, write_results_json

    check_outputs(
        [("--json", json_path, None), ("--markdown", markdown, None), ("--plot", plot, ".png")],
        models,
        overwrite=overwrite,
    )
    try:
        if streams is not None and scenario.value == "latency":
            raise ObertDeployError(
                f"--streams {streams} applies to --scenario throughput (latency runs one request "
                "at a time); add --scenario throughput or leave --streams out"
            )
        config = BenchConfig(
            engine=engine.value,
            batch_size=batch_size,
            seq_len=seq_len,
            threads=threads,
            scenario=scenario.value,
            iterations=iterations,
            warmup=warmup,
            streams=streams,
        )
        check_models(models, config)  # every model, before the first one is timed
        results = [benchmark(model, config) for model in models]
    except ObertDeployError as exc:
        fail(exc)
    cpu = cpu_info()
    table = results_to_markdown(results)
    header = (
        f"CPU: {cpu.brand} ({cpu.available_cores} cores available, avx2={cpu.avx2}, "
        f"avx512={cpu.avx512}, vnni={cpu.vnni}); engine {engine.value} "
        f"{results[0].engine_version}"
    )
    typer.echo(header)
    typer.echo(table)
    # Every requested file appears only once all of them have been written.
    try:
        with atomic_outputs(json_path, markdown, plot) as (json_tmp, md_tmp, plot_tmp):
            if json_tmp is not None:
                write_results_json(results, json_tmp)
            if md_tmp is not None:
                md_tmp.write_text(f"{header}\n\n{table}\n", encoding="utf-8")
            if plot_tmp is not None:
                from ..bench._plot import plot_results

                plot_results(results, plot_tmp)
    except OSError as exc:
        write_failed(exc)
    for path in (json_path, markdown, plot):
        if path is not None:
            typer.echo(f"wrote {path}")
