"""``obert-deploy evaluate``: dev-set accuracy of ONNX models next to the PyTorch checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .._errors import ObertDeployError
from .common import (
    DEFAULT_ENGINE,
    DEFAULT_EVAL_TASK,
    EngineOpt,
    EvalTask,
    JsonOpt,
    OverwriteOpt,
    SeqLenOpt,
    TextColumnsOpt,
    ThreadsOpt,
    TokenizerOpt,
    at_least,
    check_outputs,
    columns,
    fail,
    write_json,
)

__all__ = ["evaluate"]


def evaluate(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint the models were exported from.")],
    models: Annotated[list[Path], typer.Argument(help="ONNX models to evaluate.")],
    task: Annotated[EvalTask, typer.Option("--task", help="Task (picks the metric).")] = (
        DEFAULT_EVAL_TASK
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
            callback=at_least(1),
            help="Batch for PyTorch and dynamic-shape ONNX models.",
        ),
    ] = 32,
    max_samples: Annotated[
        int | None,
        typer.Option(
            "--max-eval-samples", callback=at_least(1), help="Evaluate only the first examples."
        ),
    ] = None,
    engine: EngineOpt = DEFAULT_ENGINE,
    threads: ThreadsOpt = None,
    text_columns: TextColumnsOpt = None,
    doc_stride: Annotated[
        int | None,
        typer.Option(
            "--doc-stride",
            callback=at_least(1),
            help="SQuAD: overlap of context windows (default 128, or half the context room of "
            "shorter windows; obert-train's rule).",
        ),
    ] = None,
    max_query_length: Annotated[
        int | None,
        typer.Option(
            "--max-query-length",
            callback=at_least(1),
            help="SQuAD: questions are cut to this many tokens (default 64).",
        ),
    ] = None,
    json_path: JsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Accuracy of each ONNX model and of the PyTorch checkpoint on the dev set."""
    from ..evaluation._evaluate import evaluate as run_evaluate

    check_outputs([("--json", json_path, None)], [*models, data], overwrite=overwrite)
    try:
        report = run_evaluate(
            checkpoint,
            models,
            task=task.value,
            data=data,
            tokenizer=tokenizer,
            text_columns=columns(text_columns),
            seq_len=seq_len,
            batch_size=batch_size,
            max_samples=max_samples,
            engine=engine.value,
            threads=threads,
            doc_stride=doc_stride,
            max_query_length=max_query_length,
        )
    except ObertDeployError as exc:
        fail(exc)
    typer.echo(report.to_markdown())
    write_json(json_path, report.to_dict())
