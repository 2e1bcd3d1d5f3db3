"""Distributed pruning (torchrun, gloo, 2 processes) gives the single-process result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertForSequenceClassification,
    BertTokenizer,
)

from obert_train import (
    DistContext,
    GradientSampler,
    OneShotConfig,
    Task,
    finetune,
    load_task,
    oneshot_prune,
    resolve_target_params,
    shard_by_size,
)

WORKER = Path(__file__).with_name("dist_worker.py")


def test_shard_by_size_balances_and_is_deterministic() -> None:
    numels = {"a": 10, "b": 7, "c": 5, "d": 3, "e": 2}
    owners = shard_by_size(numels, 2)
    assert owners == shard_by_size(dict(reversed(numels.items())), 2)
    loads = [sum(d for n, d in numels.items() if owners[n] == r) for r in range(2)]
    assert sorted(loads) == [13, 14]
    assert set(shard_by_size(numels, 8).values()) <= set(range(8))
    with pytest.raises(ValueError, match="world_size"):
        shard_by_size(numels, 0)


def _fisher_scale(model: torch.nn.Module, task: Task) -> float:
    """Mean diagonal of the empirical Fisher (mean squared gradient) of the target tensors."""
    sampler = GradientSampler.from_task(
        model, task, batch_size=4, num_grads=6, progress=False, dist_ctx=DistContext()
    )
    params = resolve_target_params(model)
    squares = [g.pow(2).mean() for c in sampler.chunks(params, chunk_size=6) for g in c.values()]
    return float(torch.stack(squares).mean())


@pytest.mark.distributed
def test_two_gloo_ranks_match_one_process(
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
    tmp_path: Path,
) -> None:
    """Fine-tuned model, damp = 1 % of the Fisher's mean diagonal: F^-1 is far from I/damp, so
    ranks or passes that took gradients at different weights would disagree."""
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    torch.manual_seed(0)
    finetune(tiny_bert, task, epochs=3, batch_size=6, learning_rate=3e-3, progress=False)
    tiny_bert.eval()
    model_dir = tmp_path / "tuned"
    tiny_bert.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    damp = 1e-2 * _fisher_scale(tiny_bert, task)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        str(WORKER), str(model_dir), str(sst2_dir), str(out), repr(damp),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-8000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]

    # Single-process reference on the same global batches.
    sys.path.insert(0, str(WORKER.parent))
    try:
        import dist_worker
    finally:
        sys.path.pop(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    params = resolve_target_params(model)
    sampler = GradientSampler.from_task(
        model, task, batch_size=4, num_grads=3, progress=False, dist_ctx=DistContext()
    )
    (grads,) = list(sampler.chunks(params, chunk_size=3))
    for name, g in grads.items():  # all-reduced shard gradients == global-batch gradients
        for rank in ranks:
            torch.testing.assert_close(rank["grads"][name], g, rtol=1e-4, atol=1e-6)

    for key, settings in dist_worker.SETTINGS.items():
        net = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        cfg = OneShotConfig(damp=damp, **settings)  # type: ignore[arg-type]
        oneshot_prune(net, cfg, task=task, progress=False, dist_ctx=DistContext())
        for name, p in resolve_target_params(net).items():
            assert torch.equal(ranks[0][key][name], ranks[1][key][name])  # ranks agree exactly
            assert torch.equal(ranks[0][key][name] != 0, p != 0)  # same masks as one process
            torch.testing.assert_close(ranks[0][key][name], p.detach(), rtol=1e-4, atol=1e-6)
    for key in ("grouped-layer", "grouped-global"):
        assert any("groups processed" in line for line in ranks[0][f"{key}-log"])
