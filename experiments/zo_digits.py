"""DeepZero's small-network finding on scikit-learn's digits: first-order vs CGE, RGE, sparse CGE.

Issue 20's first real result (DeepZero, arXiv 2310.02025: a 12,610-parameter CNN on CIFAR-10
reaches 77.01 % first-order, 76.95 % with the coordinate-wise estimate CGE, 68.38 %
with the randomised RGE). Here on the data set scikit-learn installs with itself
(``sklearn.datasets.load_digits``: 1,797 grey 8×8 images, values 0-16 scaled to [0, 1]) with
the split rule of ``vit_digits.py`` (stratified, 20 % dev, ``random_state`` 0: 1,437 / 360),
and a small CNN for 8×8×1 inputs (``SmallCNN``: conv 1→8 3×3, ReLU, max-pool 2, conv 8→16 3×3,
ReLU, max-pool 2, linear 64→10; 1,898 parameters, no BatchNorm: smaller than the paper's so that
the grid fits about an hour of one shared CPU core). Every run of a seed starts from the
same initial weights and sees the same batches (the HF ``Trainer``'s seeded sampler), the same
epochs, batch size and LR schedule (warm-up 3 epochs, then cosine to 0, weight decay 5e-4 on
the weight tensors). Configs:

* ``fo``: first-order, the paper's recipe: SGD momentum 0.9, lr 0.1 (``transformers.Trainer``);
* ``fo-sgd``: first-order with the update rule of ``ZOTrainer`` (SGD without momentum, lr 0.7);
* ``cge``: ``obert_train.ZOTrainer`` with ``estimator="cge"`` on every coordinate (one forward
  per coordinate plus one, feature reuse over the stages ``block1, block2, head``), lr 0.7;
* ``cge-momentum``: ``cge`` with DeepZero's optimizer, the one of ``fo``: SGD momentum 0.9,
  lr 0.1, weight decay 5e-4 on the weight tensors (``ZOSettings(momentum=0.9)``: exactly
  ``torch.optim.SGD`` fed the CGE estimate);
* ``cge-sparse90``: the same at 90 % gradient sparsity: ZO-GraSP ratios
  (``obert_train.zo_grasp_sparsities``: q = 192, μ = 5e-3, 25 training images per class, at
  the seed's initial weights) and a fresh random mask per weight tensor every 5 epochs
  (``mask_period``); biases always estimated;
* ``cge-sparse90-momentum``: ``cge-sparse90`` with the optimizer of ``cge-momentum``;
* ``rge``: ``ZOTrainer`` with ``estimator="spsa"`` and q = 192 directions per step (the paper's
  RGE query count; two forwards per direction), lr tuned on seed 0 (see ``RGE_LR``);
* ``rge-matched``: the same with q = 950, i.e. 1,900 forwards per step, the forward count of
  a dense CGE step (1,899); five times RGE's cost, so only when named (``--only rge-matched``).

``throughput`` measures CGE forward passes per second with and without feature reuse on this
CNN (and, with ``--workers N``, with reuse on N processes: DeepZero's forward parallelism),
interleaved (rounds alternate the order of the modes). Sub-commands::

    .venv/bin/python experiments/zo_digits.py throughput
    .venv/bin/python experiments/zo_digits.py train            # the grid; --only CONFIG --seeds 0 1
    .venv/bin/python experiments/zo_digits.py report           # table + docs/img/zo_digits.png

``train --epochs N`` (N ≠ 15) names its runs ``<config>-e<N>-s<seed>``, reported as their own
rows (``--only cge-sparse90 --epochs 129``: the loss evaluations of 15 dense CGE epochs).
A killed run resumes from its last epoch checkpoint when the same command runs again (the ZO
runs bit-identically, ``ZOTrainer``'s resume); a finished run (its name in the results) is
skipped unless ``--force``. Results: ``experiments/results/zo_digits.json``; files in
``runs/zo-digits/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import (
    IMG,
    REPO,
    RESULTS_DIR,
    RUNS_ROOT,
    add_run_options,
    cpu_info,
    load_results,
    make_parser,
    save_entry,
    write_results,
)

if TYPE_CHECKING:
    import torch

RUNS_DIR = RUNS_ROOT / "zo-digits"
RESULTS = RESULTS_DIR / "zo_digits.json"
DEV_FRACTION = 0.2
SPLIT_SEED = 0
EPOCHS = 15
BATCH = 128
WARMUP_EPOCHS = 3
WEIGHT_DECAY = 5e-4
MU = 5e-3
ZO_LR = 0.7
"""The lr of ``fo-sgd`` and CGE: ``fo-sgd`` on seeds 0 / 1 reached 93.6 / – at 0.5, 94.2 / 95.3
at 0.7, 84.7 / 94.4 at 1.0, 75.6 / 89.2 at 1.5 (% dev accuracy, 15 epochs)."""
RGE_LR = 0.3
"""The lr of RGE (q = 192), tuned for 4 epochs on seed 0 of a 3,818-parameter variant of the CNN
(pool after conv 2 only): 1.0 diverged (NaN loss), 0.3 reached 80.3 %, 0.1 28.9 %."""
RGE_Q = 192
MOMENTUM = 0.9
"""DeepZero's SGD momentum (with :data:`FO_LR`): ``fo`` and the ``*-momentum`` CGE configs."""
FO_LR = 0.1
MASK_PERIOD_EPOCHS = 5
GRADIENT_SPARSITY = 0.9
GRASP_PER_CLASS = 25
STAGES = ("block1", "block2", "head")
CONFIGS = (
    "fo",
    "fo-sgd",
    "cge",
    "cge-momentum",
    "cge-sparse90",
    "cge-sparse90-momentum",
    "rge",
    "rge-matched",
)
SEEDS = (0, 1, 2)
OPTIONAL = frozenset({"rge-matched"})
"""Configs run only when named with ``--only`` (seed 0 unless ``--seeds``): 5× RGE's cost."""


# --------------------------------------------------------------------------- data and model


def load_split() -> dict[str, Any]:
    """Digits as float tensors ``(n, 1, 8, 8)`` in [0, 1], split as ``vit_digits.py`` does."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]
    from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]

    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None]
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, dev_idx = train_test_split(
        np.arange(len(labels)),
        test_size=DEV_FRACTION,
        random_state=SPLIT_SEED,
        stratify=digits.target,
    )
    tr, dv = torch.as_tensor(train_idx), torch.as_tensor(dev_idx)
    return {
        "train": [{"pixel_values": images[i], "labels": int(labels[i])} for i in tr.tolist()],
        "train_x": images[tr],
        "train_y": labels[tr],
        "dev_x": images[dv],
        "dev_y": labels[dv],
    }


def small_cnn(seed: int) -> torch.nn.Module:
    """:class:`SmallCNN` with the initial weights of ``seed``."""
    import torch
    from torch import nn
    from transformers.modeling_outputs import SequenceClassifierOutput

    class SmallCNN(nn.Module):
        """conv 1→8, ReLU, pool 2, conv 8→16, ReLU, pool 2, linear 64→10; HF-style loss output."""

        def __init__(self) -> None:
            super().__init__()
            self.block1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.block2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 2 * 2, 10))

        def forward(
            self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None
        ) -> SequenceClassifierOutput:
            logits = self.head(self.block2(self.block1(pixel_values)))
            loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
            return SequenceClassifierOutput(loss=loss, logits=logits)

    torch.manual_seed(seed)
    return SmallCNN()


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy (a fraction) of ``model`` on ``x`` in eval mode, no gradients."""
    import torch

    was = model.training
    model.eval()
    with torch.no_grad():
        pred = model(pixel_values=x).logits.argmax(dim=1)
    model.train(was)
    return float((pred == y).double().mean())


def weight_names(model: torch.nn.Module) -> list[str]:
    """The weight tensors (conv kernels, the linear matrix): what sparsity and decay apply to."""
    return [n for n, p in model.named_parameters() if p.dim() > 1]


def grasp_batch(data: dict[str, Any], seed: int) -> dict[str, Any]:
    """``GRASP_PER_CLASS`` training images per class, a seeded sample (ZO-GraSP's batch)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    rows = []
    for c in range(10):
        idx = (data["train_y"] == c).nonzero().squeeze(1)
        rows.append(idx[torch.randperm(idx.numel(), generator=gen)[:GRASP_PER_CLASS]])
    pick = torch.cat(rows)
    return {"pixel_values": data["train_x"][pick], "labels": data["train_y"][pick]}


# --------------------------------------------------------------------------- runs


def _args(out: Path, seed: int, lr: float, epochs: int, steps: int, progress: bool) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        str(out),
        per_device_train_batch_size=BATCH,
        num_train_epochs=epochs,
        learning_rate=lr,
        weight_decay=WEIGHT_DECAY,
        lr_scheduler_type="cosine",
        warmup_steps=WARMUP_EPOCHS * steps,
        max_grad_norm=0.0,
        save_strategy="epoch",
        save_total_limit=1,
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=not progress,
        seed=seed,
        data_seed=seed,
        dataloader_drop_last=False,
    )


def _epoch_callback(
    data: dict[str, Any], file: Path, points: list[dict[str, Any]], forwards: int
) -> Any:
    """Dev accuracy and the epoch's training seconds at each epoch end, saved to ``file``."""
    from transformers import TrainerCallback

    class EpochPoints(TrainerCallback):
        """Records one point per epoch (eval excluded from the epoch's seconds)."""

        start = 0.0

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()
            self.step0 = state.global_step

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            seconds = time.perf_counter() - self.start
            acc = accuracy(kwargs["model"], data["dev_x"], data["dev_y"])
            epoch = round(float(state.epoch))
            steps = state.global_step - self.step0
            points[:] = [p for p in points if p["epoch"] < epoch]
            points.append(
                {
                    "epoch": epoch,
                    "step": state.global_step,
                    "accuracy": acc,
                    "seconds": seconds,
                    "forwards_per_second": forwards * steps / seconds if forwards else None,
                }
            )
            write_results(file, {"points": points})
            print(f"epoch {epoch}: dev accuracy {acc:.4f}, {seconds:.1f} s", flush=True)

    return EpochPoints()


def _forwards(config: str, model: torch.nn.Module, sparsity: Mapping[str, float] | None) -> int:
    """Loss evaluations per step of ``config`` (first-order: 1 forward + 1 backward)."""
    if config.startswith("fo"):
        return 1
    if config.startswith("rge"):
        return 2 * rge_q(config, model)
    moving = 0
    for name, p in model.named_parameters():
        s = 0.0 if sparsity is None else sparsity.get(name, 0.0)
        moving += p.numel() - round(s * p.numel())
    return 1 + moving


def rge_q(config: str, model: torch.nn.Module) -> int:
    """Directions per RGE step: 192, or half a dense CGE step's forwards (``rge-matched``)."""
    n = sum(p.numel() for p in model.parameters())
    return RGE_Q if config == "rge" else math.ceil((n + 1) / 2)


def run_name(config: str, seed: int, epochs: int) -> str:
    """``cge-s0``; another number of epochs than :data:`EPOCHS` adds ``-e<epochs>``."""
    return f"{config}{'' if epochs == EPOCHS else f'-e{epochs}'}-s{seed}"


def _label(entry: dict[str, Any]) -> str:
    """The report's row label: the config, and its epochs when not :data:`EPOCHS`."""
    epochs = int(entry["epochs"])
    return str(entry["config"]) + ("" if epochs == EPOCHS else f", {epochs} ep.")


def run_config(
    config: str, seed: int, data: dict[str, Any], epochs: int, threads: int, progress: bool
) -> dict[str, Any]:
    """Train one config from seed ``seed``'s initial weights (resuming a killed run)."""
    import torch
    from transformers import Trainer

    from obert_train import ZOSettings, ZOTrainer, zo_grasp_sparsities

    torch.set_num_threads(threads)
    model = small_cnn(seed)
    steps = -(-len(data["train"]) // BATCH)
    out = RUNS_DIR / run_name(config, seed, epochs)
    resume = any(out.glob("checkpoint-*"))
    if out.exists() and not resume:  # killed before its first checkpoint
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    file = out / "epochs.json"
    points: list[dict[str, Any]] = load_results(file, {"points": []})["points"] if resume else []
    sparsity: dict[str, float] | None = None
    grasp_seconds = None
    entry: dict[str, Any] = {}
    if config.startswith("fo"):
        lr, momentum = (FO_LR, MOMENTUM) if config == "fo" else (ZO_LR, 0.0)
        weights = [p for p in model.parameters() if p.dim() > 1]
        others = [p for p in model.parameters() if p.dim() <= 1]
        opt = torch.optim.SGD(
            [
                {"params": weights, "weight_decay": WEIGHT_DECAY},
                {"params": others, "weight_decay": 0.0},
            ],
            lr=lr,
            momentum=momentum,
            weight_decay=0.0,
        )
        trainer_args = _args(out, seed, lr, epochs, steps, progress)
        entry.update(optimizer=f"SGD lr {lr} momentum {momentum}")
    else:
        if config in ("cge", "cge-momentum"):
            sparsity = dict.fromkeys(weight_names(model), 0.0)
        elif config.startswith("cge-sparse90"):
            start = time.perf_counter()
            sparsity = zo_grasp_sparsities(
                model,
                grasp_batch(data, seed),
                GRADIENT_SPARSITY,
                params={n: p for n, p in model.named_parameters() if p.dim() > 1},
                q=192,
                mu=MU,
                seed=seed,
            )
            grasp_seconds = time.perf_counter() - start
        momentum = MOMENTUM if config.endswith("-momentum") else 0.0
        if config.startswith("cge"):
            zo = ZOSettings(
                mu=MU,
                seed=seed,
                estimator="cge",
                gradient_sparsity=sparsity,
                mask_period=MASK_PERIOD_EPOCHS * steps,
                stages=STAGES,
                momentum=momentum,
            )
            lr = FO_LR if momentum else ZO_LR
        else:
            zo = ZOSettings(mu=MU, seed=seed, num_directions=rge_q(config, model))
            lr = RGE_LR
        trainer_args = _args(out, seed, lr, epochs, steps, progress)
        entry.update(zo=dataclasses.asdict(zo), optimizer=f"ZO SGD lr {lr} momentum {momentum}")
    forwards = _forwards(config, model, sparsity)
    callback = _epoch_callback(data, file, points, 0 if config.startswith("fo") else forwards)
    common: dict[str, Any] = {
        "model": model,
        "args": trainer_args,
        "train_dataset": data["train"],
        "callbacks": [callback],
    }
    if config.startswith("fo"):
        trainer: Trainer = Trainer(**common, optimizers=(opt, None))
    else:
        trainer = ZOTrainer(**common, zo=zo)
    print(f"{config} seed {seed}: {forwards} loss evaluations per step, {steps} steps per "
          f"epoch, lr {lr}" + (" (resuming)" if resume else ""), flush=True)  # fmt: skip
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=True if resume else None)
    wall = time.perf_counter() - start
    epoch_seconds = [p["seconds"] for p in points]
    entry.update(
        config=config,
        seed=seed,
        accuracy=accuracy(model, data["dev_x"], data["dev_y"]),
        epochs=epochs,
        batch_size=BATCH,
        steps_per_epoch=steps,
        lr=lr,
        loss_evaluations_per_step=forwards,
        parameters=sum(p.numel() for p in model.parameters()),
        gradient_sparsity=sparsity,
        zo_grasp_seconds=grasp_seconds,
        epoch_seconds_median=statistics.median(epoch_seconds) if epoch_seconds else None,
        wall_seconds_this_process=wall,
        resumed=resume,
        points=points,
        machine=cpu_info(),
    )
    return entry


def cmd_train(args: argparse.Namespace) -> None:
    """The grid: every config but ``rge-matched`` (or ``--only``) on every seed."""
    data = load_split()
    configs = args.only or [c for c in CONFIGS if c not in OPTIONAL]
    for config in configs:
        seeds = args.seeds or ([0] if config in OPTIONAL else list(SEEDS))
        for seed in seeds:
            name = run_name(config, seed, args.epochs)
            if name in load_results(RESULTS).get("runs", {}) and not args.force:
                print(f"{name}: done", flush=True)
                continue
            if args.force:
                shutil.rmtree(RUNS_DIR / name, ignore_errors=True)
            entry = run_config(config, seed, data, args.epochs, args.threads, not args.no_progress)
            save_entry(RESULTS, name, entry, machine=True)
            print(f"{name}: dev accuracy {entry['accuracy']:.4f}", flush=True)
    save_entry(
        RESULTS,
        "data",
        {
            "source": "sklearn.datasets.load_digits",
            "train": len(data["train"]),
            "dev": len(data["dev_y"]),
            "split": f"stratified, test_size {DEV_FRACTION}, random_state {SPLIT_SEED}",
        },
        section=None,
    )


def cmd_throughput(args: argparse.Namespace) -> None:
    """CGE forward passes per second with and without feature reuse (and workers), interleaved."""
    import tempfile

    import torch
    from transformers import TrainerCallback

    from obert_train import ZOSettings, ZOTrainer

    torch.set_num_threads(args.threads)
    data = load_split()
    modes = ["reuse", "no-reuse"] + ([f"reuse-{args.workers}w"] if args.workers > 1 else [])
    times: dict[str, list[float]] = {m: [] for m in modes}

    class StepTimes(TrainerCallback):
        """Seconds of each optimizer step."""

        def __init__(self, into: list[float]) -> None:
            self.into = into
            self.start = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.into.append(time.perf_counter() - self.start)

    forwards = 0
    for r in range(args.rounds):
        for mode in modes if r % 2 == 0 else modes[::-1]:
            model = small_cnn(0)
            zo = ZOSettings(
                mu=MU,
                seed=0,
                estimator="cge",
                gradient_sparsity=dict.fromkeys(weight_names(model), 0.0),
                stages=() if mode == "no-reuse" else STAGES,
                workers=args.workers if mode.endswith("w") else 1,
            )
            forwards = _forwards("cge", model, zo.gradient_sparsity)
            with tempfile.TemporaryDirectory() as tmp:
                targs = _args(Path(tmp), 0, ZO_LR, 1, 1, progress=False)
                targs.save_strategy = "no"
                targs.max_steps = args.steps
                trainer = ZOTrainer(
                    model=model,
                    args=targs,
                    train_dataset=data["train"],
                    zo=zo,
                    callbacks=[StepTimes(times[mode])],
                )
                trainer.train()
            rate = forwards * args.steps / sum(times[mode][-args.steps :])
            print(f"round {r} {mode}: {rate:.0f} forwards/s", flush=True)
    rates = {m: [forwards / t for t in ts] for m, ts in times.items()}
    entry = {
        "forwards_per_step": forwards,
        "batch_size": BATCH,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "stages": list(STAGES),
        "forwards_per_second_median": {m: statistics.median(v) for m, v in rates.items()},
        "step_seconds": times,
        "speedup_median": statistics.median(times["no-reuse"]) / statistics.median(times["reuse"]),
        "workers": args.workers,
        "machine": cpu_info(),
        "command": f"python experiments/zo_digits.py throughput --rounds {args.rounds} "
        f"--steps {args.steps}" + (f" --workers {args.workers}" if args.workers > 1 else ""),
    }
    save_entry(RESULTS, "throughput", entry, section=None, machine=True)
    print(json.dumps({k: entry[k] for k in ("forwards_per_second_median", "speedup_median")}))


def _spread(values: list[float]) -> str:
    """``mean ± half-range`` in percent (one value: the value)."""
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    half = (max(values) - min(values)) / 2
    return f"{100 * statistics.mean(values):.2f} ± {100 * half:.2f}"


def cmd_report(args: argparse.Namespace) -> None:
    """The table (mean ± half-range over seeds) and ``docs/img/zo_digits.png``."""
    data = load_results(RESULTS)
    runs = data.get("runs", {})
    by: dict[str, list[dict[str, Any]]] = {}
    order = sorted(runs.values(), key=lambda e: (CONFIGS.index(e["config"]), e["epochs"]))
    for entry in order:
        by.setdefault(_label(entry), []).append(entry)
    print("| config | seeds | loss evaluations / step | s / epoch (median) | "
          "forwards / s | final dev acc. % | best dev acc. % |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for config, group in by.items():
        entries = sorted(group, key=lambda e: e["seed"])
        final = [e["accuracy"] for e in entries]
        best = [max(p["accuracy"] for p in e["points"]) for e in entries]
        secs = statistics.median(e["epoch_seconds_median"] for e in entries)
        fps = [p["forwards_per_second"] for e in entries for p in e["points"]]
        rate = f"{statistics.median(fps):.0f}" if fps and fps[0] is not None else "–"
        print(f"| {config} | {', '.join(str(e['seed']) for e in entries)} | "
              f"{entries[0]['loss_evaluations_per_step']:,} | {secs:.1f} | {rate} | "
              f"{_spread(final)} | {_spread(best)} |")  # fmt: skip
    sparse = by.get("cge-sparse90") or by.get("cge-sparse90-momentum")
    if sparse:
        print("\nZO-GraSP ratios (seed 0):", sparse[0]["gradient_sparsity"])
    through = data.get("throughput")
    if through:
        print(f"\nCGE forwards/s (median of {through['rounds']}×{through['steps_per_round']} "
              f"steps): {through['forwards_per_second_median']}, speed-up "
              f"{through['speedup_median']:.2f}×")  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for config, entries in by.items():
        epochs = [p["epoch"] for p in entries[0]["points"]]
        curves = [[p["accuracy"] for p in e["points"]] for e in entries]
        curves = [c for c in curves if len(c) == len(epochs)]
        mean = [100 * statistics.mean(col) for col in zip(*curves, strict=True)]
        evals = entries[0]["loss_evaluations_per_step"] * entries[0]["steps_per_epoch"]
        label = f"{config} ({len(curves)} seed(s))"
        long = len(epochs) > EPOCHS
        line = ax.plot(epochs[:EPOCHS], mean[:EPOCHS], label=label, ls="--" if long else "-")[0]
        if not config.startswith("fo"):
            bx.plot([evals * e for e in epochs], mean, label=label, color=line.get_color())
        if len(curves) > 1:
            low = [100 * min(col) for col in zip(*curves, strict=True)]
            high = [100 * max(col) for col in zip(*curves, strict=True)]
            ax.fill_between(
                epochs[:EPOCHS], low[:EPOCHS], high[:EPOCHS], color=line.get_color(), alpha=0.15
            )
    ax.set_xlabel("epoch")
    bx.set_xlabel("loss evaluations (forward passes, batch 128)")
    bx.set_xscale("log")
    for a in (ax, bx):
        a.set_ylabel("dev accuracy (%)")
        a.set_ylim(0, 100)
        a.grid(alpha=0.3)
        a.legend(fontsize=7, loc="lower right")
    ax.set_title("accuracy per epoch (mean, min-max band)", fontsize=9)
    bx.set_title("ZO runs: accuracy per loss evaluation (mean)", fontsize=9)
    fig.suptitle("Small CNN (1,898 parameters) on digits: first-order vs CGE vs RGE", fontsize=10)
    fig.tight_layout()
    out = IMG / "zo_digits.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"\nplot: {out.relative_to(REPO)}")
    machine = data.get("machine", {})
    print(f"machine: {machine.get('cpu')}, {machine.get('simd')}, torch {machine.get('torch')}, "
          f"{machine.get('threads')} thread(s)")  # fmt: skip


def main() -> None:
    parser = make_parser(__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train")
    add_run_options(p, threads=1, force=True, no_progress=True)
    p.add_argument("--only", nargs="+", choices=CONFIGS, help="configs (default all)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default 0 1 2; rge-matched: 0)")
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p = sub.add_parser("throughput")
    add_run_options(p, threads=1)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per round and mode")
    p.add_argument("--workers", type=int, default=1, help="also CGE with reuse on N processes")
    sub.add_parser("report")
    args = parser.parse_args()
    {"train": cmd_train, "throughput": cmd_throughput, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
