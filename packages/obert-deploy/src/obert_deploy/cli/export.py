"""``obert-deploy export``: a checkpoint to ONNX, with parity and sparsity checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from obert_core.shared import atomic_outputs

from .._errors import ObertDeployError
from ..export._tasks import TASKS
from .common import (
    DEFAULT_ENGINE,
    DEFAULT_TASK,
    EngineOpt,
    JsonOpt,
    OverwriteOpt,
    SeqLenOpt,
    Task,
    at_least,
    check_outputs,
    choice_list,
    dump,
    fail,
    non_negative_float,
    positive_float,
    write_failed,
)

__all__ = ["export"]


def export(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint directory or Hub id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Destination .onnx file.")],
    task: Annotated[
        Task,
        typer.Option(
            "--task",
            metavar="<task>",
            help=f"Task head to export: {choice_list(list(TASKS))}.",
        ),
    ] = DEFAULT_TASK,
    engine: EngineOpt = DEFAULT_ENGINE,
    seq_len: SeqLenOpt = 128,
    batch_size: Annotated[
        int, typer.Option("--batch-size", callback=at_least(1), help="Sample/static batch.")
    ] = 1,
    static_shapes: Annotated[
        bool | None,
        typer.Option(
            "--static-shapes/--dynamic-shapes",
            help="Fix input shapes (default: static for deepsparse, dynamic for onnxruntime).",
        ),
    ] = None,
    opset: Annotated[
        int | None,
        typer.Option(
            "--opset",
            help="ONNX opset (default 18; 14-17 via version conversion; deepsparse: at most 18).",
        ),
    ] = None,
    atol: Annotated[
        float, typer.Option("--atol", callback=positive_float, help="Parity check tolerance.")
    ] = 1e-4,
    rtol: Annotated[
        float, typer.Option("--rtol", callback=non_negative_float, help="Parity check tolerance.")
    ] = 1e-3,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Check parity and sparsity.")
    ] = True,
    shrink: Annotated[
        bool,
        typer.Option(
            "--shrink/--no-shrink",
            help="Remove FFN neurons and attention heads that are entirely zero (structured "
            "pruning) before exporting; --no-shrink keeps every shape.",
        ),
    ] = True,
    width_multiple: Annotated[
        int,
        typer.Option(
            "--width-multiple",
            callback=at_least(1),
            help="With --shrink: round each FFN's kept width up to a multiple of this (all-zero "
            "neurons kept as zero columns, outputs unchanged); 1 removes every all-zero neuron.",
        ),
    ] = 16,
    json_path: JsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Export a checkpoint to ONNX and verify outputs and per-weight sparsity."""
    from ..export._export import ExportConfig, export_onnx

    check_outputs([("--output", output, ".onnx"), ("--json", json_path, None)], overwrite=overwrite)
    try:
        if not shrink and width_multiple != 16:
            raise ObertDeployError(
                f"--width-multiple {width_multiple} rounds the widths --shrink keeps, but "
                "--no-shrink keeps every shape; leave one of them out"
            )
        config = ExportConfig(
            task=task.value,
            engine=engine.value,
            batch_size=batch_size,
            seq_len=seq_len,
            static_shapes=static_shapes,
            opset=opset,
            verify=verify,
            atol=atol,
            rtol=rtol,
            shrink=shrink,
            width_multiple=width_multiple,
        )
        # The ONNX file and the JSON report appear together or not at all.
        with atomic_outputs(output, json_path) as (staged, staged_json):
            assert staged is not None
            report = export_onnx(checkpoint, staged, config)
            report.path = output
            if staged_json is not None:
                staged_json.write_text(dump(report.to_dict()), encoding="utf-8")
    except ObertDeployError as exc:
        fail(exc)
    except OSError as exc:
        write_failed(exc)
    typer.echo(report.to_markdown())
    if json_path is not None:
        typer.echo(f"wrote {json_path}")
