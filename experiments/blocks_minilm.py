"""2-D block pruning with per-layer allocation (LPViT) of the fine-tuned MiniLM-L6 on SST-2.

Issue 19: "The same allocator applies to text encoders: MiniLM/BERT with 2-D blocks under a FLOPs
or latency budget".  One-shot on the dense model of ``experiments/oneshot_sst2.py finetune``
(``runs/minilm-sst2-dense``) with ``r×c`` blocks (default 16×16) of the 36 encoder Linear weights
at 50 % and 70 % of their FLOPs (every block costs the same, so the budget is the fraction of
blocks removed, met within one block), configs:

* ``magnitude-uniform``: ``magnitude``, every tensor loses the same share of its blocks;
* ``lpvit-uniform`` / ``lpvit-lpvit``: method ``lpvit`` (``mean |w ⊙ g|`` of the label-free
  gradient, no update), uniform or LPViT's allocation (distortion curves + power proxy);
* ``obs-uniform`` / ``obs-obs``: method ``obert`` (OBS block saliency + joint OBS update, Fisher
  blocks of ``2·c`` weights, one Fisher shared by both budgets), uniform or OBS-curve allocation;
* ``obsnu-uniform`` / ``obsnu-obs``: the same masks without the OBS update (the kept weights put
  back to their dense values): the OBS saliency (and allocation) alone;
* ``lpvit-latency`` / ``obs-latency``: the same allocations under a measured-latency budget, with
  ``--latency-table FILE`` (obert-deploy's ``latency-table``, e.g.
  ``experiments/results/latency_tables/minilm_deepsparse_16x16.json``); ``report --latency-table``
  adds every model's target-Linear latency predicted by the table.

* ``<config>-f25`` / ``-f50`` / ``-f75`` of ``lpvit-lpvit``, ``obs-obs``, ``obsnu-obs``: the
  same allocation with ``allocation_floor`` 0.25 / 0.5 / 0.75 (every tensor keeps at least that
  fraction of its uniform share of blocks, docs/math.md §8, (B-9)); run with ``--only``.
* ``<config>-r2`` / ``-r3`` (``-r3g``: geometric steps) of ``obs-uniform``, ``obs-obs[-fNN]``,
  ``lpvit-uniform``, ``lpvit-lpvit[-fNN]``: iterative allocation, ``allocation_rounds`` K
  (docs/math.md §8, (B-10)): K rounds, each with fresh gradients at the pruned weights, new
  curves and the allocation (and OBS update) of its cumulative budget; run with ``--only``.

Sub-commands (1 thread by default; finished entries are skipped unless ``--force``):

    .venv/bin/python experiments/blocks_minilm.py prune --save   # one-shot, every config
    .venv/bin/python experiments/blocks_minilm.py diagnose       # one layer pruned at a time
    .venv/bin/python experiments/blocks_minilm.py kd --labels L1 L2   # KD (default: 2 best at 70 %)
    .venv/bin/python experiments/blocks_minilm.py report         # table, docs/img/blocks_minilm.png

``prune --seed S`` (S ≠ 0: other gradient batches) stores its entries as ``<label>-s<S>``.

Dev accuracy on all 872 SST-2 dev sentences.  Results: ``experiments/results/blocks_minilm.json``;
run folders under ``runs/blocks-minilm/``.
"""

from __future__ import annotations

import argparse
import random
import shutil
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
    cpu_info,
    data_dir,
    epoch_eval,
    load_results,
    make_parser,
    save_entry,
    train,
)

RUNS_DIR = RUNS_ROOT / "blocks-minilm"
DENSE = RUNS_ROOT / "minilm-sst2-dense"
RESULTS = RESULTS_DIR / "blocks_minilm.json"
UNSTRUCTURED = RESULTS_DIR / "oneshot_sst2.json"
PLOT = IMG / "blocks_minilm.png"
SPARSITIES = (0.5, 0.7)
MAX_SEQ_LENGTH = 64
CONFIGS: dict[str, tuple[str, str]] = {
    "magnitude-uniform": ("magnitude", "uniform"),
    "lpvit-uniform": ("lpvit", "uniform"),
    "lpvit-lpvit": ("lpvit", "lpvit"),
    "obs-uniform": ("obert", "uniform"),
    "obs-obs": ("obert", "obs"),
    "obsnu-uniform": ("obert", "uniform"),
    "obsnu-obs": ("obert", "obs"),
    "obs-global": ("obert", "global"),
}
"""Config -> (method, allocation); ``obs-global`` (one threshold over all block scores, oBERT's
default) is run with ``--blocks block4`` as the reference: oBERT's 4-blocks at the same FLOPs."""
LATENCY_CONFIGS: dict[str, tuple[str, str]] = {
    "lpvit-latency": ("lpvit", "lpvit"),
    "obs-latency": ("obert", "obs"),
}
"""The same allocations with a measured-latency budget (only with a latency table)."""
FLOORS = (0.25, 0.5, 0.75)
"""``allocation_floor`` values tried (docs/math.md §8, (B-9)): configs ``<config>-f<100·φ>``."""
FLOOR_OF: dict[str, float] = {}
for _phi in FLOORS:
    for _config in ("lpvit-lpvit", "obs-obs", "obsnu-obs"):
        _name = f"{_config}-f{round(100 * _phi)}"
        CONFIGS[_name] = CONFIGS[_config]
        FLOOR_OF[_name] = _phi
ROUNDS = (2, 3)
"""``allocation_rounds`` tried (docs/math.md §8, (B-10)): configs ``<config>-r<K>`` (equal cost
steps) and ``<config>-r<K>g`` (geometric), each round with fresh gradients at the pruned weights."""
ROUNDS_OF: dict[str, tuple[int, str]] = {}
for _k in ROUNDS:
    for _config in (
        *("obs-uniform", "obs-obs", "obs-obs-f25", "obs-obs-f50", "obs-obs-f75"),
        *("lpvit-uniform", "lpvit-lpvit", "lpvit-lpvit-f25", "lpvit-lpvit-f75"),
    ):
        for _tag, _spacing in (("", "equal"), ("g", "geometric")):
            _name = f"{_config}-r{_k}{_tag}"
            CONFIGS[_name] = CONFIGS[_config]
            ROUNDS_OF[_name] = (_k, _spacing)
            if _config in FLOOR_OF:
                FLOOR_OF[_name] = FLOOR_OF[_config]
NO_UPDATE = frozenset(c for c in CONFIGS if c.startswith("obsnu-"))
PLOTTED = ("obs-obs", "lpvit-lpvit", "obs-obs-f50")
"""The allocations of the per-tensor panel of the plot (the others are in the JSON)."""


def _label(config: str, block: str, sparsity: float) -> str:
    """``obs-obs-16x16-50``."""
    return f"{config}-{block}-{round(100 * sparsity)}"


def _settings(
    method: str, allocation: str, block: str, args: argparse.Namespace, config: str = ""
) -> dict[str, Any]:
    """The method's settings: the default targets (the 36 encoder Linear weights)."""
    if block == "block4":  # oBERT's 4-block masks, Fisher blocks of 32 (the paper's)
        return {
            "mask_type": "block4",
            "fisher_block_size": 32,
            "num_grads": args.num_grads,
            "grad_batch_size": args.grad_batch_size,
            "damp": args.damp,
            "seed": args.seed,
        }
    c = int(block.split("x")[1])
    out: dict[str, Any] = {"mask_type": block, "allocation": allocation}
    if config in FLOOR_OF:
        out["allocation_floor"] = FLOOR_OF[config]
    if config in ROUNDS_OF:
        out["allocation_rounds"], out["allocation_spacing"] = ROUNDS_OF[config]
    if method == "obert":
        out.update(
            num_grads=args.num_grads, grad_batch_size=args.grad_batch_size, damp=args.damp,
            fisher_block_size=2 * c, seed=args.seed,
        )  # fmt: skip
    elif method == "lpvit":
        out.update(num_grads=args.lpvit_grads, grad_batch_size=args.grad_batch_size, seed=args.seed)
    return out


def _load_eval(task: Any, path: Path) -> Any:
    """``task.load_model(path)`` in eval mode."""
    model = task.load_model(str(path))
    model.train(False)
    return model


class Runner:
    """The dense model, loaded once; one-shot copies of it, evaluated on all dev sentences."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch
        from transformers import AutoTokenizer

        from obert_train import ClassificationTask, read_glue_tsv

        torch.set_num_threads(args.threads)
        if not (DENSE / "model.safetensors").is_file():
            sys.exit(f"no dense model at {DENSE}: run `experiments/oneshot_sst2.py finetune`")
        self.tokenizer = AutoTokenizer.from_pretrained(DENSE)
        train_rows = read_glue_tsv(data_dir() / "train.tsv")
        dev_rows = read_glue_tsv(data_dir() / "dev.tsv")
        self.task: Any = ClassificationTask(
            self.tokenizer, train_rows, dev_rows, max_seq_length=MAX_SEQ_LENGTH
        )
        self.dense = _load_eval(self.task, DENSE)
        self.state = {k: v.clone() for k, v in self.dense.state_dict().items()}
        self.caches: dict[str, dict[str, Any]] = {}

    def fresh(self) -> Any:
        self.dense.load_state_dict(self.state)
        return self.dense

    def evaluate(self, model: Any) -> dict[str, float]:
        metrics: dict[str, float] = self.task.evaluate(model, batch_size=128, progress=False)
        return metrics


def _layers(model: Any, masks: dict[str, Any], block: str) -> dict[str, Any]:
    """Per target: shape, blocks, kept blocks (every mask block-aligned)."""
    r, c = (1, 4) if block == "block4" else (int(v) for v in block.split("x"))
    params = dict(model.named_parameters())
    out = {}
    for name, keep in masks.items():
        rows, cols = params[name].shape
        tiles = keep.reshape(rows // r, r, cols // c, c)
        alive = tiles.any(3).any(1)
        assert bool((tiles.all(3).all(1) == alive).all()), name
        out[name] = {"shape": [rows, cols], "blocks": alive.numel(), "kept": int(alive.sum())}
    return out


def _latency_kept(table: Any, layers: dict[str, Any], block: str) -> float:
    """Σ latency at each tensor's kept density / Σ dense latency, from the table."""
    import obert_core.blocks as ob

    kept = dense = 0.0
    for name, v in layers.items():
        rows, cols = v["shape"]
        ratio = 1.0 - v["kept"] / v["blocks"]
        grid = [0.0, ratio] if ratio > 0 else [0.0, 1.0]
        at = ob.latency_curve(table, (rows, cols), block, ratios=grid, name=name)
        dense += float(at[0])
        kept += float(at[1]) if ratio > 0 else float(at[0])
    return kept / dense


def _record_rounds(rounds: list[dict[str, Any]]) -> Any:
    """Wrap ``obert_core.blocks.allocate_ratios`` so every allocation of a step is recorded.

    Per round (one allocation each): the budget, blocks removed per tensor, and what the round's
    curves predict: the summed per-tensor loss of the allocation and of the uniform allocation at
    the same budget (each tensor at least at the blocks it has already lost).
    """
    import numpy as np

    import obert_core.blocks as ob

    original = ob.allocate_ratios

    def wrapped(distortion: Any, cost: Any, budget: float, **kw: Any) -> Any:
        plan = original(distortion, cost, budget, **kw)
        if kw.get("rule") == "uniform" and not kw.get("floor"):
            rounds.append({"budget": budget, "pruned": dict(plan.pruned)})
            return plan
        names = list(distortion)
        start = kw.get("start") or dict.fromkeys(names, 0)
        zero = {n: np.zeros_like(np.asarray(distortion[n], dtype=np.float64)) for n in names}
        uni = original(zero, cost, budget, rule="uniform", blocks=kw.get("blocks")).pruned
        curves = {n: np.asarray(distortion[n], dtype=np.float64) for n in names}
        at_uni = {n: max(uni[n], start[n]) for n in names}
        rounds.append({
            "budget": budget, "pruned": dict(plan.pruned), "start": dict(start),
            "predicted": float(sum(curves[n][plan.pruned[n]] for n in names)),
            "predicted_uniform": float(sum(curves[n][at_uni[n]] for n in names)),
            "per_tensor": {n: [float(curves[n][plan.pruned[n]]), float(curves[n][at_uni[n]])]
                           for n in names},
        })  # fmt: skip
        return plan

    ob.allocate_ratios = wrapped
    return original


def cmd_prune(args: argparse.Namespace) -> None:
    import torch

    import obert_core.blocks as ob
    from obert_train import oneshot_prune

    run = Runner(args)
    data = load_results(RESULTS)
    if "dense" not in data.get("runs", {}):
        start = time.perf_counter()
        metrics = run.evaluate(run.fresh())
        save_entry(RESULTS, "dense", {"metrics": metrics, "eval_s": time.perf_counter() - start,
                                      "machine": cpu_info(), "threads": args.threads})  # fmt: skip
    configs = dict(CONFIGS)
    table = args.latency_table
    if table is not None:
        configs.update(LATENCY_CONFIGS)
        print(f"latency table: {table}", flush=True)
    chosen = args.only or [c for c in configs if c not in FLOOR_OF and c not in ROUNDS_OF]
    for block in args.blocks:
        for sparsity in args.sparsities:
            for config in chosen:
                label = _label(config, block, sparsity) + (f"-s{args.seed}" if args.seed else "")
                if label in load_results(RESULTS).get("oneshot", {}) and not args.force:
                    print(f"{label}: done", flush=True)
                    continue
                method, allocation = configs[config]
                settings = _settings(method, allocation, block, args, config)
                if config in LATENCY_CONFIGS:
                    if table is None:
                        sys.exit(f"{config} needs --latency-table FILE")
                    settings["latency_table"] = str(table)
                cache = (
                    run.caches.setdefault(f"{block}-{method}", {}) if method == "obert" else None
                )
                model = run.fresh()
                dense = {n: p.detach().clone() for n, p in model.named_parameters()}
                start = time.perf_counter()
                rounds: list[dict[str, Any]] = []
                original = _record_rounds(rounds)
                try:
                    result = oneshot_prune(
                        model, method, sparsity, settings=settings, task=run.task,
                        fisher_cache=cache, progress=False, log=print,
                    )  # fmt: skip
                finally:
                    ob.allocate_ratios = original
                seconds = time.perf_counter() - start
                masks = {n: m.detach() for n, m in result.masks.items()}
                if config in NO_UPDATE:
                    params = dict(model.named_parameters())
                    with torch.no_grad():
                        for name, keep in masks.items():
                            w = params[name]
                            w.copy_(dense[name] * keep.reshape(w.shape).to(w.dtype))
                layers = _layers(model, masks, block)
                kept = sum(v["kept"] for v in layers.values())
                total = sum(v["blocks"] for v in layers.values())
                t0 = time.perf_counter()
                metrics = run.evaluate(model)
                entry = {
                    "config": config, "method": method, "allocation": allocation,
                    "block": block, "target_sparsity": sparsity, "settings": settings,
                    "flops_kept": kept / total, "accuracy": metrics["accuracy"],
                    "loss": metrics["loss"], "seconds": seconds,
                    "eval_s": time.perf_counter() - t0, "timings": result.timings,
                    "layers": layers, "obs_update": method == "obert" and config not in NO_UPDATE,
                    "rounds": rounds,
                    "machine": cpu_info(), "threads": args.threads,
                }  # fmt: skip
                save_entry(RESULTS, label, entry, section="oneshot")
                print(f"{label}: accuracy {metrics['accuracy']:.4f}, FLOPs kept "
                      f"{kept / total:.5f}, {seconds:.1f} s", flush=True)  # fmt: skip
                for i, row in enumerate(rounds):
                    if "predicted" in row:
                        print(f"  round {i + 1} to budget {row['budget']:.4f}: curves predict "
                              f"{row['predicted']:.4f} (uniform {row['predicted_uniform']:.4f})",
                              flush=True)  # fmt: skip
                if args.save:
                    model.save_pretrained(RUNS_DIR / label)
                    run.tokenizer.save_pretrained(RUNS_DIR / label)


def cmd_kd(args: argparse.Namespace) -> None:
    """KD recovery (masks fixed, teacher = dense) of the best one-shot configs."""
    import torch

    from obert_train import ClassificationTask, read_glue_tsv

    data = load_results(RESULTS)
    oneshot = data.get("oneshot", {})
    if args.labels:
        labels = args.labels
    else:
        pool = [k for k, v in oneshot.items() if v["target_sparsity"] == args.kd_sparsity]
        labels = sorted(pool, key=lambda k: -oneshot[k]["accuracy"])[: args.best]
    torch.set_num_threads(args.threads)
    run = Runner(args)
    train_rows = read_glue_tsv(data_dir() / "train.tsv")
    sample = random.Random(args.seed).sample(train_rows, args.kd_samples)
    dev_rows = read_glue_tsv(data_dir() / "dev.tsv")
    kd_task = ClassificationTask(run.tokenizer, sample, dev_rows, max_seq_length=MAX_SEQ_LENGTH)
    for label in labels:
        name = f"{label}-kd"
        if name in data.get("runs", {}) and not args.force:
            print(f"{name}: done", flush=True)
            continue
        start = RUNS_DIR / label
        if not (start / "model.safetensors").is_file():
            sys.exit(f"{start} is missing: rerun `prune --only ... --force --save` for {label}")
        if args.force:
            shutil.rmtree(RUNS_DIR / name, ignore_errors=True)
        torch.manual_seed(args.seed)
        student = kd_task.load_model(str(start))
        teacher = _load_eval(kd_task, DENSE)
        evaluator, points = epoch_eval(kd_task)
        train(
            name=name, results=RESULTS, recipe="blocks-minilm-kd", task=kd_task, model=student,
            model_name=str(start.relative_to(REPO)), tokenizer=run.tokenizer,
            out=RUNS_DIR / name, teacher=teacher, batch_size=32, seed=args.seed,
            callbacks=[evaluator], progress=False,
            before_save=_tagger(points, label),
        )  # fmt: skip


def _tagger(points: list[dict[str, float]], label: str) -> Any:
    """What a KD entry records besides the run: its epoch accuracies and one-shot label."""

    def tag(entry: dict[str, Any]) -> None:
        entry.update(epoch_eval=points, oneshot=label)

    return tag


def cmd_diagnose(args: argparse.Namespace) -> None:
    """Is the loss of a block allocation the sum of its layers' losses? (compounding)

    For each saved one-shot model (``prune --save``) and each encoder layer ``i``: the dense model
    with only layer ``i``'s six target weights taken from the pruned one, evaluated on all dev
    sentences; then the whole pruned model.  The per-layer curves of an allocation are this
    one-layer-at-a-time picture (and second order); the gap between the sum of the one-layer
    loss increases and the whole model's is what they miss.
    """
    from safetensors.torch import load_file

    run = Runner(args)
    base = run.evaluate(run.fresh())
    for label in args.labels:
        key = f"diagnose-{label}"
        if key in load_results(RESULTS).get("runs", {}) and not args.force:
            print(f"{key}: done", flush=True)
            continue
        pruned = load_file(str(RUNS_DIR / label / "model.safetensors"))
        names = list(load_results(RESULTS)["oneshot"][label]["layers"])
        layers = sorted({int(n.split(".")[3]) for n in names})
        rows = []
        for layer in [*layers, -1]:
            chosen = [n for n in names if layer == -1 or int(n.split(".")[3]) == layer]
            state = dict(run.state)
            state.update({n: pruned[n] for n in chosen})
            model = run.dense
            model.load_state_dict(state)
            metrics = run.evaluate(model)
            row = {"layer": layer, "loss": metrics["loss"], "accuracy": metrics["accuracy"],
                   "delta_loss": metrics["loss"] - base["loss"]}  # fmt: skip
            rows.append(row)
            where = "all" if layer == -1 else layer
            print(f"{label} layer {where}: loss {metrics['loss']:.4f} (+{row['delta_loss']:.4f}), "
                  f"accuracy {metrics['accuracy']:.4f}", flush=True)  # fmt: skip
        summed = sum(r["delta_loss"] for r in rows if r["layer"] != -1)
        entry = {"label": label, "dense": base, "rows": rows, "sum_of_layers": summed,
                 "whole": rows[-1]["delta_loss"], "machine": cpu_info()}  # fmt: skip
        save_entry(RESULTS, key, entry)
        print(f"{label}: sum of one-layer loss increases {summed:.4f}, whole model "
              f"{rows[-1]['delta_loss']:.4f}", flush=True)  # fmt: skip


MEASURED_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
"""Ratios at which ``measured`` prunes one tensor alone (the others dense) and measures the loss."""


def cmd_measured(args: argparse.Namespace) -> None:
    """An allocation from curves measured on the calibration loss (SPDY / OWL-style sensitivity).

    The OBS curves are each tensor's second-order loss; here each tensor's curve is the real
    cross-entropy on ``--calib`` training sentences (not dev) with that tensor alone pruned by
    the OBS block saliency + update at the ratios of :data:`MEASURED_GRID`, the others dense.
    The OBS update of a tensor depends on its own mask only (Fisher blocks inside a row), so a
    model whose tensor ``t`` is at ratio ``a_t`` is assembled exactly from the ``obs-uniform``
    one-shot models at the ratios of the grid.  The ratios: ``obert_core.blocks.allocate_ratios``
    (``rule="lagrange"``, FLOPs) on the shared grid, so the budget is met to a grid step of one
    tensor, not one block (the FLOPs kept are recorded).
    """
    import numpy as np
    import torch

    import obert_core.blocks as ob
    from obert_train import ClassificationTask, oneshot_prune, read_glue_tsv

    run = Runner(args)
    block = args.block
    label_of = {s: _label("obs-measured", block, s) for s in args.sparsities}
    if all(v in load_results(RESULTS).get("oneshot", {}) for v in label_of.values()) and not (
        args.force
    ):
        print("obs-measured: done", flush=True)
        return
    settings = _settings("obert", "uniform", block, args)
    cache: dict[str, Any] = {}
    weights: dict[float, dict[str, Any]] = {}
    start = time.perf_counter()
    for a in MEASURED_GRID[1:]:
        model = run.fresh()
        oneshot_prune(model, "obert", a, settings=settings, task=run.task, fisher_cache=cache,
                      progress=False, log=lambda _line: None)  # fmt: skip
        params = dict(model.named_parameters())
        names = [n for n in params if n in _targets(run)]
        weights[a] = {n: params[n].detach().clone() for n in names}
        print(f"obs-uniform weights at ratio {a}: {time.perf_counter() - start:.0f} s", flush=True)
    names = list(weights[MEASURED_GRID[1]])
    train_rows = read_glue_tsv(data_dir() / "train.tsv")
    calib_rows = random.Random(args.seed + 1).sample(train_rows, args.calib)
    calib = ClassificationTask(run.tokenizer, train_rows[:16], calib_rows,
                               max_seq_length=MAX_SEQ_LENGTH)  # fmt: skip
    model = run.fresh()
    base = float(calib.evaluate(model, batch_size=128, progress=False)["loss"])
    params = dict(model.named_parameters())
    curves: dict[str, list[float]] = {}
    for i, name in enumerate(names):
        row = [0.0]
        for a in MEASURED_GRID[1:]:
            with torch.no_grad():
                params[name].copy_(weights[a][name])
            row.append(float(calib.evaluate(model, batch_size=128, progress=False)["loss"]) - base)
        with torch.no_grad():
            params[name].copy_(run.state[name])
        curves[name] = row
        print(f"{i + 1}/{len(names)} {_short(name)}: " + " ".join(f"{v:+.3f}" for v in row),
              flush=True)  # fmt: skip
    measure_s = time.perf_counter() - start
    r, c = (int(v) for v in block.split("x"))
    grid = np.asarray(MEASURED_GRID)
    shapes = {n: tuple(int(d) for d in run.state[n].shape) for n in names}
    cost = {n: ob.flops_curve(shapes[n], (r, c), ratios=grid) for n in names}
    for sparsity, label in label_of.items():
        # the loss may fall a little at low ratios (noise): the curve as the running maximum
        dist = {n: np.maximum.accumulate(np.asarray(v)) for n, v in curves.items()}
        plan = ob.allocate_ratios(dist, cost, 1 - sparsity, ratios=grid, rule="lagrange",
                                  smooth=None)  # fmt: skip
        model = run.fresh()
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n in names:
                if plan.ratios[n] > 0:
                    params[n].copy_(weights[plan.ratios[n]][n])
        masks = {n: (params[n].detach() != 0).reshape(-1) for n in names}
        layers = _layers(model, masks, block)
        kept = sum(v["kept"] for v in layers.values())
        total = sum(v["blocks"] for v in layers.values())
        metrics = run.evaluate(model)
        entry = {
            "config": "obs-measured", "method": "obert", "allocation": "measured",
            "block": block, "target_sparsity": sparsity, "settings": settings,
            "flops_kept": kept / total, "accuracy": metrics["accuracy"],
            "loss": metrics["loss"], "seconds": measure_s, "layers": layers,
            "ratios": plan.ratios, "curves": curves, "grid": list(MEASURED_GRID),
            "calib_sentences": args.calib, "calib_base_loss": base, "obs_update": True,
            "machine": cpu_info(), "threads": args.threads,
        }  # fmt: skip
        save_entry(RESULTS, label, entry, section="oneshot")
        print(f"{label}: accuracy {metrics['accuracy']:.4f}, FLOPs kept {kept / total:.5f}",
              flush=True)  # fmt: skip


def _targets(run: Runner) -> set[str]:
    """The 36 encoder Linear weights (the default targets)."""
    from obert_train import resolve_target_params

    return set(resolve_target_params(run.dense))


def _unstructured() -> dict[float, dict[str, float]]:
    """The project's unstructured one-shot results at the same sparsities (oneshot_sst2.json)."""
    runs = load_results(UNSTRUCTURED).get("runs", {})
    out: dict[float, dict[str, float]] = {}
    for s in SPARSITIES:
        row = {}
        for key, name in ((f"magnitude@{s}", "magnitude"),
                          (f"obert-joint-m256-d1e-07@{s}", "oBERT joint")):  # fmt: skip
            if key in runs:
                row[name] = 100 * runs[key]["dev_accuracy"]
        out[s] = row
    return out


def cmd_report(args: argparse.Namespace) -> None:
    data = load_results(RESULTS)
    oneshot, runs = data.get("oneshot", {}), data.get("runs", {})
    dense = runs.get("dense")
    if dense is None:
        sys.exit("no results yet: run `prune` first")
    print(f"dense: {100 * dense['metrics']['accuracy']:.2f} %")
    blocks = sorted({v["block"] for v in oneshot.values()})
    table = None
    if args.latency_table is not None:
        from obert_train import load_latency_table

        table = load_latency_table(args.latency_table)
    print("\n| block | budget | config | FLOPs kept | latency kept (table) | one-shot | + KD "
          "| one-shot s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for block in blocks:
        for s in SPARSITIES:
            for config in [*CONFIGS, *LATENCY_CONFIGS, "obs-measured"]:
                label = _label(config, block, s)
                if label not in oneshot:
                    continue
                e = oneshot[label]
                kd = runs.get(f"{label}-kd")
                kd_text = f"{100 * kd['metrics']['accuracy']:.2f}" if kd else "–"
                lat = "–"
                if table is not None and block != "block4":  # the table is of RxC blocks
                    lat = f"{_latency_kept(table, e['layers'], block):.4f}"
                unit = "latency" if config in LATENCY_CONFIGS else "FLOPs"
                print(f"| {block} | {round(100 * s)} % {unit} removed | {config} | "
                      f"{e['flops_kept']:.4f} | {lat} | {100 * e['accuracy']:.2f} | {kd_text} | "
                      f"{e['seconds']:.0f} |")  # fmt: skip
    for s, row in _unstructured().items():
        print(f"unstructured one-shot at {round(100 * s)} %: " + ", ".join(
            f"{k} {v:.2f}" for k, v in row.items()))  # fmt: skip
    _plot(oneshot, runs, blocks)


def _plot(oneshot: dict[str, Any], runs: dict[str, Any], blocks: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not blocks:
        return
    block = blocks[0]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1, 1.4]})
    configs = [c for c in [*CONFIGS, *LATENCY_CONFIGS] if c != "obs-global"
               if any(_label(c, block, s) in oneshot for s in SPARSITIES)]  # fmt: skip
    width = 0.38
    for i, s in enumerate(SPARSITIES):
        vals = [100 * oneshot[_label(c, block, s)]["accuracy"]
                if _label(c, block, s) in oneshot else 0.0 for c in configs]  # fmt: skip
        xs = [j + (i - 0.5) * width for j in range(len(configs))]
        ax.bar(xs, vals, width, label=f"{round(100 * s)} % FLOPs removed")
    dense = 100 * runs["dense"]["metrics"]["accuracy"]
    ax.axhline(dense, color="k", lw=1, ls="--", label=f"dense {dense:.2f}")
    for s, row in _unstructured().items():
        if "oBERT joint" in row:
            ax.axhline(row["oBERT joint"], lw=1, ls=":", color="C2" if s == 0.5 else "C3",
                       label=f"unstructured oBERT {round(100 * s)} %")  # fmt: skip
    for s, color in zip(SPARSITIES, ("C2", "C3"), strict=True):
        ref = oneshot.get(_label("obs-global", "block4", s))
        if ref is not None:
            ax.axhline(100 * ref["accuracy"], lw=1, ls="-.", color=color,
                       label=f"oBERT 4-block {round(100 * s)} %")  # fmt: skip
    ax.set_xticks(range(len(configs)), configs, rotation=35, ha="right")
    ax.set_ylim(45, 100)
    ax.set_ylabel("SST-2 dev accuracy (%), one-shot")
    ax.set_title(f"MiniLM-L6, {block} blocks, one-shot")
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    for s, line in zip(SPARSITIES, ("-", ":"), strict=True):
        for config, (mark, color) in zip(
            PLOTTED, (("o", "C0"), ("s", "C1"), ("^", "C4")), strict=True
        ):
            label = _label(config, block, s)
            if label not in oneshot:
                continue
            layers = oneshot[label]["layers"]
            names = list(layers)
            bx.plot(range(len(names)), [layers[n]["kept"] / layers[n]["blocks"] for n in names],
                    marker=mark, ls=line, color=color, ms=3,
                    label=f"{config}, {round(100 * s)} % FLOPs removed")  # fmt: skip
    names = list(oneshot[_label("obs-obs", block, SPARSITIES[0])]["layers"]) if _label(
        "obs-obs", block, SPARSITIES[0]) in oneshot else []  # fmt: skip
    short = [_short(n) for n in names]
    for s in SPARSITIES:
        bx.axhline(1 - s, color="k", lw=0.8, ls="--")
    bx.set_xticks(range(len(short)), short, rotation=90, fontsize=6)
    bx.set_ylabel("fraction of blocks kept (dashed: uniform)")
    bx.set_title("per-tensor allocation")
    bx.legend(fontsize=7)
    fig.tight_layout()
    tmp = PLOT.with_name(f".{PLOT.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(PLOT)
    print(f"plot: {PLOT.relative_to(REPO)}")


def _short(name: str) -> str:
    """``bert.encoder.layer.3.attention.self.query.weight`` -> ``L3 q``."""
    parts = name.split(".")
    kinds = {"query": "q", "key": "k", "value": "v"}
    if parts[4] == "attention":
        return f"L{parts[3]} " + (kinds.get(parts[6], "o") if parts[5] == "self" else "o")
    return f"L{parts[3]} " + ("fc1" if parts[4] == "intermediate" else "fc2")


def main() -> None:
    parser = make_parser(__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prune", help="one-shot block pruning, every config and budget")
    add_run_options(p, threads=1, seed=0, force=True)
    p.add_argument(
        "--blocks", nargs="*", default=["16x16"], help="RxC block shapes, or block4 (obs-global)"
    )
    p.add_argument("--sparsities", type=float, nargs="*", default=list(SPARSITIES))
    p.add_argument("--only", nargs="*", choices=[*CONFIGS, *LATENCY_CONFIGS])
    p.add_argument("--num-grads", type=int, default=128, help="oBERT gradients (Fisher)")
    p.add_argument("--lpvit-grads", type=int, default=128, help="LPViT calibration batches")
    p.add_argument("--grad-batch-size", type=int, default=16)
    p.add_argument("--damp", type=float, default=1e-7)
    p.add_argument("--latency-table", type=Path, default=None)
    p.add_argument("--save", action="store_true", help="save every one-shot model (for kd)")
    p.set_defaults(func=cmd_prune)
    k = sub.add_parser("kd", help="KD recovery of the best one-shot models")
    add_run_options(k, threads=1, seed=0, force=True)
    k.add_argument("--labels", nargs="*", help="one-shot labels (default: the best)")
    k.add_argument("--best", type=int, default=2)
    k.add_argument("--kd-sparsity", type=float, default=0.7)
    k.add_argument("--kd-samples", type=int, default=2000, help="SST-2 training sentences")
    k.set_defaults(func=cmd_kd)
    d = sub.add_parser("diagnose", help="one layer pruned at a time vs all (compounding)")
    add_run_options(d, threads=1, seed=0, force=True)
    d.add_argument("--labels", nargs="*", default=["obs-obs-16x16-70", "obs-uniform-16x16-70"])
    d.set_defaults(func=cmd_diagnose)
    m = sub.add_parser("measured", help="allocation from curves measured on the calibration loss")
    add_run_options(m, threads=1, seed=0, force=True)
    m.add_argument("--block", default="16x16")
    m.add_argument("--sparsities", type=float, nargs="*", default=list(SPARSITIES))
    m.add_argument("--calib", type=int, default=128, help="training sentences of the loss")
    m.add_argument("--num-grads", type=int, default=128, help="oBERT gradients (Fisher)")
    m.add_argument("--grad-batch-size", type=int, default=16)
    m.add_argument("--damp", type=float, default=1e-7)
    m.set_defaults(func=cmd_measured)
    r = sub.add_parser("report", help="Markdown table and docs/img/blocks_minilm.png")
    r.add_argument("--latency-table", type=Path, default=None, help="predict every latency")
    r.set_defaults(func=cmd_report)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
