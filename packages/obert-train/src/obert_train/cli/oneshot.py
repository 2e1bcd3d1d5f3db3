"""``obert-train oneshot``: the pruning lifecycle run once, for one or several target sparsities.

Method settings come from the method's own settings model (``obert-train methods`` lists them
with their defaults); an option left out keeps that default.  ``--recipe`` takes the method and
settings of a recipe's first pruning modifier (and its ``final_sparsity`` as the target).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from obert_train.cli.common import (
    USER_ERRORS,
    ProgressOpt,
    TaskName,
    ThreadsOpt,
    fail,
    init_distributed,
    parse_sets,
)
from obert_train.cli.data_options import with_data_options
from obert_train.cli.interrupt import interrupted
from obert_train.cli.models import check_model_source, load_model, load_preprocessor
from obert_train.errors import ObertTrainError, RecipeError
from obert_train.outputs import check_not_input, data_inputs, locked_output
from obert_train.tasks.options import DataOptions

if TYPE_CHECKING:
    from obert_train.pruning.oneshot import PruneResult

__all__ = ["oneshot"]

_DEFAULTS = "default: see obert-train methods"


def _output_names(sparsities: list[float]) -> list[str]:
    """``sparsity-0.50`` etc.; refuses targets that would share a folder."""
    names = [f"sparsity-{s:.2f}" for s in sparsities]
    seen: dict[str, float] = {}
    for s, name in zip(sparsities, names, strict=True):
        if name in seen:
            raise RecipeError(
                f"--sparsity {seen[name]!r} and --sparsity {s!r} would both write {name}; "
                "give each target once, at least 0.01 apart"
            )
        seen[name] = s
    return names


def _table(rows: list[dict[str, Any]], metric: str | None) -> str:
    from obert_core.shared import format_metric

    # Structured rows: "achieved" is the atom fraction removed (the target's unit), the weight
    # sparsity over the pruned tensors gets its own column (issue 18).
    atoms = any("atom_sparsity" in r for r in rows)
    achieved = ["atoms", "weights"] if atoms else ["achieved"]
    header = ["sparsity", *achieved, *([metric] if metric else []), "prune s", "dir"]
    lines = [" | ".join(f"{h:>10}" for h in header)]
    for r in rows:
        cells = [f"{r['target_sparsity']:.2f}"]
        if atoms:
            cells += [format_metric("atom_sparsity", r.get("atom_sparsity"))]
        cells += [f"{r.get('weight_sparsity', r['achieved_sparsity']):.4f}"]
        if metric:
            value = r.get("metrics", {}).get(metric)
            cells.append(format_metric(metric, value))
        cells += [f"{r['timings'].get('total_s', 0.0):.1f}", r.get("output_dir", "-")]
        lines.append(" | ".join(f"{c:>10}" for c in cells))
    return "\n".join(lines)


def _settings(
    method: str, recipe: str | None, sets: dict[str, Any], explicit: dict[str, Any]
) -> tuple[str, dict[str, Any], float | None]:
    """Method name, settings and the recipe's target sparsity (explicit options win)."""
    from obert_train.pruning.registry import METHODS
    from obert_train.recipe import load_recipe

    if method not in METHODS:
        raise RecipeError(f"--method {method!r} unknown; registered: {sorted(METHODS)}")
    chosen: dict[str, Any] = {}
    target: float | None = None
    if recipe is not None:
        parsed = load_recipe(recipe)
        pruners = [m for m in parsed.pruning if m.create_method().schedules_pruning]
        if not pruners:
            raise ObertTrainError(f"recipe {recipe!r} has no pruning modifier to run one-shot")
        first = pruners[0]
        method = first.method_name
        chosen = first.settings.model_dump(exclude_defaults=True)
        target = first.final_sparsity
    chosen.update({k: v for k, v in explicit.items() if v is not None})
    chosen.update(sets)
    if not METHODS[method].schedules_pruning:
        usable = sorted(n for n, c in METHODS.items() if c.schedules_pruning)
        raise RecipeError(
            f"method {method!r} does not prune (it keeps existing masks); choose one of {usable}"
        )
    if METHODS[method].needs_training:
        raise ObertTrainError(
            f"method {method!r} needs training (its scores accumulate during fine-tuning), so "
            "it cannot prune one-shot; use `obert-train run` with its recipe"
        )
    fields = METHODS[method].Settings.model_fields
    stray = [k for k, v in explicit.items() if v is not None and k != "seed" and k not in fields]
    if stray:
        flags = ", ".join("--" + k.replace("_", "-") for k in stray)
        raise RecipeError(
            f"{flags} does not apply to method {method!r}; its settings are {sorted(fields)} "
            "(set them with --set KEY=VALUE)"
        )
    chosen = {k: v for k, v in chosen.items() if k in fields or k in sets}
    return method, chosen, target


def _structure_report(method: Any) -> dict[str, str]:
    """``structure.json`` (atoms removed per layer) for structured pruning, else nothing."""
    removed = getattr(method, "last_removed", None)
    if removed is None:
        return {}
    body = {
        "structure": method.settings.structure,
        "score": method.settings.score,
        "correct": method.settings.correct,
        "removed": removed,
        "atom_sparsity": method.atom_sparsity,
    }
    return {"structure.json": json.dumps(body, indent=1) + "\n"}


def oneshot_recipe_yaml(result: PruneResult, model: str, task: str) -> str:
    """The recipe of a one-shot result, loadable by ``load_recipe`` and ``oneshot --recipe``.

    One pruning modifier from 0 to the target at epoch 0 with the method's settings; run as a
    training recipe it prunes at the first step and fine-tunes one epoch with the masks fixed.
    """
    from obert_train.pruning.obert import ObertSettings
    from obert_train.pruning.targets import BERT_ENCODER_PATTERNS, VIT_ENCODER_PATTERNS
    from obert_train.recipe import ModifierSpec, build_recipe

    settings = result.settings.model_dump(exclude_defaults=True, exclude={"targets"})
    if isinstance(result.settings, ObertSettings) and result.settings.mode is None:
        # the update this one-shot step ran; a training run of the recipe would otherwise take
        # the default of gradual steps (ObertSettings.update_mode)
        settings["mode"] = result.settings.update_mode(gradual=False)
    default = VIT_ENCODER_PATTERNS if task == "image-classification" else BERT_ENCODER_PATTERNS
    targets = result.settings.targets or list(default)
    pruning = ModifierSpec.pruning(
        result.method,
        params=[f"re:{t}" for t in targets],
        init_sparsity=result.target_sparsity,
        final_sparsity=result.target_sparsity,
        start_epoch=0.0,
        end_epoch=0.0,
        update_frequency=1.0,
        **settings,
    )
    recipe = build_recipe(  # validates what is written
        [ModifierSpec.epoch_range(1.0), pruning], source=f"one-shot {result.method} recipe"
    )
    header = (
        f"# one-shot {result.method} pruning of {model} (task {task}) to sparsity "
        f"{result.target_sparsity:.4f}, written by obert-train oneshot.\n"
        "# Reproduce: obert-train oneshot --recipe THIS_FILE ...; as a training recipe it prunes\n"
        "# at the first step and fine-tunes one epoch with the masks fixed.\n"
    )
    return header + recipe.to_yaml()


@with_data_options()
def oneshot(
    model: Annotated[str, typer.Option(help="Model folder or hub id to prune.")],
    task: Annotated[TaskName, typer.Option(help="Task whose loss defines the Fisher.")],
    output_dir: Annotated[Path, typer.Option(help="Where sparsity-*/ and metrics.json go.")],
    sparsity: Annotated[
        list[float] | None,
        typer.Option(help="Target sparsity in [0, 1); repeat for several (default: the recipe's)."),
    ] = None,
    method: Annotated[
        str, typer.Option(help="Pruning method: obert, magnitude, ... (obert-train methods).")
    ] = "obert",
    recipe: Annotated[
        str | None,
        typer.Option(help="Take method and settings from a recipe's first pruning modifier."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Method setting KEY=VALUE (any field of `obert-train methods`)."
        ),
    ] = None,
    data: DataOptions | None = None,
    num_grads: Annotated[
        int | None, typer.Option(help=f"Gradients m in the Fisher ({_DEFAULTS}).")
    ] = None,
    grad_batch_size: Annotated[int | None, typer.Option(help="Examples per gradient.")] = None,
    fisher_block_size: Annotated[
        int | None,
        typer.Option(
            "--fisher-block-size",
            "--block-size",
            help="Fisher block size B.",
        ),
    ] = None,
    damp: Annotated[float | None, typer.Option(help="Dampening lambda of the Fisher.")] = None,
    mask_type: Annotated[
        str | None,
        typer.Option(
            help="'unstructured' (default), 'block4', 'N:M' (e.g. '2:4') or 'RxC' (e.g. '16x16')."
        ),
    ] = None,
    num_recomputations: Annotated[
        int | None, typer.Option(help="Fisher recomputations per step.")
    ] = None,
    global_sparsity: Annotated[
        bool | None,
        typer.Option(
            "--global/--layer", help="One threshold over all tensors (default) or per tensor."
        ),
    ] = None,
    max_memory: Annotated[
        str | None, typer.Option(help="Memory budget, e.g. '16GB' (default 80% of free RAM).")
    ] = None,
    target: Annotated[
        list[str] | None, typer.Option(help="Regex of tensors to prune (repeatable).")
    ] = None,
    evaluate: Annotated[
        bool, typer.Option("--eval/--no-eval", help="Evaluate each pruned model on dev.")
    ] = False,
    eval_batch_size: Annotated[int, typer.Option(min=1, help="Dev batch size.")] = 64,
    overwrite: Annotated[
        bool, typer.Option(help="Replace existing sparsity-* folders of the same targets.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of batches, subsets and new heads.")] = 0,
    threads: ThreadsOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Prune MODEL one-shot to each --sparsity; write checkpoints and OUT/metrics.json.

    Method settings left out keep the method's defaults (obert-train methods lists them).
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch  # here, not at the top: --help stays fast
    from transformers.utils import logging as hf_logging

    from obert_train.checkpoint import check_output_dir
    from obert_train.pruning.registry import create_method
    from obert_train.tasks.load import load_task

    if not progress:
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    if threads:
        torch.set_num_threads(threads)
    try:
        explicit = {
            "num_grads": num_grads,
            "grad_batch_size": grad_batch_size,
            "fisher_block_size": fisher_block_size,
            "damp": damp,
            "mask_type": mask_type,
            "num_recomputations": num_recomputations,
            "global_sparsity": global_sparsity,
            "max_memory": max_memory,
            "targets": target or None,
            "seed": seed if seed else None,
        }
        name, settings, recipe_target = _settings(
            method if recipe is None else "obert", recipe, parse_sets(set_), explicit
        )
        targets = sorted(sparsity) if sparsity else ([recipe_target] if recipe_target else [])
        if not targets:
            raise ObertTrainError("give --sparsity (or a --recipe with a final_sparsity)")
        for s in targets:
            if not 0.0 <= s < 1.0:
                raise ObertTrainError(f"--sparsity {s!r} is outside [0, 1); use e.g. 0.9")
        create_method(name, **settings)  # validate before loading anything
        out_names = _output_names(targets)
        check_output_dir(output_dir)
        _refuse_existing(output_dir, out_names, overwrite)
        check_model_source(model, images=task.value == "image-classification")
        dist = init_distributed()
        tokenizer = load_preprocessor(model, task.value)
        the_task = load_task(task.value, tokenizer, data, seed=seed, need_dev=evaluate)
        # The data are checked (a missing file named) before the output is compared with them.
        check_not_input(
            output_dir,
            {
                "model's folder (--model)": model,
                "recipe (--recipe)": recipe,
                **data_inputs(data),
            },
        )
        main = dist.rank == 0
        held = contextlib.ExitStack()
        if main:  # a second oneshot into this folder is refused while this one writes there
            held.enter_context(locked_output(output_dir, "obert-train oneshot"))
            _refuse_existing(output_dir, out_names, overwrite)  # again, now that we hold it
        with held:
            _prune_all(
                model,
                task.value,
                output_dir,
                targets,
                out_names,
                name,
                settings,
                the_task,
                tokenizer,
                dist,
                evaluate,
                eval_batch_size,
                seed,
                progress,
            )
    except USER_ERRORS as exc:
        raise fail(exc) from exc
    except KeyboardInterrupt:
        raise interrupted(
            "the sparsity-* folders listed in metrics.json are complete; rerun the same command "
            "with --overwrite to redo every target (or with the missing --sparsity values only)"
        ) from None


def _refuse_existing(output_dir: Path, out_names: list[str], overwrite: bool) -> None:
    """Refuse targets whose folders exist, unless ``overwrite``.

    Raises:
        ObertTrainError: Naming the folders and what to do.
    """
    existing = [n for n in out_names if (output_dir / n).exists()]
    if existing and not overwrite:
        raise ObertTrainError(
            f"{output_dir} already holds {', '.join(existing)}; pass --overwrite to replace "
            "them or choose another --output-dir"
        )


def _merge_rows(metrics_file: Path, model: str, task: str, rows: list[dict[str, Any]]) -> str:
    """``metrics.json`` with ``rows`` replacing the earlier rows of the same folders.

    Read again at each write (under the folder's lock), so no earlier run's row is lost.
    """
    old_rows: Any = []
    if metrics_file.is_file():
        try:
            old_rows = json.loads(metrics_file.read_text(encoding="utf-8")).get("runs", [])
        except (ValueError, AttributeError):
            old_rows = []
    mine = {x.get("output_dir") for x in rows}
    kept = [
        r
        for r in (old_rows if isinstance(old_rows, list) else [])
        if isinstance(r, dict) and r.get("output_dir") not in mine
    ]
    doc = {"model": model, "task": task, "runs": kept + rows}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def _prune_all(
    model: str,
    task: str,
    output_dir: Path,
    targets: list[float],
    out_names: list[str],
    name: str,
    settings: dict[str, Any],
    the_task: Any,
    tokenizer: Any,
    dist: Any,
    evaluate: bool,
    eval_batch_size: int,
    seed: int,
    progress: bool,
) -> None:
    """Prune to each target, save each folder and ``metrics.json`` (the folder is locked)."""
    import torch

    from obert_train.checkpoint import atomic_write_text, save_checkpoint, sparsity_report
    from obert_train.checks import check_finite_weights, check_model_fits_task, check_tokens_known
    from obert_train.pruning.oneshot import oneshot_prune
    from obert_train.pruning.registry import create_method

    main = dist.rank == 0
    cache: dict[str, dict[str, torch.Tensor]] | None = (
        {} if name == "obert" and settings.get("num_recomputations", 1) == 1 else None
    )
    metrics_file = output_dir / "metrics.json"
    rows: list[dict[str, Any]] = []
    metric = the_task.primary_metric if evaluate else None
    if evaluate and main:
        dense = load_model(the_task, model, seed, warn=True)
        check_finite_weights(dense)
        check_model_fits_task(dense, the_task)
        check_tokens_known(the_task)
        t0 = time.perf_counter()
        rows.append(
            {
                "target_sparsity": 0.0,
                "achieved_sparsity": float(
                    sparsity_report(dense, settings.get("targets"))["global"]["sparsity"]
                ),
                "metrics": the_task.evaluate(dense, batch_size=eval_batch_size, progress=progress),
                "timings": {"eval_s": time.perf_counter() - t0},
                "output_dir": "(input model)",
            }
        )
        del dense
    for index, (target_sparsity, out_name) in enumerate(zip(targets, out_names, strict=True)):
        net = load_model(the_task, model, seed, warn=main and index == 0 and not evaluate)
        pruner = create_method(name, **settings)
        result = oneshot_prune(
            net,
            pruner,
            target_sparsity,
            task=the_task,
            progress=progress and main,
            log=typer.echo if main else (lambda _line: None),
            dist_ctx=dist,
            fisher_cache=cache,
        )
        if not main:
            continue
        row: dict[str, Any] = {
            "method": name,
            "target_sparsity": target_sparsity,
            "achieved_sparsity": (
                result.sparsity if result.atom_sparsity is None else result.atom_sparsity
            ),
            "weight_sparsity": result.sparsity,
            **({} if result.atom_sparsity is None else {"atom_sparsity": result.atom_sparsity}),
            "timings": dict(result.timings),
        }
        if evaluate:
            t0 = time.perf_counter()
            row["metrics"] = the_task.evaluate(net, batch_size=eval_batch_size, progress=progress)
            row["timings"]["eval_s"] = time.perf_counter() - t0
        out = output_dir / out_name
        save_checkpoint(
            net,
            out,
            tokenizer=tokenizer,
            patterns=result.settings.targets,
            extra_files={
                "recipe.yaml": oneshot_recipe_yaml(result, model, task),
                **_structure_report(pruner),
            },
        )
        row["output_dir"] = str(out)
        rows.append(row)
        atomic_write_text(metrics_file, _merge_rows(metrics_file, model, task, rows))
    if main:
        typer.echo(_table(rows, metric))
