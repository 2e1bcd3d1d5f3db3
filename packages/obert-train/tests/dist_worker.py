"""Worker for test_distributed.py, launched by torchrun (gloo): prunes and saves the results.

Usage: dist_worker.py MODEL_DIR DATA_DIR OUT_DIR DAMP

The test passes a fine-tuned model and a damp scaled to its Fisher, so the OBS update depends
on where gradients are taken (a rank or pass that saw other weights would give other results).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from obert_train import GradientSampler, load_task, oneshot_prune, resolve_target_params
from obert_train.fisher.distributed import DistContext

BASE: dict[str, object] = {"num_grads": 6, "grad_batch_size": 4, "fisher_block_size": 16}
# name -> (target sparsity, oBERT settings besides damp)
SETTINGS: dict[str, tuple[float, dict[str, object]]] = {
    "global": (0.6, BASE),
    "grouped-layer": (
        0.5,
        # two groups per rank (each rank owns half the tensors)
        {**BASE, "global_sparsity": False, "max_memory": 2_500_000},
    ),
    "grouped-global": (
        0.6,
        # two passes: scores, then the Fisher rebuilt for the update
        {**BASE, "max_memory": 2_500_000},
    ),
    "recomputed-global": (0.6, {**BASE, "num_recomputations": 2}),  # fresh batches per sub-step
}


def run(model_dir: str, data_dir: str, out_dir: Path, damp: float, ctx: DistContext) -> None:
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    task = load_task("sst2", tokenizer, data_dir=data_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    params = resolve_target_params(model)
    sampler = GradientSampler.from_task(
        model, task, batch_size=4, num_grads=3, progress=False, dist_ctx=ctx
    )
    grads = [{n: g.clone() for n, g in c.items()} for c in sampler.chunks(params, chunk_size=3)]
    result: dict[str, object] = {"grads": grads[0]}
    for key, (sparsity, settings) in SETTINGS.items():
        net = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        lines: list[str] = []
        oneshot_prune(
            net,
            "obert",
            sparsity,
            settings={**settings, "damp": damp},
            task=task,
            progress=False,
            dist_ctx=ctx,
            log=lines.append,
        )
        result[key] = {n: p.detach().clone() for n, p in resolve_target_params(net).items()}
        result[f"{key}-log"] = lines
    torch.save(result, out_dir / f"rank{ctx.rank}.pt")


def main() -> None:
    model_dir, data_dir, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    damp = float(sys.argv[4])
    dist.init_process_group("gloo")
    try:
        run(model_dir, data_dir, out_dir, damp, DistContext.current())
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
