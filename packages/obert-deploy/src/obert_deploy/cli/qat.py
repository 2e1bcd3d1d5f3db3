"""``obert-deploy qat``: quantization-aware fine-tuning that keeps pruning masks, to QDQ ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from obert_core.shared import atomic_outputs, train_subset

from .._errors import ObertDeployError
from ..evaluation._readers import TextDataset
from .common import (
    DEFAULT_ENGINE,
    DEFAULT_QAT_TASK,
    EngineOpt,
    JsonOpt,
    OverwriteOpt,
    QATTask,
    SeqLenOpt,
    TextColumnsOpt,
    TokenizerOpt,
    at_least,
    check_outputs,
    columns,
    dump,
    fail,
    non_negative_float,
    write_failed,
)

__all__ = ["qat"]


def _subset(dataset: TextDataset, limit: int, seed: int) -> TextDataset:
    """The rows ``--max-train-samples`` keeps: :func:`obert_core.shared.train_subset`."""
    keep = train_subset(range(len(dataset)), limit, seed)
    labels = dataset.labels
    return TextDataset(
        texts=[dataset.texts[i] for i in keep],
        labels=None if labels is None else [labels[i] for i in keep],
        path=dataset.path,
        lines=[dataset.lines[i] for i in keep],
    )


def _check_labels(path: str, labels: list[int], lines: list[int], num_labels: int) -> None:
    """Every label of the training file is a class of the checkpoint's head (named by line)."""
    for label, line in zip(labels, lines, strict=True):
        if not 0 <= label < num_labels:
            raise ObertDeployError(
                f"{path!r} line {line}: label {label} is not a class of the checkpoint "
                f"(num_labels={num_labels}: labels 0..{num_labels - 1}); fix the row or pass "
                "a checkpoint whose head has that many classes"
            )


def qat(
    checkpoint: Annotated[str, typer.Argument(help="Fine-tuned (pruned) checkpoint directory.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Destination QDQ .onnx file.")],
    train_data: Annotated[
        Path | None,
        typer.Option("--train-file", help="GLUE-style TSV (default: SST-2 train)."),
    ] = None,
    task: Annotated[
        QATTask, typer.Option("--task", help="Task to fine-tune (QAT supports classification).")
    ] = DEFAULT_QAT_TASK,
    engine: EngineOpt = DEFAULT_ENGINE,
    steps: Annotated[
        int, typer.Option("--steps", callback=at_least(1), help="QAT optimizer steps (>= 1).")
    ] = 200,
    learning_rate: Annotated[
        float,
        typer.Option("--learning-rate", callback=non_negative_float, help="Peak learning rate."),
    ] = 2e-5,
    batch_size: Annotated[
        int, typer.Option("--batch-size", callback=at_least(1), help="Training batch size.")
    ] = 16,
    export_batch_size: Annotated[
        int,
        typer.Option(
            "--export-batch-size", callback=at_least(1), help="Batch size of the exported graph."
        ),
    ] = 1,
    seq_len: SeqLenOpt = 128,
    max_train_samples: Annotated[
        int | None,
        typer.Option(
            "--max-train-samples",
            callback=at_least(1),
            help="Seeded random subset of the training rows, as in obert-train (default: the "
            "first --steps x --batch-size rows).",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of QAT and of the --max-train-samples subset.")
    ] = 0,
    tokenizer: TokenizerOpt = None,
    text_columns: TextColumnsOpt = None,
    json_path: JsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Quantization-aware fine-tuning that keeps pruning masks, exported to QDQ ONNX."""
    from ..evaluation._datasets import default_dataset
    from ..evaluation._readers import read_glue_tsv
    from ..evaluation._tokenize import tokenize
    from ..export._checkpoint import load_tokenizer
    from ..quantize._qat import QATConfig, qat_export

    check_outputs(
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
            seed=seed,
        )
        data = train_data or default_dataset(task.value, "train")
        needed = None if max_train_samples else steps * batch_size
        dataset = read_glue_tsv(data, text_columns=columns(text_columns), max_samples=needed)
        if max_train_samples is not None:  # the one rule: obert_core.shared.train_subset
            dataset = _subset(dataset, max_train_samples, seed)
        labels = dataset.labels or []
        if len(labels) < batch_size:
            raise ObertDeployError(
                f"{str(data)!r} has {len(labels)} labelled rows, fewer than --batch-size "
                f"{batch_size}; pass more training data or a smaller --batch-size"
            )
        from .._checks import check_token_ids
        from ..export._checkpoint import load_checkpoint
        from ..export._export import model_input_names

        loaded = load_checkpoint(checkpoint, task.value)
        _check_labels(dataset.path, labels, dataset.lines, int(loaded.model.config.num_labels or 2))
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
                staged_json.write_text(dump(report.to_dict()), encoding="utf-8")
    except ObertDeployError as exc:
        fail(exc)
    except OSError as exc:
        write_failed(exc)
    typer.echo(report.to_markdown())
    if json_path is not None:
        typer.echo(f"wrote {json_path}")
