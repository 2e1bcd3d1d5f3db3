"""Structured pruning of MiniLM-L6 on SST-2: FFN neurons and heads removed, ONNX Runtime latency.

Starts from the dense SST-2 teacher of ``experiments/gradual_sst2.py teacher`` (83.03 % dev).
Every prune goes through the library (``oneshot_prune(model, "structured", ...)``; heads first,
then FFN neurons), every recovery through ``run_recipe`` (masks kept by
``!ConstantPruningModifier``, KD from the dense teacher), every export through
``obert_deploy.export_onnx`` (which removes the zero rows/columns) and ``benchmark``.
Sub-commands (results merged into ``experiments/results/structured_sst2.json``; finished
entries are skipped on a re-run)::

    .venv/bin/python experiments/structured_sst2.py oneshot     # the accuracy grid
    .venv/bin/python experiments/structured_sst2.py recover     # short KD recovery, 3 configs
    .venv/bin/python experiments/structured_sst2.py latency     # export + ORT fp32/int8, b=1/16
    .venv/bin/python experiments/structured_sst2.py onnx-eval   # dev accuracy of those files
    .venv/bin/python experiments/structured_sst2.py report
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from _common import IMG, REPO, RESULTS_DIR, RUNS_ROOT, add_run_options, data_dir, make_parser
from _common import load_results as _load_results
from _common import save_entry as _save_entry

TEACHER = RUNS_ROOT / "gradual-sst2" / "teacher"
RUNS = RUNS_ROOT / "structured-sst2"
RESULTS = RESULTS_DIR / "structured_sst2.json"

VARIANTS: dict[str, dict[str, Any]] = {
    "heapr": {"score": "heapr", "correct": False},
    "heapr+obs": {"score": "heapr", "correct": True},
    "magnitude": {"score": "magnitude", "correct": False},
    "activation": {"score": "activation", "correct": False},
    "random": {"score": "random", "correct": False},
}
"""HEAPr's score as published (no weight update), ours (HEAPr + OBS re-fit), baselines."""
GRID = [(f, h) for f in (0.25, 0.5, 0.75) for h in (0.0, 0.33, 0.5)]
DIAGONAL = [(0.25, 0.0), (0.5, 0.33), (0.75, 0.5)]
CALIBRATION = {"num_batches": 16, "grad_batch_size": 16, "seed": 0}

RECOVERY = """
modifiers:
  - !EpochRangeModifier {start_epoch: 0.0, end_epoch: 1.0}
training_modifiers:
  - !LearningRateFunctionModifier
    {start_epoch: 0.0, end_epoch: 1.0, lr_func: linear, init_lr: 1.0e-4, final_lr: 1.0e-6}
pruning_modifiers:
  - !ConstantPruningModifier
    start_epoch: 0.0
    end_epoch: 1.0
    params: ["re:bert.encoder.layer.*(attention|intermediate|output).*weight"]
distillation_modifiers:
  - !DistillationModifier {hardness: 1.0, temperature: 2.0, distill_output_keys: [logits]}
"""


EMPTY: dict[str, Any] = {"oneshot": {}, "recover": {}, "latency": {}}
"""What a missing results file starts as."""


def load_results() -> dict[str, Any]:
    """This script's results file (or :data:`EMPTY`)."""
    return _load_results(RESULTS, EMPTY)


def save(section: str, key: str, entry: dict[str, Any]) -> None:
    """Merge one entry into ``section`` of the results (and set its ``machine``)."""
    _save_entry(RESULTS, key, entry, section, default=EMPTY, machine=True, allow_nan=True)


def key_of(variant: str, ffn: float, heads: float) -> str:
    return f"{variant}/ffn{ffn:.2f}/heads{heads:.2f}"


def task_for(tokenizer: Any, train_samples: int | None = None) -> Any:
    from obert_train import load_task

    return load_task(
        "sst2", tokenizer, data_dir=data_dir(), max_train_samples=train_samples, seed=42
    )


def prune(task: Any, variant: str, ffn: float, heads: float) -> tuple[Any, dict[str, Any]]:
    """The teacher with ``heads`` of its heads and ``ffn`` of its FFN neurons removed."""
    from obert_train import oneshot_prune

    model = task.load_model(str(TEACHER)).eval()
    settings = {**VARIANTS[variant], **CALIBRATION}
    info: dict[str, Any] = {"seconds": 0.0}
    for structure, fraction in (("heads", heads), ("neurons", ffn)):
        if fraction <= 0:
            continue
        start = time.perf_counter()
        oneshot_prune(
            model, "structured", fraction,
            settings={**settings, "structure": structure}, task=task, progress=False,
            log=lambda _line: None,
        )  # fmt: skip
        info["seconds"] += time.perf_counter() - start
    layer = model.bert.encoder.layer
    dh = model.config.hidden_size // model.config.num_attention_heads
    info["ffn_kept"] = [int(m.output.dense.weight.ne(0).any(0).sum()) for m in layer]
    info["heads_kept"] = [
        int(m.attention.output.dense.weight.ne(0).any(0).reshape(-1, dh).any(-1).sum())
        for m in layer
    ]
    return model, info


def cmd_oneshot(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(TEACHER)
    task = task_for(tokenizer)
    done = load_results().get("oneshot", {})
    if "dense" not in done:
        dense = task.load_model(str(TEACHER)).eval()
        save("oneshot", "dense", {"accuracy": task.evaluate(dense, progress=False)["accuracy"]})
    # The full grid for ours; HEAPr as published and the baselines on the diagonal (CPU budget).
    jobs = [("heapr+obs", f, h) for f, h in GRID]
    jobs += [(v, f, h) for v in ("heapr", "magnitude", "activation", "random") for f, h in DIAGONAL]
    for variant, ffn, heads in jobs:
        key = key_of(variant, ffn, heads)
        if key in load_results().get("oneshot", {}):
            continue
        model, info = prune(task, variant, ffn, heads)
        info["accuracy"] = task.evaluate(model, progress=False)["accuracy"]
        save("oneshot", key, info)
        print(f"{key}: {100 * info['accuracy']:.2f} % ({info['seconds']:.0f} s)", flush=True)


def cmd_recover(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoTokenizer

    from obert_train import RunOptions, load_recipe, run_recipe

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(TEACHER)
    task = task_for(tokenizer, train_samples=2000)
    eval_task = task_for(tokenizer)
    recipe = load_recipe(RECOVERY.replace("init_lr: 1.0e-4", f"init_lr: {args.lr}"))
    tag = "" if args.lr == 1e-4 else f"@lr{args.lr:g}"
    for variant in ("heapr+obs", "magnitude"):
        for ffn, heads in DIAGONAL if not tag else DIAGONAL[1:]:
            key = key_of(variant, ffn, heads) + tag
            if key in load_results().get("recover", {}):
                continue
            model, info = prune(task, variant, ffn, heads)
            out = RUNS / key.replace("/", "-")
            teacher = task.load_model(str(TEACHER)).eval()
            result = run_recipe(
                recipe, model, task, out, model_name=key, tokenizer=tokenizer, teacher=teacher,
                options=RunOptions(batch_size=32, seed=42, logging_steps=20, evaluate=False,
                                   progress=False),
                resume=(out / "run.json").is_file(), overwrite=not (out / "run.json").is_file(),
                log=lambda _line: None,
            )  # fmt: skip
            info["accuracy"] = eval_task.evaluate(model, progress=False)["accuracy"]
            info["train_seconds"] = result.train_seconds
            info["output_dir"] = str(out.relative_to(REPO))
            save("recover", key, info)
            print(f"{key} + KD: {100 * info['accuracy']:.2f} %", flush=True)
            if variant != "heapr+obs":
                break  # the baseline only at the first config (the CPU budget)
        if tag:
            break


def cmd_latency(args: argparse.Namespace) -> None:
    from transformers import AutoTokenizer

    from obert_deploy import BenchConfig, ExportConfig, benchmark, export_onnx, quantize_onnx
    from obert_train import save_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(TEACHER)
    task = task_for(tokenizer)
    models: dict[str, Path] = {"dense": TEACHER}
    for ffn, heads in DIAGONAL:
        key = key_of("heapr+obs", ffn, heads)
        folder = RUNS / "oneshot" / key.replace("/", "-")
        if not (folder / "model.safetensors").is_file():
            model, _ = prune(task, "heapr+obs", ffn, heads)
            save_checkpoint(model, folder, tokenizer=tokenizer)
        models[key] = folder
    for name, folder in models.items():
        if name in load_results().get("latency", {}):
            continue
        onnx = RUNS / "onnx" / (name.replace("/", "-") + ".onnx")
        onnx.parent.mkdir(parents=True, exist_ok=True)
        report = export_onnx(folder, onnx, ExportConfig(seq_len=128))
        int8 = onnx.with_suffix(".int8.onnx")
        quantize_onnx(onnx, int8)
        entry: dict[str, Any] = {
            "params_removed": getattr(report.shrink, "parameters_removed", None),
            "fp32_mb": onnx.stat().st_size / 1e6,
            "int8_mb": int8.stat().st_size / 1e6,
        }
        for precision, path in (("fp32", onnx), ("int8", int8)):
            for batch in (1, 16):
                result = benchmark(
                    path,
                    BenchConfig(batch_size=batch, seq_len=128, threads=args.threads,
                                iterations=args.iterations, warmup=5),
                )  # fmt: skip
                entry[f"{precision}_b{batch}_ms"] = result.latency_ms["mean"]
        save("latency", name, entry)
        print(name, json.dumps(entry), flush=True)


def cmd_onnx_eval(args: argparse.Namespace) -> None:
    """Dev accuracy of the exported fp32 and int8 ONNX models (ONNX Runtime), as benchmarked."""
    from obert_deploy import evaluate

    models = {"dense": TEACHER}
    for ffn, heads in DIAGONAL:
        key = key_of("heapr+obs", ffn, heads)
        models[key] = RUNS / "oneshot" / key.replace("/", "-")
    for name, folder in models.items():
        if name in load_results().get("onnx_accuracy", {}):
            continue
        onnx = RUNS / "onnx" / (name.replace("/", "-") + ".onnx")
        report = evaluate(
            folder, [onnx, onnx.with_suffix(".int8.onnx")], data=data_dir() / "dev.tsv",
            seq_len=128, threads=args.threads,
        )  # fmt: skip
        pytorch, fp32, int8 = report.results
        entry = {
            "pytorch": pytorch.metrics["accuracy"],
            "fp32": fp32.metrics["accuracy"],
            "int8": int8.metrics["accuracy"],
            "int8_agreement": int8.agreement,
        }
        save("onnx_accuracy", name, entry)
        print(name, entry, flush=True)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def cmd_report(args: argparse.Namespace) -> None:
    del args
    results = load_results()
    dense = results["oneshot"]["dense"]["accuracy"]
    one, rec, lat = results["oneshot"], results.get("recover", {}), results.get("latency", {})
    print(f"dense teacher: {_pct(dense)} % (plot: {plot(results).relative_to(REPO)})\n")
    print("| FFN removed | heads removed | " + " | ".join(VARIANTS) + " |")
    print("|---|---|" + "---|" * len(VARIANTS))
    for ffn, heads in GRID:
        cells = [_pct(one.get(key_of(v, ffn, heads), {}).get("accuracy")) for v in VARIANTS]
        print(f"| {ffn:.0%} | {heads:.0%} | " + " | ".join(cells) + " |")
    print("\n| model | one-shot | + KD (1 epoch) | fp32 MB | int8 MB | fp32 b1 ms | fp32 b16 ms | "
          "int8 b1 ms | int8 b16 ms | speed-up fp32 b1 | speed-up int8 b1 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    base = lat.get("dense", {}).get("fp32_b1_ms")
    for name in ["dense", *(key_of("heapr+obs", f, h) for f, h in DIAGONAL)]:
        entry = lat.get(name, {})
        acc = dense if name == "dense" else one.get(name, {}).get("accuracy")
        kd = None if name == "dense" else rec.get(name, {}).get("accuracy")
        low = rec.get(name + "@lr2e-05", {}).get("accuracy")
        kd_cell = _pct(kd) + ("" if low is None else f" ({_pct(low)} at LR 2e-5)")
        ms = [entry.get(f"{p}_b{b}_ms") for p in ("fp32", "int8") for b in (1, 16)]
        keys = ("fp32_b1_ms", "int8_b1_ms")
        sizes = ("fp32_mb", "int8_mb")
        up = [base / entry[k] if base and entry.get(k) else None for k in keys]
        print(
            f"| {name} | {_pct(acc)} | {kd_cell} | "
            + " | ".join("–" if entry.get(k) is None else f"{entry[k]:.1f}" for k in sizes)
            + " | "
            + " | ".join("–" if m is None else f"{m:.2f}" for m in ms)
            + " | "
            + " | ".join("–" if u is None else f"{u:.2f}×" for u in up)
            + " |"
        )
    _onnx_table(results)


def _onnx_table(results: dict[str, Any]) -> None:
    acc = results.get("onnx_accuracy", {})
    if not acc:
        return
    print("\n| model | PyTorch | ONNX fp32 | ONNX int8 (dynamic) | int8 agreement |")
    print("|---|---|---|---|---|")
    for name, e in acc.items():
        agree = e.get("int8_agreement")
        print(
            f"| {name} | {_pct(e['pytorch'])} | {_pct(e['fp32'])} | {_pct(e['int8'])} | "
            f"{'–' if agree is None else _pct(agree)} |"
        )


def plot(results: dict[str, Any]) -> Path:
    """Dev accuracy of each variant on the diagonal (FFN/heads removed) and after KD."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    one, rec = results["oneshot"], results.get("recover", {})
    labels = [f"FFN {f:.0%}\nheads {h:.0%}" for f, h in DIAGONAL]
    nan = float("nan")  # a point not measured yet: a gap in the line
    fig, ax = plt.subplots(figsize=(7, 4))
    for variant in VARIANTS:
        ys = [one.get(key_of(variant, f, h), {}).get("accuracy") for f, h in DIAGONAL]
        ax.plot(labels, [nan if y is None else 100 * y for y in ys], marker="o", label=variant)
    ys = [rec.get(key_of("heapr+obs", f, h), {}).get("accuracy") for f, h in DIAGONAL]
    ax.plot(labels, [nan if y is None else 100 * y for y in ys], "k--", marker="s",
            label="heapr+obs, then 1 epoch KD")  # fmt: skip
    ax.axhline(100 * one["dense"]["accuracy"], color="grey", lw=1, label="dense")
    ax.set_ylabel("SST-2 dev accuracy (%)")
    ax.set_title("MiniLM-L6: structured pruning, one-shot")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = IMG / "structured_sst2.png"
    fig.savefig(out, dpi=120)
    return out


def main() -> None:
    parser = make_parser(__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("oneshot", "recover", "latency", "onnx-eval", "report"):
        p = sub.add_parser(name)
        add_run_options(p, threads=1)
        p.add_argument("--iterations", type=int, default=50)
        p.add_argument("--lr", type=float, default=1e-4, help="recover: initial LR")
    args = parser.parse_args()
    commands = {
        "oneshot": cmd_oneshot,
        "recover": cmd_recover,
        "latency": cmd_latency,
        "onnx-eval": cmd_onnx_eval,
        "report": cmd_report,
    }
    commands[args.cmd](args)


if __name__ == "__main__":
    main()
