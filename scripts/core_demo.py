"""Core demo (the main job until the gradual-training job lands): OBS vs magnitude on a quadratic.

A synthetic but faithful setting: gradients with correlated structure give an empirical Fisher F;
the loss is the exact quadratic L(w) = ½ (w − w*)ᵀ F (w − w*) around the trained weights w*, so the
OBS saliency is the true loss increase. We prune 50…90% with magnitude pruning, OBS (superposed
updates, the SparseML reference behaviour) and OBS with the exact joint update, and print/plot the
loss increase. Usage: python scripts/core_demo.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import obert_core as oc


def _quadratic(f_blocks: np.ndarray, dw: np.ndarray) -> float:
    """½ δwᵀ F δw with F given by its B×B blocks (inverse of the Fisher-inverse blocks)."""
    nb, bs, _ = f_blocks.shape
    z = np.pad(dw, (0, nb * bs - dw.size)).reshape(nb, bs)
    return float(0.5 * np.einsum("ni,nij,nj->", z, f_blocks, z))


def main() -> None:
    """Run the demo and write the JSON table and the PNG plot atomically."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/core_demo"))
    parser.add_argument("--num-weights", type=int, default=20_000)
    parser.add_argument("--num-grads", type=int, default=256)
    parser.add_argument("--block-size", type=int, default=50)
    parser.add_argument("--damp", type=float, default=1e-7)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    d, m, bsz = args.num_weights, args.num_grads, args.block_size
    # gradients: a few shared directions (correlation across weights) + per-weight noise, fp32
    basis = rng.standard_normal((16, d)) * rng.uniform(0.2, 2.0, d)
    grads = (rng.standard_normal((m, 16)) @ basis + 0.3 * rng.standard_normal((m, d))) * 1e-3
    grads = grads.astype(np.float32)
    w = (rng.standard_normal(d) * 0.05).astype(np.float32)

    t0 = time.perf_counter()
    finv = oc.block_fisher_inverse(grads, bsz, args.damp)
    t_fisher = time.perf_counter() - t0
    f_blocks = np.linalg.inv(finv.astype(np.float64))
    sparsities = [0.5, 0.6, 0.7, 0.8, 0.9]
    rows = []
    for s in sparsities:
        row = {"sparsity": s}
        keep = oc.select_mask({"w": np.abs(w)}, s)["w"]
        row["magnitude"] = _quadratic(f_blocks, np.where(keep, w, 0) - w)
        keep = oc.select_mask({"w": oc.obs_saliency(w, finv)}, s)["w"]
        for mode in ("superpose", "joint"):
            new = oc.obs_update(w, finv, ~keep, mode=mode)
            row[f"obert_{mode}"] = _quadratic(f_blocks, new.astype(np.float64) - w)
        rows.append(row)

    print(f"Fisher: d={d}, m={m}, B={bsz}, damp={args.damp:g}: built in {t_fisher:.2f} s")
    print(f"{'sparsity':>8} | {'magnitude':>10} | {'oBERT superpose':>15} | {'oBERT joint':>11}")
    for r in rows:
        print(
            f"{r['sparsity']:>8.0%} | {r['magnitude']:>10.3e} | {r['obert_superpose']:>15.3e} | "
            f"{r['obert_joint']:>11.3e}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(
        {"config": vars(args) | {"out": str(args.out)}, "loss_increase": rows}, indent=2
    )
    with tempfile.NamedTemporaryFile("w", dir=args.out, delete=False, suffix=".tmp") as fh:
        fh.write(payload)
    Path(fh.name).replace(args.out / "core_demo.json")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: skipping the plot")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in [
        ("magnitude", "magnitude"),
        ("obert_superpose", "oBERT superpose"),
        ("obert_joint", "oBERT joint"),
    ]:
        ax.semilogy(
            [100 * r["sparsity"] for r in rows], [r[key] for r in rows], marker="o", label=label
        )
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("loss increase ½ δwᵀFδw")
    ax.set_title("One-shot pruning of a quadratic (obert-core demo)")
    ax.legend()
    fig.tight_layout()
    tmp = args.out / "core_demo.png.tmp"
    fig.savefig(tmp, format="png", dpi=120)
    tmp.replace(args.out / "core_demo.png")
    print(f"wrote {args.out / 'core_demo.json'} and {args.out / 'core_demo.png'}")


if __name__ == "__main__":
    main()
