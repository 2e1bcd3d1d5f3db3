"""One training run through the user-facing harness, recorded in a results JSON (issue 11 scripts).

Every run is ``obert_train.run_recipe`` (the HF Trainer, the pruning callback, the recipe's LR
schedule and KD) with a recipe file from ``experiments/recipes``; a killed run resumes from its
newest checkpoint when the same command is run again (one killed before its first checkpoint
starts again), and a finished run (its name already in the
results file) is skipped unless ``force``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from _common import REPO, cpu_info

from obert_train import RunOptions, load_recipe, run_recipe
from obert_train.checkpoint import atomic_write_text

RECIPES = Path(__file__).resolve().parent / "recipes"


def load_results(path: Path) -> dict[str, Any]:
    """The results file, or an empty one."""
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    return {"runs": {}}


def save_entry(path: Path, name: str, entry: dict[str, Any], section: str = "runs") -> None:
    """Merge one entry into ``path`` atomically (re-read first: several scripts may write)."""
    data = load_results(path)
    data.setdefault(section, {})[name] = entry
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def done(path: Path, name: str, force: bool) -> bool:
    """True (and says so) when ``name`` is already in the results and not ``force``."""
    if name in load_results(path).get("runs", {}) and not force:
        print(f"{name}: already in {path}; --force to redo", flush=True)
        return True
    return False


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
