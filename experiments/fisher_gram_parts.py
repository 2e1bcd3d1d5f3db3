"""Per-chunk costs of the batched Fisher build's Gram accumulation, against a float32 GEMM.

    python experiments/fisher_gram_parts.py                 # d = 1,769,472, B = 50, k = 64
    python experiments/fisher_gram_parts.py --repeats 5 --threads 2

Times, for one chunk of k float32 gradients of a d-weight tensor (blocks of B, docs/math.md §2),
the parts of ``BlockFisherBuilder.add`` on the torch backend and the checks it could make: the
batched GEMM ``acc += XᵀX`` reading the chunk in place, a finiteness scan of the chunk (the check
before issue 23's change), the check of the Gram's diagonal and of the last row of every block
(the check now), and the zero fill of a fresh accumulator that the first chunk's ``beta = 0`` GEMM
makes unnecessary. Each is the best of ``--repeats`` and is also given in units of the time a
float32 GEMM of the chunk's 2·k·d·B flops takes at the 4096² GEMM rate timed in the same run, and
of the time the chunk's unavoidable memory traffic takes (reading the chunk, ``4kd`` bytes, and
reading and writing the float32 accumulator, ``2·4·⌈d/B⌉B²`` bytes) at the machine's streaming
bandwidth, timed in the same run as ``y += x`` over two 512 MiB float32 arrays (three bytes moved
per byte of ``x``): the accumulation is bandwidth-bound when its time is near the latter.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from _common import make_parser

import obert_core as oc
from obert_core.shared import cpu_info


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls (after one untimed call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _tile_part(g: torch.Tensor, b: int) -> dict[str, Callable[[], object]]:
    """``BlockFisherBuilder.add`` with the Numba register tiles, if Numba is installed.

    The builder's whole ``add``: the lower triangles' ``acc += XᵀX`` in tile order (fewer
    bytes a block than ``B²`` floats, so no traffic multiple is printed for it) and the check of
    each block's last row, in the kernel.
    """
    import importlib.util

    if importlib.util.find_spec("numba") is None:
        return {}
    builder = oc.BlockFisherBuilder(
        g.shape[1], b, 1e-7, 2**40, backend="torch", gram_kernels="numba"
    )
    builder.add(g)  # the first chunk: compiles and checks the kernel
    if not builder.uses_gram_tiles:  # this build's kernel disagreed with float64 (warned)
        return {}
    return {"lower triangles, Numba tiles (+ row check)": lambda: builder.add(g)}


def streaming_bandwidth(repeats: int) -> float:
    """GB/s of ``y += x`` over two 512 MiB float32 arrays (reads x and y, writes y)."""
    x, y = torch.ones(2**27), torch.ones(2**27)
    return 3 * x.numel() * 4 / best_of(lambda: y.add_(x), repeats) / 1e9


def main() -> None:
    """Print one line per part: seconds per chunk and multiples of the chunk's GEMM time."""
    parser = make_parser(__doc__)
    parser.add_argument("--d", type=int, default=1_769_472, help="weights per tensor")
    parser.add_argument("--block-size", type=int, default=50, help="Fisher block size B")
    parser.add_argument("--chunk", type=int, default=64, help="gradients per chunk k")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    d, b, k = args.d, args.block_size, args.chunk
    full = d // b
    nb = -(-d // b)
    g = torch.from_numpy(
        np.random.default_rng(0).standard_normal((k, d), dtype=np.float32) * np.float32(1e-3)
    )
    square = torch.randn(4096, 4096)
    gflops = 2 * 4096**3 / best_of(lambda: square @ square, args.repeats) / 1e9
    unit = 2 * k * d * b / (gflops * 1e9)  # the chunk's flops at the GEMM rate
    bandwidth = streaming_bandwidth(args.repeats)
    traffic = (4 * k * d + 2 * 4 * nb * b * b) / 1e9  # GB the chunk's accumulation must move
    unit_bw = traffic / bandwidth
    acc = torch.empty((nb, b, b))
    x = g[:, : full * b].reshape(k, full, b).transpose(0, 1)
    acc[:full].baddbmm_(x.transpose(1, 2), x, beta=0.0)
    parts: dict[str, Callable[[], object]] = {
        "batched GEMM acc += X^T X (in place)": lambda: acc[:full].baddbmm_(x.transpose(1, 2), x),
        **_tile_part(g, b),
        "finiteness scan of the chunk": lambda: bool(torch.isfinite(g.sum())),
        "check of the Gram diagonal": lambda: bool(
            torch.isfinite(acc.diagonal(dim1=1, dim2=2).sum())
        ),
        "check of each block's last row": lambda: bool(torch.isfinite(acc[:, -1, :].sum())),
        "zero fill of a fresh accumulator": lambda: torch.zeros((nb, b, b)),
    }
    info = cpu_info()
    print(
        f"{info.brand}, {info.available_cores} cores (avx512={info.avx512}, amx={info.amx}); "
        f"torch {torch.__version__}, {args.threads} threads; d={d:,} B={b} k={k}; "
        f"float32 GEMM 4096²: {gflops:.0f} GFLOP/s, chunk GEMM time {unit:.4f} s; streaming "
        f"bandwidth {bandwidth:.1f} GB/s, the chunk's {traffic:.3f} GB of traffic {unit_bw:.4f} s"
    )
    print(f"{'part':38s} {'seconds':>10s}  × GEMM time  × traffic time")
    for name, fn in parts.items():
        t = best_of(fn, args.repeats)
        per_traffic = "–" if "tiles" in name else f"{t / unit_bw:.2f}x"  # not B² floats a block
        print(f"{name:38s} {t:8.4f} s  {t / unit:10.2f}x  {per_traffic:>12s}")


if __name__ == "__main__":
    main()
