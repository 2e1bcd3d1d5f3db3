"""Few gradients per Fisher block (m < B): the joint OBS update in gradual pruning (issue 23).

SparseML-era oBERT recipes use few gradients per pruning step (``num_grads: 16`` or ``32``) with
Fisher blocks of B = 50, so every block's empirical Fisher has rank at most m < B. This script runs
the project's 90 % gradual recipe (``minilm-sst2-obert90``: KD from the dense teacher, cubic
0.5 → 0.9 at epochs 1–4, 6 epochs) at m ∈ {16, 32, 128} with each OBS update ``mode``, on the
same seeded rows, and records every pruning step's quadratic-model diagnostics (predicted loss
change, update size; see ``obert_train.ObertPruning``). Sub-commands:

``teacher``
    Dense fine-tune of MiniLM-L6 (recipe ``minilm-sst2-dense``, 4,000 sentences, seed 42) ->
    ``runs/few-grads-sst2/teacher``.
``prune --num-grads M --mode MODE``
    Gradual 90 % pruning of the teacher with KD from it -> run ``m{M}-{MODE}``. Resumable.
``report``
    The Markdown table and ``docs/img/few_grads_sst2.png``.

Results are merged into ``experiments/results/few_grads_sst2.json``::

    .venv/bin/python experiments/few_grads_sst2.py teacher
    .venv/bin/python experiments/few_grads_sst2.py prune --num-grads 16 --mode joint
    .venv/bin/python experiments/few_grads_sst2.py report
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    IMG,
    RESULTS_DIR,
    RUNS_ROOT,
    add_run_options,
    data_dir,
    load_results,
    make_parser,
    minilm_dir,
    save_entry,
)
from gradual_sst2 import _run

RUNS_DIR = RUNS_ROOT / "few-grads-sst2"
RESULTS = RESULTS_DIR / "few_grads_sst2.json"
RECIPE = "minilm-sst2-obert90"
MODES = ("joint", "superpose", "auto")


def cmd_teacher(args: argparse.Namespace) -> None:
    """Fine-tune the dense teacher."""
    _run(
        "teacher",
        "minilm-sst2-dense",
        minilm_dir(),
        None,
        args,
        {},
        results=RESULTS,
        runs_dir=RUNS_DIR,
    )


HELD_OUT = 512
"""Training rows outside the run's subset, where each pruning step's loss change is measured."""


def task_loss(task: Any, model: Any, rows: list[Any], batch_size: int = 64) -> float:
    """Mean task loss (cross-entropy with the hard labels) of ``model`` over ``rows``."""
    import torch

    total = 0.0
    with torch.no_grad():
        for s in range(0, len(rows), batch_size):
            chunk = rows[s : s + batch_size]
            total += float(model(**task.collate(chunk)).loss) * len(chunk)
    return total / len(rows)


def held_out_loss(args: argparse.Namespace) -> Any:
    """``extra_callbacks`` for :func:`gradual_sst2._run`: the held-out loss around each step.

    The held-out rows are the next :data:`HELD_OUT` rows of the same seeded draw of the training
    set (``random.Random(seed).sample`` draws one row at a time, so the first ``n`` rows of a
    larger draw are the run's subset; checked). The loss is the task's cross-entropy with the
    hard labels, the loss whose Fisher oBERT builds, measured at every epoch end (the weights a
    pruning step at the next optimizer step starts from) and right after each pruning step.
    """

    def make(task: Any) -> tuple[list[Any], dict[str, Any]]:
        from transformers import AutoTokenizer, TrainerCallback

        from obert_train import load_task

        tokenizer = AutoTokenizer.from_pretrained(RUNS_DIR / "teacher")
        big = load_task(
            "sst2",
            tokenizer,
            data_dir=data_dir(),
            max_seq_length=args.max_seq_length,
            max_train_samples=args.train_samples + HELD_OUT,
            seed=args.seed,
        )
        n = len(task.train_features)
        same = all(
            a["input_ids"] == b["input_ids"]
            for a, b in zip(big.train_features[:n], task.train_features, strict=True)
        )
        if not same:
            sys.exit("the held-out rows are not disjoint from the run's subset; aborting")
        rows = big.train_features[n:]
        log: list[dict[str, Any]] = []

        def loss(model: Any) -> float:
            was = model.training
            model.eval()
            value = task_loss(task, model, rows)
            model.train(was)
            return value

        def zeros(model: Any) -> int:
            return sum(
                int((p == 0).sum()) for n_, p in model.named_parameters() if n_.endswith("weight")
            )

        class HeldOut(TrainerCallback):
            """Held-out task loss at epoch ends and right after each pruning step."""

            def __init__(self) -> None:
                self.last_zeros = -1

            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                self.last_zeros = zeros(kw["model"])

            def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                model = kw["model"]
                log.append({"event": "epoch_end", "step": state.global_step, "loss": loss(model)})

            def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                model = kw["model"]
                z = zeros(model)
                if z != self.last_zeros:  # a pruning step ran (callbacks after the pruning one)
                    self.last_zeros = z
                    log.append({"event": "pruned", "step": state.global_step, "loss": loss(model)})
                    print(f"held-out loss after pruning: {log[-1]['loss']:.4f}", flush=True)

        return [HeldOut()], {"held_out": {"rows": len(rows), "losses": log}}

    return make


def cmd_prune(args: argparse.Namespace) -> None:
    """One gradual run at ``--num-grads`` with ``--mode``."""
    teacher = RUNS_DIR / "teacher"
    if not (teacher / "model.safetensors").is_file():
        sys.exit(f"no teacher at {teacher}; run `few_grads_sst2.py teacher` first")
    overrides: dict[str, Any] = {
        "num_grads": args.num_grads,
        "mode": args.mode,
        "unseen_curvature": args.unseen,
        "diagnostics": not args.no_diagnostics,
    }
    name = f"m{args.num_grads}-{args.mode}" + ("" if args.unseen == "damp" else f"-{args.unseen}")
    if args.seed != 42:  # another draw of rows, data order and gradient batches
        name += f"-s{args.seed}"
    if args.no_diagnostics:  # the same run; the Fisher may then be overwritten by its factors
        name += "-nodiag"
    if args.label:
        name += f"-{args.label}"
    _run(
        name,
        RECIPE,
        teacher,
        teacher,
        args,
        overrides,
        results=RESULTS,
        runs_dir=RUNS_DIR,
        extra_callbacks=held_out_loss(args),
    )


def cmd_oneshot_diag(args: argparse.Namespace) -> None:
    """One-shot: the quadratic model's predicted loss change against the measured one.

    For each m, sparsity, update mode and damping: prune a copy of the teacher in one shot
    (``oneshot_prune``, ``diagnostics: true``) and measure the task loss before and after on the
    m gradient batches themselves (in-sample: the data the Fisher was built from) and on
    :data:`HELD_OUT` other training rows, the relative update size ``‖δw_R‖ / ‖w_R‖`` of the kept
    weights, and dev accuracy. One Fisher per (m, damping) serves all modes and sparsities.
    """
    import torch
    from transformers import AutoTokenizer

    from obert_train import GradientSampler, load_task, oneshot_prune

    torch.set_num_threads(args.threads)
    teacher = RUNS_DIR / "teacher"
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    task = load_task(
        "sst2",
        tokenizer,
        data_dir=data_dir(),
        max_seq_length=args.max_seq_length,
        max_train_samples=args.train_samples + HELD_OUT,
        seed=args.seed,
    )
    n = args.train_samples
    train, held = task.train_features[:n], task.train_features[n:]
    state = task.load_model(str(teacher)).state_dict()

    def fresh() -> Any:
        model: Any = task.load_model(str(teacher))
        model.load_state_dict(state)
        model.eval()
        return model

    def loss(model: Any, rows: list[Any]) -> float:
        return task_loss(task, model, rows)

    dense = fresh()
    for m, grad_seed in [(m, g) for m in args.num_grads for g in args.grad_seeds]:
        for damp in args.damps:
            cache: dict[str, Any] = {}
            seen: list[Any] = []

            def collate(rows: Any, seen: list[Any] = seen) -> Any:
                seen.extend(rows)
                return task.collate(rows)

            for mode, unseen in [(mo, u) for u in args.unseen for mo in args.modes]:
                for sparsity in args.sparsities:
                    fill = "" if unseen == "damp" else f"-{unseen}"
                    draw = f"-g{grad_seed}" if grad_seed else ""
                    key = f"m{m}-{mode}{fill}-d{damp:g}{draw}@{sparsity}"
                    data = load_results(RESULTS)
                    if key in data.get("oneshot_diag", {}) and not args.force:
                        print(f"{key}: done")
                        continue
                    model = fresh()
                    sampler = GradientSampler(
                        model, train, collate, batch_size=16, num_grads=m, seed=grad_seed
                    )
                    start = time.perf_counter()
                    result = oneshot_prune(
                        model,
                        "obert",
                        sparsity,
                        settings={
                            "num_grads": m,
                            "grad_batch_size": 16,
                            "fisher_block_size": 50,
                            "damp": damp,
                            "mode": mode,
                            "unseen_curvature": unseen,
                            "diagnostics": True,
                        },
                        sampler=sampler,
                        fisher_cache=cache,
                        progress=False,
                    )
                    seconds = time.perf_counter() - start
                    calib = seen[: m * 16]
                    diag = result.diagnostics
                    entry = {
                        "num_grads": m,
                        "grad_seed": grad_seed,
                        "mode": mode,
                        "unseen_curvature": unseen,
                        "damp": damp,
                        "sparsity": sparsity,
                        "predicted_increase": diag["predicted_increase"],
                        "update_rel": (diag["update_sq"] / diag["kept_sq"]) ** 0.5,
                        "removed_rel": (diag["removed_sq"] / (diag["kept_sq"] + diag["removed_sq"]))
                        ** 0.5,
                        "in_sample_increase": loss(model, calib) - loss(dense, calib),
                        "held_out_increase": loss(model, held) - loss(dense, held),
                        "dev_accuracy": task.evaluate(model, progress=False)["accuracy"],
                        "seconds": seconds,
                    }
                    save_entry(RESULTS, key, entry, "oneshot_diag", machine=True)
                    print(json.dumps({key: entry}), flush=True)


def _lowrank_at(rev: str) -> Any:
    """``LowRankFisher`` as committed at ``rev`` (read with ``git show``), for before/after timing.

    The class is loaded from the file's text at that commit as a module inside ``obert_core``
    (its relative imports resolve against the installed package); nothing is written.
    """
    import importlib.util
    import subprocess

    path = "packages/obert-core/src/obert_core/fisher_lowrank.py"
    root = Path(__file__).resolve().parent.parent
    text = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=root, check=True, capture_output=True, text=True
    ).stdout
    name = "obert_core._fisher_lowrank_before"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "obert_core"
    sys.modules[name] = module
    exec(compile(text, f"{rev}:{path}", "exec"), module.__dict__)
    return module.LowRankFisher


def cmd_step_cost(args: argparse.Namespace) -> None:
    """The non-gradient cost of an m < B pruning step, per Fisher form, on the same gradients.

    One set of m gradients of every MiniLM target tensor (the sampler, timed), then for each
    form the work the step does after the gradients: the Fisher object and diag(F⁻¹) for the
    scores, one global mask at ``--sparsity`` (``scores_*`` includes it, ``mask_*`` is it alone),
    and the OBS update of ``--mode`` (obert-train's
    default at m < B is ``superpose``). Forms: ``explicit`` (the float32 blocked inverse),
    ``before`` (``LowRankFisher`` as committed at ``--before``), ``after`` (the installed one).
    Masks and weights are compared with the first form's. The forms are timed in the same process,
    interleaved, ``--repeats`` times; wall and process CPU seconds of both phases are recorded
    (on a loaded machine the CPU seconds are the steadier measure).
    """
    import torch
    from transformers import AutoTokenizer

    import obert_core as oc
    from obert_core.shared import cpu_flags
    from obert_core.shared import cpu_info as machine_cpu
    from obert_train import GradientSampler, load_task, resolve_target_params

    torch.set_num_threads(args.threads)
    teacher = RUNS_DIR / "teacher"
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    task = load_task(
        "sst2",
        tokenizer,
        data_dir=data_dir(),
        max_seq_length=args.max_seq_length,
        max_train_samples=args.train_samples,
        seed=args.seed,
    )
    model: Any = task.load_model(str(teacher))
    params = resolve_target_params(model)
    sampler = GradientSampler(
        model, task.train_features, task.collate, batch_size=16, num_grads=args.num_grads
    )
    start = time.perf_counter()
    grads: dict[str, list[Any]] = {n: [] for n in params}
    for chunk in sampler.chunks(params, chunk_size=args.num_grads):
        for name, g in chunk.items():
            grads[name].append(g.clone())
    gradient_s = time.perf_counter() - start
    rows = {n: torch.cat(v) for n, v in grads.items()}
    weights = {n: p.detach().reshape(-1).float() for n, p in params.items()}
    b, damp, m = 50, 1e-7, args.num_grads
    before: Any = _lowrank_at(args.before) if "before" in args.forms else None

    def fisher(form: str, g: Any) -> Any:
        if form == "explicit":
            return oc.block_fisher_inverse(g, b, damp, dtype=torch.float32)
        return (before if form == "before" else oc.LowRankFisher)(g, b, damp)

    def step(form: str) -> tuple[dict[str, float], dict[str, Any], dict[str, Any]]:
        t0, c0 = time.perf_counter(), time.process_time()
        fishers = {n: fisher(form, g) for n, g in rows.items()}
        scores = {n: oc.obs_saliency(weights[n], f) for n, f in fishers.items()}
        tm, cm = time.perf_counter(), time.process_time()
        masks = oc.select_mask(scores, args.sparsity)
        t1, c1 = time.perf_counter(), time.process_time()
        new = {
            n: oc.obs_update(weights[n], f, ~masks[n], mode=args.mode) for n, f in fishers.items()
        }
        t2, c2 = time.perf_counter(), time.process_time()
        del fishers
        seconds = {
            "wall_s": t2 - t0,
            "cpu_s": c2 - c0,
            "scores_wall_s": t1 - t0,
            "scores_cpu_s": c1 - c0,
            "mask_wall_s": t1 - tm,
            "mask_cpu_s": c1 - cm,
            "update_wall_s": t2 - t1,
            "update_cpu_s": c2 - c1,
        }
        return seconds, masks, new

    times: dict[str, list[dict[str, float]]] = {f: [] for f in args.forms}
    out: dict[str, Any] = {}
    loads = [list(os.getloadavg())]
    for _ in range(args.repeats):
        for form in args.forms:
            seconds, masks, new = step(form)
            times[form].append(seconds)
            out[form] = (masks, new)
            loads.append(list(os.getloadavg()))
            print(form, json.dumps(seconds), flush=True)
    ref = args.forms[0]
    compare = {}
    for form in args.forms[1:]:
        same = all(torch.equal(out[ref][0][n], out[form][0][n]) for n in params)
        diff = max(float((out[ref][1][n] - out[form][1][n]).abs().max()) for n in params)
        compare[f"{form}_vs_{ref}"] = {"same_masks": same, "max_weight_diff": diff}
    cpu = machine_cpu()
    entry = {
        "num_grads": m,
        "block_size": b,
        "damp": damp,
        "sparsity": args.sparsity,
        "mode": args.mode,
        "threads": args.threads,
        "forms": list(args.forms),
        "before": args.before,
        "gradient_s": gradient_s,
        "times": times,
        "compare": compare,
        "max_weight": max(float(w.abs().max()) for w in weights.values()),
        "load_averages": loads,
        "cpu": {"brand": cpu.brand, "flags": [f for f in cpu_flags() if "avx" in f or "amx" in f]},
        "command": " ".join(["experiments/few_grads_sst2.py", *sys.argv[1:]]),
    }
    key = f"m{m}@{args.sparsity}-{args.mode}-" + "-".join(args.forms)
    save_entry(RESULTS, key, entry, "step_cost", machine=True)
    print(json.dumps(entry, indent=1))


def _steps(entry: dict[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = entry.get("pruning_steps") or []
    return steps


def _seed_table(diag: dict[str, Any]) -> None:
    """Joint against superposed update over the gradient draws (paper's Fisher, λ = 1e-7)."""
    import statistics

    cells: dict[tuple[int, float], dict[str, dict[int, dict[str, Any]]]] = {}
    for e in diag.values():
        if e.get("unseen_curvature", "damp") != "damp" or e["damp"] != 1e-7:
            continue
        if e["mode"] not in ("joint", "superpose"):
            continue
        cell = cells.setdefault((e["num_grads"], e["sparsity"]), {})
        cell.setdefault(e["mode"], {})[e.get("grad_seed", 0)] = e
    print(
        "| m | sparsity | draws | joint: dev accuracy | superpose: dev accuracy | "
        "joint − superpose (paired) | ‖δw_R‖ joint / superpose |"
    )
    print("|---|---|---|---|---|---|---|")

    def ms(xs: list[float]) -> str:
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{statistics.mean(xs):.2f} ± {sd:.2f}"

    for (m, sparsity), cell in sorted(cells.items()):
        seeds = sorted(set(cell.get("joint", {})) & set(cell.get("superpose", {})))
        if not seeds:
            continue
        joint = [100 * cell["joint"][g]["dev_accuracy"] for g in seeds]
        sup = [100 * cell["superpose"][g]["dev_accuracy"] for g in seeds]
        ratio = [cell["joint"][g]["update_rel"] / cell["superpose"][g]["update_rel"] for g in seeds]
        diff = [a - b for a, b in zip(joint, sup, strict=True)]
        wins = sum(d < 0 for d in diff)
        print(
            f"| {m} | {sparsity:.0%} | {len(seeds)} | {ms(joint)} | {ms(sup)} | "
            f"{ms(diff)} (superpose ahead in {wins} of {len(seeds)}) | "
            f"{statistics.mean(ratio):.2f} |"
        )
    print()


def cmd_report(args: argparse.Namespace) -> None:
    """Print the table and draw the accuracy plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = load_results(RESULTS)
    diag = data.get("oneshot_diag", {})
    if diag:
        print(
            "| m | update | Fisher | sparsity | predicted ΔL | in-sample ΔL | held-out ΔL |"
            " ‖δw_R‖/‖w_R‖ | dev accuracy |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        order = sorted(
            diag.values(),
            key=lambda e: (
                e["num_grads"],
                e["sparsity"],
                e["mode"],
                e.get("unseen_curvature", "damp"),
            ),
        )
        for e in order:
            fisher = "λ (paper)" if e.get("unseen_curvature", "damp") == "damp" else "Eq. U"
            print(
                f"| {e['num_grads']} | {e['mode']} | {fisher} | {e['sparsity']:.0%} | "
                f"{e['predicted_increase']:.2g} | {e['in_sample_increase']:.3f} | "
                f"{e['held_out_increase']:.3f} | {e['update_rel']:.3f} | "
                f"{100 * e['dev_accuracy']:.2f} |"
            )
        print()
        _seed_table(diag)
    for key, e in data.get("step_cost", {}).items():
        if "times" in e:
            for form, reps in e["times"].items():
                cpu = ", ".join(f"{r['scores_cpu_s']:.1f}+{r['update_cpu_s']:.1f}" for r in reps)
                print(f"step cost {key} {form}: CPU s (scores+mask + update) {cpu}")
            print(f"  gradients {e['gradient_s']:.1f} s, {e['compare']}, load {e['load_averages']}")
            continue
        print(
            f"step cost {key}: gradients {e['gradient_s']:.1f} s, explicit {e['explicit_s']}, "
            f"low-rank {e['lowrank_s']}, same masks {e['same_masks']}, "
            f"max weight diff {e['max_weight_diff']:.2g} of {e['max_weight']:.3g}, "
            f"load {e['load_average']}"
        )
    runs = data["runs"]
    dense = runs.get("teacher", {}).get("dev_accuracy")
    print("| m | mode | dev accuracy | Δ vs dense | pruning steps (s each) | run time |")
    print("|---|---|---|---|---|---|")
    if dense is not None:
        print(f"| – | dense teacher | {100 * dense:.2f} | | | |")
    points: dict[str, list[tuple[int, float]]] = {}
    for name, entry in sorted(runs.items(), key=lambda kv: (len(kv[0]), kv[0])):
        if name.startswith("teacher") or entry.get("dev_accuracy") is None:
            continue
        m, mode = name[1:].split("-", 1)
        acc = 100 * entry["dev_accuracy"]
        delta = "" if dense is None else f"{acc - 100 * dense:+.2f}"
        secs = ", ".join(f"{s.get('seconds', 0):.0f}" for s in _steps(entry))
        wall = entry.get("wall_seconds", 0) / 60
        print(f"| {m} | {mode} | {acc:.2f} | {delta} | {secs} | {wall:.1f} min |")
        points.setdefault(mode, []).append((int(m), acc))
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    for mode, pts in sorted(points.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=mode)
    if dense is not None:
        ax.axhline(100 * dense, color="grey", linestyle=":", label="dense teacher")
    ax.axvline(50, color="black", linewidth=0.8, linestyle="--", label="m = B = 50")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("gradients per pruning step m")
    ax.set_ylabel("SST-2 dev accuracy (%)")
    ax.set_title("Gradual oBERT 90 % + KD, MiniLM-L6: OBS update mode vs m")
    ax.legend()
    fig.savefig(IMG / "few_grads_sst2.png", dpi=120)
    print(f"wrote {IMG / 'few_grads_sst2.png'}")


def main() -> None:
    """Parse the command line and run one sub-command."""
    parser = make_parser(__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("teacher", "prune", "oneshot-diag", "step-cost", "report"):
        p = sub.add_parser(name)
        if name == "report":
            continue
        if name == "step-cost":
            p.add_argument("--num-grads", type=int, default=16)
            p.add_argument("--sparsity", type=float, default=0.5)
            p.add_argument("--repeats", type=int, default=2)
            p.add_argument("--mode", choices=MODES, default="superpose")
            p.add_argument(
                "--forms",
                nargs="+",
                choices=["explicit", "before", "after"],
                default=["before", "after"],
            )
            p.add_argument(
                "--before",
                default="092ea31",
                help="the commit whose LowRankFisher is 'before' (default: the one before issue "
                "23's factor cache)",
            )
        if name == "oneshot-diag":
            p.add_argument("--num-grads", type=int, nargs="*", default=[16, 32, 128])
            p.add_argument("--modes", nargs="*", choices=MODES, default=list(MODES))
            p.add_argument("--damps", type=float, nargs="*", default=[1e-7])
            p.add_argument("--unseen", nargs="*", choices=["damp", "mean"], default=["damp"])
            p.add_argument("--sparsities", type=float, nargs="*", default=[0.5, 0.7, 0.9])
            p.add_argument(
                "--grad-seeds",
                type=int,
                nargs="*",
                default=[0],
                help="seeds of the gradient sampler's batch draw (one Fisher each)",
            )
        p.add_argument("--train-samples", type=int, default=None)
        p.add_argument("--max-seq-length", type=int, default=64)
        p.add_argument("--batch-size", type=int, default=32)
        add_run_options(p, threads=2, seed=42, force=True, no_progress=True)
        if name == "prune":
            p.add_argument("--num-grads", type=int, required=True)
            p.add_argument("--mode", choices=MODES, required=True)
            p.add_argument("--unseen", choices=["damp", "mean"], default="damp")
            p.add_argument(
                "--no-diagnostics",
                action="store_true",
                help="record no quadratic-model diagnostics (they read the Gram after the "
                "scores, so a step with them keeps it; without them a gradual superposed "
                "step solves with the factors kept in the Gram)",
            )
            p.add_argument(
                "--label",
                default="",
                help="appended to the run's name (e.g. the machine or the code it measures), so "
                "a rerun of the same settings gets its own entry",
            )
    args = parser.parse_args()
    if args.cmd == "teacher" and args.train_samples is None:
        args.train_samples = 4000
    if args.cmd in ("prune", "oneshot-diag", "step-cost") and args.train_samples is None:
        args.train_samples = 2000
    commands = {
        "teacher": cmd_teacher,
        "prune": cmd_prune,
        "oneshot-diag": cmd_oneshot_diag,
        "step-cost": cmd_step_cost,
        "report": cmd_report,
    }
    commands[args.cmd](args)


if __name__ == "__main__":
    main()
