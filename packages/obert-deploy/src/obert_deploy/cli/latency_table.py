"""``obert-deploy latency-table``: each Linear shape timed at each block density, as a JSON table.

The table is what obert-train's ``latency_table`` setting reads (format
``obert-latency-table/1``, :func:`obert_train.load_latency_table`): the allocator then spends a
latency budget measured on the machine the model will run on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .._errors import ObertDeployError
from .common import (
    DEFAULT_ENGINE,
    DEFAULT_LINEAR_FORM,
    Engine,
    LinearForm,
    OverwriteOpt,
    at_least,
    check_outputs,
    fail,
    write_failed,
)

__all__ = ["latency_table"]


def latency_table(
    output: Annotated[Path, typer.Argument(help="The JSON table to write.")],
    shapes: Annotated[
        str,
        typer.Option(
            "--shapes",
            help="Linear weight shapes OUTxIN, comma-separated (e.g. 384x384,1536x384,384x1536).",
        ),
    ],
    densities: Annotated[
        str,
        typer.Option(
            "--densities",
            help="Fractions of blocks kept, comma-separated; 1.0 (dense) is always measured.",
        ),
    ] = "1.0,0.75,0.5,0.25",
    block: Annotated[
        str, typer.Option("--block", help="Block RxC of the random block masks (e.g. 16x16).")
    ] = "16x16",
    tokens: Annotated[
        int,
        typer.Option(
            "--tokens",
            callback=at_least(1),
            help="Rows of the input: the sequence length, or patches + 1 for a ViT (197 at 224 "
            "px with 16 px patches).",
        ),
    ] = 128,
    engine: Annotated[Engine, typer.Option("--engine", help="Inference engine.")] = DEFAULT_ENGINE,
    form: Annotated[
        LinearForm,
        typer.Option(
            "--form",
            help="matmul: one dense MatMul (zeros included); block-gather: kept blocks gathered "
            "per block-row, one batched GEMM.",
        ),
    ] = DEFAULT_LINEAR_FORM,
    threads: Annotated[
        int, typer.Option("--threads", callback=at_least(1), help="Engine threads/cores.")
    ] = 1,
    rounds: Annotated[
        int,
        typer.Option("--rounds", callback=at_least(1), help="Interleaved rounds over all cells."),
    ] = 5,
    iterations: Annotated[
        int,
        typer.Option("--iterations", callback=at_least(1), help="Timed calls per cell and round."),
    ] = 20,
    warmup: Annotated[
        int, typer.Option("--warmup", callback=at_least(0), help="Untimed calls per cell.")
    ] = 3,
    seed: Annotated[int, typer.Option("--seed", help="Seed of masks, weights, inputs.")] = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Time one Linear per shape and block density; write the latency table obert-train reads."""
    from ..bench._linear import (
        measure_latency_table,
        parse_block,
        parse_shapes,
        write_latency_table,
    )

    check_outputs([("OUTPUT", output, ".json")], overwrite=overwrite)
    try:
        parsed_shapes = parse_shapes(shapes)
        parsed_block = parse_block(block)
        try:
            parsed_densities = [float(d) for d in densities.split(",") if d.strip()]
        except ValueError:
            raise ObertDeployError(
                f"--densities {densities!r} is not comma-separated numbers; pass e.g. "
                "1.0,0.75,0.5,0.25"
            ) from None
        table = measure_latency_table(
            parsed_shapes,
            parsed_densities,
            parsed_block,
            tokens=tokens,
            engine=engine.value,
            form=form.value,
            threads=threads,
            rounds=rounds,
            iterations=iterations,
            warmup=warmup,
            seed=seed,
        )
    except ObertDeployError as exc:
        fail(exc)
    typer.echo(f"{table['machine']}; block {table['block']}, {tokens} tokens, form {form.value}")
    first = next(iter(table["layers"].values()))
    typer.echo("| shape | " + " | ".join(f"density {d}" for d in first) + " |")
    for key, curve in table["layers"].items():
        typer.echo(f"| {key} | " + " | ".join(f"{ms:.4f} ms" for ms in curve.values()) + " |")
    try:
        write_latency_table(table, output)
    except OSError as exc:
        write_failed(exc)
    typer.echo(f"wrote {output}")
