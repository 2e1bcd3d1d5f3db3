"""What the ``obert-deploy`` commands share: option choices, option types, checks, JSON output.

The choices of ``--task``, ``--engine``, ``--scenario``, ``--method``, ``--format`` and
``--calibration-method`` are generated from the library's constants
(:data:`obert_deploy.TASKS` and ``obert_deploy._choices``), so a new engine or task is one edit
there. Nothing here imports torch, transformers or an engine (``--help`` stays instant).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from obert_core.shared import atomic_write_text, split_columns

from .._choices import (
    CALIBRATION_METHODS,
    ENGINES,
    EVAL_TASKS,
    LINEAR_FORMS,
    PTQ_METHODS,
    QAT_TASKS,
    QUANT_FORMATS,
    SCENARIOS,
)
from .._errors import ObertDeployError
from .._outputs import OutputSpec
from .._outputs import check_outputs as _check_outputs_or_raise
from ..export._tasks import TASKS

__all__ = [
    "DEFAULT_CALIBRATION",
    "DEFAULT_ENGINE",
    "DEFAULT_EVAL_TASK",
    "DEFAULT_LINEAR_FORM",
    "DEFAULT_METHOD",
    "DEFAULT_QAT_TASK",
    "DEFAULT_SCENARIO",
    "DEFAULT_TASK",
    "CalibrationMethod",
    "Engine",
    "EngineOpt",
    "EvalTask",
    "JsonOpt",
    "LinearForm",
    "Method",
    "OverwriteOpt",
    "QATTask",
    "QuantFormat",
    "Scenario",
    "SeqLenOpt",
    "Task",
    "TextColumnsOpt",
    "ThreadsOpt",
    "TokenizerOpt",
    "at_least",
    "check_outputs",
    "choice_list",
    "columns",
    "dump",
    "fail",
    "given",
    "non_negative_float",
    "one_line",
    "positive_float",
    "write_failed",
    "write_json",
]


def _members(values: Sequence[str]) -> dict[str, str]:
    """Enum member name -> value: ``"sequence-classification"`` -> ``sequence_classification``."""
    return {value.replace("-", "_"): value for value in values}


Task = Enum("Task", _members(list(TASKS)), type=str)  # type: ignore[misc]
"""Tasks ``export`` can export (from :data:`obert_deploy.TASKS`)."""
EvalTask = Enum("EvalTask", _members(EVAL_TASKS), type=str)  # type: ignore[misc]
"""Tasks ``evaluate`` has a metric for (from ``EVAL_TASKS``)."""
QATTask = Enum("QATTask", _members(QAT_TASKS), type=str)  # type: ignore[misc]
"""Tasks ``qat`` can fine-tune (from ``QAT_TASKS``)."""
Engine = Enum("Engine", _members(ENGINES), type=str)  # type: ignore[misc]
"""Inference engines (from :data:`obert_deploy.ENGINES`)."""
LinearForm = Enum("LinearForm", _members(LINEAR_FORMS), type=str)  # type: ignore[misc]
"""Forms of one block-sparse Linear (from ``LINEAR_FORMS``)."""
Scenario = Enum("Scenario", _members(SCENARIOS), type=str)  # type: ignore[misc]
"""Benchmark scenarios (from :data:`obert_deploy.SCENARIOS`)."""
Method = Enum("Method", _members(PTQ_METHODS), type=str)  # type: ignore[misc]
"""Post-training quantization methods (from ``PTQ_METHODS``)."""
QuantFormat = Enum("QuantFormat", _members(QUANT_FORMATS), type=str)  # type: ignore[misc]
"""Static quantization formats (from ``QUANT_FORMATS``)."""
CalibrationMethod = Enum(  # type: ignore[misc]
    "CalibrationMethod", _members(CALIBRATION_METHODS), type=str
)
"""Static calibration methods of ONNX Runtime (from ``CALIBRATION_METHODS``)."""

# The options' defaults (module-level members, not calls in the signatures).
DEFAULT_TASK = Task("sequence-classification")
DEFAULT_EVAL_TASK = EvalTask("sequence-classification")
DEFAULT_QAT_TASK = QATTask("sequence-classification")
DEFAULT_ENGINE = Engine("onnxruntime")
DEFAULT_SCENARIO = Scenario("latency")
DEFAULT_LINEAR_FORM = LinearForm("matmul")
DEFAULT_METHOD = Method("dynamic")
DEFAULT_CALIBRATION = CalibrationMethod("minmax")


def choice_list(values: Sequence[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b or c"`` (for help texts that name every choice)."""
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(text.split())


def at_least(low: int) -> Callable[[int | None], int | None]:
    """Option callback: an integer ``>= low`` (the message names the value)."""

    def check(value: int | None) -> int | None:
        if value is not None and value < low:
            raise typer.BadParameter(f"{value} is below {low}; pass {low} or more")
        return value

    return check


def non_negative_float(value: float) -> float:
    """Option callback: a finite float ``>= 0``."""
    if not (value >= 0 and value != float("inf")):
        raise typer.BadParameter(f"{value} is not a finite number >= 0")
    return value


def positive_float(value: float) -> float:
    """Option callback: a finite float ``> 0``."""
    if not (value > 0 and value != float("inf")):
        raise typer.BadParameter(f"{value} is not a finite number > 0")
    return value


EngineOpt = Annotated[Engine, typer.Option("--engine", help="Inference engine.")]
SeqLenOpt = Annotated[
    int,
    typer.Option(
        "--max-seq-length",
        callback=at_least(2),
        help="Tokens per sequence (2 .. the model's max_position_embeddings).",
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads", callback=at_least(1), help="Engine threads/cores (default: all available)."
    ),
]
TokenizerOpt = Annotated[
    str | None,
    typer.Option("--tokenizer", help="Directory holding the tokenizer (default: CHECKPOINT)."),
]
TextColumnsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--text-column",
        help="TSV text column; repeat (or comma-separate) for a sentence pair (default: "
        "detected from the header).",
    ),
]
JsonOpt = Annotated[
    Path | None, typer.Option("--json", help="Also write the full report as JSON here.")
]
OverwriteOpt = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace output files that already exist (default: refuse)."),
]


def fail(exc: Exception) -> NoReturn:
    """Print ``exc`` as one ``error: ...`` line on stderr and exit with status 2."""
    typer.echo(f"error: {one_line(str(exc))}", err=True)
    raise typer.Exit(code=2)


def write_failed(exc: OSError) -> NoReturn:
    """Fail for an output that could not be written (nothing was)."""
    fail(
        ObertDeployError(
            f"cannot write the output files ({exc}); nothing was written. Pass writable file "
            "paths (not directories)"
        )
    )


def check_outputs(
    outputs: Sequence[OutputSpec], inputs: Sequence[Any] = (), *, overwrite: bool
) -> None:
    """Check every output path up front; exit with one error line on the first bad one."""
    try:
        _check_outputs_or_raise(
            outputs, inputs=[i for i in inputs if i is not None], overwrite=overwrite
        )
    except ObertDeployError as exc:
        fail(exc)


def dump(data: Any) -> str:
    """``data`` as indented JSON text; a NaN/inf value is an error (invalid JSON), not written."""
    try:
        return json.dumps(data, indent=2, default=str, allow_nan=False) + "\n"
    except ValueError as exc:  # NaN/inf would make the file invalid JSON
        raise ObertDeployError(
            f"the report holds a NaN or inf value ({exc}), which JSON cannot store; nothing was "
            "written. This is a bug: please report it with the command line"
        ) from exc


def write_json(path: Path | None, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (nothing when ``None``) and say so."""
    if path is not None:
        try:
            atomic_write_text(path, dump(data))
        except OSError as exc:
            write_failed(exc)
        typer.echo(f"wrote {path}")


columns = split_columns
"""``--text-column`` split on commas: the one rule of every command line (obert-core's)."""


def given(ctx: typer.Context, flags: dict[str, str]) -> list[str]:
    """The options of ``flags`` (parameter name -> flag) that were set on the command line."""
    found = []
    for name, flag in flags.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            found.append(flag)
    return found
