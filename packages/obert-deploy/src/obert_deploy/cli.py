"""Command line interface: ``obert-deploy export | quantize | qat | evaluate | bench | size``.

Every failure is one line on stderr (``error: ...``, naming the bad value and the remedy) with a
non-zero exit code, and happens before any expensive work: option values, output paths (no
existing file is replaced without ``--overwrite``), input files and model limits are checked
first. Heavy modules (torch, transformers, ONNX Runtime) are imported inside the commands, so
``--help`` is instant.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

from ._errors import ObertDeployError, brief
from ._io import OutputSpec, atomic_outputs, atomic_write_text, check_outputs

__all__ = [
    "CalibrationMethod",
    "Engine",
    "EvalTask",
    "Method",
    "QATTask",
    "QuantFormat",
    "Scenario",
    "Task",
    "app",
    "main",
]

#: click's base class of usage errors, whether typer vendors click or depends on it.
_CLICK_EXCEPTION: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _verbose(args: Sequence[str] | None) -> bool:
    words = sys.argv[1:] if args is None else list(args)
    return "--verbose" in words or "-v" in words


def _given_value(exc: Exception, args: Sequence[str] | None, message: str) -> str:
    """``" (got 'abc')"`` for a bad option value whose message does not quote it."""
    opts = getattr(getattr(exc, "param", None), "opts", None) or []
    words = sys.argv[1:] if args is None else list(args)
    for index, word in enumerate(words):
        for opt in opts:
            value = None
            if word == opt and index + 1 < len(words):
                value = words[index + 1]
            elif word.startswith(opt + "="):
                value = word[len(opt) + 1 :]
            if value is not None and value not in message:
                return f" (got {value!r})"
    return ""


class _OneLineErrors(TyperGroup):
    """A command group whose usage errors are one ``error: ...`` line, not a usage block."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(
                args=args,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        except _CLICK_EXCEPTION as exc:
            message = exc.format_message().replace("Value error, ", "")  # type: ignore[attr-defined]
            message += _given_value(exc, args, message)
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            typer.echo(f"error: {_one_line(message)}{hint}", err=True)
            sys.exit(int(getattr(exc, "exit_code", 2)))
        except Exception as exc:  # a bug: one line, the traceback only with --verbose
            if _verbose(args):
                raise
            typer.echo(
                f"error: unexpected {brief(exc)}; this is a bug in obert-deploy: rerun with "
                "--verbose for the traceback and report it",
                err=True,
            )
            sys.exit(1)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="obert-deploy",
    help="Export (sparse) Hugging Face models to ONNX, quantize to int8, benchmark on CPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: it wraps to the terminal instead of cutting option names at 80 columns.
    rich_markup_mode=None,
    cls=_OneLineErrors,
    context_settings={"max_content_width": 100, "help_option_names": ["-h", "--help"]},
)

_F = TypeVar("_F", bound=Callable[..., Any])


class Task(str, Enum):
    """Tasks ``export`` can export (mirrors :data:`obert_deploy.TASKS`)."""

    sequence_classification = "sequence-classification"
    question_answering = "question-answering"
    masked_lm = "masked-lm"
    feature_extraction = "feature-extraction"


class EvalTask(str, Enum):
    """Tasks ``evaluate`` has a metric for."""

    sequence_classification = "sequence-classification"
    question_answering = "question-answering"


class QATTask(str, Enum):
    """Tasks ``qat`` can fine-tune."""

    sequence_classification = "sequence-classification"


class Engine(str, Enum):
    """Inference engines."""

    onnxruntime = "onnxruntime"
    deepsparse = "deepsparse"


class Scenario(str, Enum):
    """Benchmark scenarios."""

    latency = "latency"
    throughput = "throughput"


class Method(str, Enum):
    """Post-training quantization methods."""

    dynamic = "dynamic"
    static = "static"


class QuantFormat(str, Enum):
    """Static quantization formats."""

    qdq = "qdq"
    qoperator = "qoperator"


class CalibrationMethod(str, Enum):
    """Static calibration methods of ONNX Runtime."""

    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


def _at_least(low: int) -> Callable[[int | None], int | None]:
    """Option callback: an integer ``>= low`` (the message names the value)."""

    def check(value: int | None) -> int | None:
        if value is not None and value < low:
            raise typer.BadParameter(f"{value} is below {low}; pass {low} or more")
        return value

    return check


def _non_negative_float(value: float) -> float:
    """Option callback: a finite float ``>= 0``."""
    if not (value >= 0 and value != float("inf")):
        raise typer.BadParameter(f"{value} is not a finite number >= 0")
    return value


def _positive_float(value: float) -> float:
    """Option callback: a finite float ``> 0``."""
    if not (value > 0 and value != float("inf")):
        raise typer.BadParameter(f"{value} is not a finite number > 0")
    return value


EngineOpt = Annotated[Engine, typer.Option("--engine", help="Inference engine.")]
SeqLenOpt = Annotated[
    int,
    typer.Option(
        "--seq-len",
        callback=_at_least(2),
        help="Tokens per sequence (2 .. the model's max_position_embeddings).",
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads", callback=_at_least(1), help="Engine threads/cores (default: all available)."
    ),
]
TokenizerOpt = Annotated[
    str | None,
    typer.Option("--tokenizer", help="Directory holding the tokenizer (default: CHECKPOINT)."),
]
TextColumnsOpt = Annotated[
    str | None,
    typer.Option(
        "--text-columns",
        help="Comma-separated TSV text columns (default: detected from the header).",
    ),
]
JsonOpt = Annotated[
    Path | None, typer.Option("--json", help="Also write the full report as JSON here.")
]
OverwriteOpt = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace output files that already exist (default: refuse)."),
]


def _fail(exc: Exception) -> NoReturn:
    typer.echo(f"error: {_one_line(str(exc))}", err=True)
    raise typer.Exit(code=2)


def _write_failed(exc: OSError) -> NoReturn:
    _fail(
        ObertDeployError(
            f"cannot write the output files ({exc}); nothing was written. Pass writable file "
            "paths (not directories)"
        )
    )


def _check_outputs(
    outputs: Sequence[OutputSpec], inputs: Sequence[Any] = (), *, overwrite: bool
) -> None:
    """Check every output path up front; exit with one error line on the first bad one."""
    try:
        check_outputs(outputs, inputs=[i for i in inputs if i is not None], overwrite=overwrite)
    except ObertDeployError as exc:
        _fail(exc)


def _dump(data: Any) -> str:
    try:
        return json.dumps(data, indent=2, default=str, allow_nan=False) + "\n"
    except ValueError as exc:  # NaN/inf would make the file invalid JSON
        raise ObertDeployError(
            f"the report holds a NaN or inf value ({exc}), which JSON cannot store; nothing was "
            "written. This is a bug: please report it with the command line"
        ) from exc


def _write_json(path: Path | None, data: Any) -> None:
    if path is not None:
        try:
            atomic_write_text(path, _dump(data))
        except OSError as exc:
            _write_failed(exc)
        typer.echo(f"wrote {path}")


def _columns(value: str | None) -> list[str] | None:
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


def _given(ctx: typer.Context, flags: dict[str, str]) -> list[str]:
    """The options of ``flags`` (parameter name -> flag) that were set on the command line."""
    given = []
    for name, flag in flags.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            given.append(flag)
    return given


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
def export(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint directory or Hub id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Destination .onnx file.")],
    task: Annotated[
        Task,
        typer.Option(
            "--task",
            metavar="<task>",
            help="Task head to export: sequence-classification, question-answering, masked-lm "
            "or feature-extraction.",
        ),
    ] = Task.sequence_classification,
    engine: EngineOpt = Engine.onnxruntime,
    seq_len: SeqLenOpt = 128,
    batch_size: Annotated[
        int, typer.Option("--batch-size", callback=_at_least(1), help="Sample/static batch.")
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
        float, typer.Option("--atol", callback=_positive_float, help="Parity check tolerance.")
    ] = 1e-4,
    rtol: Annotated[
        float, typer.Option("--rtol", callback=_non_negative_float, help="Parity check tolerance.")
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
    json_path: JsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Export a checkpoint to ONNX and verify outputs and per-weight sparsity."""
    from ._export import ExportConfig, export_onnx

    _check_outputs(
        [("--output", output, ".onnx"), ("--json", json_path, None)], overwrite=overwrite
    )
    try:
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
        )
        # The ONNX file and the JSON report appear together or not at all.
        with atomic_outputs(output, json_path) as (staged, staged_json):
            assert staged is not None
            report = export_onnx(checkpoint, staged, config)
            report.path = output
            if staged_json is not None:
                staged_json.write_text(_dump(report.to_dict()), encoding="utf-8")
    except ObertDeployError as exc:
        _fail(exc)
    except OSError as exc:
        _write_failed(exc)
    typer.echo(report.to_markdown())
    if json_path is not None:
        typer.echo(f"wrote {json_path}")


def _calibration_batches(
    model: Path,
    data: Path,
    tokenizer: str,
    num_samples: int,
    seq_len: int,
    text_columns: list[str] | None,
) -> list[dict[str, Any]]:
    from ._checkpoint import load_tokenizer
    from ._checks import check_seq_len, check_token_ids, onnx_max_positions
    from ._data import iter_batches, read_glue_tsv, tokenize
    from ._inputs import infer_vocab_size, load_onnx, onnx_inputs

    proto = load_onnx(model, load_weights=False)
    inputs = onnx_inputs(proto)
    shape = inputs[0].shape if inputs else ()
    batch = shape[0] if len(shape) == 2 and isinstance(shape[0], int) else 1
    length = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else seq_len
    check_seq_len(length, onnx_max_positions(proto), f"ONNX model {str(model)!r}")
    dataset = read_glue_tsv(
        data, text_columns=text_columns, label_column=None, max_samples=num_samples
    )
    if not dataset.texts:
        raise ObertDeployError(f"no sentences in {str(data)!r}; pass a non-empty TSV")
    feeds = tokenize(load_tokenizer(tokenizer), dataset.texts, length, [i.name for i in inputs])
    check_token_ids(feeds, infer_vocab_size(proto), tokenizer)
    return [b for b, _ in iter_batches(feeds, batch, pad_last=True)]


#: Options of ``quantize`` that only static quantization reads (parameter name -> flag).
_STATIC_ONLY = {
    "calibration_data": "--calibration-data",
    "tokenizer": "--tokenizer",
    "num_calibration": "--num-calibration",
    "calibration_method": "--calibration-method",
    "quant_format": "--format",
    "seq_len": "--seq-len",
    "text_columns": "--text-columns",
}


def _check_quantize_options(ctx: typer.Context, method: Method, engine: Engine) -> None:
    """Refuse options that do not apply to the chosen --method (they would be ignored)."""
    if method is Method.dynamic:
        ignored = _given(ctx, _STATIC_ONLY)
        if ignored:
            raise ObertDeployError(
                f"{', '.join(ignored)} only apply to --method static; add --method static or "
                "leave them out"
            )
        if engine is Engine.deepsparse:
            raise ObertDeployError(
                "--engine deepsparse needs --method static: DeepSparse 1.8 cannot run dynamic "
                "quantization (MatMulInteger); pass --method static --calibration-data FILE.tsv "
                "--tokenizer CHECKPOINT_DIR"
            )


@app.command()
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
    ] = Method.dynamic,
    calibration_data: Annotated[
        Path | None,
        typer.Option("--calibration-data", help="GLUE-style TSV for static calibration."),
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option("--tokenizer", help="Checkpoint dir holding the tokenizer.")
    ] = None,
    num_calibration: Annotated[
        int,
        typer.Option("--num-calibration", callback=_at_least(1), help="Calibration sentences."),
    ] = 128,
    calibration_method: Annotated[
        CalibrationMethod,
        typer.Option("--calibration-method", help="Static calibration method."),
    ] = CalibrationMethod.minmax,
    engine: Annotated[
        Engine,
        typer.Option(
            "--engine",
            help="Engine the static model is for: picks format, granularity and op types "
            "(deepsparse: QOperator, per-tensor, MatMul only).",
        ),
    ] = Engine.onnxruntime,
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
    from ._quantize import DynamicInt8Config, StaticInt8Config, quantize_onnx

    _check_outputs(
        [("--output", output, ".onnx"), ("--json", json_path, None)],
        [model, calibration_data],
        overwrite=overwrite,
    )
    try:
        _check_quantize_options(ctx, method, engine)
        calibration = None
        config: DynamicInt8Config | StaticInt8Config
        if method is Method.dynamic:
            config = DynamicInt8Config(
                per_channel=True if per_channel is None else per_channel,
                reduce_range=reduce_range,
                embedding_bits=embedding_bits,
            )
        else:
            if embedding_bits != 8:
                raise ObertDeployError(
                    f"--embedding-bits {embedding_bits} needs --method dynamic (static "
                    "quantization keeps int8 or fp32 embeddings)"
                )
            overrides: dict[str, Any] = {
                "reduce_range": reduce_range,
                "calibration_method": calibration_method.value,
            }
            if per_channel is not None:
                overrides["per_channel"] = per_channel
            if quant_format is not None:
                overrides["quant_format"] = quant_format.value
            config = StaticInt8Config.for_engine(engine.value, **overrides)
            if calibration_data is None or tokenizer is None:
                raise ObertDeployError(
                    "--method static needs --calibration-data FILE.tsv and --tokenizer "
                    "CHECKPOINT_DIR (e.g. SST-2 train.tsv and the fine-tuned checkpoint)"
                )
            calibration = _calibration_batches(
                model, calibration_data, tokenizer, num_calibration, seq_len, _columns(text_columns)
            )
        with atomic_outputs(output, json_path) as (staged, staged_json):
            assert staged is not None
            report = quantize_onnx(model, staged, config, calibration=calibration)
            report.output = str(output)
            if staged_json is not None:
                staged_json.write_text(_dump(report.to_dict()), encoding="utf-8")
    except ObertDeployError as exc:
        _fail(exc)
    except OSError as exc:
        _write_failed(exc)
    typer.echo(report.to_markdown())
    if method is Method.dynamic:
        typer.echo(
            "note: dynamic quantization (MatMulInteger) runs on ONNX Runtime only; for "
            "DeepSparse use --method static --engine deepsparse."
        )
    if json_path is not None:
        typer.echo(f"wrote {json_path}")


@app.command()
def qat(
    checkpoint: Annotated[str, typer.Argument(help="Fine-tuned (pruned) checkpoint directory.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Destination QDQ .onnx file.")],
    train_data: Annotated[
        Path | None,
        typer.Option("--train-data", help="GLUE-style TSV (default: SST-2 train)."),
    ] = None,
    task: Annotated[
        QATTask, typer.Option("--task", help="Task to fine-tune (QAT supports classification).")
    ] = QATTask.sequence_classification,
    engine: EngineOpt = Engine.onnxruntime,
    steps: Annotated[
        int, typer.Option("--steps", callback=_at_least(0), help="QAT optimizer steps.")
    ] = 200,
    learning_rate: Annotated[
        float, typer.Option("--lr", callback=_non_negative_float, help="Peak learning rate.")
    ] = 2e-5,
    batch_size: Annotated[
        int, typer.Option("--batch-size", callback=_at_least(1), help="Training batch size.")
    ] = 16,
    export_batch_size: Annotated[
        int,
        typer.Option(
            "--export-batch-size", callback=_at_least(1), help="Batch size of the exported graph."
        ),
    ] = 1,
    seq_len: SeqLenOpt = 128,
    max_train_samples: Annotated[
        int | None,
        typer.Option("--max-train-samples", callback=_at_least(1), help="Use only the first rows."),
    ] = None,
    tokenizer: TokenizerOpt = None,
    text_columns: TextColumnsOpt = None,
    json_path: JsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Quantization-aware fine-tuning that keeps pruning masks, exported to QDQ ONNX."""
    from ._checkpoint import load_tokenizer
    from ._data import default_dataset, read_glue_tsv, tokenize
    from ._qat import QATConfig, qat_export

    _check_outputs(
        [("--output", output, ".onnx"), ("--json", json_path, None)],
        [train_data],
        overwrite=overwrite,
    )
    try:
        config = QATConfig(
            task=task.value,
            engine=engine.value,
            steps=steps,
            learning_rate=learning_rate,
            export_batch_size=export_batch_size,
            seq_len=seq_len,
        )
        data = train_data or default_dataset(task.value, "train")
        needed = max_train_samples or steps * batch_size
        dataset = read_glue_tsv(data, text_columns=_columns(text_columns), max_samples=needed)
        labels = dataset.labels or []
        if len(labels) < batch_size:
            raise ObertDeployError(
                f"{str(data)!r} has {len(labels)} labelled rows, fewer than --batch-size "
                f"{batch_size}; pass more training data or a smaller --batch-size"
            )
        from ._checkpoint import load_checkpoint
        from ._checks import check_token_ids
        from ._export import model_input_names

        loaded = load_checkpoint(checkpoint, task.value)
        feeds = tokenize(
            load_tokenizer(tokenizer or checkpoint),
            dataset.texts,
            seq_len,
            model_input_names(loaded.model),
        )
        check_token_ids(feeds, loaded.model.config.vocab_size, tokenizer or checkpoint)
        batches = [
            (
                {k: v[i : i + batch_size] for k, v in feeds.items()},
                labels[i : i + batch_size],
            )
            for i in range(0, len(labels) - batch_size + 1, batch_size)
        ]
        import numpy as np

        with atomic_outputs(output, json_path) as (staged, staged_json):
            assert staged is not None
            report = qat_export(
                loaded.model,
                staged,
                [(f, np.asarray(lab)) for f, lab in batches],
                config,
            )
            report.path = output
            if staged_json is not None:
                staged_json.write_text(_dump(report.to_dict()), encoding="utf-8")
    except ObertDeployError as exc:
        _fail(exc)
    except OSError as exc:
        _write_failed(exc)
    typer.echo(report.to_markdown())
    if json_path is not None:
        typer.echo(f"wrote {json_path}")


@app.command()
def evaluate(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint the models were exported from.")],
    models: Annotated[list[Path], typer.Argument(help="ONNX models to evaluate.")],
    task: Annotated[EvalTask, typer.Option("--task", help="Task (picks the metric).")] = (
        EvalTask.sequence_classification
    ),
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Dev TSV/JSON (default: SST-2/SQuAD dev under $OBERT_DATA_DIR)."
        ),
    ] = None,
    tokenizer: TokenizerOpt = None,
    seq_len: SeqLenOpt = 128,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            callback=_at_least(1),
            help="Batch for PyTorch and dynamic-shape ONNX models.",
        ),
    ] = 32,
    max_samples: Annotated[
        int | None,
        typer.Option(
            "--max-samples", callback=_at_least(1), help="Evaluate only the first examples."
        ),
    ] = None,
    engine: EngineOpt = Engine.onnxruntime,
    threads: ThreadsOpt = None,
    text_columns: TextColumnsOpt = None,
    json_path: JsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Accuracy of each ONNX model and of the PyTorch checkpoint on the dev set."""
    from ._evaluate import evaluate as run_evaluate

    _check_outputs([("--json", json_path, None)], [*models, data], overwrite=overwrite)
    try:
        report = run_evaluate(
            checkpoint,
            models,
            task=task.value,
            data=data,
            tokenizer=tokenizer,
            text_columns=_columns(text_columns),
            seq_len=seq_len,
            batch_size=batch_size,
            max_samples=max_samples,
            engine=engine.value,
            threads=threads,
        )
    except ObertDeployError as exc:
        _fail(exc)
    typer.echo(report.to_markdown())
    _write_json(json_path, report.to_dict())


@app.command()
def bench(
    models: Annotated[list[Path], typer.Argument(help="ONNX models to benchmark.")],
    engine: EngineOpt = Engine.onnxruntime,
    batch_size: Annotated[
        int, typer.Option("--batch-size", callback=_at_least(1), help="Items per inference call.")
    ] = 1,
    seq_len: SeqLenOpt = 128,
    threads: ThreadsOpt = None,
    scenario: Annotated[
        Scenario,
        typer.Option(
            "--scenario", help="latency: one request at a time; throughput: concurrent streams."
        ),
    ] = Scenario.latency,
    iterations: Annotated[
        int,
        typer.Option(
            "--iterations", callback=_at_least(1), help="Timed inference calls per model."
        ),
    ] = 100,
    warmup: Annotated[
        int, typer.Option("--warmup", callback=_at_least(0), help="Untimed calls before timing.")
    ] = 10,
    streams: Annotated[
        int | None,
        typer.Option(
            "--streams", callback=_at_least(1), help="Concurrent streams (--scenario throughput)."
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
    from ._bench import (
        BenchConfig,
        benchmark,
        check_models,
        results_to_markdown,
        write_results_json,
    )
    from ._cpu import cpu_info

    _check_outputs(
        [("--json", json_path, None), ("--markdown", markdown, None), ("--plot", plot, ".png")],
        models,
        overwrite=overwrite,
    )
    try:
        if streams is not None and scenario is Scenario.latency:
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
        _fail(exc)
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
                from ._plot import plot_results

                plot_results(results, plot_tmp)
    except OSError as exc:
        _write_failed(exc)
    for path in (json_path, markdown, plot):
        if path is not None:
            typer.echo(f"wrote {path}")


@app.command()
def size(
    models: Annotated[list[Path], typer.Argument(help="ONNX models.")],
    reference: Annotated[
        Path | None, typer.Option("--reference", help="Dense fp32 ONNX model for the ratio.")
    ] = None,
    json_path: JsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """File, gzip, sparse-bitmask and CSR sizes, and the ratio vs dense fp32."""
    from ._size import size_report, size_table_markdown

    _check_outputs([("--json", json_path, None)], [*models, reference], overwrite=overwrite)
    try:
        reports = [size_report(model, reference=reference) for model in models]
    except ObertDeployError as exc:
        _fail(exc)
    typer.echo(size_table_markdown(reports))
    _write_json(json_path, [r.to_dict() for r in reports])


def main() -> None:
    """Console-script entry point."""
    app(prog_name="obert-deploy")


if __name__ == "__main__":  # pragma: no cover
    main()
