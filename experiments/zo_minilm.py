"""Zeroth-order fine-tuning and black-box OBS on MiniLM-L6 / SST-2 (DeepZero, issue 20).

Sub-commands (run from the repository root, in this order; 1 thread each, the CPU is shared)::

    .venv/bin/python experiments/zo_minilm.py prune      # one-shot oBERT / magnitude 70, 80 %
    .venv/bin/python experiments/zo_minilm.py sweep      # MeZO lr x mu, short runs
    .venv/bin/python experiments/zo_minilm.py finetune   # FO vs dense / sparse MeZO, same wall time
    .venv/bin/python experiments/zo_minilm.py recover    # sparse MeZO vs masked FO after pruning
    .venv/bin/python experiments/zo_minilm.py obs        # black-box OBS through ONNX Runtime
    .venv/bin/python experiments/zo_minilm.py obs-shrink # per-tensor curvatures, shrinkage by loss
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
``obs-shrink``
    Part 3, continued: the per-tensor curvatures of ``obs`` (ZO traces at every budget, exact
    traces) and secant curvatures from 37 probe forwards, shrunk toward their mean with the
    shrinkage chosen by the calibration loss through ONNX Runtime (``obert_core.zo``, (Z-8)–(Z-11)
    of docs/math.md §9); see :func:`cmd_obs_shrink`.
``report``
    Markdown tables and ``docs/img/zo_minilm_*.png``.

Every entry is skipped when already in ``experiments/results/zo_minilm.json`` (``--force``
redoes it); a killed sub-command resumes at the first missing entry.
"""

from __future__ import annotations

import argparse
import itertools
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
    IMG,
    REPO,
    RESULTS_DIR,
    RUNS_ROOT,
    add_run_options,
    data_dir,
    load_results,
    make_parser,
    minilm_dir,
    save_entry,
    write_results,
)

RESULTS = RESULTS_DIR / "zo_minilm.json"
RUNS_DIR = RUNS_ROOT / "zo-minilm"
PRUNED = RUNS_DIR / "pruned"
DENSE_DIR = RUNS_ROOT / "minilm-sst2-dense"
MAX_SEQ = 64
BATCH = 32
FO_LR = 5e-5  # the minilm-sst2-dense recipe's initial LR
PRUNE_KEYS = ("obert@0.8", "magnitude@0.7", "obert@0.7", "magnitude@0.8")  # recover's order
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


def reset_peak() -> None:
    """Restart the kernel's peak-RSS counter (``VmHWM``) of this process (Linux ≥ 4.0).

    Called once the model, the data and the masks are in place, so the peak measures the work
    (forwards, steps, evaluations), not the transient copies this script makes while loading
    a pruned state dict (the method of ``zo_memory.py`` measures from process start).
    """
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")


def peak_mib() -> float:
    """``VmHWM``: the peak resident set size since :func:`reset_peak`, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status")


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
        reset_peak()
        t0 = time.perf_counter()
        metrics = task.evaluate(model, batch_size=BATCH, progress=False)
        return {
            "accuracy": metrics["accuracy"],
            "loss": metrics["loss"],
            "eval_s": time.perf_counter() - t0,
            "rss_loaded_mib": round(loaded, 1),
            "peak_rss_mib": peak_mib(),
            "process_peak_rss_mib": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
            ),
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
    dense_state = None
    rss_ready = _rss_mib()
    reset_peak()
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
        "rss_ready_mib": round(rss_ready, 1),
        "peak_rss_mib": peak_mib(),
        "process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
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
    for key in args.recover_keys:
        common = {"init": key, "mask": key, "mask_mode": "keep", "budget": args.recover_budget}
        zo = base_spec(args, kind="zo", lr=lr, mu=mu, **common)
        child("recover", f"zo-{key}", zo, args.force)
        fo = base_spec(args, kind="fo", lr=FO_LR, **common)
        child("recover", f"fo-{key}", fo, args.force)


# --------------------------------------------------------------------------- part 3: black-box OBS


class OrtOracle:
    """The loss of one mini-batch through ONNX Runtime, at weights given as graph inputs.

    The exported file keeps every weight as an initializer; the encoder Linear weights are also
    declared graph inputs, which makes them overridable per call (ONNX IR ≥ 4 semantics; ONNX
    Runtime then does not constant-fold them). Torch and the ONNX graph disagree on layout only
    by a transpose (the exporter stores ``Wᵀ`` for a ``MatMul``), found by bit-exact comparison.
    """

    def __init__(self, model: Any, onnx_path: Path, names: list[str], threads: int) -> None:
        import numpy as np
        import onnx
        import onnxruntime as ort
        from onnx import helper, numpy_helper

        from obert_core.shared import atomic_output

        patched = onnx_path.with_name(onnx_path.stem + "-weights-as-inputs.onnx")
        proto = onnx.load(str(onnx_path))
        arrays = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
        params = dict(model.named_parameters())
        self.layout: dict[str, tuple[str, bool]] = {}
        for name in names:
            w = params[name].detach().numpy()
            # a square weight can match either way: the layout is the one that is bit-exact
            hits = [
                (n, not (a.shape == w.shape and np.array_equal(a, w)))
                for n, a in arrays.items()
                if (a.shape == w.shape and np.array_equal(a, w))
                or (a.shape == w.T.shape and np.array_equal(a, w.T))
            ]
            if len(hits) != 1:
                sys.exit(f"{name}: {len(hits)} matching initializers in {onnx_path}")
            self.layout[name] = hits[0]
        if not patched.is_file():
            graph_inputs = {i.name for i in proto.graph.input}
            for init, _ in self.layout.values():
                if init not in graph_inputs:
                    a = arrays[init]
                    proto.graph.input.append(
                        helper.make_tensor_value_info(init, onnx.TensorProto.FLOAT, list(a.shape))
                    )
            with atomic_output(patched) as tmp:
                onnx.save(proto, str(tmp))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(patched), so, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.weights = {n: self._feed(n, params[n].detach().numpy()) for n in names}
        self.shapes = {n: tuple(params[n].shape) for n in names}
        self.calls = 0

    def _feed(self, name: str, w: Any) -> tuple[str, Any]:
        import numpy as np

        init, transposed = self.layout[name]
        return init, np.ascontiguousarray(w.T if transposed else w, dtype=np.float32)

    def logits(self, batch: dict[str, Any], replaced: dict[str, Any]) -> Any:
        """float64 logits of ``batch`` with the weights ``replaced`` (torch name → array)."""
        import numpy as np

        feeds = {k: v for k, v in batch.items() if k in self.inputs}
        feeds.update(dict(self.weights.values()))
        for name, w in replaced.items():
            init, arr = self._feed(name, w.reshape(self.shapes[name]))
            feeds[init] = arr
        self.calls += 1
        return self.session.run(["logits"], feeds)[0].astype(np.float64)

    def loss(self, batch: dict[str, Any], replaced: dict[str, Any]) -> float:
        """Mean cross-entropy of ``batch`` with the weights ``replaced`` (torch name → array)."""
        import numpy as np

        logits = self.logits(batch, replaced)
        z = logits - logits.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(batch["labels"])), batch["labels"]].mean())


def obs_batches(task: Any, m: int, size: int, seed: int) -> list[dict[str, Any]]:
    """``m`` mini-batches of ``size`` training sentences (seeded), as int64 NumPy feeds."""
    feats = list(task.train_features)
    order = random.Random(seed + 17).sample(range(len(feats)), m * size)
    out = []
    for t in range(m):
        batch = task.collate([feats[i] for i in order[t * size : (t + 1) * size]])
        out.append({k: v.numpy() for k, v in batch.items()})
    return out


def autograd_rows(model: Any, batches: list[dict[str, Any]], names: list[str]) -> Any:
    """``(m, d)`` float32: the exact gradient of each mini-batch's loss (oBERT's Fisher rows)."""
    import torch

    params = dict(model.named_parameters())
    rows = []
    model.eval()
    for b in batches:
        model.zero_grad()
        out = model(**{k: torch.from_numpy(v) for k, v in b.items()})
        out.loss.backward()
        rows.append(torch.cat([params[n].grad.reshape(-1) for n in names]))
    model.zero_grad()
    return torch.stack(rows)


def spearman(a: Any, b: Any) -> float:
    """Spearman's rank correlation (ranks by a stable sort; ties are measure-zero here)."""
    import numpy as np

    def ranks(x: Any) -> Any:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        r = np.empty(x.size)
        r[np.argsort(x, kind="stable")] = np.arange(x.size)
        return r - r.mean()

    ra, rb = ranks(a), ranks(b)
    return float((ra @ rb) / np.sqrt((ra @ ra) * (rb @ rb)))


def _dense_model(args: argparse.Namespace) -> tuple[Any, Any, list[str], dict[str, Any], Any]:
    """The task, the dense fine-tuned model in eval mode, its target names, its parameters.

    Also a copy of the targets' dense weights (the black-box OBS parts), torch on ``--threads``.
    """
    import torch
    from transformers import AutoTokenizer

    from obert_train import resolve_target_params

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    task = make_task(tokenizer, args.train_samples, args.seed)
    model = task.load_model(str(dense_dir())).eval()
    names = list(resolve_target_params(model))
    params = dict(model.named_parameters())
    dense = {n: params[n].detach().clone() for n in names}
    return task, model, names, params, dense


def cmd_obs(args: argparse.Namespace) -> None:
    """Part 3: OBS with a ZO Fisher through ONNX Runtime vs autograd oBERT and magnitude.

    Two ways of spending the query budget (``q × m`` directions, 2 forwards each, central):

    * ``zo-encoder-q{q}``: RGE rows over all encoder Linear weights at once (d ≈ 21 M) →
      blocked Fisher (B = 50, m < B: :class:`obert_core.LowRankFisher`) → OBS saliency, global
      mask, joint update: exactly oBERT with ZO rows. Each row's isotropic noise ``‖g‖²/q`` is
      ``d/q`` times an average coordinate's ``g_j²``, so the saliency tends to magnitude.
    * ``zo-tensor-q{q}``: directions confined to one tensor at a time (36 × m rows), and of
      each tensor's ZO Fisher only what the budget resolves, its trace: with Gaussian
      directions ``E‖ĝ‖² = ‖g‖²(1 + (d_k + 1)/q)``, so ``tr F_k`` is the mean ``‖ĝ‖²`` divided by
      that factor; the Fisher is then ``(tr F_k / d_k) I`` on tensor ``k`` (the shrinkage of an
      unresolved diagonal to its mean), whose OBS saliency is ``w²(λ + c_k)/2`` (global
      ranking across tensors) and whose joint update is 0. ``autograd-tensor`` is the same
      Fisher from the exact gradients.
    """
    import numpy as np
    import torch

    from obert_core import LowRankFisher, obs_saliency, obs_update, select_mask
    from obert_core.zo import zo_fisher_rows
    from obert_deploy.export import ExportConfig, export_onnx

    task, model, names, params, dense = _dense_model(args)
    sizes = [dense[n].numel() for n in names]
    onnx_path = RUNS_DIR / "obs" / "dense.onnx"
    if not onnx_path.is_file():
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        report = export_onnx(model, onnx_path, ExportConfig(seq_len=MAX_SEQ, batch_size=2))
        print(f"exported {onnx_path} ({report.seconds:.0f} s)", flush=True)
        model.eval()
    oracle = OrtOracle(model, onnx_path, names, args.threads)
    m, damp, bsz = args.obs_m, args.obs_damp, 50
    # the per-tensor budget sweep reads up to max(--obs-m-tensor) mini-batches; the first m are
    # the Fisher's (a seeded sample's prefix: checked, so every entry shares autograd's batches)
    batches = obs_batches(task, max(m, *args.obs_m_tensor), args.obs_batch, args.seed)
    for a, b in zip(obs_batches(task, m, args.obs_batch, args.seed), batches, strict=False):
        if any(not np.array_equal(a[k], b[k]) for k in a):
            sys.exit("obs_batches: the first m mini-batches depend on how many are drawn")
    tensor_batches, batches = batches, batches[:m]
    have = load_results(RESULTS).get("obs", {})
    # the ORT oracle agrees with torch at the dense weights
    with torch.no_grad():
        ref = float(model(**{k: torch.from_numpy(v) for k, v in batches[0].items()}).loss)
    got = oracle.loss(batches[0], {n: dense[n].numpy() for n in names})
    print(f"loss of mini-batch 0: torch {ref:.7f}, ONNX Runtime {got:.7f}", flush=True)
    if abs(got - ref) > 1e-4:
        sys.exit("the ONNX Runtime oracle disagrees with torch at the dense weights")

    grads = autograd_rows(model, batches, names)
    bounds = np.cumsum([0, *sizes])

    def lowrank(rows: Any) -> dict[str, Any]:
        return {
            n: LowRankFisher(rows[:, bounds[i] : bounds[i + 1]].contiguous(), bsz, damp)
            for i, n in enumerate(names)
        }

    def evaluate(new: dict[str, Any]) -> float:
        with torch.no_grad():
            for n in names:
                params[n].copy_(new[n])
        acc = float(task.evaluate(model, batch_size=128, progress=False)["accuracy"])
        with torch.no_grad():
            for n in names:
                params[n].copy_(dense[n])
        return acc

    def prune(scores: dict[str, Any], fishers: dict[str, Any] | None) -> dict[str, Any]:
        """Dev accuracy of the masks (and, with a Fisher, of the masks without the update)."""
        accs: dict[str, Any] = {"accuracy": {}, "accuracy_no_update": {}}
        for s in args.obs_sparsities:
            keep = select_mask(scores, s, scope="global")
            masked = {n: dense[n] * keep[n] for n in names}
            if fishers is None:
                accs["accuracy"][f"{s:g}"] = evaluate(masked)
            else:
                new = {n: obs_update(dense[n], fishers[n], ~keep[n], mode="joint") for n in names}
                accs["accuracy"][f"{s:g}"] = evaluate(new)
                accs["accuracy_no_update"][f"{s:g}"] = evaluate(masked)
            print(f"    {int(100 * s)} %: {accs}", flush=True)
        if fishers is None:
            del accs["accuracy_no_update"]
        return accs

    def flat(scores: dict[str, Any]) -> Any:
        return np.concatenate([np.asarray(scores[n], dtype=np.float64).reshape(-1) for n in names])

    t0 = time.perf_counter()
    auto_f = lowrank(grads)
    auto_scores = {n: obs_saliency(dense[n], auto_f[n]) for n in names}
    auto_flat = flat(auto_scores)
    print(f"autograd oBERT (m = {m}): {time.perf_counter() - t0:.0f} s", flush=True)

    def record(
        name: str, scores: dict[str, Any], fishers: Any, extra: dict[str, Any], rows: int = m
    ) -> None:
        print(name, flush=True)
        rho = spearman(flat(scores), auto_flat)
        entry = {"spearman_vs_autograd": rho, **prune(scores, fishers), **extra}
        entry.update({"m": rows, "batch": args.obs_batch, "block_size": bsz, "damp": damp})
        save_entry(RESULTS, name, entry, "obs", machine=True)
        print(f"  Spearman vs autograd oBERT {rho:.4f}", flush=True)

    if "accuracy_no_update" not in have.get("autograd-obs", {}) or args.force:
        record("autograd-obs", auto_scores, auto_f, {"forwards": 0, "backwards": m})
    if "magnitude" not in have or args.force:
        record("magnitude", {n: dense[n].double() ** 2 for n in names}, None, {"forwards": 0})
    auto_c = [float((grads[:, a:b].double() ** 2).sum(1).mean()) / (b - a)
              for a, b in itertools.pairwise(bounds)]  # fmt: skip
    if "autograd-tensor" not in have or args.force:
        scores = {
            n: dense[n].double() ** 2 * (damp + c) for n, c in zip(names, auto_c, strict=True)
        }
        record("autograd-tensor", scores, None, {"forwards": 0, "backwards": m, "c": auto_c})
    del auto_f
    theta = torch.cat([dense[n].reshape(-1) for n in names])

    def batch_loss(b: dict[str, Any], tensors: list[str]) -> Any:
        def loss(x: Any) -> float:
            arr = x.detach().numpy()
            if len(tensors) == 1:
                return oracle.loss(b, {tensors[0]: arr})
            return oracle.loss(b, {n: arr[bounds[i] : bounds[i + 1]] for i, n in enumerate(names)})

        return loss

    for rs in args.obs_random_seeds:
        # the control: rows of pure Gaussian noise, no query at all. At q = 1 a ZO row is
        # δ·u, and with λ ≪ δ² its OBS saliency is w² reweighted by the leverage of random
        # directions, whatever the gradient: what any gain over magnitude must beat
        name = f"random-rows-s{rs}"
        if name in have and not args.force:
            continue
        gen = torch.Generator().manual_seed(rs)
        fishers = lowrank(torch.randn(m, int(bounds[-1]), generator=gen))
        scores = {n: obs_saliency(dense[n], fishers[n]) for n in names}
        record(name, scores, fishers, {"forwards": 0, "seed": rs})
        del fishers
    for q in args.obs_q_encoder:
        name = f"zo-encoder-q{q}"
        if "accuracy_no_update" in have.get(name, {}) and not args.force:
            continue
        t0, calls = time.perf_counter(), oracle.calls
        losses = [batch_loss(b, names) for b in batches]
        rows = torch.stack(list(zo_fisher_rows(losses, theta, mu=args.obs_mu, q=q, seed=args.seed,
                                               scheme="central")))  # fmt: skip
        fishers = lowrank(rows)
        del rows
        scores = {n: obs_saliency(dense[n], fishers[n]) for n in names}
        extra = {"q": q, "forwards": oracle.calls - calls, "zo_s": time.perf_counter() - t0}
        record(name, scores, fishers, extra)
        del fishers
    for q in args.obs_q_tensor:
        budget = [r for r in args.obs_m_tensor if len(names) * r * 2 * q <= args.obs_max_forwards]
        entries = {r: tensor_entry(q, r, m) for r in budget}
        wanted = {r: n for r, n in entries.items() if n not in have or args.force}
        print(f"per-tensor ZO Fisher, q = {q}: rows {budget}, to record {wanted}", flush=True)
        if not wanted:
            continue
        norms, seconds = tensor_trace_rows(
            oracle, tensor_batches[: max(wanted)], names, dense, q, args.obs_mu, args.seed
        )
        drawn = min(len(norms[n]) for n in names)
        for r, name in entries.items():
            if r > drawn:
                continue
            cs = [float(np.mean(norms[n][:r])) / (1.0 + (d_k + 1) / q) / d_k
                  for n, d_k in zip(names, sizes, strict=True)]  # fmt: skip
            scores = {
                n: dense[n].double() ** 2 * (damp + c) for n, c in zip(names, cs, strict=True)
            }
            forwards = len(names) * r * 2 * q
            zo_s = sum(seconds[n] * r / len(norms[n]) for n in names)
            extra = {"q": q, "forwards": forwards, "zo_s": zo_s, "c": cs,
                     "c_spearman_vs_autograd": spearman(cs, auto_c)}  # fmt: skip
            old = have.get(name, {}).get("c")
            if old is not None:  # an entry drawn before: the same directions, the same traces
                diff = max(abs(a - b) / abs(b) for a, b in zip(cs, old, strict=True))
                print(f"  {name}: traces vs the stored entry, max rel. diff {diff:.2e}")
            if r in wanted:
                record(name, scores, None, extra, rows=r)


def tensor_entry(q: int, rows: int, m: int) -> str:
    """``zo-tensor-q{q}`` at the Fisher's ``m`` rows, ``zo-tensor-q{q}-m{rows}`` otherwise."""
    return f"zo-tensor-q{q}" if rows == m else f"zo-tensor-q{q}-m{rows}"


def tensor_trace_rows(
    oracle: OrtOracle,
    batches: list[dict[str, Any]],
    names: list[str],
    dense: dict[str, Any],
    q: int,
    mu: float,
    seed: int,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """``‖ĝ_t‖²`` of the per-tensor RGE row of each mini-batch ``t``, and seconds per tensor.

    Tensor ``k`` (``names[k]``) draws its directions from seed ``seed + 1 + k`` (row ``t``:
    ``(seed + 1 + k, t, i)``), so its first rows do not depend on how many are drawn and any
    prefix is the estimate at that budget. The squared norms are saved after every tensor in
    ``runs/zo-minilm/obs/tensor-q{q}-rows.json`` (a killed sweep resumes at the next tensor).
    """
    from obert_core.zo import zo_fisher_rows

    file = RUNS_DIR / "obs" / f"tensor-q{q}-rows.json"
    key = {"q": q, "mu": mu, "seed": seed, "batch": len(batches[0]["labels"])}
    cache = load_results(file, {"key": key, "norms": {}, "seconds": {}})
    if cache["key"] != key:
        sys.exit(f"{file} holds rows of {cache['key']}, not {key}: move it away")
    rows = len(batches)
    for i, n in enumerate(names):
        have = cache["norms"].get(n, [])
        if len(have) >= rows:
            continue
        t0 = time.perf_counter()

        def one(b: dict[str, Any], n: str = n) -> Any:
            def loss(x: Any) -> float:
                return oracle.loss(b, {n: x.detach().numpy()})

            return loss

        flat = dense[n].reshape(-1)
        new = [
            float((r.double() ** 2).sum())
            for r in zo_fisher_rows([one(b) for b in batches[len(have) :]], flat, mu=mu, q=q,
                                    seed=seed + 1 + i, step=len(have), scheme="central")
        ]  # fmt: skip
        cache["norms"][n] = have + new
        cache["seconds"][n] = cache["seconds"].get(n, 0.0) + time.perf_counter() - t0
        write_results(file, cache)
        print(f"  q = {q}, {n}: {rows} rows, {cache['seconds'][n]:.0f} s", flush=True)
    return cache["norms"], cache["seconds"]


SHRINK_FILE = RUNS_DIR / "obs" / "shrink-calibration.json"
SECANT_FILE = RUNS_DIR / "obs" / "secant-probes.json"


def calibration_batches(
    task: Any, args: argparse.Namespace, sentences: int, salt: int, exclude: set[int]
) -> tuple[list[dict[str, Any]], set[int]]:
    """Training sentences disjoint from every Fisher mini-batch and from ``exclude``.

    The Fisher's mini-batches are a prefix of one seeded sample of ``32 × --obs-batch``
    sentences (:func:`obs_batches`); these are a second seeded sample (``seed + salt``) of the
    rest of the training subset, never dev. Returns the batches and the indices drawn.
    """
    feats = list(task.train_features)
    fisher = set(random.Random(args.seed + 17).sample(range(len(feats)), 32 * args.obs_batch))
    rest = [i for i in range(len(feats)) if i not in fisher and i not in exclude]
    size = args.calib_batch
    order = random.Random(args.seed + salt).sample(rest, sentences)
    chunks = [order[t : t + size] for t in range(0, sentences, size)]
    batches = [
        {k: v.numpy() for k, v in task.collate([feats[i] for i in c]).items()} for c in chunks
    ]
    return batches, set(order)


def _mask_digest(masks: Any, names: list[str]) -> str:
    import hashlib

    import numpy as np

    digest = hashlib.sha1()
    for n in names:
        digest.update(np.packbits(np.asarray(masks[n]).reshape(-1)).tobytes())
    return digest.hexdigest()


def cmd_obs_shrink(args: argparse.Namespace) -> None:
    """Black-box OBS: per-tensor curvatures shrunk toward their mean, ρ chosen by calibration.

    Curvature sources (each ranked by (Z-9) of docs/math.md §9):

    * every per-tensor ZO trace estimate of ``obs`` (the budget sweep, recomputed from the
      stored ``‖ĝ‖²`` of ``runs/zo-minilm/obs/tensor-q{q}-rows.json`` by
      :func:`obert_core.zo.tensor_curvatures`, checked against the stored traces) and the exact
      traces of ``autograd-tensor``;
    * ``secant-p{seed}``: :func:`obert_core.zo.secant_curvatures` (Z-11), each tensor pruned
      alone by its own magnitude to the target sparsity, the loss through ONNX Runtime on
      ``--probe-sentences`` training sentences (probe seed ``p``), 37 loss evaluations.

    :func:`obert_core.zo.calibrate_shrinkage` then picks ρ on ``--shrink-grid`` (Z-10) by the
    loss through ONNX Runtime of ``--calib-sentences`` further training sentences: the mean
    cross-entropy (``ce``) and the error rate (``error``) are both recorded, each choice is
    scored on dev. Calibration, probe and Fisher sentences are disjoint; dev is never used to
    choose. Losses and dev accuracies are cached by mask content (``shrink-calibration.json``,
    ``secant-probes.json`` under ``runs/zo-minilm/obs/``): a killed run resumes, and a mask shared
    by several sources (ρ = 1 is magnitude for all) is evaluated once.
    """
    import numpy as np
    import torch

    from obert_core import select_mask
    from obert_core.zo import calibrate_shrinkage, secant_curvatures, tensor_curvatures

    task, model, names, params, dense = _dense_model(args)
    sizes = {n: dense[n].numel() for n in names}
    onnx_path = RUNS_DIR / "obs" / "dense.onnx"
    if not onnx_path.is_file():
        sys.exit(f"{onnx_path} not found; run the obs sub-command first")
    oracle = OrtOracle(model, onnx_path, names, args.threads)
    calib, used = calibration_batches(task, args, args.calib_sentences, 31, set())
    obs = load_results(RESULTS).get("obs", {})
    key = {"seed": args.seed, "sentences": args.calib_sentences, "batch": args.calib_batch}
    cache = load_results(SHRINK_FILE, {"key": key, "loss": {}, "dev": {}})
    if cache["key"] != key:
        sys.exit(f"{SHRINK_FILE} holds losses of {cache['key']}, not {key}: move it away")
    weights = {n: dense[n].numpy() for n in names}

    def ce_and_error(
        batches: list[dict[str, Any]], replaced: dict[str, Any]
    ) -> tuple[float, float]:
        ce, wrong, count = 0.0, 0, 0
        for b in batches:
            logits = oracle.logits(b, replaced)
            z = logits - logits.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            y = b["labels"]
            ce -= float(logp[np.arange(len(y)), y].sum())
            wrong += int((logits.argmax(axis=1) != y).sum())
            count += len(y)
        return ce / count, wrong / count

    def calib_losses(masks: Any) -> dict[str, float]:
        h = _mask_digest(masks, names)
        if h not in cache["loss"]:
            t0 = time.perf_counter()
            ce, err = ce_and_error(calib, {n: weights[n] * masks[n] for n in names})
            cache["loss"][h] = {"ce": ce, "error": err}
            write_results(SHRINK_FILE, cache)
            took = time.perf_counter() - t0
            print(f"    calibration ce {ce:.5f}, error {err:.4f} ({took:.0f} s)", flush=True)
        return dict(cache["loss"][h])

    def evaluate(masks: Any) -> float:
        h = _mask_digest(masks, names)
        if h not in cache["dev"]:
            with torch.no_grad():
                for n in names:
                    params[n].copy_(dense[n] * torch.from_numpy(np.asarray(masks[n])))
            cache["dev"][h] = float(
                task.evaluate(model, batch_size=128, progress=False)["accuracy"]
            )
            with torch.no_grad():
                for n in names:
                    params[n].copy_(dense[n])
            write_results(SHRINK_FILE, cache)
        return float(cache["dev"][h])

    # the curvature sources, in the order they run: exact traces, secants, the ZO budget sweep
    sources: dict[str, Any] = {}
    auto = obs.get("autograd-tensor")
    if auto is None:
        sys.exit("autograd-tensor not in the results; run the obs sub-command first")
    sources["autograd-tensor"] = dict(zip(names, auto["c"], strict=True))
    for p in args.probe_seeds:
        sources[f"secant-p{p}"] = p
    sweep = []
    for q in (1, 4):
        file = RUNS_DIR / "obs" / f"tensor-q{q}-rows.json"
        norms = load_results(file, {"norms": {}})["norms"]
        drawn = min(len(norms.get(n, [])) for n in names)
        for r in (1, 4, 8, 16, 32):
            label = tensor_entry(q, r, args.obs_m)
            if r > drawn or label not in obs:
                continue
            c = tensor_curvatures({n: norms[n][:r] for n in names}, sizes, q)
            stored = obs[label]["c"]
            diff = max(abs(c[n] - b) / abs(b) for n, b in zip(names, stored, strict=True))
            if diff > 1e-12:
                sys.exit(f"{label}: traces differ from the stored entry (max rel. {diff:.1e})")
            sweep.append((int(obs[label]["forwards"]), label, c))
    for _, label, c in sorted(sweep, key=lambda t: t[0], reverse=True):
        sources[label] = c
    probes = load_results(SECANT_FILE, {"loss": {}})
    grid = [float(r) for r in args.shrink_grid]
    for src, c_or_seed in sources.items():
        name = f"{src}-shrunk"
        if name in obs and not args.force:
            print(f"{name}: already in the results", flush=True)
            continue
        entry: dict[str, Any] = {"source": src, "grid": grid, "calibration_sentences": len(used)}
        for k in ("shrinkage", "calibration", "accuracy", "curvatures"):
            entry[k] = {}
        for s in args.obs_sparsities:
            key_s = f"{s:g}"
            if isinstance(c_or_seed, dict):
                c = c_or_seed
            else:  # (Z-11): each tensor pruned alone by its own magnitude to s
                pkey = f"p{c_or_seed}-s{key_s}-n{args.probe_sentences}"
                if pkey not in probes["loss"]:
                    batches, _ = calibration_batches(
                        task, args, args.probe_sentences, 41 + c_or_seed, used
                    )
                    keep = select_mask({n: np.abs(weights[n]) for n in names}, s, scope="layer")
                    t0 = time.perf_counter()
                    answers: dict[str, float] = {}

                    def probe_loss(
                        replaced: Any, answers: dict[str, float] = answers, batches: Any = batches
                    ) -> float:
                        ce = ce_and_error(batches, dict(replaced))[0]
                        answers[next(iter(replaced), "dense")] = ce
                        return ce

                    c = secant_curvatures(weights, keep, probe_loss)
                    probes["loss"][pkey] = {"curvatures": c, "losses": answers,
                                            "seconds": time.perf_counter() - t0}  # fmt: skip
                    write_results(SECANT_FILE, probes)
                    print(f"  secant probes {pkey}: {time.perf_counter() - t0:.0f} s", flush=True)
                c = probes["loss"][pkey]["curvatures"]
                entry["curvatures"][key_s] = [c[n] for n in names]
            print(f"{name} at {key_s}: calibrating ρ on {grid}", flush=True)
            both = {}
            for objective in ("ce", "error"):

                def objective_loss(masks: Any, o: str = objective) -> float:
                    return calib_losses(masks)[o]

                choice = calibrate_shrinkage(
                    weights, c, s, objective_loss, grid=grid, damp=args.obs_damp
                )
                both[objective] = choice.shrinkage
                entry["calibration"].setdefault(objective, {})[key_s] = {
                    f"{r:g}": v for r, v in choice.losses.items()
                }
                entry["accuracy"].setdefault(objective, {})[key_s] = evaluate(choice.masks)
            entry["shrinkage"][key_s] = both
            print(f"  ρ* {both}: dev {[100 * entry['accuracy'][o][key_s] for o in both]}",
                  flush=True)  # fmt: skip
        base = obs.get(src, {})
        entry.update(
            {"q": base.get("q"), "m": base.get("m"), "zo_forwards": base.get("forwards", 0)}
        )
        if not isinstance(c_or_seed, dict):
            entry.update({"probe_seed": c_or_seed, "probe_sentences": args.probe_sentences})
        save_entry(RESULTS, name, entry, "obs", machine=True)
        obs[name] = entry


# --------------------------------------------------------------------------- report


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def cmd_report(args: argparse.Namespace) -> None:
    """Markdown tables and the plots ``docs/img/zo_minilm_*.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = load_results(RESULTS)
    pruned, sweep = data.get("pruned", {}), data.get("sweep", {})
    fine, rec, obs = data.get("finetune", {}), data.get("recover", {}), data.get("obs", {})
    print("| model | dev accuracy |\n|---|---|")
    for k, v in pruned.items():
        print(f"| {k} | {_pct(v['accuracy'])} |")
    print(
        "\n| MeZO setting | lr | μ | steps | dev accuracy | dev loss |\n|---|---|---|---|---|---|"
    )
    for k, v in sweep.items():
        sp = v["spec"]
        print(f"| {k.split('-')[0]} | {sp['lr']:g} | {sp['mu']:g} | {v['steps']} | "
              f"{_pct(v['accuracy'])} | {v['loss']:.5f} |")  # fmt: skip
    infer = fine.get("inference", {}).get("peak_rss_mib")
    print("\n| run | steps | CPU s | wall s | dev start | dev end | peak RSS MiB | / inference |")
    print("|---|---|---|---|---|---|---|---|")
    if infer:
        print(f"| inference (dev, batch {BATCH}) | – | – | – | – | "
              f"{_pct(fine['inference']['accuracy'])} | {infer} | 1.00 |")  # fmt: skip
    for k in ("fo", "zo-dense", "zo-sparse"):
        v = fine.get(k)
        if v:
            ratio = f"{v['peak_rss_mib'] / infer:.2f}" if infer else "–"
            print(f"| {k} (lr {v['spec']['lr']:g}) | {v['steps']} | {v['train_s']:.0f} | "
                  f"{v['wall_s']:.0f} | {_pct(v['start_accuracy'])} | {_pct(v['accuracy'])} | "
                  f"{v['peak_rss_mib']} | {ratio} |")  # fmt: skip
    print("\n| pruned model | one-shot | sparse MeZO | steps | masked first-order | steps |")
    print("|---|---|---|---|---|---|")
    for key in PRUNE_KEYS:
        zo, fo = rec.get(f"zo-{key}"), rec.get(f"fo-{key}")
        if zo or fo:
            zs = f"{_pct(zo['accuracy'])} | {zo['steps']}" if zo else "– | –"
            fs = f"{_pct(fo['accuracy'])} | {fo['steps']}" if fo else "– | –"
            print(f"| {key} | {_pct(pruned.get(key, {}).get('accuracy'))} | {zs} | {fs} |")
    print("\n| OBS Fisher | q | rows | forwards | Spearman vs autograd | traces' Spearman | "
          "50 % | 70 % | 50 %, mask only | 70 %, mask only |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    shrunk = {k: v for k, v in obs.items() if "-shrunk" in k}
    obs = {k: v for k, v in obs.items() if k not in shrunk}
    for k, v in obs.items():
        acc, bare = v["accuracy"], v.get("accuracy_no_update", {})
        traces = v.get("c_spearman_vs_autograd")
        print(f"| {k} | {v.get('q', '–')} | {v.get('m', '–')} | {v.get('forwards', 0)} | "
              f"{v['spearman_vs_autograd']:.4f} | "
              f"{'–' if traces is None else f'{traces:.4f}'} | "
              f"{_pct(acc.get('0.5'))} | {_pct(acc.get('0.7'))} | {_pct(bare.get('0.5'))} | "
              f"{_pct(bare.get('0.7'))} |")  # fmt: skip
    head = "curvatures (obs-shrink) | ZO forwards | calibration | 50 %: ρ* | dev | 70 %: ρ* | dev"
    print(f"\n| {head} |")
    print("|---|---|---|---|---|---|---|")
    for k, v in shrunk.items():
        if not isinstance(v["shrinkage"].get("0.7"), dict):  # the first run: ce, 256 sentences
            v = {**v, "shrinkage": {s: {"ce 256": r} for s, r in v["shrinkage"].items()},
                 "accuracy": {"ce 256": v["accuracy"]}, "source": k}  # fmt: skip
        for o in v["shrinkage"].get("0.7", {}):
            cells = [f"{v['shrinkage'][s][o]:g} | {_pct(v['accuracy'][o][s])}"
                     for s in ("0.5", "0.7") if s in v["shrinkage"]]  # fmt: skip
            print(f"| {v['source']} | {v.get('zo_forwards', 0)} | {o} | {' | '.join(cells)} |")
    IMG.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, style in (("fo", "-o"), ("zo-dense", "-s"), ("zo-sparse", "-^")):
        v = fine.get(k)
        if v:
            pts = [(p["train_s"], 100 * p["accuracy"]) for p in v["curve"]]
            axes[0].plot(*zip(*pts, strict=True), style, label=f"{k} ({v['steps']} steps)")
    axes[0].set_title("From the pretrained MiniLM-L6")
    for key, color in zip(PRUNE_KEYS, ("C0", "C1", "C2", "C3"), strict=True):
        for kind, style in (("zo", "--"), ("fo", "-")):
            v = rec.get(f"{kind}-{key}")
            if v:
                pts = [(p["train_s"], 100 * p["accuracy"]) for p in v["curve"]]
                label = f"{key} {'sparse MeZO' if kind == 'zo' else 'masked FO'}"
                axes[1].plot(*zip(*pts, strict=True), style, color=color, marker=".", label=label)
    axes[1].set_title("Recovery after one-shot pruning")
    for ax in axes:
        ax.set_xlabel("training time (CPU seconds, 1 thread)")
        ax.set_ylabel("SST-2 dev accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, IMG / "zo_minilm_time.png")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))

    def mask_only(v: dict[str, Any], s: str) -> float:
        """Accuracy at ``s`` of the mask alone where recorded (the ZO update is noise)."""
        return 100 * float(v.get("accuracy_no_update", v["accuracy"])[s])

    lines = [("zo-encoder", "-o", "zo-encoder (mask only)")] + [
        (f"zo-tensor-q{q}", "-s" if q == 1 else "-^", f"zo-tensor, q = {q} (m rows, each 36 × 2q)")
        for q in sorted({int(v["q"]) for k, v in obs.items() if k.startswith("zo-tensor")})
    ]
    for (prefix, style, label), color in zip(lines, ("C0", "C1", "C2", "C3"), strict=False):
        rows = sorted((v for k, v in obs.items() if k == prefix or k.startswith(prefix + "-")),
                      key=lambda v: int(v["forwards"]))  # fmt: skip
        if not rows:
            continue
        budget = [int(v["forwards"]) for v in rows]
        axes[0].plot(budget, [v["spearman_vs_autograd"] for v in rows], style, color=color,
                     label=label)  # fmt: skip
        for ax, s in ((axes[1], "0.5"), (axes[2], "0.7")):
            ax.plot(budget, [mask_only(v, s) for v in rows], style, color=color, label=label)
            if prefix == "zo-encoder":
                ax.plot(budget, [100 * v["accuracy"][s] for v in rows], "--x", color=color,
                        label="zo-encoder with the joint update")  # fmt: skip
    for q, color in ((1, "C1"), (4, "C2")):  # (Z-9) with ρ chosen by calibration error (Z-10)
        mine = [v for v in shrunk.values() if v["source"].startswith(f"zo-tensor-q{q}")]
        rows = sorted((v for v in mine if "error" in v["accuracy"]),
                      key=lambda v: int(v["zo_forwards"]))  # fmt: skip
        for ax, s in ((axes[1], "0.5"), (axes[2], "0.7")):
            pts = [(int(v["zo_forwards"]), 100 * v["accuracy"]["error"][s]) for v in rows
                   if s in v["accuracy"]["error"]]  # fmt: skip
            if pts:
                ax.plot(*zip(*pts, strict=True), "--D", color=color,
                        label=f"zo-tensor, q = {q}, shrunk (ρ by calibration error)")  # fmt: skip
    secants = [v for v in shrunk.values() if v["source"].startswith("secant")]
    for v, color in zip(secants, ("C7", "C8", "C9", "C6"), strict=False):
        if "error" in v["accuracy"]:
            for ax, s in ((axes[1], "0.5"), (axes[2], "0.7")):
                if s in v["accuracy"]["error"]:
                    ax.axhline(100 * v["accuracy"]["error"][s], color=color, linestyle="-.",
                               label=f"{v['source']} shrunk (37 forwards of probes)")  # fmt: skip
    refs = (("magnitude", "grey"), ("autograd-obs", "black"), ("autograd-tensor", "C4"),
            ("random-rows-s0", "C5"), ("random-rows-s1", "C6"))  # fmt: skip
    for k, color in refs:
        v = obs.get(k)
        if v:
            axes[0].axhline(v["spearman_vs_autograd"], color=color, linestyle=":", label=k)
            for ax, s in ((axes[1], "0.5"), (axes[2], "0.7")):
                ax.axhline(mask_only(v, s), color=color, linestyle=":", label=k)
    axes[0].set_ylabel("Spearman of saliencies with autograd oBERT (m = 16)")
    axes[1].set_ylabel("SST-2 dev accuracy at 50 % (%)")
    axes[2].set_ylabel("SST-2 dev accuracy at 70 % (%)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("query budget (ONNX Runtime forwards)")
        ax.grid(alpha=0.3)
    handles, labels = axes[2].get_legend_handles_labels()  # the joint-update line too
    axes[0].legend(handles, labels, fontsize=7, loc="lower left", bbox_to_anchor=(0.3, 0.46))
    fig.tight_layout()
    _save(fig, IMG / "zo_minilm_obs.png")


def _save(fig: Any, path: Path) -> None:
    from obert_core.shared import atomic_output

    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110)
    print(f"plot: {path.relative_to(REPO)}")


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = make_parser(__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("child", help="internal: one training run, JSON spec, prints JSON")
    c.add_argument("spec")
    cmds = {"prune": cmd_prune, "sweep": cmd_sweep, "finetune": cmd_finetune,
            "recover": cmd_recover, "obs": cmd_obs, "obs-shrink": cmd_obs_shrink,
            "report": cmd_report}  # fmt: skip
    for name, func in cmds.items():
        p = sub.add_parser(name, help=(func.__doc__ or "").splitlines()[0].replace("%", "%%"))
        add_run_options(p, threads=1, seed=0, force=True)
        p.add_argument("--train-samples", type=int, default=12000)
        p.add_argument("--num-grads", type=int, default=128)
        p.add_argument("--eval-every", type=float, default=60.0, help="seconds of training")
        p.add_argument("--budget", type=float, default=180.0, help="part 1: seconds of training")
        p.add_argument("--recover-budget", type=float, default=90.0, help="part 2: seconds")
        p.add_argument("--sweep-seconds", type=float, default=45.0)
        p.add_argument("--recover-keys", nargs="*", default=list(PRUNE_KEYS), choices=PRUNE_KEYS)
        p.add_argument("--sweep-settings", nargs="*", default=["dense", "sparse"],
                       choices=sorted(SWEEP_SETTINGS))  # fmt: skip
        p.add_argument("--lrs", type=float, nargs="*", default=[1e-6, 1e-5, 1e-4])
        p.add_argument("--mus", type=float, nargs="*", default=[1e-3])
        p.add_argument("--obs-m", type=int, default=16, help="Fisher rows (mini-batches)")
        p.add_argument("--obs-batch", type=int, default=16, help="sentences per mini-batch")
        p.add_argument("--obs-damp", type=float, default=1e-7)
        p.add_argument("--obs-mu", type=float, default=1e-3)
        p.add_argument("--obs-q-encoder", type=int, nargs="*", default=[1, 4, 16])
        p.add_argument("--obs-q-tensor", type=int, nargs="*", default=[1, 4])
        p.add_argument(
            "--obs-m-tensor",
            type=int,
            nargs="*",
            default=[4, 8, 16, 32],
            help="per-tensor Fisher: rows (mini-batches) of the budget sweep",
        )
        p.add_argument(
            "--obs-max-forwards",
            type=int,
            default=2304,
            help="per-tensor Fisher: skip (q, rows) above 36 x rows x 2q forwards",
        )
        p.add_argument("--obs-random-seeds", type=int, nargs="*", default=[0, 1],
                       help="control: OBS with Fisher rows of pure noise")  # fmt: skip
        p.add_argument("--obs-sparsities", type=float, nargs="*", default=[0.5, 0.7])
        p.add_argument("--shrink-grid", type=float, nargs="*",
                       default=[0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0],
                       help="obs-shrink: the shrinkages rho of (Z-9) to calibrate")  # fmt: skip
        p.add_argument("--calib-sentences", type=int, default=512,
                       help="obs-shrink: training sentences of the calibration loss")  # fmt: skip
        p.add_argument("--calib-batch", type=int, default=64, help="obs-shrink: per forward")
        p.add_argument("--probe-sentences", type=int, default=256,
                       help="obs-shrink: sentences of the secant probes (Z-11)")  # fmt: skip
        p.add_argument("--probe-seeds", type=int, nargs="*", default=[0, 1],
                       help="obs-shrink: seeds of the secant probes' sentences")  # fmt: skip
        p.set_defaults(func=func)
    args = parser.parse_args()
    if args.command == "child":
        print(json.dumps(run_one(json.loads(args.spec))), flush=True)
        return
    args.func(args)


if __name__ == "__main__":
    main()
