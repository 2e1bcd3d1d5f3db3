"""Batched per-group gradients (torch.func) against m sequential backward passes (issue 23).

obert-train's sampler takes the m loss gradients of a pruning step as m backward passes of
batches of 16 (``obert_train.GradientSampler``). This script asks whether one
``torch.func.vmap`` of ``torch.func.grad`` of a ``functional_call`` over the m groups (optionally
in chunks, ``vmap(chunk_size=...)``) is faster on MiniLM-L6, and what it costs in memory. Same
rows, same padding (every group padded to ``--max-seq-length``), eval mode, 1 thread by default.
The vmap variants run the eager attention (SDPA's data-dependent branch on the padding mask
cannot be vmapped); ``sequential-eager`` is the same loop as ``sequential`` with it.

Each variant runs in a fresh child process (so peak RSS, ``VmHWM`` reset after the model and
data are loaded, is its own), interleaved, ``--repeats`` times; the gradients of every variant
are compared with the sequential ones (max abs difference, float32). Results are written to
``experiments/results/grad_batching.json``::

    .venv/bin/python experiments/grad_batching.py --num-grads 16 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, RUNS_ROOT, add_run_options, data_dir, make_parser, save_entry

RESULTS = RESULTS_DIR / "grad_batching.json"
TEACHER = RUNS_ROOT / "few-grads-sst2" / "teacher"


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(args: argparse.Namespace) -> None:
    """One variant in this process; prints one JSON line (times, peak RSS, gradient digest)."""
    import torch
    from transformers import AutoTokenizer

    from obert_train import load_task, resolve_target_params

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(TEACHER)
    task = load_task(
        "sst2",
        tokenizer,
        data_dir=data_dir(),
        max_seq_length=args.max_seq_length,
        max_train_samples=args.num_grads * args.batch_size,
        seed=args.seed,
    )
    model: Any = task.load_model(str(TEACHER))
    model.eval()
    if args.child != "sequential":
        # SDPA attention branches on the padding mask's values (padding_mask.all()), which vmap
        # cannot trace; the eager attention computes the same function without that branch
        model.set_attn_implementation("eager")
    params = resolve_target_params(model)
    names = list(params)
    rows = list(task.train_features)[: args.num_grads * args.batch_size]
    batch = task.collate(rows)
    length = args.max_seq_length
    groups = {}
    for key, value in batch.items():
        if value.ndim == 2 and value.shape[1] < length:  # pad every group to the same length
            pad = 0 if key != "labels" else -100
            value = torch.nn.functional.pad(value, (0, length - value.shape[1]), value=pad)
        groups[key] = value.reshape(args.num_grads, args.batch_size, *value.shape[1:])
    if args.child != "sequential":  # the eager attention's additive mask, built here (4-D)
        keep = groups["attention_mask"][:, :, None, None, :].float()
        groups["attention_mask"] = (1.0 - keep) * torch.finfo(torch.float32).min
    out = torch.empty(args.num_grads, sum(params[n].numel() for n in names))
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on
    base = _peak_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    if args.child in ("sequential", "sequential-eager"):
        for i in range(args.num_grads):
            loss = model(**{k: v[i] for k, v in groups.items()}).loss
            grads = torch.autograd.grad(loss, [params[n] for n in names])
            out[i] = torch.cat([g.reshape(-1) for g in grads])
    else:
        from torch.func import functional_call, grad, vmap

        fixed = {k: v.detach() for k, v in model.named_parameters() if k not in params}
        fixed.update(dict(model.named_buffers()))

        def loss_fn(p: dict[str, Any], b: dict[str, Any]) -> Any:
            return functional_call(model, {**fixed, **p}, (), b).loss

        chunk = None if args.child == "vmap" else int(args.child.split("-")[1])  # vmap-K
        with torch.no_grad():
            detached = {n: params[n].detach() for n in names}
        g = vmap(grad(loss_fn), in_dims=(None, 0), chunk_size=chunk)(detached, groups)
        out[:] = torch.cat([g[n].reshape(args.num_grads, -1) for n in names], dim=1)
    seconds = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    digest = out.double()
    print(
        json.dumps(
            {
                "variant": args.child,
                **seconds,
                "peak_rss_mib": _peak_mib(),
                "base_rss_mib": base,
                "sum": float(digest.sum()),
                "norms": digest.norm(dim=1).tolist(),
                "first": out[:, :: max(1, out.shape[1] // 4096)].tolist(),
            }
        ),
        flush=True,
    )


def main() -> None:
    """Run every variant in child processes, interleaved, and record the results."""
    parser = make_parser(__doc__)
    parser.add_argument("--num-grads", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["sequential", "sequential-eager", "vmap", "vmap-4"],
        help="sequential (the sampler's way, SDPA attention), sequential-eager, vmap, vmap-K "
        "(chunks of K groups); the vmap variants use the eager attention",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    add_run_options(parser, threads=1, seed=42)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
    loads = []
    for _ in range(args.repeats):
        for variant in args.variants:
            cmd = [sys.executable, __file__, "--child", variant]
            for flag in ("num_grads", "batch_size", "max_seq_length", "threads", "seed"):
                cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                runs[variant].append({"error": proc.stderr.strip().splitlines()[-3:]})
                print(variant, "failed:", proc.stderr.strip().splitlines()[-3:], flush=True)
                continue
            result = json.loads(lines[-1])
            runs[variant].append(result)
            loads.append(list(os.getloadavg()))
            print(variant, {k: result[k] for k in ("wall_s", "cpu_s", "peak_rss_mib")}, flush=True)
    ref = next((r for r in runs.get("sequential", []) if "first" in r), None)
    summary: dict[str, Any] = {}
    for variant, results in runs.items():
        ok = [r for r in results if "first" in r]
        if not ok:
            summary[variant] = {"error": results[0].get("error") if results else None}
            continue
        entry: dict[str, Any] = {
            "wall_s": [r["wall_s"] for r in ok],
            "cpu_s": [r["cpu_s"] for r in ok],
            "peak_rss_mib": [r["peak_rss_mib"] for r in ok],
            "base_rss_mib": [r["base_rss_mib"] for r in ok],
        }
        if ref is not None:
            import numpy as np

            a, b = np.asarray(ref["first"]), np.asarray(ok[0]["first"])
            entry["max_abs_diff_sampled"] = float(np.abs(a - b).max())
            entry["max_abs_sampled"] = float(np.abs(a).max())
            entry["norm_rel_diff"] = float(
                np.max(np.abs(np.asarray(ref["norms"]) - np.asarray(ok[0]["norms"])))
                / np.max(ref["norms"])
            )
        summary[variant] = entry
    from obert_core.shared import cpu_flags
    from obert_core.shared import cpu_info as machine_cpu

    record = {
        "num_grads": args.num_grads,
        "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length,
        "threads": args.threads,
        "variants": summary,
        "load_averages": loads,
        "cpu": {
            "brand": machine_cpu().brand,
            "flags": [f for f in cpu_flags() if "avx" in f or "amx" in f],
        },
        "command": " ".join(["experiments/grad_batching.py", *sys.argv[1:]]),
    }
    key = f"m{args.num_grads}-b{args.batch_size}-t{args.max_seq_length}-th{args.threads}"
    save_entry(RESULTS, key, record, "runs", machine=True)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
