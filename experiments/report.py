"""Turn bench_fisher.py pytest-benchmark JSON files into the table of docs/benchmarks.md.

    python experiments/report.py RUN1.json [RUN2.json ...]

Prints one row per (d, B, m, backend, method): wall seconds, accumulate/invert split, peak RSS
growth, the speed-up over the torch streaming update, and the batched build relative to the time
a float32 GEMM of the same 2·m·d·B flops takes at the measured GEMM throughput.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from _common import make_parser


def main(paths: list[str]) -> None:
    """Print the markdown table for the given benchmark JSON files."""
    rows: list[dict[str, Any]] = []
    gemm_gflops = None
    machine = ""
    for p in paths:
        data = json.loads(Path(p).read_text())
        ci = data.get("machine_info", {}).get("cpu", {})
        machine = f"{ci.get('brand_raw', '?')}, {ci.get('count', '?')} cores"
        for b in data["benchmarks"]:
            info = b.get("extra_info", {})
            if b["group"] == "gemm":
                n = 4096
                gemm_gflops = 2 * n**3 / b["stats"]["min"] / 1e9
                continue
            rows.append({**info, "seconds": b["stats"]["min"]})
    streaming = {
        (r["d"], r["B"], r["m"]): r["seconds"]
        for r in rows
        if r["backend"] == "torch" and r["method"] == "streaming"
    }
    head = f"Machine: {machine}"
    if gemm_gflops:
        head += f"; float32 GEMM (torch, 4096², 2 threads): {gemm_gflops:.0f} GFLOP/s"
    print(head + "\n")
    cols = ["d", "B", "m", "backend", "method", "seconds", "accumulate s", "invert s"]
    cols += ["× vs torch streaming", "× fp32-GEMM time", "peak RSS growth MB"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in sorted(rows, key=lambda r: (r["d"], r["B"], r["m"], r["method"], r["backend"])):
        key = (r["d"], r["B"], r["m"])
        sp = f"{streaming[key] / r['seconds']:.1f}" if key in streaming else "–"
        gemm = "–"
        if gemm_gflops and r["method"].startswith("batched"):
            ideal = 2 * r["m"] * r["d"] * r["B"] / gemm_gflops / 1e9
            gemm = f"{r['seconds'] / ideal:.1f}"
        cells = [f"{r['d']:,}", r["B"], r["m"], r["backend"], r["method"], f"{r['seconds']:.2f}"]
        cells += [
            f"{r.get('accumulate_s', float('nan')):.2f}",
            f"{r.get('invert_s', float('nan')):.2f}",
        ]
        cells += [sp, gemm, r.get("peak_rss_growth_mb", "–")]
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    parser = make_parser(__doc__)
    parser.add_argument("paths", nargs="*", metavar="RUN.json", help="pytest-benchmark JSON files")
    main(parser.parse_args().paths)
