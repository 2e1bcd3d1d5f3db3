"""Gradual pruning with distillation on a real model: MiniLM-L6 on SST-2, on this CPU.

Every run goes through the harness users get (``obert_train.run_recipe``: the Trainer, the
pruning callback, the recipe's LR schedule and KD) with the shipped CPU recipes, on the same
seeded subset of the SST-2 training set, with the same budget (epochs, batch, pruning steps);
dev accuracy on all 872 dev sentences.  Sub-commands (one at a time, the CPU is shared):

``teacher``
    Dense fine-tune of MiniLM-L6 (recipe ``minilm-sst2-dense``) -> ``runs/gradual-sst2/teacher``.
``prune NAME``
    Gradual pruning of the teacher with KD from it; NAME is one of :data:`RUNS` (oBERT 80/90 %,
    4-block 80 %, GMP 80/90 %, movement 90 %).  Resumable: a killed run continues from its
    last checkpoint when the same command is run again.
``oneshot``
    One-shot oBERT and magnitude pruning of the teacher at 80/90 % (the starting point the
    gradual runs improve on), no fine-tuning.
``report``
    Markdown tables and ``docs/img/gradual_sst2_{accuracy,training}.png``.

Results are merged into ``experiments/results/gradual_sst2.json`` (finished entries are skipped
on a re-run)::

    .venv/bin/python experiments/gradual_sst2.py teacher
    .venv/bin/python experiments/gradual_sst2.py prune obert90
    .venv/bin/python experiments/gradual_sst2.py report
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    IMG,
    REPO,
    RESULTS_DIR,
    RUNS_ROOT,
    add_run_options,
    cpu_info,
    data_dir,
    epoch_eval,
    load_results,
    make_parser,
    minilm_dir,
    save_entry,
    write_results,
)

RUNS_DIR = RUNS_ROOT / "gradual-sst2"
RESULTS = RESULTS_DIR / "gradual_sst2.json"

RUNS: dict[str, str] = {
    "obert80": "minilm-sst2-obert80",
    "obert90": "minilm-sst2-obert90",
    "block4-80": "minilm-sst2-obert-block4-80",
    "gmp80": "minilm-sst2-gmp80",
    "gmp90": "minilm-sst2-gmp90",
    "movement90": "minilm-sst2-movement90",
}
"""Run name -> shipped recipe."""


def make_task(tokenizer: Any, args: argparse.Namespace) -> Any:
    from obert_train import load_task

    return load_task(
        "sst2",
        tokenizer,
        data_dir=data_dir(),
        max_seq_length=args.max_seq_length,
        max_train_samples=args.train_samples,
        seed=args.seed,
    )


def _run(
    name: str,
    recipe_name: str,
    model_dir: Path,
    teacher_dir: Path | None,
    args: argparse.Namespace,
    overrides: dict[str, Any],
    *,
    results: Path = RESULTS,
    runs_dir: Path = RUNS_DIR,
    extra_callbacks: Callable[[Any], tuple[list[Any], dict[str, Any]]] | None = None,
) -> None:
    """Run ``recipe_name`` (with ``overrides``) from ``model_dir``; save the entry ``name``."""
    import torch
    from transformers import AutoTokenizer

    from obert_train import RunOptions, load_recipe, run_recipe

    if name in load_results(results)["runs"] and not args.force:
        print(f"{name}: already in {results}; --force to redo")
        return
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    task = make_task(tokenizer, args)
    torch.manual_seed(args.seed)
    model = task.load_model(str(model_dir))
    teacher = task.load_model(str(teacher_dir)) if teacher_dir is not None else None
    recipe = load_recipe(recipe_name, overrides)
    out = runs_dir / name
    print(recipe.describe(-(-len(task.train_features) // args.batch_size)), flush=True)
    evaluator, points = epoch_eval(task)
    # extra_callbacks(task) -> (callbacks, a dict they fill, saved with the entry)
    extras, extra_entry = extra_callbacks(task) if extra_callbacks is not None else ([], {})
    start = time.perf_counter()
    result = run_recipe(
        recipe,
        model,
        task,
        out,
        model_name=str(model_dir),
        tokenizer=tokenizer,
        teacher=teacher,
        options=RunOptions(
            batch_size=args.batch_size,
            seed=args.seed,
            logging_steps=10,
            progress=not args.no_progress,
        ),
        resume=out.exists(),
        callbacks=[evaluator, *extras],
    )
    save_entry(
        results,
        name,
        {
            "recipe": recipe_name,
            "overrides": overrides,
            "recipe_text": recipe.to_yaml(),
            "dev_accuracy": result.metrics.get("accuracy"),
            "sparsity": result.sparsity,
            "pruning_steps": result.pruning_steps,
            "epoch_eval": points,
            "train_seconds": result.train_seconds,
            "wall_seconds": time.perf_counter() - start,
            "resumed_from": result.resumed_from,
            "train_examples": len(task.train_features),
            "max_seq_length": args.max_seq_length,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "machine": cpu_info(),
            "output_dir": str(out.relative_to(REPO)),
            **extra_entry,
        },
    )
    print(
        json.dumps(
            {"name": name, "accuracy": result.metrics.get("accuracy"), "sparsity": result.sparsity},
            indent=2,
        )
    )


def cmd_teacher(args: argparse.Namespace) -> None:
    overrides = {"num_epochs": args.epochs} if args.epochs else {}
    _run("teacher", "minilm-sst2-dense", minilm_dir(), None, args, overrides)


def cmd_prune(args: argparse.Namespace) -> None:
    teacher = RUNS_DIR / "teacher"
    if not (teacher / "model.safetensors").is_file():
        sys.exit(f"no teacher at {teacher}; run `gradual_sst2.py teacher` first")
    overrides: dict[str, Any] = {}
    if args.num_grads:
        overrides["num_grads"] = args.num_grads
    _run(args.name, RUNS[args.name], teacher, teacher, args, overrides)


def cmd_oneshot(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoTokenizer

    from obert_train import oneshot_prune

    teacher = RUNS_DIR / "teacher"
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    task = make_task(tokenizer, args)
    data = load_results(RESULTS)
    for method, settings in (
        ("magnitude", {}),
        (
            "obert",
            {
                "num_grads": args.num_grads or 128,
                "grad_batch_size": 16,
                "fisher_block_size": 50,
                "damp": 1e-7,
            },
        ),
    ):
        for sparsity in (0.8, 0.9):
            key = f"oneshot-{method}-{sparsity:.2f}"
            if key in data.get("oneshot", {}) and not args.force:
                continue
            model = task.load_model(str(teacher)).eval()
            result = oneshot_prune(
                model, method, sparsity, settings=settings, task=task, progress=not args.no_progress
            )
            metrics = task.evaluate(model, progress=False)
            data = load_results(RESULTS)
            data.setdefault("oneshot", {})[key] = {
                "method": method, "sparsity": result.sparsity, "settings": settings,
                "dev_accuracy": metrics["accuracy"], "seconds": result.timings["total_s"],
            }  # fmt: skip
            write_results(RESULTS, data, allow_nan=False)
            print(key, metrics["accuracy"], flush=True)


def _label(name: str) -> str:
    return {
        "obert80": "oBERT 80 %", "obert90": "oBERT 90 %", "block4-80": "oBERT 4-block 80 %",
        "gmp80": "GMP 80 %", "gmp90": "GMP 90 %", "movement90": "movement 90 %",
        "teacher": "dense teacher",
    }.get(name, name)  # fmt: skip


def cmd_report(args: argparse.Namespace) -> None:
    import matplotlib.pyplot as plt

    data = load_results(RESULTS)
    runs = data["runs"]
    dense = runs.get("teacher", {}).get("dev_accuracy")
    print("| run | recipe | sparsity | dev accuracy | Δ vs dense | train time |")
    print("|---|---|---|---|---|---|")
    for name, entry in runs.items():
        acc = entry["dev_accuracy"]
        delta = "" if dense is None or name == "teacher" else f"{100 * (acc - dense):+.2f}"
        print(
            f"| {_label(name)} | `{entry['recipe']}` | {entry['sparsity']:.4f} | "
            f"{100 * acc:.2f} | {delta} | {entry['train_seconds'] / 60:.1f} min |"
        )
    if data.get("oneshot"):
        print("\n| one-shot (no fine-tuning) | sparsity | dev accuracy |\n|---|---|---|")
        for entry in data["oneshot"].values():
            print(
                f"| {entry['method']} | {entry['sparsity']:.4f} | "
                f"{100 * entry['dev_accuracy']:.2f} |"
            )
    IMG.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    families = {"oBERT (gradual + KD)": ["obert80", "obert90"], "GMP (gradual + KD)":
                ["gmp80", "gmp90"], "movement (gradual + KD)": ["movement90"],
                "oBERT 4-block (gradual + KD)": ["block4-80"]}  # fmt: skip
    for label, names in families.items():
        pts = [(runs[n]["sparsity"], 100 * runs[n]["dev_accuracy"]) for n in names if n in runs]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=label)
    for method in ("obert", "magnitude"):
        pts = [(e["sparsity"], 100 * e["dev_accuracy"]) for e in data.get("oneshot", {}).values()
               if e["method"] == method]  # fmt: skip
        if pts:
            ax.plot(*zip(*sorted(pts), strict=True), marker="x", linestyle="--",
                    label=f"{method} one-shot")  # fmt: skip
    if dense is not None:
        ax.axhline(100 * dense, color="grey", linestyle=":", label="dense teacher")
    ax.set_xlabel("sparsity of the encoder Linear weights")
    ax.set_ylabel("SST-2 dev accuracy (%)")
    ax.set_title("MiniLM-L6 on SST-2: gradual pruning with KD vs one-shot")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(IMG / "gradual_sst2_accuracy.png", dpi=120)
    fig, (top, bottom, acc) = plt.subplots(3, 1, figsize=(6.4, 8.0), sharex=True)
    for name in runs:
        log = REPO / runs[name]["output_dir"] / "train_log.jsonl"
        if name == "teacher" or not log.is_file():
            continue
        entries = [json.loads(line) for line in log.open(encoding="utf-8")]
        loss = [(e["epoch"], e["loss"]) for e in entries if "loss" in e and "epoch" in e]
        spars = [(e["epoch"], e["sparsity"]) for e in entries if "sparsity" in e]
        if loss:
            top.plot(*zip(*loss, strict=True), label=_label(name), linewidth=1)
        if spars:
            bottom.plot(*zip(*spars, strict=True), label=_label(name), linewidth=1)
        points = [(e["epoch"], 100 * e["accuracy"]) for e in runs[name].get("epoch_eval", [])]
        if points:
            acc.plot(*zip(*points, strict=True), marker="o", label=_label(name), linewidth=1)
    top.set_ylabel("training loss (KD)")
    top.set_yscale("log")
    bottom.set_ylabel("sparsity")
    if dense is not None:
        acc.axhline(100 * dense, color="grey", linestyle=":", label="dense teacher")
    acc.set_ylabel("dev accuracy at epoch end (%)")
    acc.set_xlabel("epoch")
    acc.legend(fontsize=8)
    top.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(IMG / "gradual_sst2_training.png", dpi=120)
    print(f"\nplots: {IMG / 'gradual_sst2_accuracy.png'}, {IMG / 'gradual_sst2_training.png'}")


def main() -> None:
    parser = make_parser(__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("teacher", "prune", "oneshot", "report"):
        p = sub.add_parser(name)
        p.add_argument("--train-samples", type=int, default=4000)
        p.add_argument("--max-seq-length", type=int, default=64)
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--num-grads", type=int, default=None)
        p.add_argument("--epochs", type=float, default=None)
        add_run_options(p, threads=2, seed=42, force=True, no_progress=True)
        if name == "prune":
            p.add_argument("name", choices=sorted(RUNS))
    args = parser.parse_args()
    {"teacher": cmd_teacher, "prune": cmd_prune, "oneshot": cmd_oneshot,
     "report": cmd_report}[args.cmd](args)  # fmt: skip


if __name__ == "__main__":
    main()
