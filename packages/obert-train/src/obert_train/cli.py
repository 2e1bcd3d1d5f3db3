"""Command line of obert-train.

``obert-train oneshot`` prunes a model to one or more sparsities; ``obert-train finetune``
fine-tunes a dense or pruned model (pruned weights kept at zero).
"""

from __future__ import annotations

import json
import logging
import os
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, cast

import torch
import typer
from pydantic import ValidationError
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from obert_train._checkpoint import atomic_write_text, save_checkpoint, sparsity_report
from obert_train._config import OneShotConfig, parse_memory
from obert_train._data import DataError
from obert_train._distributed import DistContext
from obert_train._finetune import finetune
from obert_train._hub import MissingDependencyError
from obert_train._memory import MemoryPlanError
from obert_train._oneshot import oneshot_prune
from obert_train._params import TargetError
from obert_train._taskload import load_task

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


class TaskName(str, Enum):
    """Tasks with local-file loaders."""

    sst2 = "sst2"
    glue_tsv = "glue-tsv"
    squad = "squad"
    mlm = "mlm"


class Method(str, Enum):
    """Pruning methods."""

    obert = "obert"
    magnitude = "magnitude"


class Mode(str, Enum):
    """OBS update mode."""

    joint = "joint"
    superpose = "superpose"


class Scope(str, Enum):
    """Where the sparsity threshold applies."""

    global_ = "global"
    layer = "layer"


class FisherMethod(str, Enum):
    """Inverse-Fisher construction."""

    batched = "batched"
    streaming = "streaming"


_USER_ERRORS = (
    DataError,
    TargetError,
    MemoryPlanError,
    MissingDependencyError,
    ValidationError,
    ValueError,
    OSError,
)


def _fail(exc: BaseException) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _init_distributed() -> DistContext:
    """Join the torchrun process group when launched by torchrun.

    The CLI keeps the model on the CPU, so the collectives run on CPU tensors: gloo, whatever
    GPUs the machine has (nccl would need every tensor on a GPU).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="gloo")
    return DistContext.current()


def _load_model(the_task: Any, name_or_path: str, seed: int, *, warn: bool) -> Any:
    """Load the task model with torch seeded, so a newly initialised head is the same each time.

    Every sparsity, the dense evaluation and every rank get identical head weights.  With
    ``warn``, names the weights that were not in the checkpoint (newly initialised).
    """
    torch.manual_seed(seed)
    loaded = cast(Any, the_task.load_model(name_or_path, output_loading_info=True))
    model, info = loaded if isinstance(loaded, tuple) else (loaded, {})
    missing = sorted(info.get("missing_keys", []))
    if missing and warn:
        shown = ", ".join(missing[:6]) + (
            f", ... ({len(missing)} in all)" if len(missing) > 6 else ""
        )
        typer.secho(
            f"warning: {name_or_path} has no weights for {shown}; they are newly initialised "
            f"(seeded with --seed {seed}), so the task head is untrained unless you fine-tune "
            "it first (obert-train finetune)",
            fg=typer.colors.YELLOW,
            err=True,
        )
    return model


def _output_names(sparsities: list[float]) -> list[str]:
    """``sparsity-0.50`` etc.; refuses targets that would share a folder."""
    names = [f"sparsity-{s:.2f}" for s in sparsities]
    seen: dict[str, float] = {}
    for s, name in zip(sparsities, names, strict=True):
        if name in seen:
            raise ValueError(
                f"--sparsity {seen[name]!r} and --sparsity {s!r} would both write {name}; "
                "give each target once, at least 0.01 apart"
            )
        seen[name] = s
    return names


def _table(rows: list[dict[str, Any]], metric: str | None) -> str:
    header = ["sparsity", "achieved", *([metric] if metric else []), "prune s", "dir"]
    lines = [" | ".join(f"{h:>10}" for h in header)]
    for r in rows:
        cells = [f"{r['target_sparsity']:.2f}", f"{r['achieved_sparsity']:.4f}"]
        if metric:
            value = r.get("metrics", {}).get(metric)
            cells.append("-" if value is None else f"{value:.4f}")
        cells += [f"{r['timings'].get('total_s', 0.0):.1f}", r.get("output_dir", "-")]
        lines.append(" | ".join(f"{c:>10}" for c in cells))
    return "\n".join(lines)


@app.command()
def oneshot(
    model: Annotated[str, typer.Option(help="Model folder or hub id to prune.")],
    task: Annotated[TaskName, typer.Option(help="Task whose loss defines the Fisher.")],
    sparsity: Annotated[
        list[float], typer.Option(help="Target sparsity in [0, 1); repeat for several.")
    ],
    output_dir: Annotated[Path, typer.Option(help="Where checkpoints and metrics.json go.")],
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the task files.")] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Hub dataset 'path[:config]' (needs internet).")
    ] = None,
    train_file: Annotated[Path | None, typer.Option(help="Explicit training file.")] = None,
    dev_file: Annotated[Path | None, typer.Option(help="Explicit dev file.")] = None,
    method: Annotated[Method, typer.Option(help="Pruning method.")] = Method.obert,
    num_grads: Annotated[int, typer.Option(help="m, gradients per Fisher.")] = 1024,
    grad_batch_size: Annotated[int, typer.Option(help="Examples per gradient.")] = 16,
    block_size: Annotated[int, typer.Option(help="Fisher block size B.")] = 50,
    damp: Annotated[float, typer.Option(help="Fisher dampening lambda.")] = 1e-7,
    mask_type: Annotated[
        str, typer.Option(help="'unstructured', 'block4' or 'N:M' (e.g. '2:4').")
    ] = "unstructured",
    mode: Annotated[Mode, typer.Option(help="OBS update: joint or superpose.")] = Mode.joint,
    num_recomputations: Annotated[int, typer.Option(help="Fisher recomputations.")] = 1,
    scope: Annotated[Scope, typer.Option(help="Global or per-tensor threshold.")] = Scope.global_,
    fisher_method: Annotated[
        FisherMethod, typer.Option(help="Inverse construction.")
    ] = FisherMethod.batched,
    max_memory: Annotated[
        str | None, typer.Option(help="Memory budget, e.g. '16GB' (default 80% of free RAM).")
    ] = None,
    target: Annotated[
        list[str] | None, typer.Option(help="Regex of tensors to prune (repeatable).")
    ] = None,
    max_seq_length: Annotated[int | None, typer.Option(help="Token limit.")] = None,
    max_train_samples: Annotated[int | None, typer.Option(help="Training subset.")] = None,
    max_eval_samples: Annotated[int | None, typer.Option(help="Dev subset.")] = None,
    evaluate: Annotated[
        bool, typer.Option("--eval/--no-eval", help="Evaluate each pruned model on dev.")
    ] = False,
    eval_batch_size: Annotated[int, typer.Option(help="Dev batch size.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of batches and subsets.")] = 0,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Prune MODEL one-shot to each --sparsity; write checkpoints and OUT/metrics.json."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not progress:
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    if threads:
        torch.set_num_threads(threads)
    try:
        configs = [
            OneShotConfig(
                method=method.value,
                sparsity=s,
                num_grads=num_grads,
                grad_batch_size=grad_batch_size,
                block_size=block_size,
                damp=damp,
                mask_type=mask_type,
                mode=mode.value,
                num_recomputations=num_recomputations,
                scope=scope.value,
                targets=target or None,
                max_memory=parse_memory(max_memory) if max_memory else None,
                fisher_method=fisher_method.value,
                seed=seed,
            )
            for s in sorted(sparsity)
        ]
        out_names = _output_names([cfg.sparsity for cfg in configs])
        dist = _init_distributed()
        tokenizer = AutoTokenizer.from_pretrained(model)
        the_task = load_task(
            task.value,
            tokenizer,
            data_dir=data_dir,
            dataset=dataset,
            train_file=train_file,
            dev_file=dev_file,
            max_seq_length=max_seq_length,
            max_train_samples=max_train_samples,
            max_eval_samples=max_eval_samples,
            need_dev=evaluate,
            seed=seed,
        )
        main = dist.rank == 0
        cache: dict[str, dict[str, torch.Tensor]] | None = (
            {} if method == Method.obert and num_recomputations == 1 else None
        )
        rows: list[dict[str, Any]] = []
        metric = the_task.primary_metric if evaluate else None
        if evaluate and main:
            dense = _load_model(the_task, model, seed, warn=True)
            t0 = time.perf_counter()
            rows.append(
                {
                    "target_sparsity": 0.0,
                    "achieved_sparsity": oneshot_sparsity(dense, configs[0]),
                    "metrics": the_task.evaluate(
                        dense, batch_size=eval_batch_size, progress=progress
                    ),
                    "timings": {"eval_s": time.perf_counter() - t0},
                    "output_dir": "(input model)",
                }
            )
            del dense
        for index, (cfg, out_name) in enumerate(zip(configs, out_names, strict=True)):
            net = _load_model(the_task, model, seed, warn=main and index == 0 and not evaluate)
            result = oneshot_prune(
                net,
                cfg,
                task=the_task,
                progress=progress and main,
                log=typer.echo if main else (lambda _line: None),
                dist_ctx=dist,
                fisher_cache=cache,
            )
            if not main:
                continue
            row: dict[str, Any] = {
                "target_sparsity": cfg.sparsity,
                "achieved_sparsity": result.sparsity,
                "step_sparsities": result.step_sparsities,
                "timings": dict(result.timings),
            }
            if evaluate:
                t0 = time.perf_counter()
                row["metrics"] = the_task.evaluate(
                    net, batch_size=eval_batch_size, progress=progress
                )
                row["timings"]["eval_s"] = time.perf_counter() - t0
            out = output_dir / out_name
            recipe = {
                "model": model,
                "task": task.value,
                **json.loads(cfg.model_dump_json()),
            }
            save_checkpoint(net, out, tokenizer=tokenizer, recipe=recipe, patterns=cfg.targets)
            row["output_dir"] = str(out)
            rows.append(row)
            atomic_write_text(
                output_dir / "metrics.json",
                json.dumps({"model": model, "task": task.value, "runs": rows}, indent=2) + "\n",
            )
        if main:
            typer.echo(_table(rows, metric))
    except _USER_ERRORS as exc:
        raise _fail(exc) from exc


def oneshot_sparsity(model: torch.nn.Module, config: OneShotConfig) -> float:
    """Fraction of zeros in ``model``'s target tensors."""
    return float(sparsity_report(model, config.targets)["global"]["sparsity"])


@app.command(name="finetune")
def finetune_cmd(
    model: Annotated[str, typer.Option(help="Model folder or hub id.")],
    task: Annotated[TaskName, typer.Option(help="Task to train on.")],
    output_dir: Annotated[Path, typer.Option(help="Checkpoint folder to write.")],
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the task files.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Hub dataset 'path[:config]'.")] = None,
    train_file: Annotated[Path | None, typer.Option(help="Explicit training file.")] = None,
    dev_file: Annotated[Path | None, typer.Option(help="Explicit dev file.")] = None,
    epochs: Annotated[float, typer.Option(help="Passes over the training data.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 32,
    learning_rate: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 5e-5,
    max_seq_length: Annotated[int | None, typer.Option(help="Token limit.")] = None,
    max_train_samples: Annotated[int | None, typer.Option(help="Training subset.")] = None,
    max_eval_samples: Annotated[int | None, typer.Option(help="Dev subset.")] = None,
    keep_masks: Annotated[
        bool, typer.Option(help="Keep zero weights of the target tensors at zero.")
    ] = True,
    evaluate: Annotated[bool, typer.Option("--eval/--no-eval", help="Evaluate on dev.")] = True,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
) -> None:
    """Fine-tune MODEL on a task (pruned weights stay zero with --keep-masks)."""
    if threads:
        torch.set_num_threads(threads)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
        the_task = load_task(
            task.value,
            tokenizer,
            data_dir=data_dir,
            dataset=dataset,
            train_file=train_file,
            dev_file=dev_file,
            max_seq_length=max_seq_length,
            max_train_samples=max_train_samples,
            max_eval_samples=max_eval_samples,
            need_dev=evaluate,
            seed=seed,
        )
        net = _load_model(the_task, model, seed, warn=True)
        result = finetune(
            net,
            the_task,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            keep_masks=keep_masks,
        )
        summary: dict[str, Any] = {
            "model": model,
            "task": task.value,
            "train_examples": len(the_task.train_features),
            "steps": result.steps,
            "final_train_loss": result.final_loss,
            "train_seconds": result.seconds,
        }
        if evaluate:
            summary["metrics"] = the_task.evaluate(net)
        recipe = {
            "stage": "fine-tuning",
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "keep_masks": keep_masks,
            "seed": seed,
            **{k: v for k, v in summary.items() if k != "metrics"},
        }
        save_checkpoint(
            net,
            output_dir,
            tokenizer=tokenizer,
            recipe=recipe,
            extra_files={"finetune.json": json.dumps(summary, indent=2) + "\n"},
        )
        typer.echo(json.dumps(summary, indent=2))
    except _USER_ERRORS as exc:
        raise _fail(exc) from exc


def main() -> None:
    """Entry point of the ``obert-train`` script."""
    app()
