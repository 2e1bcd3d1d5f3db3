"""Upstream pruning on masked-LM, then sparse transfer with fixed masks (paper §2.3, CPU scale).

The shipped MiniLM-L6 (all-MiniLM-L6-v2) is a sentence encoder without an MLM head, so ``mlm``
first trains a new head (transform + LayerNorm, decoder tied to the word embeddings) together
with the encoder on WikiText-2 ``wiki.valid.raw`` (dense; the KD teacher of the upstream runs).
We chose a trained head over distilling hidden states because it keeps the paper's setup (MLM
loss + KD on the MLM logits) and gives a perplexity to report.  ``upstream NAME`` prunes that
model with gradual oBERT and KD to 80 % (1 epoch), then on from 80 % to 90 % (0.5 epoch more);
perplexity is measured on ``wiki.test.raw``
(fixed masks, every model scored on the same masked tokens).  ``transfer SOURCE TASK``
fine-tunes an upstream-pruned model on SST-2 (recipe ``minilm-sst2-transfer``: 3 epochs,
ConstantPruningModifier, KD from the dense SST-2 teacher of ``gradual_sst2.py``) or on the SQuAD
article split (``squad-transfer``: 2 epochs, KD from ``squad_minilm.py``'s dense model), on the
same training subsets as the downstream pruning runs it is compared with.

The MLM checkpoint has no pooler (``BertForMaskedLM``); for SST-2 the pooler of the pretrained
MiniLM-L6 (the same weights the upstream run started from, not pruned) is put back before
fine-tuning, as the downstream runs start from a model that has it.  Sub-commands::

    .venv/bin/python experiments/upstream_transfer.py mlm
    .venv/bin/python experiments/upstream_transfer.py upstream obert80     # or obert90
    .venv/bin/python experiments/upstream_transfer.py transfer obert80 sst2  # or squad
    .venv/bin/python experiments/upstream_transfer.py report

Results: ``experiments/results/upstream_transfer.json``; runs in ``runs/upstream/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import (
    REPO,
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

if TYPE_CHECKING:
    import torch

RUNS_DIR = RUNS_ROOT / "upstream"
RESULTS = RESULTS_DIR / "upstream_transfer.json"
SST2_TEACHER = RUNS_ROOT / "gradual-sst2" / "teacher"
SQUAD_TEACHER = RUNS_ROOT / "squad-minilm" / "dense"
UPSTREAM = {
    "obert80": ("mlm-dense", "mlm-obert-80"),
    "obert90": ("upstream-obert80", "mlm-obert-90-cont"),
}
"""Upstream run -> (the model it starts from, its recipe); 90 % continues from 80 % (CPU budget)."""
EVAL_LINES = 1000
"""Lines of wiki.test.raw scored (a seeded subset, the same for every model)."""


def mlm_task(tokenizer: Any) -> Any:
    from obert_train import load_task

    wiki = data_dir("wikitext-2-raw")
    return load_task(
        "mlm",
        tokenizer,
        train_file=wiki / "wiki.valid.raw",
        dev_file=wiki / "wiki.test.raw",
        max_seq_length=128,
        max_eval_samples=EVAL_LINES,
        seed=0,
    )


def cmd_mlm(args: argparse.Namespace) -> None:
    if done(RESULTS, "mlm-dense", args.force):
        return
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    source = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(source)
    task = mlm_task(tokenizer)
    torch.manual_seed(args.seed)
    model = task.load_model(str(source))
    before = task.evaluate(model, progress=False)
    print(f"untrained head: perplexity {before['perplexity']:.1f}", flush=True)
    train(
        name="mlm-dense", results=RESULTS, recipe="mlm-dense", task=task, model=model,
        model_name=str(source), tokenizer=tokenizer, out=RUNS_DIR / "mlm-dense",
        batch_size=32, seed=args.seed, progress=not args.no_progress,
        extra={"untrained_head": before, "train_file": "wiki.valid.raw",
               "eval_file": "wiki.test.raw", "max_seq_length": 128},
    )  # fmt: skip


def cmd_upstream(args: argparse.Namespace) -> None:
    name = f"upstream-{args.name}"
    if done(RESULTS, name, args.force):
        return
    dense = RUNS_DIR / "mlm-dense"
    source, recipe = UPSTREAM[args.name]
    start = RUNS_DIR / source
    if not (start / "model.safetensors").is_file():
        sys.exit(f"no model at {start}; run the step that makes it first (mlm, upstream obert80)")
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(dense)
    task = mlm_task(tokenizer)
    torch.manual_seed(args.seed)
    train(
        name=name, results=RESULTS, recipe=recipe, task=task,
        model=task.load_model(str(start)), model_name=str(start), tokenizer=tokenizer,
        out=RUNS_DIR / name, teacher=task.load_model(str(dense)), batch_size=32,
        seed=args.seed, save_steps=20, progress=not args.no_progress,
        extra={"train_file": "wiki.valid.raw", "eval_file": "wiki.test.raw",
               "max_seq_length": 128},
    )  # fmt: skip


def _pooler_from(source: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = load_file(str(source / "model.safetensors"))
    return {key.split("pooler.", 1)[1]: value for key, value in state.items() if "pooler." in key}


def cmd_transfer(args: argparse.Namespace) -> None:
    name = f"transfer-{args.source}-{args.task}"
    if done(RESULTS, name, args.force):
        return
    source = RUNS_DIR / f"upstream-{args.source}"
    teacher_dir = SST2_TEACHER if args.task == "sst2" else SQUAD_TEACHER
    for need in (source, teacher_dir):
        if not (need / "model.safetensors").is_file():
            sys.exit(f"{need} has no model; run its step first")
    import torch
    from transformers import AutoTokenizer

    from obert_train import load_task

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if args.task == "sst2":
        task = load_task("sst2", tokenizer, data_dir=data_dir("SST-2"), max_seq_length=64,
                         max_train_samples=2000, seed=args.seed)  # fmt: skip
        recipe, batch, save_steps = "minilm-sst2-transfer", 32, None
    else:
        from squad_minilm import PRUNE_QUESTIONS, make_task

        task = make_task(tokenizer, PRUNE_QUESTIONS, args.seed)
        recipe, batch, save_steps = "squad-transfer", 16, 25
    torch.manual_seed(args.seed)
    model = task.load_model(str(source))
    pooler = getattr(getattr(model, "bert", None), "pooler", None)
    if pooler is not None:
        missing = pooler.load_state_dict(_pooler_from(minilm_dir()), strict=True)
        print(f"pooler restored from the pretrained MiniLM-L6 ({missing})", flush=True)
    train(
        name=name, results=RESULTS, recipe=recipe, task=task, model=model,
        model_name=str(source), tokenizer=tokenizer, out=RUNS_DIR / name,
        teacher=task.load_model(str(teacher_dir)), batch_size=batch, seed=args.seed,
        save_steps=save_steps, progress=not args.no_progress,
        extra={"source": str(source.relative_to(REPO)), "task": args.task,
               "teacher": str(teacher_dir.relative_to(REPO))},
    )  # fmt: skip


def cmd_report(args: argparse.Namespace) -> None:
    """Upstream perplexities, and sparse transfer next to downstream pruning with their costs."""
    runs = load_results(RESULTS)["runs"]
    downstream = load_results(RESULTS_DIR / "gradual_sst2.json")["runs"]
    squad = load_results(RESULTS_DIR / "squad_minilm.json")["runs"]
    print("| MLM model (WikiText-2) | sparsity | test perplexity | train time |")
    print("|---|---|---|---|")
    if "mlm-dense" in runs:
        head = runs["mlm-dense"]["untrained_head"]["perplexity"]
        print(f"| MiniLM-L6 + new MLM head, untrained | 0 | {head:,.1f} | – |")
    for name in ("mlm-dense", "upstream-obert80", "upstream-obert90"):
        if name in runs:
            e = runs[name]
            print(f"| {name} | {e['sparsity']:.4f} | {e['metrics']['perplexity']:.2f} | "
                  f"{e['train_seconds'] / 60:.1f} min |")  # fmt: skip
    mlm_cost = runs.get("mlm-dense", {}).get("train_seconds", 0.0)
    print("\n| task | sparsity | downstream pruning (metric, cost) | sparse transfer "
          "(metric, per-task cost) | one-time upstream cost |")  # fmt: skip
    print("|---|---|---|---|---|")
    for source, target in (("obert80", 0.8), ("obert90", 0.9)):
        for task, ref, key in (("sst2", downstream.get(source), "accuracy"),
                               ("squad", squad.get(source), "f1")):  # fmt: skip
            name = f"transfer-{source}-{task}"
            if name not in runs:
                continue
            e = runs[name]
            up = runs.get(f"upstream-{source}", {}).get("train_seconds", 0.0)
            if ref is None:
                ref_text = "not run"
            else:
                value = ref.get("dev_accuracy") if key == "accuracy" else ref["metrics"][key]
                shown = format_metric(key, value, with_unit=False)
                ref_text = f"{key} {shown}, {ref['train_seconds'] / 60:.1f} min"
            print(f"| {task} | {target:.0%} | {ref_text} | {key} "
                  f"{format_metric(key, e['metrics'][key], with_unit=False)}, "
                  f"{e['train_seconds'] / 60:.1f} min | "
                  f"{(mlm_cost + up) / 60:.1f} min (MLM head + upstream pruning) |")  # fmt: skip


def main() -> None:
    parser = make_parser(__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("mlm", "upstream", "transfer", "report"):
        p = sub.add_parser(name)
        add_run_options(p, threads=1, seed=42, force=True, no_progress=True)
        if name == "upstream":
            p.add_argument("name", choices=sorted(UPSTREAM))
        if name == "transfer":
            p.add_argument("source", choices=sorted(UPSTREAM))
            p.add_argument("task", choices=["sst2", "squad"])
    args = parser.parse_args()
    {"mlm": cmd_mlm, "upstream": cmd_upstream, "transfer": cmd_transfer,
     "report": cmd_report}[args.cmd](args)  # fmt: skip


if __name__ == "__main__":
    main()
