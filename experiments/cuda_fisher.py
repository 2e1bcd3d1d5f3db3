"""Time the torch backend on CUDA: batched vs streaming build of one BERT-base layer's Fisher.

    python experiments/cuda_fisher.py [--d 7077888] [--block-size 50] [--num-grads 1024]

Prints one JSON line per case (seconds, peak GPU memory) and the batched-vs-streaming speed-up.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, TypedDict

from _common import make_parser

if TYPE_CHECKING:
    import torch


class Case(TypedDict):
    """One timed build: sizes, method, seconds, peak GPU memory, device name."""

    d: int
    B: int
    m: int
    method: str
    seconds: float
    peak_gpu_mb: int
    device: str


def run(d: int, bsz: int, m: int, method: str, chunk: torch.Tensor) -> Case:
    import torch

    import obert_core as oc

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    b = oc.BlockFisherBuilder(d, bsz, 1e-7, m, method=method)
    for _ in range(m // chunk.shape[0]):
        b.add(chunk)
    finv = b.finalize()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    assert torch.isfinite(finv).all()
    return {
        "d": d,
        "B": bsz,
        "m": m,
        "method": method,
        "seconds": round(dt, 3),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20),
        "device": torch.cuda.get_device_name(),
    }


def main() -> None:
    p = make_parser(__doc__)
    p.add_argument("--d", type=int, default=7_077_888)
    p.add_argument("--block-size", type=int, default=50)
    p.add_argument("--num-grads", type=int, default=1024)
    a = p.parse_args()
    import torch

    chunk = (torch.randn(64, a.d, device="cuda") * 1e-3).float()
    run(a.d, a.block_size, 64, "batched", chunk)  # warm-up (cuBLAS/cuSOLVER init)
    res = {
        meth: run(a.d, a.block_size, a.num_grads, meth, chunk) for meth in ("batched", "streaming")
    }
    for r in res.values():
        print(json.dumps(r))
    print(
        json.dumps(
            {
                "speedup_batched_vs_streaming": round(
                    res["streaming"]["seconds"] / res["batched"]["seconds"], 1
                )
            }
        )
    )


if __name__ == "__main__":
    main()
