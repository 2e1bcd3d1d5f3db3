"""The Fisher work of an ``m < B`` pruning step: ``LowRankFisher``'s Numba kernels vs LAPACK.

    pytest benchmarks/bench_lowrank.py --bench-scale full --benchmark-only   # timings
    pytest benchmarks/bench_lowrank.py --benchmark-disable                    # correctness (CI)

A SparseML-era step (docs/math.md §2.2): m = 16 float32 gradients of all 36 MiniLM-L6 encoder
Linear weights (d = 10,616,832, B = 50, 212,337 blocks), λ = 1e-7. Timed (best of 3 rounds, after
a warm-up round): what the step needs after its gradients with the superposed update (the default
at m < B), ``diag(F̂⁻¹)`` for the scores and one ``F̂⁻¹z`` for the update, on one thread
(``torch.set_num_threads(1)``, which the Numba kernels follow); the operator's copy of the
gradients into its block layout is made untimed before each round. Both kernels are checked
against each other on every case.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

import obert_core as oc

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_NUMBA = importlib.util.find_spec("numba") is not None
MINILM_ENCODER = 6 * (4 * 384 * 384 + 2 * 384 * 1536)  # 10,616,832
DAMP = 1e-7


@pytest.mark.skipif(not (HAS_TORCH and HAS_NUMBA), reason="needs torch and numba")
@pytest.mark.parametrize("kernels", ["lapack", "numba"])
def test_lowrank_step_fisher_work(benchmark: Any, bench_scale: str, kernels: str) -> None:
    import torch

    d, m, block = (MINILM_ENCODER, 16, 50) if bench_scale == "full" else (20_000, 16, 50)
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(m, d, generator=gen) * 1e-3
    # uneven column scales, as real gradients have: the leverages spread over (0, 1)
    grads *= torch.linspace(0.05, 3.0, d).reshape(1, -1)[:, torch.randperm(d, generator=gen)]
    z = torch.randn(-(-d // block), block, generator=gen, dtype=torch.float64)
    torch.set_num_threads(1)  # conftest.py gives the count back after the benchmark
    holder: dict[str, Any] = {}

    def setup() -> None:  # untimed: the gradients' copy into the block layout
        holder.clear()
        holder["op"] = oc.LowRankFisher(grads, block, DAMP, kernels=kernels)

    def work() -> None:
        op = holder["op"]
        holder["diag"], holder["mv"] = op.diag(), op.matvec_blocks(z)
        holder["kernels"] = op.kernels

    benchmark.pedantic(work, setup=setup, rounds=3, iterations=1, warmup_rounds=1)
    assert holder["kernels"] == kernels
    ref = oc.LowRankFisher(grads[:, :5000], block, DAMP, kernels="lapack")
    n = ref.num_blocks
    np.testing.assert_allclose(holder["diag"][:5000].numpy(), ref.diag().numpy(), rtol=1e-8)
    want = ref.matvec_blocks(z[:n]).numpy()
    got = holder["mv"][:n].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9 * abs(want).max())
    benchmark.extra_info.update({"d": d, "m": m, "B": block, "kernels": kernels})
