"""Zeroth-order fine-tuning and black-box OBS on MiniLM-L6 / SST-2 (DeepZero, issue 20).

Sub-commands (run from the repository root, in this order; 1 thread each, the CPU is shared)::

    .venv/bin/python experiments/zo_minilm.py prune      # one-shot oBERT / magnitude 70, 80 %
    .venv/bin/python experiments/zo_minilm.py sweep      # MeZO lr x mu, short runs
    .venv/bin/python experiments/zo_minilm.py finetune   # FO vs dense / sparse MeZO, same wall time
    .venv/bin/python experiments/zo_minilm.py recover    # sparse MeZO vs masked FO after pruning
    .venv/bin/python experiments/zo_minilm.py obs        # black-box OBS through ONNX Runtime
    .venv/bin/python experiments/zo_minilm.py report     # tables + docs/img/zo_minilm_*.png

``prune``
    The fine-tuned dense MiniLM of ``experiments/oneshot_sst2.py finetune``
    (``runs/minilm-sst2-dense``) one-shot pruned (``obert_train.oneshot_prune``) at 70 % and 80 %
    of the encoder Linear weights with oBERT (joint, m gradients of mini-batches of 16, Fisher
    blocks of 50, damp 1e-7) and global magnitude; the pruned weights go to
    ``runs/zo-minilm/pruned/``, their dev accuracy to the results.
``sweep``
    MeZO learning rate and ``μ`` on short runs (``--sweep-seconds`` each) in both settings:
    dense MeZO from the pretrained MiniLM, and sparse MeZO on the oBERT 80 % model; the setting
    with the lowest dev loss is what ``finetune`` / ``recover`` use.
``finetune``
    Part 1: from the pretrained MiniLM (a fresh classifier), the same wall-time budget
    (``--budget``, seconds of training, evaluations excluded) for first-order fine-tuning
    (``transformers.Trainer``, AdamW at the ``minilm-sst2-dense`` recipe's initial LR 5e-5, batch
    32, held constant since the run ends on time), dense MeZO (``obert_train.ZOTrainer``) and
    sparse MeZO that perturbs only the kept coordinates of the oBERT 80 % mask (DeepZero's sparse
    gradient: the weights stay dense), plus an inference-only reference; each in its own process
    for its peak resident set size (the method of ``experiments/zo_memory.py``).
``recover``
    Part 2: each pruned model (oBERT / magnitude, 70 / 80 %) trained for ``--recover-budget``
    seconds by sparse MeZO on its kept weights and by first-order fine-tuning with the masks
    re-applied after every optimizer step.
``obs``
    Part 3: black-box OBS. The fine-tuned dense model is exported to ONNX
    (``obert_deploy.export_onnx``) and its initializers are made overridable graph inputs, so
    ONNX Runtime evaluates the loss at perturbed weights; ``obert_core.zo.zo_fisher_rows`` (RGE)
    gives the rows of the empirical Fisher, which feeds the same blocked Fisher (B = 50) and OBS
    saliency / joint update as autograd oBERT (same mini-batches, same m). See the docstring of
    :func:`cmd_obs` for the two scopes (the whole encoder, the classifier).
``report``
    Markdown tables and ``docs/img/zo_minilm_*.png``.

Every entry is skipped when already in ``experiments/results/zo_minilm.json`` (``--force``
redoes it); a killed sub-command resumes at the first missing entry.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    RESULTS_DIR,
    RUNS_ROOT,
    add_run_options,
    data_dir,
    load_results,
    make_parser,
    minilm_dir,
    save_entry,
)

RESULTS = RESULTS_DIR / "zo_minilm.json"
RUNS_DIR = RUNS_ROOT / "zo-minilm"
PRUNED = RUNS_DIR / "pruned"
DENSE_DIR = RUNS_ROOT / "minilm-sst2-dense"
MAX_SEQ = 64
BATCH = 32
FO_LR = 5e-5  # the minilm-sst2-dense recipe's initial LR
PRUNE_KEYS = ("obert@0.7", "obert@0.8", "magnitude@0.7", "magnitude@0.8")
SPARSE_MASK = "obert@0.8"


# --------------------------------------------------------------------------- data and models


def make_task(tokenizer: Any, train_samples: int, seed: int) -> Any:
    """SST-2: a seeded subset of train (``oneshot_sst2``'s rule), all 872 dev sentences."""
    from obert_train import ClassificationTask, read_glue_tsv

    train = read_glue_tsv(data_dir() / "train.tsv")
    dev = read_glue_tsv(data_dir() / "dev.tsv")
    if train_samples < len(train):
        train = random.Random(seed).sample(train, train_samples)
    return ClassificationTask(tokenizer, train, dev, max_seq_length=MAX_SEQ)


def dense_dir() -> Path:
    if not (DENSE_DIR / "model.safetensors").is_file():
        sys.exit(f"{DENSE_DIR} not found; run experiments/oneshot_sst2.py finetune first")
    return DENSE_DIR


def pruned_file(key: str) -> Path:
    return PRUNED / f"{key.replace('@', '-')}.pt"


def load_model(task: Any, init: str) -> Any:
    """``pretrained`` (fresh classifier), ``dense`` (fine-tuned) or a pruned key."""
    import torch

    if init == "pretrained":
        return task.load_model(str(minilm_dir()))
    model = task.load_model(str(dense_dir()))
    if init != "dense":
        path = pruned_file(init)
        if not path.is_file():
            sys.exit(f"{path} not found; run the prune sub-command first")
        model.load_state_dict(torch.load(path, weights_only=True))
    return model


def keep_masks(model: Any, init: str) -> dict[str, Any]:
    """Keep-masks (True = kept) of the encoder Linear weights of the pruned model ``init``."""
    import torch

    from obert_train import resolve_target_params

    state = torch.load(pruned_file(init), weights_only=True)
    return {n: state[n] != 0 for n in resolve_target_params(model)}


def _rss_mib() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


# --------------------------------------------------------------------------- one training run


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """One run in this process (``--child``): its dev-accuracy curve and peak RSS.

    ``spec``: ``kind`` (``fo`` | ``zo`` | ``infer``), ``init`` (see :func:`load_model`),
    ``mask`` (a pruned key or None), ``mask_mode`` (``keep``: pruned weights 0 and frozen;
    ``grad``: weights dense, only the kept coordinates move), ``lr``, ``mu``, ``budget``,
    ``eval_every``, ``train_samples``, ``seed``, ``threads``.
    """
    import torch
    from transformers import AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    from obert_train import ZOSettings, ZOTrainer

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    task = make_task(tokenizer, spec["train_samples"], spec["seed"])
    model = load_model(task, spec["init"])
    loaded = _rss_mib()
    if spec["kind"] == "infer":
        t0 = time.perf_counter()
        metrics = task.evaluate(model, batch_size=BATCH, progress=False)
        return {
            "accuracy": metrics["accuracy"],
            "loss": metrics["loss"],
            "eval_s": time.perf_counter() - t0,
            "rss_loaded_mib": round(loaded, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    masks = keep_masks(model, spec["mask"]) if spec.get("mask") else None
    dense_state = (
        {k: v.clone() for k, v in model.state_dict().items()}
        if masks is not None and spec["mask_mode"] == "grad"
        else None
    )
    points: list[dict[str, float]] = []
    budget, every = float(spec["budget"]), float(spec["eval_every"])

    class Budget(TrainerCallback):
        """Stops after ``budget`` CPU seconds of training; dev accuracy every ``every`` seconds.

        The clock is the process CPU time (1 thread): on a CPU shared with other jobs it is
        the wall time the run would take on a core of its own.
        """

        def __init__(self) -> None:
            self.t0 = 0.0
            self.excluded = 0.0
            self.next = every

        def _eval(self, model: Any, step: int, t: float) -> None:
            e0 = time.process_time()
            m = task.evaluate(model, batch_size=BATCH, progress=False)
            model.train()
            acc, loss = m["accuracy"], m["loss"]
            points.append({"train_s": t, "step": step, "accuracy": acc, "loss": loss})
            print(f"  {t:7.1f} s, step {step}: dev {m['accuracy']:.4f} loss {m['loss']:.4f}",
                  flush=True)  # fmt: skip
            self.excluded += time.process_time() - e0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0 = time.process_time()
            if spec.get("eval_start", True):
                self._eval(kw["model"], 0, 0.0)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if masks is not None and spec["kind"] == "fo":  # masks kept (first-order recovery)
                named = dict(kw["model"].named_parameters())
                with torch.no_grad():
                    for n, m in masks.items():
                        named[n].mul_(m)
            t = time.process_time() - self.t0 - self.excluded
            if t >= budget:
                control.should_training_stop = True
                self._eval(kw["model"], state.global_step, t)
            elif t >= self.next:
                self._eval(kw["model"], state.global_step, t)
                while self.next <= t:
                    self.next += every

    out = RUNS_DIR / "tmp"
    out.mkdir(parents=True, exist_ok=True)
    args = TrainingArguments(
        str(out),
        per_device_train_batch_size=BATCH,
        max_steps=10**6,
        learning_rate=spec["lr"],
        lr_scheduler_type="constant",
        weight_decay=0.0,
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
        seed=spec["seed"],
    )
    common: dict[str, Any] = {
        "model": model,
        "args": args,
        "train_dataset": task.train_features,
        "data_collator": task.collate,
        "callbacks": [Budget()],
    }
    if spec["kind"] == "fo":
        if masks is not None:
            named = dict(model.named_parameters())
            with torch.no_grad():
                for n, m in masks.items():
                    named[n].mul_(m)
        trainer: Any = Trainer(**common)
    else:
        zo = ZOSettings(mu=spec["mu"], seed=spec["seed"])
        trainer = ZOTrainer(**common, zo=zo, masks=masks)
        if dense_state is not None:  # DeepZero's sparse gradient: the weights stay dense
            model.load_state_dict(dense_state)
            del dense_state
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    last = points[-1]
    return {
        "curve": points,
        "steps": last["step"],
        "train_s": last["train_s"],
        "wall_s": wall,
        "accuracy": last["accuracy"],
        "loss": last["loss"],
        "start_accuracy": points[0]["accuracy"] if spec.get("eval_start", True) else None,
        "rss_loaded_mib": round(loaded, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "zo_losses": [round(x, 5) for x in getattr(trainer, "zo_losses", [])][::10],
    }


def child(section: str, name: str, spec: dict[str, Any], force: bool) -> dict[str, Any] | None:
    """Run ``spec`` in a fresh process (own peak RSS) and save it as ``section/name``."""
    have = load_results(RESULTS).get(section, {})
    if name in have and not force:
        print(f"{section}/{name}: done before, skipped", flush=True)
        entry: dict[str, Any] = have[name]
        return entry
    print(f"{section}/{name}: {json.dumps(spec)}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(Path(__file__)), "child", json.dumps(spec)]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{section}/{name} failed (exit {proc.returncode})")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result = {"spec": spec, **json.loads(lines[-1])}
    save_entry(RESULTS, name, result, section, machine=True)
    print(f"{section}/{name}: dev {result['accuracy']:.4f}, peak {result['peak_rss_mib']} MiB",
          flush=True)  # fmt: skip
    return result


def base_spec(args: argparse.Namespace, **kw: Any) -> dict[str, Any]:
    return {
        "train_samples": args.train_samples,
        "seed": args.seed,
        "threads": args.threads,
        "mask": None,
        "mask_mode": "keep",
        "mu": 1e-3,
        "eval_every": args.eval_every,
        **kw,
    }


# --------------------------------------------------------------------------- prune


def cmd_prune(args: argparse.Namespace) -> None:
    """One-shot oBERT and magnitude at 70 / 80 % of the fine-tuned dense model."""
    import torch
    from transformers import AutoTokenizer

    from obert_core.shared import atomic_output
    from obert_train import oneshot_prune

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    task = make_task(tokenizer, args.train_samples, args.seed)
    model = task.load_model(str(dense_dir())).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    have = load_results(RESULTS).get("pruned", {})
    if "dense" not in have or args.force:
        m = task.evaluate(model, batch_size=128, progress=False)
        save_entry(RESULTS, "dense", {"accuracy": m["accuracy"], "loss": m["loss"]}, "pruned",
                   machine=True)  # fmt: skip
    cache: dict[str, Any] = {}
    PRUNED.mkdir(parents=True, exist_ok=True)
    for key in PRUNE_KEYS:
        method, s = key.split("@")
        if key in have and pruned_file(key).is_file() and not args.force:
            print(f"{key}: done before, skipped")
            continue
        model.load_state_dict(state)
        settings = None
        if method == "obert":
            settings = {"num_grads": args.num_grads, "grad_batch_size": 16, "damp": 1e-7,
                        "fisher_block_size": 50, "mode": "joint", "seed": args.seed}  # fmt: skip
        res = oneshot_prune(model, method, float(s), settings=settings, task=task,
                            fisher_cache=cache if method == "obert" else None,
                            progress=False, log=print)  # fmt: skip
        m = task.evaluate(model, batch_size=128, progress=False)
        with atomic_output(pruned_file(key)) as tmp:
            torch.save(model.state_dict(), tmp)
        entry = {"accuracy": m["accuracy"], "loss": m["loss"], "sparsity": res.sparsity,
                 "settings": settings, "timings": res.timings}  # fmt: skip
        save_entry(RESULTS, key, entry, "pruned", machine=True)
        print(f"{key}: dev {m['accuracy']:.4f}", flush=True)


# --------------------------------------------------------------------------- sweep / part 1 / 2


SWEEP_SETTINGS = {
    "dense": ("pretrained", None, "keep"),
    "sparse": (SPARSE_MASK, SPARSE_MASK, "keep"),
}


def cmd_sweep(args: argparse.Namespace) -> None:
    """Short MeZO runs over lr x mu in the two settings."""
    for setting in args.sweep_settings:
        init, mask, mode = SWEEP_SETTINGS[setting]
        for lr in args.lrs:
            for mu in args.mus:
                spec = base_spec(args, kind="zo", init=init, mask=mask, mask_mode=mode, lr=lr,
                                 mu=mu, budget=args.sweep_seconds, eval_every=1e9,
                                 eval_start=False)  # fmt: skip
                child("sweep", f"{setting}-lr{lr:g}-mu{mu:g}", spec, args.force)


def best_zo(setting: str) -> tuple[float, float]:
    """The (lr, mu) of the sweep entry of ``setting`` with the lowest dev loss."""
    sweep = load_results(RESULTS).get("sweep", {})
    rows = [v for k, v in sweep.items() if k.startswith(f"{setting}-")]
    if not rows:
        sys.exit(f"no sweep entries for {setting!r}; run the sweep sub-command first")
    best = min(rows, key=lambda v: v["loss"])
    return float(best["spec"]["lr"]), float(best["spec"]["mu"])


def cmd_finetune(args: argparse.Namespace) -> None:
    """Part 1: FO vs dense MeZO vs sparse MeZO (oBERT 80 % mask, dense weights), same budget."""
    child("finetune", "inference", base_spec(args, kind="infer", init="pretrained"), args.force)
    fo = base_spec(args, kind="fo", init="pretrained", lr=FO_LR, budget=args.budget)
    child("finetune", "fo", fo, args.force)
    lr, mu = best_zo("dense")
    zo = base_spec(args, kind="zo", init="pretrained", lr=lr, mu=mu, budget=args.budget)
    child("finetune", "zo-dense", zo, args.force)
    sparse = {**zo, "mask": SPARSE_MASK, "mask_mode": "grad"}
    child("finetune", "zo-sparse", sparse, args.force)


def cmd_recover(args: argparse.Namespace) -> None:
    """Part 2: each pruned model, sparse MeZO vs masked first-order, same budget."""
    lr, mu = best_zo("sparse")
    for key in PRUNE_KEYS:
        common = {"init": key, "mask": key, "mask_mode": "keep", "budget": args.recover_budget}
        zo = base_spec(args, kind="zo", lr=lr, mu=mu, **common)
        child("recover", f"zo-{key}", zo, args.force)
        fo = base_spec(args, kind="fo", lr=FO_LR, **common)
        child("recover", f"fo-{key}", fo, args.force)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = make_parser(__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("child", help="internal: one training run, JSON spec, prints JSON")
    c.add_argument("spec")
    cmds = {"prune": cmd_prune, "sweep": cmd_sweep, "finetune": cmd_finetune,
            "recover": cmd_recover}  # fmt: skip
    for name, func in cmds.items():
        p = sub.add_parser(name, help=(func.__doc__ or "").splitlines()[0])
        add_run_options(p, threads=1, seed=0, force=True)
        p.add_argument("--train-samples", type=int, default=12000)
        p.add_argument("--num-grads", type=int, default=128)
        p.add_argument("--eval-every", type=float, default=60.0, help="seconds of training")
        p.add_argument("--budget", type=float, default=180.0, help="part 1: seconds of training")
        p.add_argument("--recover-budget", type=float, default=90.0, help="part 2: seconds")
        p.add_argument("--sweep-seconds", type=float, default=45.0)
        p.add_argument("--sweep-settings", nargs="*", default=["dense", "sparse"],
                       choices=sorted(SWEEP_SETTINGS))  # fmt: skip
        p.add_argument("--lrs", type=float, nargs="*", default=[1e-6, 1e-5, 1e-4])
        p.add_argument("--mus", type=float, nargs="*", default=[1e-3])
        p.set_defaults(func=func)
    args = parser.parse_args()
    if args.command == "child":
        print(json.dumps(run_one(json.loads(args.spec))), flush=True)
        return
    args.func(args)


if __name__ == "__main__":
    main()
