"""LPViT's block pruning with per-layer allocation on a small ViT trained on scikit-learn's digits.

Issue 19's first real results. No ImageNet and no pretrained ViT can be downloaded here, so the
data set is the one scikit-learn installs with itself (``sklearn.datasets.load_digits``: 1,797
grey 8×8 images of the digits 0-9, values 0-16), upscaled ×4 (nearest neighbour) to 32×32 so a
ViT with patch 4 sees 64 patches, split 80/20 by a seeded stratified shuffle and written as the
``train.npz`` / ``dev.npz`` the task ``image-classification`` reads. The model is a
``ViTForImageClassification`` built from a ``ViTConfig`` (hidden 64, 4 layers, 4 heads,
intermediate 256, patch 4; the task repeats the grey channel 3 times), trained dense from
random weights through ``obert_train.run_recipe`` (``experiments/recipes/vit-digits-dense.yaml``).
Then one-shot ``8x8``-block pruning (``obert_train.oneshot_prune``) of its 24 Linear weights (q,
k, v, o, fc1, fc2 of each layer) at 50 % and 70 % of their FLOPs, six ways:

* ``lpvit-uniform``: LPViT's ``mean |w ⊙ g|`` block scores, every tensor losing the same share;
* ``lpvit-lpvit``: the same scores, LPViT's per-layer allocation (distortion curves + power proxy);
* ``obs-uniform``: method ``obert`` (OBS block saliency and joint update, Fisher blocks of 64
  columns = 8 blocks of a row), every tensor the same share;
* ``obs-obs``: method ``obert`` with ``allocation: obs`` (equal slopes of the OBS loss curves);
* ``obsnu-uniform`` / ``obsnu-obs``: the same masks without the OBS update (the kept weights put
  back to their dense values: the OBS block saliency alone);

each followed by 5 epochs of fine-tuning with KD from the dense model, masks fixed
(``vit-digits-kd.yaml``). Further configs (one-shot, ``--only ... --no-kd``):
``<config>-f25`` / ``-f50`` / ``-f75`` of ``lpvit-lpvit``, ``obs-obs``, ``obsnu-obs`` (the same
allocation with ``allocation_floor`` 0.25 / 0.5 / 0.75, docs/math.md §8, (B-9)), and
``lpvit-uniform-m128``, ``obs-uniform-m128``, ``obsnu-uniform-m128`` (128 calibration batches
instead of 32: more gradients than the 64 weights of a Fisher block), and ``obs-uniform-m128-b16``
/ ``obsnu-uniform-m128-b16`` (Fisher blocks of 16 weights = 2 blocks of a row, as on MiniLM:
the OBS update has only 8 other weights of a row segment to compensate with), and
``<config>-r2`` / ``-r3`` / ``-r4`` (``-r3g``: geometric steps) of ``obs-uniform``,
``obs-obs[-fNN]``, ``lpvit-uniform``, ``lpvit-lpvit[-fNN]``: iterative allocation with
``allocation_rounds`` K (docs/math.md §8, (B-10)). Sub-commands::

    .venv/bin/python experiments/vit_digits.py data
    .venv/bin/python experiments/vit_digits.py train
    .venv/bin/python experiments/vit_digits.py prune            # every config; --only NAME
    .venv/bin/python experiments/vit_digits.py report           # tables + docs/img/vit_digits_*.png

Training runs resume when killed; a finished entry is skipped unless ``--force``. Results:
``experiments/results/vit_digits.json``; files in ``runs/vit-digits/``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from typing import Any

from _common import (
    IMG,
    REPO,
    RESULTS_DIR,
    RUNS_ROOT,
    add_run_options,
    cpu_info,
    done,
    epoch_eval,
    load_results,
    make_parser,
    save_entry,
    train,
)

RUNS_DIR = RUNS_ROOT / "vit-digits"
DATA = RUNS_DIR / "data"
DENSE = RUNS_DIR / "dense"
RESULTS = RESULTS_DIR / "vit_digits.json"
IMAGE_SIZE = 32
UPSCALE = 4
DEV_FRACTION = 0.2
SPLIT_SEED = 0
BLOCK = "8x8"
SPARSITIES = (0.5, 0.7)
CALIBRATION = {"num_grads": 32, "grad_batch_size": 16, "seed": 0}
"""Calibration of every method: 32 batches of 16 training images (512 of 1,437)."""
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "lpvit-uniform": ("lpvit", {"allocation": "uniform"}),
    "lpvit-lpvit": ("lpvit", {"allocation": "lpvit"}),
    "obs-uniform": ("obert", {"allocation": "uniform", "fisher_block_size": 64}),
    "obs-obs": ("obert", {"allocation": "obs", "fisher_block_size": 64}),
    "obsnu-uniform": ("obert", {"allocation": "uniform", "fisher_block_size": 64}),
    "obsnu-obs": ("obert", {"allocation": "obs", "fisher_block_size": 64}),
}
"""Config -> (method, its settings besides the block and the calibration)."""
FLOORS = (0.25, 0.5, 0.75)
"""``allocation_floor`` values tried (docs/math.md §8, (B-9)): configs ``<config>-f<100·φ>``."""
for _phi in FLOORS:
    _tag = f"f{round(100 * _phi)}"
    CONFIGS[f"lpvit-lpvit-{_tag}"] = ("lpvit", {"allocation": "lpvit", "allocation_floor": _phi})
    for _name in ("obs-obs", "obsnu-obs"):
        CONFIGS[f"{_name}-{_tag}"] = (
            "obert", {"allocation": "obs", "fisher_block_size": 64, "allocation_floor": _phi}
        )  # fmt: skip
MORE_GRADS = 128
"""Calibration batches of the ``-m128`` configs: more gradients than the Fisher block (64)."""
for _name, (_method, _settings) in [
    ("lpvit-uniform", CONFIGS["lpvit-uniform"]),
    ("obs-uniform", CONFIGS["obs-uniform"]),
    ("obsnu-uniform", CONFIGS["obsnu-uniform"]),
]:
    CONFIGS[f"{_name}-m{MORE_GRADS}"] = (_method, {**_settings, "num_grads": MORE_GRADS})
for _name in ("obs-uniform", "obsnu-uniform"):  # Fisher blocks of 16 = 2 blocks of a row (k = 2)
    CONFIGS[f"{_name}-m{MORE_GRADS}-b16"] = (
        "obert", {"allocation": "uniform", "fisher_block_size": 16, "num_grads": MORE_GRADS}
    )  # fmt: skip
ROUNDS = (2, 3, 4)
"""``allocation_rounds`` tried (docs/math.md §8, (B-10)): configs ``<config>-r<K>`` (equal cost
steps) and ``<config>-r<K>g`` (geometric), each round with fresh gradients at the pruned weights."""
for _k in ROUNDS:
    for _name in (
        *("obs-uniform", "obs-obs", "obs-obs-f25", "obs-obs-f50", "obs-obs-f75"),
        *("lpvit-uniform", "lpvit-lpvit", "lpvit-lpvit-f25", "lpvit-lpvit-f50", "lpvit-lpvit-f75"),
    ):
        for _tag, _spacing in (("", "equal"), ("g", "geometric")):
            _method, _settings = CONFIGS[_name]
            CONFIGS[f"{_name}-r{_k}{_tag}"] = (
                _method, {**_settings, "allocation_rounds": _k, "allocation_spacing": _spacing}
            )  # fmt: skip
NO_UPDATE = frozenset(c for c in CONFIGS if c.startswith("obsnu-"))
PLOTTED = ("lpvit-lpvit", "obs-obs", "lpvit-lpvit-f50", "obs-obs-f50")
"""The allocations the kept-blocks plot shows (the others are in the JSON)."""
"""Configs that keep the OBS masks but not the OBS update: the kept weights are put back to
their dense values (the OBS block saliency alone, as the issue's score comparison asks)."""
VIT: dict[str, Any] = {
    "image_size": IMAGE_SIZE,
    "patch_size": 4,
    "num_channels": 3,
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}


def _label(config: str, sparsity: float, calib_seed: int = 0) -> str:
    """``obs-obs-50``; another calibration seed adds ``-c<seed>`` (one-shot only)."""
    return f"{config}-{round(100 * sparsity)}" + (f"-c{calib_seed}" if calib_seed else "")


def _processor() -> Any:
    from transformers import ViTImageProcessor

    return ViTImageProcessor(
        do_resize=True,
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def _task(processor: Any) -> Any:
    from obert_train import load_task

    if not (DATA / "train.npz").is_file():
        sys.exit(f"no data at {DATA}: run `vit_digits.py data` first")
    return load_task("image-classification", processor, data_dir=DATA)


def cmd_data(args: argparse.Namespace) -> None:
    """Digits -> 32×32 uint8 ``train.npz`` / ``dev.npz`` (seeded stratified 80/20 split)."""
    import numpy as np
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]
    from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]

    from obert_core.shared import atomic_output

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    big = np.kron(images, np.ones((UPSCALE, UPSCALE), dtype=np.uint8))[..., None]
    labels = digits.target.astype(np.int64)
    idx = np.arange(len(labels))
    train_idx, dev_idx = train_test_split(
        idx, test_size=DEV_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    names = np.array([str(i) for i in range(10)])
    for split, rows in (("train", train_idx), ("dev", dev_idx)):
        path = DATA / f"{split}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp, tmp.open("wb") as fh:
            np.savez(fh, images=big[rows], labels=labels[rows], label_names=names)
        print(f"{path}: {len(rows)} images {big.shape[1:]}", flush=True)
    save_entry(
        RESULTS,
        "data",
        {
            "source": "sklearn.datasets.load_digits",
            "images": len(labels),
            "train": len(train_idx),
            "dev": len(dev_idx),
            "original_size": [8, 8],
            "image_size": [IMAGE_SIZE, IMAGE_SIZE],
            "upscale": f"nearest x{UPSCALE}",
            "split": f"stratified, test_size {DEV_FRACTION}, random_state {SPLIT_SEED}",
        },
        section=None,
    )


def cmd_train(args: argparse.Namespace) -> None:
    """Train the dense ViT from random weights (recipe ``vit-digits-dense``)."""
    if done(RESULTS, "dense", args.force):
        return
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.set_num_threads(args.threads)
    processor = _processor()
    task = _task(processor)
    torch.manual_seed(args.seed)
    config = ViTConfig(
        **VIT,
        id2label={i: str(i) for i in range(10)},
        label2id={str(i): i for i in range(10)},
    )
    model = ViTForImageClassification(config)
    evaluator, points = epoch_eval(task)
    train(
        name="dense", results=RESULTS, recipe="vit-digits-dense", task=task, model=model,
        model_name="ViTConfig(" + ", ".join(f"{k}={v}" for k, v in VIT.items()) + ")",
        tokenizer=processor, out=DENSE, batch_size=32, seed=args.seed, callbacks=[evaluator],
        progress=not args.no_progress,
        before_save=lambda e: e.update(epoch_eval=points, vit=VIT,
                                       parameters=sum(p.numel() for p in model.parameters())),
    )  # fmt: skip


def _flops(model: Any, masks: dict[str, Any] | None, tokens: int) -> dict[str, Any]:
    """Per target weight: shape, kept blocks, and FLOPs per image (2 per kept weight per token)."""
    import torch

    r, c = (int(v) for v in BLOCK.split("x"))
    params = dict(model.named_parameters())
    out: dict[str, Any] = {}
    names = masks.keys() if masks is not None else []
    for name in names:
        w = params[name]
        rows, cols = w.shape
        keep = masks[name].reshape(rows, cols) if masks is not None else torch.ones_like(w)
        blocks = keep.reshape(rows // r, r, cols // c, c).any(dim=3).any(dim=1)
        out[name] = {
            "shape": [rows, cols],
            "blocks": int(blocks.numel()),
            "kept_blocks": int(blocks.sum()),
            "kept_weights": int(keep.sum()),
            "flops": int(2 * tokens * keep.sum()),
            "dense_flops": int(2 * tokens * rows * cols),
        }
    return out


def _one_shot(
    config: str, sparsity: float, threads: int, calib_seed: int = 0
) -> tuple[Any, dict[str, Any]]:
    """Load the dense model, prune one-shot, evaluate; the pruned model and its entry."""
    import torch

    from obert_train import oneshot_prune

    torch.set_num_threads(threads)
    processor = _processor()
    task = _task(processor)
    model = task.load_model(str(DENSE))
    method, settings = CONFIGS[config]
    full = {"mask_type": BLOCK, **CALIBRATION, "seed": calib_seed, **settings}
    dense = {n: p.detach().clone() for n, p in model.named_parameters()}
    start = time.perf_counter()
    result = oneshot_prune(model, method, sparsity, settings=full, task=task, progress=False)
    seconds = time.perf_counter() - start
    params = dict(model.named_parameters())
    if config in NO_UPDATE:
        with torch.no_grad():
            for name, keep in result.masks.items():
                w = params[name]
                w.copy_(dense[name] * keep.reshape(w.shape).to(w.dtype))
    metrics = task.evaluate(model, progress=False)
    tokens = (IMAGE_SIZE // int(VIT["patch_size"])) ** 2 + 1
    layers = _flops(model, dict(result.masks), tokens)
    kept = sum(v["flops"] for v in layers.values())
    total = sum(v["dense_flops"] for v in layers.values())
    entry = {
        "method": method,
        "settings": full,
        "target_sparsity": sparsity,
        "sparsity": result.sparsity,
        "flops_kept": kept / total,
        "target_flops_per_image": kept,
        "dense_target_flops_per_image": total,
        "accuracy": metrics["accuracy"],
        "loss": metrics.get("loss"),
        "seconds": seconds,
        "timings": result.timings,
        "layers": layers,
        "obs_update": method == "obert" and config not in NO_UPDATE,
    }
    return (model, processor, task), entry


def cmd_prune(args: argparse.Namespace) -> None:
    """One-shot at every sparsity and config, then (unless ``--no-kd``) KD recovery."""
    if not (DENSE / "model.safetensors").is_file():
        sys.exit(f"no dense model at {DENSE}: run `vit_digits.py train` first")

    configs = args.only or [c for c in CONFIGS if "-r" not in c]
    sparsities = [args.sparsity] if args.sparsity is not None else list(SPARSITIES)
    for sparsity in sparsities:
        for config in configs:
            label = _label(config, sparsity, args.calib_seed)
            no_kd = args.no_kd or args.calib_seed != 0
            data = load_results(RESULTS)
            finished = no_kd or label + "-kd" in data.get("runs", {})
            if label in data.get("oneshot", {}) and finished and not args.force:
                print(f"{label}: done", flush=True)
                continue
            (model, processor, task), entry = _one_shot(
                config, sparsity, args.threads, args.calib_seed
            )
            entry["machine"] = cpu_info()
            save_entry(RESULTS, label, entry, section="oneshot")
            print(f"{label}: one-shot accuracy {entry['accuracy']:.4f}, FLOPs kept "
                  f"{entry['flops_kept']:.4f}, {entry['seconds']:.1f} s", flush=True)  # fmt: skip
            if no_kd or done(RESULTS, label + "-kd", args.force):
                continue
            _recover(label, model, processor, task, args)


def _recover(label: str, model: Any, processor: Any, task: Any, args: argparse.Namespace) -> None:
    """Save the one-shot model, then fine-tune it with KD from the dense one (masks fixed)."""
    import torch

    start = RUNS_DIR / label
    if args.force:  # a finished run folder would be resumed from its last checkpoint
        shutil.rmtree(RUNS_DIR / f"{label}-kd", ignore_errors=True)
    model.save_pretrained(start)
    processor.save_pretrained(start)
    torch.manual_seed(args.seed)
    student = task.load_model(str(start))
    teacher = task.load_model(str(DENSE))
    evaluator, points = epoch_eval(task)
    train(
        name=label + "-kd", results=RESULTS, recipe="vit-digits-kd", task=task,
        model=student, model_name=str(start.relative_to(REPO)), tokenizer=processor,
        out=RUNS_DIR / f"{label}-kd", teacher=teacher, batch_size=32, seed=args.seed,
        callbacks=[evaluator], progress=not args.no_progress,
        before_save=lambda e: e.update(epoch_eval=points, oneshot=label),
    )  # fmt: skip


def _short(name: str) -> str:
    """``vit.layers.3.attention.q_proj.weight`` -> ``L3 q`` (``mlp.fc1`` -> ``L3 fc1``)."""
    parts = name.split(".")
    return f"L{parts[2]} {parts[-2].removesuffix('_proj')}"


def cmd_report(args: argparse.Namespace) -> None:
    """Markdown tables of the results and one plot of kept blocks per layer per sparsity."""
    data = load_results(RESULTS)
    runs, oneshot = data.get("runs", {}), data.get("oneshot", {})
    dense = runs.get("dense")
    if dense is None:
        sys.exit("no dense run yet")
    acc, seconds = 100 * dense["metrics"]["accuracy"], dense["train_seconds"]
    print(f"dense: dev accuracy {acc:.2f} % ({seconds:.0f} s training, "
          f"{dense['parameters']:,} parameters)")  # fmt: skip
    print("\n| sparsity | config | method | allocation | FLOPs kept | one-shot acc. | "
          "one-shot, calibration seeds 1 / 2 | + KD 5 ep. acc. | one-shot s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for sparsity in SPARSITIES:
        for config in CONFIGS:
            label = _label(config, sparsity)
            e = oneshot.get(label)
            if e is None:
                continue
            kd = runs.get(label + "-kd")
            kd_acc = f"{100 * kd['metrics']['accuracy']:.2f}" if kd else "–"
            seeds = [oneshot.get(_label(config, sparsity, s)) for s in (1, 2)]
            other = " / ".join(f"{100 * s['accuracy']:.2f}" if s else "–" for s in seeds)
            print(f"| {round(100 * sparsity)} % | {config} | {e['method']} | "
                  f"{e['settings']['allocation']} | {e['flops_kept']:.4f} | "
                  f"{100 * e['accuracy']:.2f} | {other} | {kd_acc} | "
                  f"{e['seconds']:.1f} |")  # fmt: skip
    for sparsity in SPARSITIES:
        labels = [
            _label(c, sparsity) for c in PLOTTED if _label(c, sparsity) in oneshot
        ]  # the masks of NO_UPDATE are those of the obs-* configs
        if not labels:
            continue
        names = list(oneshot[labels[0]]["layers"])
        print(f"\nkept blocks per tensor at {round(100 * sparsity)} % "
              f"(of 64 for q/k/v/o, 256 for fc1/fc2):")  # fmt: skip
        print("| tensor | " + " | ".join(labels) + " |")
        print("|---|" + "---|" * len(labels))
        for n in names:
            row = [str(oneshot[lab]["layers"][n]["kept_blocks"]) for lab in labels]
            print(f"| {_short(n)} | " + " | ".join(row) + " |")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(10, 3.8))
        width = 0.8 / len(labels)
        for i, lab in enumerate(labels):
            layers = oneshot[lab]["layers"]
            density = [layers[n]["kept_blocks"] / layers[n]["blocks"] for n in names]
            ax.bar([j + i * width for j in range(len(names))], density, width, label=lab)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
        ax.set_xticklabels([_short(n) for n in names], rotation=90, fontsize=7)
        ax.set_ylabel("fraction of 8×8 blocks kept")
        ax.axhline(1 - sparsity, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"ViT on digits, one-shot 8×8 blocks at {round(100 * sparsity)} % of the "
                     "target FLOPs: per-tensor allocation", fontsize=9)  # fmt: skip
        ax.legend(fontsize=7, ncol=4)
        fig.tight_layout()
        out = IMG / f"vit_digits_alloc_{round(100 * sparsity)}.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        print(f"\nplot: {out.relative_to(REPO)}")
    machine = dense.get("machine", {})
    print(f"\nmachine: {machine.get('cpu')}, {machine.get('simd')}, "
          f"torch {machine.get('torch')}, {machine.get('threads')} thread(s)")  # fmt: skip


def main() -> None:
    parser = make_parser(__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("data")
    p = sub.add_parser("train")
    add_run_options(p, threads=1, seed=42, force=True, no_progress=True)
    p = sub.add_parser("prune")
    add_run_options(p, threads=1, seed=42, force=True, no_progress=True)
    p.add_argument("--only", nargs="*", choices=sorted(CONFIGS), help="configs (default all)")
    p.add_argument("--sparsity", type=float, help="one sparsity (default 0.5 and 0.7)")
    p.add_argument("--no-kd", action="store_true", help="one-shot only")
    p.add_argument("--calib-seed", type=int, default=0,
                   help="calibration seed; not 0: one-shot only, label -c<seed>")  # fmt: skip
    sub.add_parser("report")
    args = parser.parse_args()
    {"data": cmd_data, "train": cmd_train, "prune": cmd_prune, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
