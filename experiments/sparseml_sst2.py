"""Against SparseML 1.8: one recipe file run by SparseML and by obert-train, on the same rows.

The recipe ``experiments/recipes/sparseml-minilm-sst2-obert90-m16.yaml`` (the project's
``minilm-sst2-obert90`` at the SparseML-era setting ``num_grads: 16``: gradual oBERT 50 -> 90 %,
B 50, damp 1e-7, KD from the dense teacher) is read as is by both tools (issue 23). Both start
from the dense teacher of ``few_grads_sst2.py teacher`` (``runs/few-grads-sst2/teacher``) and
distil from it, on the same seeded subset of SST-2 training sentences tokenised once by
``obert_train.load_task`` (2,000 by default, seed 42, 64 tokens, batch 32); dev accuracy on all
872 dev sentences, scored by the same ``task.evaluate``. Sub-commands (one at a time, 1 thread
each by default):

``sparseml``
    The recipe through SparseML's own PyTorch API (``ScheduledModifierManager``, a plain
    training loop, its ``DistillationModifier``) in ``.venv-sparseml`` (``scripts/sparseml_env.sh``
    creates it): ``experiments/sparseml_runner.py`` run by that interpreter, each
    ``OBSPruningModifier`` step timed.
``obert``
    The same file through ``obert_train.run_recipe`` (what ``obert-train run`` calls), each pruning
    step's seconds from ``RunResult.pruning_steps``.
``report``
    The Markdown table: accuracy, sparsity, seconds of each pruning step, the targets (accuracy >=
    SparseML's, pruning steps >= 3x faster).

Results are merged into ``experiments/results/sparseml_sst2.json``::

    bash scripts/sparseml_env.sh
    .venv/bin/python experiments/sparseml_sst2.py sparseml
    .venv/bin/python experiments/sparseml_sst2.py obert
    .venv/bin/python experiments/sparseml_sst2.py report
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    RECIPES,
    REPO,
    RESULTS_DIR,
    RUNS_ROOT,
    add_run_options,
    cpu_info,
    data_dir,
    load_results,
    make_parser,
    save_entry,
)

RESULTS = RESULTS_DIR / "sparseml_sst2.json"
RUNS_DIR = RUNS_ROOT / "sparseml-sst2"
RECIPE = RECIPES / "sparseml-minilm-sst2-obert90-m16.yaml"
TEACHER = RUNS_ROOT / "few-grads-sst2" / "teacher"
RUNNER = Path(__file__).resolve().parent / "sparseml_runner.py"
SPARSEML_VENV = REPO / ".venv-sparseml"

#: The issue's targets: accuracy at least SparseML's, pruning steps at least this much faster.
SPEEDUP_TARGET = 3.0


def sparseml_python() -> Path:
    """``$OBERT_SPARSEML_PYTHON`` or ``.venv-sparseml/bin/python``; exits when it is missing."""
    env = os.environ.get("OBERT_SPARSEML_PYTHON")
    path = Path(env) if env else SPARSEML_VENV / "bin" / "python"
    if not path.is_file():
        sys.exit(f"no SparseML environment at {path}; run scripts/sparseml_env.sh first")
    return path


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (results files stay portable)."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _setup(args: argparse.Namespace) -> tuple[Any, Any, Path]:
    """Threads, the teacher's tokenizer, the task (the seeded rows) and the teacher folder."""
    import torch
    from transformers import AutoTokenizer

    from obert_train import load_task

    teacher = Path(args.teacher)
    if not (teacher / "config.json").is_file():
        sys.exit(f"no teacher at {teacher}; run `few_grads_sst2.py teacher` first")
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    task = load_task(
        "sst2",
        tokenizer,
        data_dir=data_dir(),
        max_seq_length=args.max_seq_length,
        max_train_samples=args.train_samples,
        seed=args.seed,
    )
    return tokenizer, task, teacher


def _common_entry(args: argparse.Namespace, task: Any, teacher: Path) -> dict[str, Any]:
    """What both tools' entries record: the recipe, rows, teacher and the machine."""
    return {
        "recipe": _shown(Path(args.recipe)),
        "recipe_text": Path(args.recipe).read_text(encoding="utf-8"),
        "teacher": _shown(teacher),
        "train_examples": len(task.train_features),
        "dev_examples": len(task.dev_features),
        "max_seq_length": args.max_seq_length,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "threads": args.threads,
        "machine": cpu_info(),
        "git": _git_state(),
    }


def _git_state() -> dict[str, Any]:
    """The commit measured and the package files that differed from it (shared checkout)."""

    def git(*argv: str) -> str:
        proc = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True)
        return proc.stdout if proc.returncode == 0 else ""

    dirty = git("status", "--porcelain", "--", "packages")
    commit = git("rev-parse", "HEAD").strip()
    return {"commit": commit, "dirty": [line[3:] for line in dirty.splitlines()]}


def cmd_sparseml(args: argparse.Namespace) -> None:
    """Run the recipe through SparseML in its environment; record accuracy and step seconds."""
    if args.name in load_results(args.results)["runs"] and not args.force:
        print(f"{args.name}: already in {args.results}; --force to redo")
        return
    python = sparseml_python()
    tokenizer, task, teacher = _setup(args)
    out = Path(args.runs_dir) / args.name
    out.mkdir(parents=True, exist_ok=True)
    rows = out / "rows.json"
    keys = ("input_ids", "attention_mask", "token_type_ids", "labels")

    def plain(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: (list(f[k]) if k != "labels" else int(f[k])) for k in keys if k in f}
                for f in features]  # fmt: skip

    rows.write_text(
        json.dumps(
            {
                "train": plain(task.train_features),
                "dev": plain(task.dev_features),
                "pad_token_id": tokenizer.pad_token_id,
            }
        ),
        encoding="utf-8",
    )
    command = [str(python), str(RUNNER), str(args.recipe), str(rows), str(teacher), str(teacher),
               str(out), "--batch-size", str(args.batch_size), "--seed", str(args.seed),
               "--threads", str(args.threads)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    load_start = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, cwd=out, check=False)  # its sparse_logs/ there
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"the SparseML run failed (exit code {proc.returncode}): {' '.join(command)}")
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    model = task.load_model(str(out))
    metrics = task.evaluate(model, progress=False)
    rows.unlink()
    entry = {
        "tool": "sparseml",
        **_common_entry(args, task, teacher),
        "dev_accuracy": metrics["accuracy"],
        "dev_accuracy_runner": result["accuracy"],
        "sparsity": result["sparsity"],
        "pruning_steps": result["pruning_steps"],
        "train_seconds": result["train_seconds"],
        "wall_seconds": wall,
        "loadavg_start": list(load_start),
        "loadavg_end": list(os.getloadavg()),
        "versions": result["versions"],
        "runner_machine": result["machine"],
        "epoch_log": result["epoch_log"],
        "output_dir": _shown(out),
    }
    save_entry(args.results, args.name, entry)
    print(json.dumps({"name": args.name, "accuracy": metrics["accuracy"],
                      "sparsity": result["sparsity"]}))  # fmt: skip


def cmd_obert(args: argparse.Namespace) -> None:
    """Run the same recipe file through ``obert_train.run_recipe``; record the same numbers."""
    import torch

    import obert_train
    from obert_train import RunOptions, load_recipe, run_recipe

    if args.name in load_results(args.results)["runs"] and not args.force:
        print(f"{args.name}: already in {args.results}; --force to redo")
        return
    tokenizer, task, teacher = _setup(args)
    overrides = dict(item.split("=", 1) for item in args.set)
    recipe = load_recipe(str(args.recipe), overrides)
    out = Path(args.runs_dir) / args.name
    torch.manual_seed(args.seed)
    model = task.load_model(str(teacher))
    teacher_model = task.load_model(str(teacher))
    load_start = os.getloadavg()
    start = time.perf_counter()
    result = run_recipe(
        recipe,
        model,
        task,
        out,
        model_name=str(teacher),
        tokenizer=tokenizer,
        teacher=teacher_model,
        options=RunOptions(
            batch_size=args.batch_size,
            seed=args.seed,
            logging_steps=10,
            save_checkpoints=False,
            progress=not args.no_progress,
        ),
        overwrite=True,
    )
    wall = time.perf_counter() - start
    entry = {
        "tool": "obert-train",
        **_common_entry(args, task, teacher),
        "overrides": overrides,
        "dev_accuracy": result.metrics["accuracy"],
        "sparsity": result.sparsity,
        "pruning_steps": result.pruning_steps,
        "train_seconds": result.train_seconds,
        "wall_seconds": wall,
        "loadavg_start": list(load_start),
        "loadavg_end": list(os.getloadavg()),
        "versions": {"obert-train": obert_train.__version__, "torch": torch.__version__},
        "output_dir": _shown(out),
    }
    save_entry(args.results, args.name, entry)
    print(json.dumps({"name": args.name, "accuracy": result.metrics["accuracy"],
                      "sparsity": result.sparsity}))  # fmt: skip


def _step_seconds(entry: dict[str, Any]) -> list[float]:
    return [float(s["seconds"]) for s in entry.get("pruning_steps", [])]


def report_lines(data: dict[str, Any]) -> list[str]:
    """The Markdown table of the runs in ``data`` and, with both tools, the targets."""
    runs = data.get("runs", {})
    lines = [
        "| tool | dev accuracy | sparsity | pruning steps (s each) | mean step | train time | "
        "load avg (start → end) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in runs.items():
        secs = _step_seconds(entry)
        mean = sum(secs) / len(secs) if secs else float("nan")
        load = f"{entry['loadavg_start'][0]:.2f} → {entry['loadavg_end'][0]:.2f}"
        settings = "".join(f", {k}={v}" for k, v in entry.get("overrides", {}).items())
        lines.append(
            f"| {name} ({entry['tool']}{settings}) | {100 * entry['dev_accuracy']:.2f} % | "
            f"{entry['sparsity']:.4f} | {', '.join(f'{s:.1f}' for s in secs)} | {mean:.1f} s | "
            f"{entry['train_seconds'] / 60:.1f} min | {load} |"
        )
    if "sparseml" in runs and "obert" in runs:
        ours, theirs = runs["obert"], runs["sparseml"]
        o, s = _step_seconds(ours), _step_seconds(theirs)
        speedup = (sum(s) / len(s)) / (sum(o) / len(o)) if o and s else float("nan")
        delta = 100 * (ours["dev_accuracy"] - theirs["dev_accuracy"])
        acc_ok = ours["dev_accuracy"] >= theirs["dev_accuracy"]
        fast_ok = speedup >= SPEEDUP_TARGET
        lines += [
            "",
            f"- accuracy: obert-train {delta:+.2f} points vs SparseML "
            f"(target >= SparseML's: {'met' if acc_ok else 'not met'})",
            f"- pruning steps: obert-train {speedup:.2f}x faster on average "
            f"(target >= {SPEEDUP_TARGET:.0f}x: {'met' if fast_ok else 'not met'})",
        ]
    return lines


def cmd_report(args: argparse.Namespace) -> None:
    """Print the Markdown table."""
    print("\n".join(report_lines(load_results(args.results))))


def main() -> None:
    """Parse the command line and run one sub-command."""
    parser = make_parser(__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("sparseml", "obert", "report"):
        p = sub.add_parser(name)
        p.add_argument("--results", type=Path, default=RESULTS)
        if name == "report":
            continue
        p.add_argument("--recipe", type=Path, default=RECIPE)
        p.add_argument("--teacher", type=Path, default=TEACHER)
        p.add_argument("--name", default=name)
        p.add_argument("--runs-dir", type=Path, default=RUNS_DIR)
        p.add_argument("--train-samples", type=int, default=2000)
        p.add_argument("--max-seq-length", type=int, default=64)
        p.add_argument("--batch-size", type=int, default=32)
        add_run_options(p, threads=1, seed=42, force=True, no_progress=True)
        if name == "obert":
            p.add_argument(
                "--set",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="an obert-train-only recipe field override (then not the same file: use "
                "another --name), e.g. mode=superpose",
            )
    args = parser.parse_args()
    {"sparseml": cmd_sparseml, "obert": cmd_obert, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
