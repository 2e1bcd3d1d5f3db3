"""SQuAD v1.1 question answering at CPU scale: dense MiniLM-L6, then gradual oBERT vs GMP to 80 %.

Only the SQuAD dev file is local, so it is split by article (``split_articles=(40, 8)``,
``split_seed=0``: 40 articles / 9,132 questions to train on, 8 held-out articles / 1,438
questions to evaluate on; no article on both sides).  Features: 384 tokens, doc stride 128, query
at most 64 tokens; F1 / exact match are the official SQuAD v1.1 metrics on the 1,438 held-out
questions (all of them).  Budget (2-core CPU, one thread per run): the dense model trains on a
seeded subset of the training questions; the pruning runs on a smaller one, with KD from the dense
model (start/end logits).  Sub-commands::

    .venv/bin/python experiments/squad_minilm.py teacher          # dense fine-tune of MiniLM-L6
    .venv/bin/python experiments/squad_minilm.py prune obert80    # or gmp80; resumable
    .venv/bin/python experiments/squad_minilm.py report

Results: ``experiments/results/squad_minilm.json``; runs in ``runs/squad-minilm/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from _common import (
    RESULTS_DIR,
    RUNS_ROOT,
    add_run_options,
    data_dir,
    done,
    load_results,
    make_parser,
    minilm_dir,
    train,
)

from obert_core.shared import format_metric

RUNS_DIR = RUNS_ROOT / "squad-minilm"
RESULTS = RESULTS_DIR / "squad_minilm.json"
RUNS = {"obert80": "squad-obert-80", "gmp80": "squad-gmp-80"}
SPLIT = (40, 8)
PRUNE_QUESTIONS = 600
"""Training questions of the pruning and sparse-transfer runs (a seeded subset)."""
EVAL_QUESTIONS = 500
"""Held-out questions scored (a seeded subset of the 1,438, the same for every model)."""
"""Training questions of the pruning and sparse-transfer runs (a seeded subset)."""


def make_task(tokenizer: Any, train_samples: int, seed: int) -> Any:
    """The article-split SQuAD task (384 tokens, stride 128) with a seeded training subset."""
    from obert_train import load_task

    return load_task(
        "squad",
        tokenizer,
        data_dir=data_dir("SQuAD"),
        split_articles=SPLIT,
        split_seed=0,
        max_seq_length=384,
        doc_stride=128,
        max_train_samples=train_samples,
        max_eval_samples=EVAL_QUESTIONS,
        seed=seed,
    )


def _go(name: str, recipe: str, model_dir: Path, teacher_dir: Path | None, args: Any) -> None:
    if done(RESULTS, name, args.force):
        return
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    task = make_task(tokenizer, args.train_samples, args.seed)
    torch.manual_seed(args.seed)
    model = task.load_model(str(model_dir))
    teacher = task.load_model(str(teacher_dir)) if teacher_dir is not None else None
    train(
        name=name,
        results=RESULTS,
        recipe=recipe,
        task=task,
        model=model,
        model_name=str(model_dir),
        tokenizer=tokenizer,
        out=RUNS_DIR / name,
        teacher=teacher,
        batch_size=args.batch_size,
        seed=args.seed,
        save_steps=25,
        progress=not args.no_progress,
        extra={
            "train_questions": args.train_samples,
            "eval_questions": len(task.dev_examples) if hasattr(task, "dev_examples") else None,
            "split_articles": list(SPLIT),
            "max_seq_length": 384,
            "doc_stride": 128,
        },
    )


def cmd_teacher(args: argparse.Namespace) -> None:
    _go("dense", "squad-dense", minilm_dir(), None, args)


def cmd_prune(args: argparse.Namespace) -> None:
    teacher = RUNS_DIR / "dense"
    if not (teacher / "model.safetensors").is_file():
        sys.exit(f"no dense model at {teacher}; run `squad_minilm.py teacher` first")
    _go(args.name, RUNS[args.name], teacher, teacher, args)


def cmd_report(args: argparse.Namespace) -> None:
    runs = load_results(RESULTS)["runs"]
    dense = runs.get("dense", {}).get("metrics", {})
    print("| model | sparsity | F1 | EM | ΔF1 vs dense | train questions | train time |")
    print("|---|---|---|---|---|---|---|")
    for name, e in runs.items():
        m = e["metrics"]
        # F1 / EM are fractions (obert_core.shared.format_metric prints them in percent)
        delta = "" if name == "dense" or not dense else f"{100 * (m['f1'] - dense['f1']):+.2f}"
        f1, em = (format_metric(k, m[k], with_unit=False) for k in ("f1", "exact_match"))
        print(
            f"| {name} | {e['sparsity']:.4f} | {f1} | {em} | {delta} "
            f"| {e['train_questions']} | {e['train_seconds'] / 60:.1f} min |"
        )


def main() -> None:
    parser = make_parser(__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, samples in (("teacher", 1600), ("prune", PRUNE_QUESTIONS), ("report", 0)):
        p = sub.add_parser(name)
        p.add_argument("--train-samples", type=int, default=samples)
        p.add_argument("--batch-size", type=int, default=16)
        add_run_options(p, threads=1, seed=42, force=True, no_progress=True)
        if name == "prune":
            p.add_argument("name", choices=sorted(RUNS))
    args = parser.parse_args()
    {"teacher": cmd_teacher, "prune": cmd_prune, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
