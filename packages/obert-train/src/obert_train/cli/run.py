"""``obert-train run RECIPE``: gradual pruning (or dense / sparse-transfer training) on a task."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from obert_train.cli.common import (
    USER_ERRORS,
    ProgressOpt,
    TaskName,
    ThreadsOpt,
    fail,
    parse_sets,
)
from obert_train.cli.data_options import with_data_options
from obert_train.cli.interrupt import interrupted
from obert_train.cli.models import check_model_source, load_model, load_preprocessor, load_tokenizer
from obert_train.errors import TrainingError
from obert_train.outputs import check_not_input, data_inputs
from obert_train.tasks.options import DataOptions

__all__ = ["run"]

# "sparsity" is the weight sparsity over the pruned tensors; a structured step also states the
# fraction of atoms it removed, the unit of its target (issue 18).
_STEP_KEYS = ("epoch", "target_sparsity", "atom_sparsity", "sparsity", "seconds")


@with_data_options()
def run(
    recipe: Annotated[
        str,
        typer.Argument(help="Recipe file, YAML text or shipped name (obert-train recipe list)."),
    ],
    model: Annotated[str, typer.Option(help="Student model folder or hub id.")],
    task: Annotated[TaskName, typer.Option(help="Task to train on.")],
    output_dir: Annotated[Path, typer.Option(help="Run folder (checkpoints, final model, logs).")],
    teacher: Annotated[
        str | None, typer.Option(help="Dense teacher (folder or hub id) for the recipe's KD.")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the newest complete checkpoint in --output-dir.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace this tool's earlier outputs in --output-dir.")
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Recipe override KEY=VALUE, e.g. final_sparsity=0.9, num_epochs=3, "
            "OBSPruningModifier.damp=1e-6 (repeatable).",
        ),
    ] = None,
    data: DataOptions | None = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Examples per optimizer step.")] = 32,
    learning_rate: Annotated[
        float, typer.Option(help="Base LR when the recipe has no LR modifier.")
    ] = 5e-5,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    save_steps: Annotated[
        int | None, typer.Option(min=1, help="Checkpoint every N steps (default: every epoch).")
    ] = None,
    logging_steps: Annotated[int, typer.Option(min=1, help="Log every N steps.")] = 25,
    report_to: Annotated[
        list[str] | None, typer.Option(help="Trainer integration, e.g. tensorboard (repeatable).")
    ] = None,
    evaluate: Annotated[
        bool, typer.Option("--eval/--no-eval", help="Evaluate the final model on dev.")
    ] = True,
    eval_batch_size: Annotated[int, typer.Option(min=1, help="Dev batch size.")] = 64,
    seed: Annotated[
        int, typer.Option(help="Seed of data order, dropout, subsets, new heads.")
    ] = 42,
    threads: ThreadsOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Train MODEL on a task following RECIPE: pruning steps, LR schedule and distillation.

    The final model goes to --output-dir itself (a plain HF checkpoint), with recipe.yaml (the
    recipe as run), sparsity.json, metrics.json, pruning_log.jsonl and train_log.jsonl.
    Checkpoints are written at least once per epoch; after an interruption, run the same
    command with --resume.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch  # here, not at the top: --help stays fast
    from transformers.utils import logging as hf_logging

    from obert_train.fisher.distributed import DistContext
    from obert_train.hf.run import RunOptions, check_teacher_tokenizer, run_recipe
    from obert_train.recipe import load_recipe
    from obert_train.tasks.load import load_task

    if not progress:
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    if threads:
        torch.set_num_threads(threads)
    try:
        parsed = load_recipe(recipe, parse_sets(set_))
        options = RunOptions(
            batch_size=batch_size,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            seed=seed,
            save_steps=save_steps,
            logging_steps=logging_steps,
            report_to=tuple(report_to or ()),
            eval_batch_size=eval_batch_size,
            evaluate=evaluate,
            progress=progress,
        )
        # An output folder that is (or holds, or lies in) an input is refused before any work.
        check_not_input(
            output_dir,
            {
                "model's folder (--model)": model,
                "teacher's folder (--teacher)": teacher,
                "recipe (RECIPE)": recipe,
                **data_inputs(data),
            },
        )
        images = task.value == "image-classification"
        check_model_source(model, images=images)
        if teacher is not None:
            check_model_source(teacher, "--teacher", images=images)
        # The Trainer joins the torchrun process group itself (gloo on CPU, nccl on GPUs).
        dist = DistContext(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))
        tokenizer = load_preprocessor(model, task.value)
        if teacher is not None and not images and Path(teacher).expanduser().is_dir():
            # A teacher folder has its own tokenizer (check_model_source): it must be the student's.
            check_teacher_tokenizer(
                tokenizer, load_tokenizer(teacher, "--teacher"), f"--teacher {teacher!r}"
            )
        the_task = load_task(task.value, tokenizer, data, seed=seed, need_dev=evaluate)
        if parsed.distillation is not None and teacher is None:
            raise TrainingError(
                f"recipe {recipe!r} distils (!DistillationModifier) but no --teacher was given; "
                "pass a dense fine-tuned model of the same task"
            )
        student = load_model(the_task, model, seed, warn=dist.rank == 0)
        teacher_model = (
            load_model(the_task, teacher, seed, warn=False, option="--teacher") if teacher else None
        )
        result = run_recipe(
            parsed,
            student,
            the_task,
            output_dir,
            model_name=model,
            tokenizer=tokenizer,
            teacher=teacher_model,
            options=options,
            resume=resume,
            overwrite=overwrite,
            log=typer.echo if dist.rank == 0 else (lambda _line: None),
        )
        if dist.rank == 0:
            summary = {
                "output_dir": str(result.output_dir),
                "sparsity": round(result.sparsity, 6),
                "metrics": result.metrics,
                **(
                    {"atom_sparsity": round(result.atom_sparsity, 6)}
                    if result.atom_sparsity is not None
                    else {}
                ),
                "pruning_steps": [
                    {k: r[k] for k in _STEP_KEYS if k in r} for r in result.pruning_steps
                ],
                "train_seconds": round(result.train_seconds, 1),
                "resumed_from": result.resumed_from,
            }
            typer.echo(json.dumps(summary, indent=2))
    except USER_ERRORS as exc:
        raise fail(exc) from exc
    except KeyboardInterrupt:
        raise interrupted(
            "rerun the same command with --resume to continue from the newest complete "
            "checkpoint in --output-dir"
        ) from None
