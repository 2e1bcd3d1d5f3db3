"""``obert-deploy quantize``: post-training int8 with ONNX Runtime (dynamic or static)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from obert_core.shared import atomic_outputs

from .._errors import ObertDeployError
from .common import (
    DEFAULT_CALIBRATION,
    DEFAULT_ENGINE,
    DEFAULT_METHOD,
    CalibrationMethod,
    Engine,
    JsonOpt,
    Method,
    OverwriteOpt,
    QuantFormat,
    SeqLenOpt,
    TextColumnsOpt,
    at_least,
    check_outputs,
    columns,
    dump,
    fail,
    given,
    write_failed,
)

__all__ = ["quantize"]


def quantize(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="fp32 ONNX model.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Destination .onnx file.")],
    method: Annotated[
        Method,
        typer.Option(
            "--method",
            help="dynamic (ONNX Runtime only) or static (QDQ for onnxruntime, QOperator for "
            "deepsparse; see --engine/--format).",
        ),
    ] = DEFAULT_METHOD,
    calibration_data: Annotated[
        Path | None,
        typer.Option("--calibration-data", help="GLUE-style TSV for static calibration."),
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option("--tokenizer", help="Checkpoint dir holding the tokenizer.")
    ] = None,
    num_calibration: Annotated[
        int,
        typer.Option("--num-calibration", callback=at_least(1), help="Calibration sentences."),
    ] = 128,
    allow_fewer_calibration: Annotated[
        bool,
        typer.Option(
            "--allow-fewer-calibration",
            help="Calibrate on the sentences there are when --calibration-data holds fewer "
            "than --num-calibration (default: an error).",
        ),
    ] = False,
    calibration_method: Annotated[
        CalibrationMethod,
        typer.Option("--calibration-method", help="Static calibration method."),
    ] = DEFAULT_CALIBRATION,
    engine: Annotated[
        Engine,
        typer.Option(
            "--engine",
            help="Engine the static model is for: picks format, granularity and op types "
            "(deepsparse: QOperator, per-tensor, MatMul only).",
        ),
    ] = DEFAULT_ENGINE,
    quant_format: Annotated[
        QuantFormat | None,
        typer.Option(
            "--format",
            help="Static format (default: qdq for onnxruntime, qoperator for deepsparse).",
        ),
    ] = None,
    per_channel: Annotated[
        bool | None,
        typer.Option("--per-channel/--per-tensor", help="Weight scale granularity."),
    ] = None,
    reduce_range: Annotated[
        bool | None,
        typer.Option("--reduce-range/--full-range", help="7-bit weights (default: if no VNNI)."),
    ] = None,
    embedding_bits: Annotated[
        int,
        typer.Option(
            "--embedding-bits",
            help="Dynamic only: 8 (int8 embeddings) or 4 (4-bit blocks of 32, ONNX Runtime).",
        ),
    ] = 8,
    seq_len: SeqLenOpt = 128,
    text_columns: TextColumnsOpt = None,
    json_path: JsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Post-training int8 quantization with ONNX Runtime (dynamic, or static with calibration)."""
    from ..quantize._calibration import calibration_batches
    from ..quantize._quantize import quantize_onnx
    from ..quantize._rules import STATIC_ONLY_OPTIONS, ptq_config

    check_outputs(
        [("--output", output, ".onnx"), ("--json", json_path, None)],
        [model, calibration_data],
        overwrite=overwrite,
    )
    try:
        config = ptq_config(
            method.value,
            engine.value,
            static_only_given=given(ctx, STATIC_ONLY_OPTIONS),
            per_channel=per_channel,
            reduce_range=reduce_range,
            embedding_bits=embedding_bits,
            calibration_method=calibration_method.value,
            quant_format=None if quant_format is None else quant_format.value,
        )
        calibration = None
        if method.value == "static":
            if calibration_data is None or tokenizer is None:
                raise ObertDeployError(
                    "--method static needs --calibration-data FILE.tsv and --tokenizer "
                    "CHECKPOINT_DIR (e.g. SST-2 train.tsv and the fine-tuned checkpoint)"
                )
            calibration = calibration_batches(
                model,
                calibration_data,
                tokenizer,
                num_calibration,
                seq_len,
                columns(text_columns),
                allow_fewer=allow_fewer_calibration,
                log=lambda line: typer.secho(line, fg=typer.colors.YELLOW, err=True),
            )
        with atomic_outputs(output, json_path) as (staged, staged_json):
            assert staged is not None
            report = quantize_onnx(model, staged, config, calibration=calibration)
            report.output = str(output)
            if staged_json is not None:
                staged_json.write_text(dump(report.to_dict()), encoding="utf-8")
    except ObertDeployError as exc:
        fail(exc)
    except OSError as exc:
        write_failed(exc)
    typer.echo(report.to_markdown())
    if method.value == "dynamic":
        typer.echo(
            "note: dynamic quantization (MatMulInteger) runs on ONNX Runtime only; for "
            "DeepSparse use --method static --engine deepsparse."
        )
    if json_path is not None:
        typer.echo(f"wrote {json_path}")
