"""``obert-deploy bench``: latency percentiles and items/s of ONNX models, with the CPU flags.

``--engine`` repeats: each model is measured on each engine in turn (ONNX Runtime next to
OpenVINO on the same files), one table, the first engine's row the 1.0x reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from obert_core.shared import atomic_outputs

from .._errors import ObertDeployError
from .common import (
    DEFAULT_SCENARIO,
    Engine,
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
    engines: Annotated[
        list[Engine] | None,
        typer.Option(
            "--engine",
            help="Inference engine; repeat to measure the same files side by side "
            "(default: onnxruntime).",
        ),
    ] = None,
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
    sparse_rate: Annotated[
        float | None,
        typer.Option(
            "--sparse-weights-decompression-rate",
            min=0.0,
            max=1.0,
            help="OpenVINO: store int8 MatMul weights with at least this fraction of zeros "
            "packed (CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE; needs AMX, else ignored).",
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
    from ..bench._engines import engine_version
    from ..bench._results import results_to_markdown, write_results_json

    check_outputs(
        [("--json", json_path, None), ("--markdown", markdown, None), ("--plot", plot, ".png")],
        models,
        overwrite=overwrite,
    )
    names = list(dict.fromkeys(e.value for e in engines or [Engine("onnxruntime")]))
    try:
        if sparse_rate is not None and "openvino" not in names:
            raise ObertDeployError(
                f"--sparse-weights-decompression-rate {sparse_rate} is an OpenVINO option, but "
                f"--engine is {', '.join(names)}; add --engine openvino or leave it out"
            )
        if streams is not None and scenario.value == "latency":
            raise ObertDeployError(
                f"--streams {streams} applies to --scenario throughput (latency runs one request "
                "at a time); add --scenario throughput or leave --streams out"
            )
        configs = [
            BenchConfig(
                engine=name,
                batch_size=batch_size,
                seq_len=seq_len,
                threads=threads,
                scenario=scenario.value,
                iterations=iterations,
                warmup=warmup,
                streams=streams,
                sparse_weights_decompression_rate=sparse_rate if name == "openvino" else None,
            )
            for name in names
        ]
        for config in configs:  # every model on every engine, before the first one is timed
            check_models(models, config)
        results = [benchmark(model, config) for model in models for config in configs]
    except ObertDeployError as exc:
        fail(exc)
    cpu = cpu_info()
    table = results_to_markdown(results)
    versions = ", ".join(f"{c.engine} {engine_version(c.engine)}" for c in configs)
    header = (
        f"CPU: {cpu.brand} ({cpu.available_cores} cores available, avx2={cpu.avx2}, "
        f"avx512={cpu.avx512}, vnni={cpu.vnni}, amx={cpu.amx}); "
        f"{'engines' if len(configs) > 1 else 'engine'} {versions}"
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
