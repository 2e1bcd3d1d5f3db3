"""Compound *structured* compression on SST-2 (issue 21): fewer layers, neurons, heads, then int8.

The path that needs no sparse kernel: MiniLM-L6 fine-tuned on SST-2 (``gradual_sst2.py teacher``,
83.03 %) → 3 or 4 evenly spaced layers with dense distillation from the 6-layer model (recipe
``experiments/recipes/compound-structured-student.yaml``: ``!LayerDroppingModifier`` and 16,000
sentences, 1 epoch) → gradual structured pruning of FFN neurons and attention heads, HEAPr scores
with the OBS re-fit, ``allocation: uniform`` (every layer keeps the same count), with or without
KD from the 6-layer model (``compound-structured-kd.yaml`` / ``compound-structured.yaml``, the
budgets set through the recipes' variables) → ``shrink_model`` (a checkpoint with a smaller
``intermediate_size`` that plain ``from_pretrained`` loads) → ONNX (``export_onnx`` also cuts the
removed heads) → int8 (ONNX Runtime dynamic and static) → latency on ONNX Runtime and OpenVINO
(batch 1 and 16, 128 tokens), each bench run with its own dense 6-layer fp32 ONNX Runtime
baseline. Sub-commands::

    .venv/bin/python experiments/compound_structured_sst2.py student --layers 3  # and 4; 3 --all
    .venv/bin/python experiments/compound_structured_sst2.py prune l3-75-50-kd   # see PRUNE
    .venv/bin/python experiments/compound_structured_sst2.py deploy    # shrink, ONNX, int8
    .venv/bin/python experiments/compound_structured_sst2.py bench     # wants a quiet CPU
    .venv/bin/python experiments/compound_structured_sst2.py report

Training runs resume when killed; results: ``experiments/results/compound_structured_sst2.json``;
files in ``runs/compound-structured/``.
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
    cpu_info,
    data_dir,
    done,
    epoch_eval,
    load_results,
    make_parser,
    save_entry,
    train,
)

RUNS_DIR = RUNS_ROOT / "compound-structured"
RESULTS = RESULTS_DIR / "compound_structured_sst2.json"
TEACHER = RUNS_ROOT / "gradual-sst2" / "teacher"
STUDENTS: dict[str, tuple[int, int | None]] = {
    "student-l3": (3, 16000),
    "student-l4": (4, 16000),
    "student-l3-all": (3, None),
}
"""Student -> (layers, SST-2 training sentences of its dense KD; None = all 67,349)."""
SEQ = 128

BUDGETS = {
    "75-50": {"ffn_init": 0.3, "ffn_final": 0.75, "heads_init": 0.25, "heads_final": 0.5},
    "88-67": {"ffn_init": 0.4, "ffn_final": 0.875, "heads_init": 0.25, "heads_final": 2 / 3},
}
"""Structured budgets: fractions of FFN neurons / heads removed (every layer the same). ``75-50``
keeps 384 of 1,536 neurons and 6 of 12 heads per layer; ``88-67`` keeps 192 and 4."""
PRUNE: dict[str, tuple[int, str, bool, str, int]] = {
    f"l{layers}-{budget}-{kd}": (layers, budget, kd == "kd", f"student-l{layers}", 4000)
    for layers in (3, 4)
    for budget in BUDGETS
    for kd in ("kd", "nokd")
} | {f"l3-{budget}-kd-all": (3, budget, True, "student-l3-all", 16000) for budget in BUDGETS}
"""Run -> (layers, budget, with KD, the student it starts from, SST-2 training sentences).
The ``-all`` runs are the larger budget: the 3-layer student distilled on all of SST-2's
training sentences, pruned on 16,000 of them."""


def sst2_task(tokenizer: Any, samples: int | None, seed: int = 42) -> Any:
    from obert_train import load_task

    return load_task("sst2", tokenizer, data_dir=data_dir("SST-2"), max_seq_length=64,
                     max_train_samples=samples, seed=seed)  # fmt: skip


def cmd_student(args: argparse.Namespace) -> None:
    """Drop to ``--layers`` layers and distil dense from the 6-layer model (one recipe)."""
    name = f"student-l{args.layers}" + ("-all" if args.all else "")
    if done(RESULTS, name, args.force):
        return
    if not (TEACHER / "model.safetensors").is_file():
        sys.exit(f"no teacher at {TEACHER}: run `gradual_sst2.py teacher` first")
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(TEACHER)
    task = sst2_task(tokenizer, STUDENTS[name][1])
    torch.manual_seed(42)
    evaluator, points = epoch_eval(task)
    train(
        name=name, results=RESULTS, recipe="compound-structured-student", task=task,
        model=task.load_model(str(TEACHER)), model_name=str(TEACHER), tokenizer=tokenizer,
        out=RUNS_DIR / name, teacher=task.load_model(str(TEACHER)), batch_size=32,
        overrides={"num_layers": args.layers}, callbacks=[evaluator],
        progress=not args.no_progress,
        before_save=lambda e: e.update(epoch_eval=points, layers=args.layers),
    )  # fmt: skip


def cmd_prune(args: argparse.Namespace) -> None:
    """Gradual structured pruning of a student, with or without KD from the 6-layer model."""
    name = args.name
    if done(RESULTS, name, args.force):
        return
    layers, budget, kd, student, samples = PRUNE[name]
    start = RUNS_DIR / student
    if not (start / "model.safetensors").is_file():
        sys.exit(f"{start} missing: run `student` for {student} first")
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(start)
    task = sst2_task(tokenizer, samples)
    torch.manual_seed(42)
    evaluator, points = epoch_eval(task)
    train(
        name=name, results=RESULTS,
        recipe="compound-structured-kd" if kd else "compound-structured", task=task,
        model=task.load_model(str(start)), model_name=str(start), tokenizer=tokenizer,
        out=RUNS_DIR / name, teacher=task.load_model(str(TEACHER)) if kd else None,
        batch_size=32, overrides=dict(BUDGETS[budget]), callbacks=[evaluator],
        progress=not args.no_progress,
        before_save=lambda e: e.update(epoch_eval=points, layers=layers, budget=budget, kd=kd,
                                       starts_from=start.name),
    )  # fmt: skip


UNSTRUCTURED = RUNS_ROOT / "few-grads-sst2" / "m32-superpose"
"""The unstructured path, for the DeepSparse rows: MiniLM-L6 pruned gradually to 90 % with KD
(``few_grads_sst2.py prune --num-grads 32 --mode superpose``, 78.10 %)."""
DEPLOYED = ("dense-6l", "u90-6l", *STUDENTS, *PRUNE)
"""Models ``deploy`` exports: the dense 6-layer baseline, the 90 % unstructured model, the two
dense students (layers only) and every pruned run (its shrunk checkpoint)."""
DEEPSPARSE = ("dense-6l", "u90-6l")
"""Models also exported for DeepSparse (static shapes, fp32 and its static int8 form)."""


def _checkpoint(label: str) -> Path:
    return {"dense-6l": TEACHER, "u90-6l": UNSTRUCTURED}.get(label, RUNS_DIR / label)


def _deepsparse_files(label: str, checkpoint: Path, tokenizer: Any) -> dict[str, str]:
    """Static-shape DeepSparse exports (batch 1 and 16) and their static int8 QOperator form."""
    import deploy_minilm as dm

    from obert_deploy import ExportConfig, StaticInt8Config, export_onnx, quantize_onnx

    files: dict[str, str] = {}
    for batch in (1, 16):
        fp32 = RUNS_DIR / f"{label}-ds-fp32-b{batch}.onnx"
        if not fp32.exists():
            config = ExportConfig(engine="deepsparse", batch_size=batch, seq_len=SEQ)
            export_onnx(checkpoint, fp32, config)
        int8 = RUNS_DIR / f"{label}-ds-int8-static-b{batch}.onnx"
        if not int8.exists():
            quantize_onnx(fp32, int8, StaticInt8Config.for_engine("deepsparse"),
                          calibration=dm.calibration(tokenizer, batch))  # fmt: skip
        files |= {f"fp32 b{batch}": str(fp32), f"int8 static b{batch}": str(int8)}
    return files


def _shrink(label: str) -> tuple[Path, dict[str, Any]]:
    """``obert-train shrink`` of a pruned run (the CLI a user runs); the dense ones as they are."""
    import json
    import subprocess

    source = _checkpoint(label)
    if label not in PRUNE:
        return source, {}
    out = RUNS_DIR / f"{label}-shrunk"
    if not (out / "model.safetensors").is_file():
        cli = Path(sys.executable).with_name("obert-train")
        command = [str(cli), "shrink", str(source), "--output-dir", str(out), "--no-progress"]
        subprocess.run(command, check=True)
    report: dict[str, Any] = json.loads((out / "shrink.json").read_text())
    return out, report


def _reload_parity(checkpoint: Path, onnx_path: Path, tokenizer: Any) -> dict[str, Any]:
    """Plain ``from_pretrained`` of ``checkpoint`` against its ONNX export on 32 dev sentences."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from obert_deploy import read_glue_tsv, tokenize

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    texts = read_glue_tsv(data_dir("SST-2") / "dev.tsv", max_samples=32).texts
    feeds = tokenize(tokenizer, texts, SEQ, ["input_ids", "attention_mask", "token_type_ids"])
    with torch.inference_mode():
        ref = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.double().numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    got = session.run(None, {k: v for k, v in feeds.items() if k in names})[0].astype(np.float64)
    config = AutoConfig.from_pretrained(checkpoint)
    return {
        "max_abs_diff": float(np.abs(ref - got).max()),
        "sentences": len(texts),
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }


def cmd_deploy(args: argparse.Namespace) -> None:
    """Shrink, reload check, ONNX fp32 + int8 (dynamic, static), dev accuracy and size."""
    import deploy_minilm as dm
    import torch

    from obert_deploy import (
        DynamicInt8Config,
        ExportConfig,
        StaticInt8Config,
        evaluate,
        export_onnx,
        load_tokenizer,
        quantize_onnx,
        size_report,
    )

    torch.set_num_threads(args.threads)
    reference = RUNS_DIR / "dense-6l-fp32.onnx"
    dev = data_dir("SST-2") / "dev.tsv"
    deployed = load_results(RESULTS).get("deploy", {})
    for label in DEPLOYED:
        if label in deployed and not args.force:
            continue
        if not (_checkpoint(label) / "model.safetensors").is_file():
            print(f"skipping {label}: not trained yet", flush=True)
            continue
        checkpoint, shrink = _shrink(label)
        tokenizer = load_tokenizer(checkpoint)
        fp32 = RUNS_DIR / f"{label}-fp32.onnx"
        if not fp32.exists():
            export_onnx(checkpoint, fp32, ExportConfig(engine="onnxruntime", seq_len=SEQ))
        dyn = RUNS_DIR / f"{label}-int8-dynamic.onnx"
        if not dyn.exists():
            quantize_onnx(fp32, dyn, DynamicInt8Config())
        static = RUNS_DIR / f"{label}-int8-static.onnx"
        if not static.exists():
            quantize_onnx(fp32, static, StaticInt8Config.for_engine("onnxruntime"),
                          calibration=dm.calibration(tokenizer, 1))  # fmt: skip
        files = {"fp32": str(fp32), "int8 dynamic": str(dyn), "int8 static": str(static)}
        result = evaluate(checkpoint, [fp32, dyn, static], data=dev, seq_len=SEQ, batch_size=32,
                          threads=args.threads)  # fmt: skip
        ds_files = ds_eval = None
        if label in DEEPSPARSE:  # accuracy of its int8 form through ONNX Runtime (batch 1)
            ds_files = _deepsparse_files(label, checkpoint, tokenizer)
            ds_eval = evaluate(checkpoint, [ds_files["int8 static b1"]], data=dev, seq_len=SEQ,
                               batch_size=1, threads=args.threads).to_dict()  # fmt: skip
        entry: dict[str, Any] = {
            "checkpoint": str(checkpoint.relative_to(REPO)) if checkpoint.is_relative_to(REPO)
            else str(checkpoint),
            "files": files,
            "evaluate": result.to_dict(),
            "sizes": {k: size_report(v, reference=reference).to_dict() for k, v in files.items()},
            "reload": _reload_parity(checkpoint, fp32, tokenizer),
            "shrink": shrink,
            "deepsparse_files": ds_files,
            "deepsparse_evaluate": ds_eval,
        }  # fmt: skip
        save_entry(RESULTS, label, entry, section="deploy")
        print(f"{label}: reload diff {entry['reload']['max_abs_diff']:.2e}\n"
              f"{result.to_markdown()}", flush=True)  # fmt: skip


ENGINES = ("onnxruntime", "openvino")


def _torch_latency(checkpoint: str, batch: int, iterations: int, warmup: int) -> Any:
    """Plain transformers on CPU (2 threads, ``inference_mode``): no obert code at inference.

    Returns what ``measure`` reads of a ``BenchResult``: ``latency_ms`` (p50, p90) and
    ``engine_version``.
    """
    import statistics
    import time
    from types import SimpleNamespace

    import torch
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(2)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, model.config.vocab_size, (batch, SEQ), generator=gen)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "token_type_ids": torch.zeros_like(ids)}  # fmt: skip
    samples = []
    with torch.inference_mode():
        for i in range(warmup + iterations):
            start = time.perf_counter()
            model(**inputs)
            if i >= warmup:
                samples.append(1e3 * (time.perf_counter() - start))
    ordered = sorted(samples)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    latency = {"p50": statistics.median(ordered), "p90": p90}
    return SimpleNamespace(latency_ms=latency, engine_version=torch.__version__)


def cmd_bench(args: argparse.Namespace) -> None:
    """Latency of every export on both engines, batch 1 and 16, best p50 of interleaved rounds.

    Every round measures every (file, engine, batch) once, the dense 6-layer baseline
    included, so slow drifts of the machine hit all rows alike; the best p50 over the rounds
    is kept. Waits for a quiet CPU (``--quiet``: the share of the CPUs others may use).
    """
    import deploy_minilm as dm

    from obert_deploy import BenchConfig, benchmark

    deploy = load_results(RESULTS).get("deploy", {})
    if "dense-6l" not in deploy:
        sys.exit("no dense-6l export: run `deploy` first")
    wanted = {"dense-6l", *args.models.split(",")}
    chosen = [m for m in deploy if not args.models or m in wanted]
    best: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    dm.OUT = RUNS_DIR  # where the DeepSparse runs write their result files

    def measure(label: str, precision: str, engine: str, batch: int, path: str, rnd: int) -> None:
        busy = dm._wait_quiet(args.quiet)
        iterations, warmup = (200, 20) if batch == 1 else (30, 5)
        result: Any
        if engine == "deepsparse":
            result = dm._run_deepsparse(path, f"{label} {precision}", batch)
        elif engine == "pytorch":
            result = _torch_latency(path, batch, iterations // 2, warmup)
        else:
            config = BenchConfig(engine=engine, batch_size=batch, seq_len=SEQ, threads=2,
                                 iterations=iterations, warmup=warmup)  # fmt: skip
            result = benchmark(path, config, name=f"{label} {precision}")
        p50 = result.latency_ms["p50"]
        key = (label, precision, engine, batch)
        print(f"round {rnd} {engine} b{batch} {label} {precision}: p50 {p50:.2f} ms "
              f"(others {busy:.0%})", flush=True)  # fmt: skip
        if key not in best or p50 < best[key]["p50_ms"]:
            best[key] = {"model": label, "precision": precision, "engine": engine,
                         "batch_size": batch, "p50_ms": p50, "p90_ms": result.latency_ms["p90"],
                         "engine_version": result.engine_version, "round": rnd,
                         "others_cpu_before": busy}  # fmt: skip

    deepsparse = dm.DS_PYTHON.exists()
    if not deepsparse:
        print(f"no DeepSparse environment at {dm.DS_PYTHON}: its rows are skipped")
    for round_index in range(args.repeats):
        for batch in (1, 16):
            for engine in ENGINES:
                for label in chosen:
                    for precision, path in deploy[label]["files"].items():
                        measure(label, precision, engine, batch, path, round_index)
            for label in chosen if deepsparse else ():
                for key, path in (deploy[label].get("deepsparse_files") or {}).items():
                    if key.endswith(f" b{batch}"):
                        precision = key.rsplit(" ", 1)[0]
                        measure(label, precision, "deepsparse", batch, path, round_index)
            if args.pytorch:  # the shrunk checkpoint and its zero-padded run folder
                for label in chosen:
                    entry = deploy[label]
                    forms = {"fp32": str(REPO / entry["checkpoint"])
                             if not Path(entry["checkpoint"]).is_absolute()
                             else entry["checkpoint"]}  # fmt: skip
                    if label in PRUNE:
                        forms["fp32 zero-padded"] = str(_checkpoint(label))
                    for precision, path in forms.items():
                        measure(label, precision, "pytorch", batch, path, round_index)
    save_entry(RESULTS, args.section, {"results": list(best.values()), "machine": cpu_info(),
                                       "rounds": args.repeats, "threads": 2, "seq_len": SEQ},
               section="bench")  # fmt: skip


def _latency(bench: list[dict[str, Any]]) -> dict[tuple[str, str, str, int], float]:
    return {(r["model"], r["precision"], r["engine"], r["batch_size"]): r["p50_ms"] for r in bench}


def report_rows(data: dict[str, Any], section: str = "latency") -> list[dict[str, Any]]:
    """One row per (model, precision, engine): accuracy, size, p50 latency and speed-up.

    Speed-ups are over the dense 6-layer fp32 ONNX Runtime model of the same bench run.
    """
    p50 = _latency(data.get("bench", {}).get(section, {}).get("results", []))
    base = {b: p50.get(("dense-6l", "fp32", "onnxruntime", b)) for b in (1, 16)}
    runs = data.get("runs", {})
    rows = []
    for label, entry in data.get("deploy", {}).items():
        accuracy = {r["model"]: r["metrics"]["accuracy"] for r in entry["evaluate"]["results"]}
        run = runs.get(label, {})
        reload = entry["reload"]
        for precision, path in entry["files"].items():
            for engine in ENGINES:
                row = {
                    "model": label, "precision": precision, "engine": engine,
                    "layers": reload["num_hidden_layers"],
                    "ffn": reload["intermediate_size"],
                    "heads": 12 if label not in PRUNE else
                    round(12 * (1 - BUDGETS[PRUNE[label][1]]["heads_final"])),
                    "kd": run.get("kd"),
                    "accuracy": accuracy.get(path),
                    "pytorch": entry["evaluate"]["results"][0]["metrics"]["accuracy"],
                    "file_mb": entry["sizes"][precision]["file_bytes"] / 1e6,
                    "reload_diff": reload["max_abs_diff"],
                    "parameters": reload["parameters"],
                }  # fmt: skip
                for b in (1, 16):
                    ms = p50.get((label, precision, engine, b))
                    row[f"b{b}_ms"] = ms
                    reference = base[b]
                    row[f"b{b}_speedup"] = reference / ms if ms and reference else None
                rows.append(row)
        for key, path in (entry.get("deepsparse_files") or {}).items():
            if not key.endswith(" b1"):
                continue
            precision = key.removesuffix(" b1")
            ds_accuracy = {
                r["model"]: r["metrics"]["accuracy"]
                for r in (entry.get("deepsparse_evaluate") or {}).get("results", [])
            }
            row = {
                **rows[-1],
                "precision": precision,
                "engine": "deepsparse",
                "accuracy": accuracy.get(entry["files"]["fp32"])
                if precision == "fp32"
                else ds_accuracy.get(path),
                "file_mb": Path(path).stat().st_size / 1e6 if Path(path).exists() else None,
            }
            for b in (1, 16):
                ms = p50.get((label, precision, "deepsparse", b))
                reference = base[b]
                row[f"b{b}_ms"] = ms
                row[f"b{b}_speedup"] = reference / ms if ms and reference else None
            rows.append(row)  # fmt: skip
        for precision in ("fp32", "fp32 zero-padded"):  # plain transformers
            if (label, precision, "pytorch", 1) not in p50:
                continue
            row = {**rows[-1], "precision": precision, "engine": "pytorch",
                   "accuracy": entry["evaluate"]["results"][0]["metrics"]["accuracy"],
                   "file_mb": None}  # fmt: skip
            for b in (1, 16):
                ms = p50.get((label, precision, "pytorch", b))
                reference = base[b]
                row[f"b{b}_ms"] = ms
                row[f"b{b}_speedup"] = reference / ms if ms and reference else None
            rows.append(row)
    return rows


def cmd_report(args: argparse.Namespace) -> None:
    """The markdown tables and docs/img/compound_structured_sst2.png."""
    data = load_results(RESULTS)

    def fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
        return "–" if value is None else format(scale * value, spec)

    for name, run in data.get("runs", {}).items():
        points = ", ".join(f"{p['epoch']:.2f}: {100 * p['accuracy']:.2f}"
                           for p in run.get("epoch_eval", []))  # fmt: skip
        print(f"{name}: accuracy {100 * run['metrics']['accuracy']:.2f}, "
              f"{run['train_seconds'] / 60:.1f} min; epochs {points}")  # fmt: skip
    rows = report_rows(data, args.section)
    runs = data.get("runs", {})
    print("\n| model | layers | FFN | heads | KD | sentences | PyTorch | ONNX fp32 | int8 dynamic "
          "| int8 static | fp32 MB | int8 MB | parameters |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label in data.get("deploy", {}):
        mine = {(r["precision"], r["engine"]): r for r in rows if r["model"] == label}
        first = mine[("fp32", "onnxruntime")]
        kd = "–" if first["kd"] is None else ("yes" if first["kd"] else "no")
        sentences = runs.get(label, {}).get("train_examples", "–")
        acc = [fmt(mine[(p, "onnxruntime")]["accuracy"], ".2f", 100)
               for p in ("fp32", "int8 dynamic", "int8 static")]  # fmt: skip
        print(f"| {label} | {first['layers']} | {first['ffn']} | {first['heads']} | {kd} | "
              f"{sentences} | {fmt(first['pytorch'], '.2f', 100)} | {' | '.join(acc)} | "
              f"{fmt(first['file_mb'], '.1f')} | "
              f"{fmt(mine[('int8 dynamic', 'onnxruntime')]['file_mb'], '.1f')} | "
              f"{first['parameters']:,} |")  # fmt: skip
    print("\nlatency (best p50 of the run's rounds; speed-up over dense fp32 ONNX Runtime):")
    print("| model | engine | precision | SST-2 acc. | b1 ms | b16 ms | speed-up b1 / b16 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["b1_ms"] is None and r["b16_ms"] is None:
            continue
        print(f"| {r['model']} | {r['engine']} | {r['precision']} | "
              f"{fmt(r['accuracy'], '.2f', 100)} | {fmt(r['b1_ms'], '.2f')} | "
              f"{fmt(r['b16_ms'], '.1f')} | "
              f"{fmt(r['b1_speedup'], '.2f')}× / {fmt(r['b16_speedup'], '.2f')}× |")  # fmt: skip
    print("\nreload (plain from_pretrained vs its ONNX export, max |logit difference|):")
    for label, entry in data.get("deploy", {}).items():
        r = entry["reload"]
        print(
            f"  {label}: {r['max_abs_diff']:.2e} ({r['num_hidden_layers']} layers, "
            f"intermediate_size {r['intermediate_size']}, {r['parameters']:,} parameters)"
        )
    timed = [r for r in rows if r["b1_speedup"] is not None and r["accuracy"] is not None]
    if not timed:
        return
    import matplotlib.pyplot as plt

    dense = next(r for r in timed if r["model"] == "dense-6l" and r["precision"] == "fp32")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    for ax, engine in zip(axes, ENGINES, strict=True):
        for precision, marker in (("fp32", "o"), ("int8 dynamic", "s"), ("int8 static", "^")):
            pts = [r for r in timed if r["engine"] == engine and r["precision"] == precision]
            ax.scatter([r["b1_speedup"] for r in pts], [100 * r["accuracy"] for r in pts],
                       marker=marker, label=precision)  # fmt: skip
            for r in pts:
                name = ("6L 90 % unstructured" if r["model"] == "u90-6l"
                        else f"{r['layers']}L {r['ffn']}/{r['heads']}h")  # fmt: skip
                ax.annotate(name + ("" if r["kd"] is not False else " no KD"),
                            (r["b1_speedup"], 100 * r["accuracy"]), fontsize=6,
                            xytext=(3, 2), textcoords="offset points")  # fmt: skip
        top = 100 * dense["accuracy"]
        ax.axhline(top - 2, color="grey", linestyle=":", label="dense − 2 points")
        ax.axhline(top - 1, color="grey", linestyle="-.", label="dense − 1 point")
        ax.axvline(8, color="grey", linestyle="--", label="8×")
        ax.axvline(4, color="lightgrey", linestyle="--", label="4×")
        ax.set_xlabel(f"batch-1 speed-up over dense fp32 on ONNX Runtime\n(this run: {engine})")
        ax.set_title(f"{engine}", fontsize=10)
    axes[0].set_ylabel("SST-2 dev accuracy (%)")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=len(labels))
    fig.suptitle("MiniLM-L6 compound structured compression (layers + neurons + heads + int8)",
                 fontsize=10)  # fmt: skip
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    out = IMG / "compound_structured_sst2.png"
    fig.savefig(out, dpi=120)
    print(f"plot: {out}")


def main() -> None:
    parser = make_parser(__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("student")
    add_run_options(p, threads=1, force=True, no_progress=True)
    p.add_argument("--layers", type=int, choices=(3, 4), required=True)
    p.add_argument("--all", action="store_true", help="distil on all SST-2 training sentences")
    p = sub.add_parser("prune")
    add_run_options(p, threads=1, force=True, no_progress=True)
    p.add_argument("name", choices=sorted(PRUNE))
    p = sub.add_parser("deploy")
    add_run_options(p, threads=2, force=True)
    p = sub.add_parser("bench")
    add_run_options(p, threads=2)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (best p50 kept)")
    p.add_argument("--quiet", type=float, default=0.2)
    p.add_argument("--models", default="", help="comma-separated deploy labels (default all)")
    p.add_argument("--section", default="latency", help="the results entry of this run")
    p.add_argument("--no-pytorch", dest="pytorch", action="store_false",
                   help="skip the plain-transformers rows")  # fmt: skip
    p = sub.add_parser("report")
    p.add_argument("--section", default="latency")
    args = parser.parse_args()
    {"student": cmd_student, "prune": cmd_prune, "deploy": cmd_deploy, "bench": cmd_bench,
     "report": cmd_report}[args.cmd](args)  # fmt: skip


if __name__ == "__main__":
    main()
