"""Compound compression on SST-2 (the paper's §2.4 at CPU scale): fewer layers + 4-block + int8.

MiniLM-L6 fine-tuned on SST-2 (``gradual_sst2.py teacher``, 6 layers) → 3 layers
(``obert_train.drop_layers``, ``num_layers=3`` keeps layers 1, 3, 5) → gradual oBERT 4-block
pruning to 80 % with KD from the 6-layer model (shipped recipe ``minilm-sst2-obert-block4-80``,
its first epoch dense distillation; the same 2,000 sentences, 6 epochs, as ``gradual_sst2.py``)
→ on to 90 % from that model (``experiments/recipes/compound-b4-90.yaml``: 3 more epochs, steps
at 0.85 and 0.9; a continuation, cheaper on this CPU than a second 6-epoch run) → int8 (QAT
with obert-deploy, masks kept; static PTQ in the QOperator form DeepSparse accelerates, as its
QAT/QDQ files run slower than fp32 there; and ONNX Runtime's dynamic int8) → ONNX →
latency on ONNX Runtime and DeepSparse (batch 1 and 16, 128 tokens, 2 threads) and size.
Speed-ups are over the dense fp32 6-layer model on ONNX Runtime measured in the same run.
Sub-commands::

    .venv/bin/python experiments/compound_sst2.py layers          # 6 -> 3 layers, no training
    .venv/bin/python experiments/compound_sst2.py prune b4-80     # or b4-90; resumable
    .venv/bin/python experiments/compound_sst2.py prune kd-16k    # then kd-b4-90, -8k or -16k
    .venv/bin/python experiments/compound_sst2.py deploy          # exports, QAT, accuracy, size
    .venv/bin/python experiments/compound_sst2.py static          # DeepSparse's int8 form (PTQ)
    .venv/bin/python experiments/compound_sst2.py bench           # latency (wants a quiet CPU)
    .venv/bin/python experiments/compound_sst2.py report

The deployment half uses only obert-deploy (a 3-layer checkpoint is just a config), and
DeepSparse runs in its own environment ``.venv-deepsparse``, which has no obert-train.
Results: ``experiments/results/compound_sst2.json``; files in ``runs/compound/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from _common import (
    IMG,
    REPO,
    RESULTS_DIR,
    RUNS_ROOT,
    add_run_options,
    data_dir,
    done,
    epoch_eval,
    load_results,
    make_parser,
    save_entry,
    train,
)

RUNS_DIR = RUNS_ROOT / "compound"
RESULTS = RESULTS_DIR / "compound_sst2.json"
TEACHER = RUNS_ROOT / "gradual-sst2" / "teacher"
PRUNE = {
    "b4-80": ("l3-dense", "minilm-sst2-obert-block4-80", 2000),
    "b4-90": ("l3-b4-80", "compound-b4-90", 2000),
    "kd-16k": ("l3-dense", "compound-l3-kd", 16000),
    "kd-b4-90": ("l3-kd-16k", "compound-kd-b4-90", 4000),
    "kd-b4-90-8k": ("l3-kd-16k", "compound-kd-b4-90-8k", 8000),
    "kd-b4-90-16k": ("l3-kd-16k", "compound-kd-b4-90-16k", 16000),
}
"""Run -> (the model it starts from, its recipe, SST-2 training sentences). ``kd-16k`` asks
whether the 3-layer model's gap to 6 layers is the distillation budget: dense KD from the
6-layer model on 8x the sentences (1 epoch), no pruning; ``kd-b4-90`` prunes that model to 90 %
4-block on 4,000 sentences (4 epochs), ``kd-b4-90-8k`` on 8,000 (3 epochs, a step every half
epoch), ``kd-b4-90-16k`` on 16,000 (2 epochs, a step every quarter epoch)."""
SEQ = 128
TARGETS = ("query", "key", "value", "attention.output.dense", "intermediate.dense",
           "output.dense")  # fmt: skip


def sst2_task(tokenizer: Any, seed: int = 42, samples: int = 2000) -> Any:
    from obert_train import load_task

    return load_task("sst2", tokenizer, data_dir=data_dir("SST-2"), max_seq_length=64,
                     max_train_samples=samples, seed=seed)  # fmt: skip


def cmd_layers(args: argparse.Namespace) -> None:
    """6 -> 3 layers: keep 1, 3, 5 (``num_layers=3``); 0, 2, 4 is scored too, not kept."""
    import torch
    from transformers import AutoTokenizer

    from obert_train import drop_layers

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(TEACHER)
    task = sst2_task(tokenizer)
    if not done(RESULTS, "l3-dense", args.force):
        model = task.load_model(str(TEACHER)).eval()
        drop_layers(model, num_layers=3)
        out = RUNS_DIR / "l3-dense"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        metrics = task.evaluate(model, progress=False)
        print(f"3 layers (1, 3, 5), no training: accuracy {metrics['accuracy']:.4f}")
        entry = {"metrics": metrics, "sparsity": 0.0, "layers": [1, 3, 5], "train_seconds": 0.0}
        save_entry(RESULTS, "l3-dense", {**entry, "output_dir": str(out.relative_to(REPO))})
    if "keep-0-2-4" not in load_results(RESULTS).get("layer_choice", {}) or args.force:
        model = task.load_model(str(TEACHER)).eval()
        drop_layers(model, keep=[0, 2, 4])
        metrics = task.evaluate(model, progress=False)
        print(f"3 layers (0, 2, 4), no training: accuracy {metrics['accuracy']:.4f}")
        save_entry(RESULTS, "keep-0-2-4", {"metrics": metrics}, section="layer_choice")


def cmd_prune(args: argparse.Namespace) -> None:
    name = f"l3-{args.name}"
    if done(RESULTS, name, args.force):
        return
    source, recipe, samples = PRUNE[args.name]
    start = RUNS_DIR / source
    if not (start / "model.safetensors").is_file():
        maker = "layers" if source == "l3-dense" else f"prune {source.removeprefix('l3-')}"
        sys.exit(f"{start} missing: run `{maker}` first")
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(start)
    task = sst2_task(tokenizer, samples=samples)
    torch.manual_seed(42)
    evaluator, points = epoch_eval(task)
    train(
        name=name, results=RESULTS, recipe=recipe, task=task,
        model=task.load_model(str(start)), model_name=str(start), tokenizer=tokenizer,
        out=RUNS_DIR / name, teacher=task.load_model(str(TEACHER)), batch_size=32,
        callbacks=[evaluator],
        progress=not args.no_progress,
        before_save=lambda e: e.update(epoch_eval=points, layers=[1, 3, 5],
                                       starts_from=source),
    )  # fmt: skip


MODELS = {
    "dense-6l": TEACHER,
    "6l-b4-80": RUNS_ROOT / "gradual-sst2" / "block4-80",  # gradual_sst2.py prune block4-80
    "l3-b4-80": RUNS_DIR / "l3-b4-80",
    "l3-b4-90": RUNS_DIR / "l3-b4-90",
    "l3-kd-b4-90": RUNS_DIR / "l3-kd-b4-90",  # prune kd-16k, then prune kd-b4-90
    "l3-kd-b4-90-8k": RUNS_DIR / "l3-kd-b4-90-8k",  # prune kd-16k, then prune kd-b4-90-8k
    "l3-kd-b4-90-16k": RUNS_DIR / "l3-kd-b4-90-16k",  # prune kd-16k, then prune kd-b4-90-16k
}
"""Deployed models: the dense 6-layer baseline, 6 layers at 80 % 4-block (no layer dropping), and
the compound models (``--models`` picks some)."""


def _chosen(args: argparse.Namespace) -> dict[str, Path]:
    """The ``MODELS`` named by ``--models`` (comma-separated labels; all when not given)."""
    if not args.models:
        return dict(MODELS)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        sys.exit(f"--models {args.models!r}: {unknown} not among {sorted(MODELS)}")
    return {n: MODELS[n] for n in names}


def _qat_batches(tokenizer: Any, steps: int) -> list[Any]:
    import deploy_minilm

    return deploy_minilm.qat_batches(tokenizer, steps, seed=1)


def cmd_deploy(args: argparse.Namespace) -> None:
    """ONNX exports (fp32, dynamic int8, QAT int8) with their SST-2 dev accuracy and sizes.

    One QAT run per model (the slow part on this CPU), exported for DeepSparse at batch 1; its
    accuracy is measured through ONNX Runtime on that same file (batch 1).
    """
    import torch

    from obert_deploy import (
        DynamicInt8Config,
        ExportConfig,
        QATConfig,
        evaluate,
        export_onnx,
        load_tokenizer,
        qat_export,
        quantize_onnx,
        size_report,
    )

    torch.set_num_threads(args.threads)
    reference = RUNS_DIR / "dense-6l-ort-fp32.onnx"
    dev = data_dir("SST-2") / "dev.tsv"
    for label, checkpoint in _chosen(args).items():
        if not (checkpoint / "model.safetensors").is_file():
            print(f"skipping {label}: {checkpoint} missing (run its step first)", flush=True)
            continue
        tokenizer = load_tokenizer(checkpoint)
        fp32 = RUNS_DIR / f"{label}-ort-fp32.onnx"
        if not fp32.exists():
            export_onnx(checkpoint, fp32, ExportConfig(engine="onnxruntime", seq_len=SEQ))
        dyn = RUNS_DIR / f"{label}-ort-int8.onnx"
        if not dyn.exists():
            quantize_onnx(fp32, dyn, DynamicInt8Config())
        f = {"ort fp32": str(fp32), "ort int8 dynamic": str(dyn)}
        for batch in (1, 16):
            ds = RUNS_DIR / f"{label}-ds-fp32-b{batch}.onnx"
            if not ds.exists():
                export_onnx(checkpoint, ds, ExportConfig(engine="deepsparse", batch_size=batch,
                                                         seq_len=SEQ))  # fmt: skip
            f[f"ds fp32 b{batch}"] = str(ds)
        qat = RUNS_DIR / f"{label}-ds-qat-b1.onnx"
        if not qat.exists():
            batches = _qat_batches(tokenizer, args.qat_steps)
            config = QATConfig(engine="deepsparse", steps=args.qat_steps, seq_len=SEQ)
            qat_export(checkpoint, qat, batches, config)
        f["ds int8 QAT b1"] = str(qat)
        result = evaluate(checkpoint, [fp32, dyn], data=dev, seq_len=SEQ, batch_size=32,
                          threads=args.threads)  # fmt: skip
        qat_result = evaluate(checkpoint, [qat], data=dev, seq_len=SEQ, batch_size=1,
                              threads=args.threads)  # fmt: skip
        sizes = {k: size_report(v, reference=reference).to_dict() for k, v in f.items()
                 if "b16" not in k}  # fmt: skip
        save_entry(RESULTS, label, {"checkpoint": str(checkpoint.relative_to(REPO)), "files": f,
                                    "evaluate": result.to_dict(),
                                    "evaluate_qat": qat_result.to_dict(), "sizes": sizes,
                                    "qat_steps": args.qat_steps}, section="deploy")  # fmt: skip
        print(f"{label}:\n{result.to_markdown()}\n{qat_result.to_markdown()}", flush=True)


def cmd_bench(args: argparse.Namespace) -> None:
    """Latency of every export (best of --repeats), waiting for a quiet CPU if --quiet < 1."""
    import deploy_minilm as dm

    from obert_deploy import write_results_json

    dm.OUT = RUNS_DIR
    section = args.section
    suffix = "" if section == "latency" else f"-{section}"
    dm.CACHE = RUNS_DIR / f"bench-cache{suffix}.jsonl"
    dm.QUIET = args.quiet
    deploy = load_results(RESULTS).get("deploy", {})
    if args.models:  # the chosen models and the dense 6-layer baseline, measured in this run
        if section == "latency":
            sys.exit("--models measures some models again: give them their own --section")
        chosen = _chosen(args)
        missing = [m for m in chosen if m not in deploy]
        if missing:
            sys.exit(f"--models {missing}: no `deploy` entry yet; run deploy --models first")
        keep = {*chosen, "dense-6l"}
        deploy = {m: e for m, e in deploy.items() if m in keep}
    results = []
    for batch in (1, 16):
        ort = {f"{m} {k[4:]}": (v, "") for m, e in deploy.items() for k, v in e["files"].items()
               if k.startswith("ort ")}  # fmt: skip
        ds = {f"{m} {' '.join(k.split()[1:-1])}": (v, "") for m, e in deploy.items()
              for k, v in e["files"].items()
              if k.startswith("ds ") and k.endswith(f" b{batch}")}  # fmt: skip
        results += dm._bench_ort(ort, batch, args.repeats)
        results += dm._bench_deepsparse(ds, batch, args.repeats)
    write_results_json(results, RUNS_DIR / f"bench{suffix}.json")
    save_entry(RESULTS, section, {"results": [r.to_dict() for r in results]}, section="bench")


def cmd_static(args: argparse.Namespace) -> None:
    """Static int8 in the form DeepSparse accelerates (PTQ, QOperator, per-tensor MatMuls).

    The QAT files of ``deploy`` are QDQ graphs, which DeepSparse 1.8 runs slower than fp32
    (docs/deploy.md, int8 forms); this adds, per model and batch size, the static QOperator
    file calibrated on 128 SST-2 training sentences (``StaticInt8Config.for_engine``), its
    accuracy through ONNX Runtime on the batch-1 file and its size, to the ``deploy`` entry.
    """
    import deploy_minilm as dm

    from obert_deploy import StaticInt8Config, evaluate, load_tokenizer, quantize_onnx, size_report

    deploy = load_results(RESULTS).get("deploy", {})
    reference = RUNS_DIR / "dense-6l-ort-fp32.onnx"
    dev = data_dir("SST-2") / "dev.tsv"
    for label, checkpoint in _chosen(args).items():
        entry = deploy.get(label)
        if entry is None:
            print(f"skipping {label}: run `deploy` first", flush=True)
            continue
        if "evaluate_static" in entry and not args.force:
            continue
        tokenizer = load_tokenizer(checkpoint)
        files = dict(entry["files"])
        for batch in (1, 16):
            source = Path(files[f"ds fp32 b{batch}"])
            target = RUNS_DIR / f"{label}-ds-int8-static-b{batch}.onnx"
            if not target.exists() or args.force:
                config = StaticInt8Config.for_engine("deepsparse")
                q = quantize_onnx(
                    source, target, config, calibration=dm.calibration(tokenizer, batch)
                )
                if not q.sparsity_kept:
                    sys.exit(f"{target}: int8 lost the sparsity of {source}")
            files[f"ds int8 static b{batch}"] = str(target)
        static_b1 = Path(files["ds int8 static b1"])
        result = evaluate(checkpoint, [static_b1], data=dev, seq_len=SEQ, batch_size=1,
                          threads=args.threads)  # fmt: skip
        sizes = dict(entry["sizes"])
        sizes["ds int8 static b1"] = size_report(static_b1, reference=reference).to_dict()
        update = {"files": files, "sizes": sizes, "evaluate_static": result.to_dict()}
        save_entry(RESULTS, label, {**entry, **update}, section="deploy")
        print(f"{label}:\n{result.to_markdown()}", flush=True)


ROWS = (  # (file key in the deploy entry, engine, precision)
    ("ort fp32", "onnxruntime", "fp32"),
    ("ort int8 dynamic", "onnxruntime", "int8 dynamic (PTQ)"),
    ("ds fp32", "deepsparse", "fp32"),
    ("ds int8 QAT", "deepsparse", "int8 QAT"),
    ("ds int8 static", "deepsparse", "int8 static (PTQ)"),
)


def _accuracy(entry: dict[str, Any], path: str) -> float | None:
    for section in ("evaluate", "evaluate_qat", "evaluate_static"):
        for result in entry.get(section, {}).get("results", []):
            if result["model"] == path:
                return float(result["metrics"]["accuracy"])
    return None


def report_rows(data: dict[str, Any], section: str = "latency") -> list[dict[str, Any]]:
    """One row per (model, engine, precision): accuracy, size, p50 latency, speed-up.

    Latencies and speed-ups come from one bench run (``section``); speed-ups are over that
    run's own dense fp32 6-layer ONNX Runtime measurement.
    """
    runs, deploy = data.get("runs", {}), data.get("deploy", {})
    bench = data.get("bench", {}).get(section, {}).get("results", [])
    p50 = {(r["name"], r["engine"], r["batch_size"]): r["latency_ms"]["p50"] for r in bench}
    base = {b: p50.get(("dense-6l fp32", "onnxruntime", b)) for b in (1, 16)}
    rows = []
    for label, entry in deploy.items():
        layers = 6 if label.startswith(("dense-6l", "6l-")) else 3
        sparsity = runs.get(label, {}).get("sparsity", 0.0)
        if label == "6l-b4-80":
            sparsity = 0.8
        for key, engine, precision in ROWS:
            name = f"{label} {key[4:] if engine == 'onnxruntime' else key[3:]}"
            if engine == "onnxruntime":
                path = entry["files"][key]
                accuracy = _accuracy(entry, path)
                size = entry["sizes"][key]
            elif precision == "fp32":  # the same weights as the ONNX Runtime fp32 export
                accuracy = _accuracy(entry, entry["files"]["ort fp32"])
                size = entry["sizes"]["ds fp32 b1"]
            elif f"{key} b1" not in entry["files"]:
                continue  # `static` not run for this model yet
            else:  # measured through ONNX Runtime on the DeepSparse int8 file itself
                accuracy = _accuracy(entry, entry["files"][f"{key} b1"])
                size = entry["sizes"][f"{key} b1"]
            row = {"model": label, "layers": layers, "sparsity": sparsity,
                   "pattern": "dense" if label == "dense-6l" else "4-block",
                   "engine": engine, "precision": precision, "accuracy": accuracy,
                   "file_mb": size["file_bytes"] / 1e6,
                   "gzip_mb": size["gzip_bytes"] / 1e6}  # fmt: skip
            for batch in (1, 16):
                latency = p50.get((name, engine, batch))
                row[f"b{batch}_ms"] = latency
                row[f"b{batch}_speedup"] = (
                    base[batch] / latency if latency and base[batch] else None
                )
            rows.append(row)
    return rows


def cmd_report(args: argparse.Namespace) -> None:
    """The compound table (markdown) and docs/img/compound_sst2.png."""
    data = load_results(RESULTS)

    def fmt(value: float | None, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    timed: list[dict[str, Any]] = []
    for section in data.get("bench", {}) or {"latency": {}}:
        rows = report_rows(data, section)
        if section != "latency":  # a later run of some models: only what it measured
            rows = [r for r in rows if r["b1_ms"] is not None or r["b16_ms"] is not None]
        print(f"\nbench run {section!r} (speed-ups over its own dense fp32 6-layer ORT):")
        print("| layers | sparsity | pattern | engine | precision | SST-2 acc. | size (gzip) | "
              "batch 1 | batch 16 | speed-up b1 | speed-up b16 |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            acc = None if r["accuracy"] is None else 100 * r["accuracy"]
            print(
                f"| {r['layers']} | {r['sparsity']:.2f} | {r['pattern']} | {r['engine']} | "
                f"{r['precision']} | {fmt(acc, '.2f')} | {r['file_mb']:.1f} MB "
                f"({r['gzip_mb']:.1f} MB) | {fmt(r['b1_ms'], '.2f')} ms | "
                f"{fmt(r['b16_ms'], '.1f')} ms | {fmt(r['b1_speedup'], '.2f')}× | "
                f"{fmt(r['b16_speedup'], '.2f')}× |"
            )
        seen = {(t["model"], t["engine"], t["precision"]) for t in timed}
        timed += [r for r in rows if r["b1_speedup"] is not None and r["accuracy"] is not None
                  and (r["model"], r["engine"], r["precision"]) not in seen]  # fmt: skip
    for name, entry in data.get("runs", {}).items():
        points = ", ".join(f"{p['epoch']:.0f}: {100 * p['accuracy']:.2f}"
                           for p in entry.get("epoch_eval", []))  # fmt: skip
        minutes = entry["train_seconds"] / 60
        print(f"{name}: accuracy {100 * entry['metrics']['accuracy']:.2f}, sparsity "
              f"{entry['sparsity']:.4f}, {minutes:.1f} min; epochs {points}")  # fmt: skip
    if not timed:
        return
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for engine, marker in (("onnxruntime", "o"), ("deepsparse", "s")):
        pts = [r for r in timed if r["engine"] == engine]
        ax.scatter([r["b1_speedup"] for r in pts], [100 * r["accuracy"] for r in pts],
                   marker=marker, label=engine)  # fmt: skip
        for r in pts:
            ax.annotate(f"{r['layers']}L {r['sparsity']:.0%} {r['precision'].split(' ')[0]}",
                        (r["b1_speedup"], 100 * r["accuracy"]), fontsize=6)  # fmt: skip
    dense = next((r for r in timed if r["model"] == "dense-6l" and r["precision"] == "fp32"), None)
    if dense is not None:
        ax.axhline(100 * dense["accuracy"] - 3, color="grey", linestyle=":",
                   label="dense − 3 points")  # fmt: skip
    ax.axvline(6, color="grey", linestyle="--", label="6× target")
    ax.set_xlabel("batch-1 speed-up over dense fp32 6-layer on ONNX Runtime")
    ax.set_ylabel("SST-2 dev accuracy (%)")
    ax.set_title("MiniLM-L6 compound compression (layers + 4-block + int8)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = IMG / "compound_sst2.png"
    fig.savefig(out, dpi=120)
    print(f"plot: {out}")


def main() -> None:
    parser = make_parser(__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("layers", "prune", "deploy", "static", "bench", "report"):
        p = sub.add_parser(name)
        add_run_options(p, threads=1, force=True, no_progress=True)
        p.add_argument("--qat-steps", type=int, default=60)
        p.add_argument("--repeats", type=int, default=2)
        p.add_argument("--quiet", type=float, default=1.0)
        p.add_argument("--models", default="", help=f"comma-separated, of {sorted(MODELS)}")
        p.add_argument("--section", default="latency",
                       help="bench: the results entry (and cache) of this run")  # fmt: skip
        if name == "prune":
            p.add_argument("name", choices=sorted(PRUNE))
    args = parser.parse_args()
    {"layers": cmd_layers, "prune": cmd_prune, "deploy": cmd_deploy, "static": cmd_static,
     "bench": cmd_bench, "report": cmd_report}[args.cmd](args)  # fmt: skip


if __name__ == "__main__":
    main()
