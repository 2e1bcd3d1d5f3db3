"""Does a 2-D block-sparse Linear run faster on a CPU? Every candidate, one run (issue 19).

LPViT (arXiv 2407.02068) prunes Linear weights in aligned ``r×c`` blocks so that "a kernel can skip
work". This script measures whether any kernel reachable here does, on the Linear shapes of the
models concerned, at batch 1 (``OUT×IN`` weights, ``T`` tokens):

* DeiT-S (197 tokens): 384×384, 1536×384, 384×1536; DeiT-B (197 tokens): 768×768, 3072×768,
  768×3072; MiniLM (128 tokens): 384×384, 1536×384, 384×1536;
* dense, and random block masks (``round(d·n)`` of the ``n`` blocks kept, seeded) at 50 % and
  75 % block sparsity with 16×16 and 32×32 blocks.

Candidates, each checked against the float64 product ``x (W⊙M)ᵀ`` (float32 tolerance, asserted):

* ``torch-dense``: ``F.linear`` with the masked dense weight (measured at density 1; a dense
  kernel's time does not depend on the zeros), ``ort-dense``: a one-``MatMul`` ONNX graph on ONNX
  Runtime (:func:`obert_deploy.bench.linear_graph`, form ``matmul``);
* ``deepsparse``: the same one-``MatMul`` graph with the masked weight on DeepSparse (its own
  environment, ``.venv-deepsparse``, driven as a worker process round by round);
* ``torch-bsr``: ``F.linear`` with the weight as a BSR tensor (``to_sparse_bsr((r, c))``);
* ``torch-gather-rows``: per block-row, gather the input columns of its kept blocks and run one
  dense GEMM (a Python loop over block-rows, ``torch.cat``);
* ``torch-gather-batched``: the same as one batched GEMM over block-rows padded to the largest
  kept count (``index_select`` of ``xᵀ`` rows, ``bmm``);
* ``torch-compact``: the block-column/row compaction: drop the input columns whose whole
  block-column is pruned and the outputs whose whole block-row is pruned (random masks leave
  almost none: the fractions removed are recorded);
* ``ort-block-gather``: the batched gather form as ONNX (``Transpose``, ``Gather``, ``MatMul``,
  ``Reshape``, ``Transpose``; form ``block-gather`` of :func:`obert_deploy.bench.linear_graph`);
* ``ort-gather-rows``: one ``Gather`` + ``MatMul`` per block-row and a ``Concat`` (unpadded).

Timing: all candidates of all cases in the same process (DeepSparse in its worker, asked in
turn), in ``--rounds`` interleaved rounds
(shuffled order in each round, 1 and 2 threads alternating), each cell a batch of calls lasting
about ``--target-ms``; a cell's time is the median over rounds of each round's median call, the
minimum over rounds is recorded too, with the load average of every round and the CPU flags.
``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` (idle OpenMP threads sleep instead of spinning; on a
loaded 2-core machine a spinning 2-thread team otherwise waits whole time slices for its second
thread), and ONNX Runtime's pool threads do not spin either.

Run from the repository root (≤ 10 minutes on 2 cores; results in
``experiments/results/block_sparse_kernels.json``, plot ``docs/img/block_sparse_kernels.png``)::

    OMP_NUM_THREADS=1 .venv/bin/python experiments/block_sparse_kernels.py --rounds 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from _common import IMG, REPO, RESULTS_DIR, make_parser, write_results

RESULTS = RESULTS_DIR / "block_sparse_kernels.json"
PLOT = IMG / "block_sparse_kernels.png"
DS_PYTHON = Path(os.environ.get("OBERT_DEEPSPARSE_PYTHON", REPO / ".venv-deepsparse/bin/python"))

#: (model, OUT, IN, tokens)
SHAPES = [
    ("DeiT-S", 384, 384, 197),
    ("DeiT-S", 1536, 384, 197),
    ("DeiT-S", 384, 1536, 197),
    ("DeiT-B", 768, 768, 197),
    ("DeiT-B", 3072, 768, 197),
    ("DeiT-B", 768, 3072, 197),
    ("MiniLM", 384, 384, 128),
    ("MiniLM", 1536, 384, 128),
    ("MiniLM", 384, 1536, 128),
]
#: (block, density kept); None = dense
CONFIGS: list[tuple[tuple[int, int] | None, float]] = [
    (None, 1.0),
    ((16, 16), 0.5),
    ((16, 16), 0.25),
    ((32, 32), 0.5),
    ((32, 32), 0.25),
]
DENSE = ("torch-dense", "ort-dense", "deepsparse")
SPARSE = (
    "torch-bsr",
    "torch-gather-rows",
    "torch-gather-batched",
    "torch-compact",
    "ort-block-gather",
    "ort-gather-rows",
    "deepsparse",
)


# --------------------------------------------------------------------------- DeepSparse worker


def ds_worker() -> None:
    """Serve DeepSparse timings over stdin/stdout, one JSON command per line (no torch here)."""
    import numpy as np
    from deepsparse import Engine

    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # DeepSparse's own prints go to stderr, the protocol keeps stdout
    engines: dict[str, Any] = {}
    feeds: dict[str, list[Any]] = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "load":
            engine = Engine(model=cmd["path"], batch_size=1, num_cores=cmd["threads"])
            engines[cmd["id"]] = engine
            feeds[cmd["id"]] = [np.load(cmd["x"])]
            out = engine.run(feeds[cmd["id"]])[0]
            np.save(cmd["out"], out)
            answer: dict[str, Any] = {"ok": True}
        elif op == "time":
            engine, feed = engines[cmd["id"]], feeds[cmd["id"]]
            times = []
            for _ in range(cmd["inner"]):
                t0 = time.perf_counter_ns()
                engine.run(feed)
                times.append(time.perf_counter_ns() - t0)
            answer = {"ms": statistics.median(times) / 1e6}
        elif op == "version":
            import deepsparse

            answer = {"version": deepsparse.__version__}
        else:
            return
        reply.write(json.dumps(answer) + "\n")


class DeepSparse:
    """The worker process in ``.venv-deepsparse``, asked for one cell at a time."""

    def __init__(self) -> None:
        script = Path(__file__).resolve()
        self.proc = subprocess.Popen(
            [str(DS_PYTHON), str(script), "--ds-worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=script.parent,
            env={**os.environ, "NM_DISABLE_ANALYTICS": "1"},
        )

    def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the DeepSparse worker stopped")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.write(json.dumps({"op": "stop"}) + "\n")
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


# --------------------------------------------------------------------------- candidates


@dataclass
class Cell:
    """One candidate on one case at one thread count."""

    model: str
    shape: tuple[int, int]
    tokens: int
    block: tuple[int, int] | None
    density: float
    candidate: str
    threads: int
    run: Callable[[int], float]  # inner calls -> median ms per call
    inner: int = 1
    rounds_ms: list[float] = field(default_factory=list)
    max_abs_err: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _timer(fn: Callable[[], Any]) -> Callable[[int], float]:
    def run(inner: int) -> float:
        times = []
        for _ in range(inner):
            t0 = time.perf_counter_ns()
            fn()
            times.append(time.perf_counter_ns() - t0)
        return statistics.median(times) / 1e6

    return run


def _same(run: Callable[[int], float]) -> Callable[[int], Callable[[int], float]]:
    """A torch timer for any thread count (torch's count is set before each measurement)."""

    def make(threads: int) -> Callable[[int], float]:
        del threads
        return run

    return make


def _ort_timer(
    sessions: dict[int, Any], feed: dict[str, Any]
) -> Callable[[int], Callable[[int], float]]:
    """The timer of the ONNX Runtime session with ``threads`` intra-op threads."""

    def make(threads: int) -> Callable[[int], float]:
        session = sessions[threads]
        return _timer(partial(session.run, None, feed))

    return make


def _ds_time(ds: DeepSparse, cid: str, inner: int) -> float:
    return float(ds.ask(op="time", id=cid, inner=inner)["ms"])


def _torch_forms(x: Any, w: Any, block: tuple[int, int]) -> dict[str, Callable[[], Any]]:
    """The torch candidates for ``x`` (``T×IN``) and the masked weight ``w`` (``OUT×IN``)."""
    import torch
    import torch.nn.functional as F

    from obert_deploy.bench import pack_block_rows

    r, c = block
    out_f, in_f = w.shape
    grid = w.reshape(out_f // r, r, in_f // c, c).ne(0).any(3).any(1)  # B×C kept blocks
    bsr = w.to_sparse_bsr((r, c))
    rows = []
    for i in range(grid.shape[0]):
        kept = torch.nonzero(grid[i]).flatten()
        cols = (kept[:, None] * c + torch.arange(c)).flatten()
        rows.append((cols, w[i * r : (i + 1) * r].index_select(1, cols).contiguous()))
    idx, packed, padding = pack_block_rows(w.numpy(), block)
    idx_t = torch.from_numpy(idx)
    packed_t = torch.from_numpy(packed).transpose(1, 2).contiguous()  # B×r×kc
    col_keep = torch.nonzero(grid.any(0).repeat_interleave(c)).flatten()
    row_keep = torch.nonzero(grid.any(1).repeat_interleave(r)).flatten()
    w_compact = w.index_select(0, row_keep).index_select(1, col_keep).contiguous()

    def gather_rows() -> Any:
        return torch.cat([x.index_select(1, cols) @ wi.T for cols, wi in rows], dim=1)

    def gather_batched() -> Any:
        g = x.T.contiguous()[idx_t]  # B×kc×T
        return torch.bmm(packed_t, g).reshape(out_f, -1).T

    def compact() -> Any:
        y = x.new_zeros(x.shape[0], out_f)
        y[:, row_keep] = F.linear(x.index_select(1, col_keep), w_compact)
        return y

    forms: dict[str, Callable[[], Any]] = {
        "torch-bsr": lambda: F.linear(x, bsr),
        "torch-gather-rows": gather_rows,
        "torch-gather-batched": gather_batched,
        "torch-compact": compact,
    }
    forms["_padding"] = lambda: padding
    forms["_removed"] = lambda: (
        1 - len(col_keep) / in_f,
        1 - len(row_keep) / out_f,
    )
    return forms


def _ort_gather_rows(w: Any, tokens: int, block: tuple[int, int]) -> Any:
    """One ``Gather`` + ``MatMul`` per block-row, ``Concat`` on the outputs (unpadded)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    r, c = block
    out_f, in_f = w.shape
    grid = np.any(w.reshape(out_f // r, r, in_f // c, c) != 0, axis=(1, 3))
    nodes, inits, outs = [], [], []
    for i in range(grid.shape[0]):
        kept = np.flatnonzero(grid[i])
        cols = (kept[:, None] * c + np.arange(c)).reshape(-1).astype(np.int64)
        if cols.size == 0:
            cols = np.arange(c, dtype=np.int64)
        wi = np.ascontiguousarray(w[i * r : (i + 1) * r][:, cols].T, dtype=np.float32)
        inits += [numpy_helper.from_array(cols, f"c{i}"), numpy_helper.from_array(wi, f"w{i}")]
        nodes += [
            helper.make_node("Gather", ["x", f"c{i}"], [f"g{i}"], axis=2),
            helper.make_node("MatMul", [f"g{i}", f"w{i}"], [f"o{i}"]),
        ]
        outs.append(f"o{i}")
    nodes.append(helper.make_node("Concat", outs, ["y"], axis=2))
    graph = helper.make_graph(
        nodes,
        "linear_gather_rows",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, tokens, in_f])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, tokens, out_f])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _ort_session(model: Any, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads sleep instead of spinning: torch, ONNX Runtime and DeepSparse take
    # turns on the same 2 cores here, and a spinning pool would tax whoever runs next.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _check(name: str, got: Any, want: Any) -> float:
    import numpy as np

    got = np.asarray(got, dtype=np.float64).reshape(want.shape)
    err = float(np.max(np.abs(got - want)))
    scale = float(np.max(np.abs(want)))
    if not np.allclose(got, want, rtol=1e-4, atol=1e-4 * scale):
        raise AssertionError(f"{name}: max |error| {err:.3g} (outputs up to {scale:.3g})")
    return err


def build_cells(
    shapes: list[tuple[str, int, int, int]],
    configs: list[tuple[tuple[int, int] | None, float]],
    threads: list[int],
    ds: DeepSparse | None,
    tmp: Path,
    seed: int,
) -> list[Cell]:
    """Every (case, candidate, threads) cell, each checked once against the float64 product."""
    import numpy as np
    import onnx
    import torch
    import torch.nn.functional as F

    from obert_deploy.bench import linear_graph, random_block_mask

    cells: list[Cell] = []
    rng = np.random.default_rng(seed)
    for s_i, (model, out_f, in_f, tokens) in enumerate(shapes):
        dense_w = (rng.standard_normal((out_f, in_f)) * 0.05).astype(np.float32)
        x_np = rng.standard_normal((tokens, in_f)).astype(np.float32)
        x = torch.from_numpy(x_np)
        x_path = tmp / f"x{s_i}.npy"
        np.save(x_path, x_np[None])
        for c_i, (block, density) in enumerate(configs):
            if block is None:
                w_np = dense_w
            else:
                w_np = dense_w * random_block_mask((out_f, in_f), block, density, seed=seed + c_i)
            want = x_np.astype(np.float64) @ w_np.astype(np.float64).T
            w = torch.from_numpy(w_np)
            # name -> (timer per thread count, max |error|)
            runs: dict[str, tuple[Callable[[int], Callable[[int], float]], float]] = {}
            extra: dict[str, Any] = {}
            base: dict[str, Any] = {
                "model": model,
                "shape": (out_f, in_f),
                "tokens": tokens,
                "block": block,
            }
            matmul = linear_graph(w_np, tokens, form="matmul")
            path = tmp / f"w{s_i}_{c_i}.onnx"
            onnx.save(matmul, path)
            if block is None:
                err = _check("torch-dense", F.linear(x, w).numpy(), want)
                runs["torch-dense"] = (_same(_timer(partial(F.linear, x, w))), err)
                sess = {t: _ort_session(matmul, t) for t in threads}
                err = _check("ort-dense", sess[threads[0]].run(None, {"x": x_np[None]})[0], want)
                runs["ort-dense"] = (_ort_timer(sess, {"x": x_np[None]}), err)
            else:
                forms = _torch_forms(x, w, block)
                extra["padding"] = forms.pop("_padding")()
                extra["removed_in_out"] = forms.pop("_removed")()
                for name, fn in forms.items():
                    err = _check(name, fn().numpy(), want)
                    runs[name] = (_same(_timer(fn)), err)
                for name, graph in (
                    (
                        "ort-block-gather",
                        linear_graph(w_np, tokens, form="block-gather", block=block),
                    ),
                    ("ort-gather-rows", _ort_gather_rows(w_np, tokens, block)),
                ):
                    sess = {t: _ort_session(graph, t) for t in threads}
                    err = _check(name, sess[threads[0]].run(None, {"x": x_np[None]})[0], want)
                    runs[name] = (_ort_timer(sess, {"x": x_np[None]}), err)
            for name, (make, err) in runs.items():
                for t in threads:
                    cells.append(
                        Cell(
                            **base,
                            density=density,
                            candidate=name,
                            threads=t,
                            run=make(t),
                            max_abs_err=err,
                            extra=dict(extra),
                        )
                    )
            if ds is not None:
                for t in threads:
                    cid = f"{s_i}_{c_i}_{t}"
                    out = tmp / f"ds{cid}.npy"
                    ds.ask(
                        op="load", id=cid, path=str(path), threads=t, x=str(x_path), out=str(out)
                    )
                    err = _check("deepsparse", np.load(out), want)
                    cells.append(
                        Cell(
                            **base,
                            density=density,
                            candidate="deepsparse",
                            threads=t,
                            run=partial(_ds_time, ds, cid),
                            max_abs_err=err,
                            extra=dict(extra),
                        )
                    )
            print(f"built {model} {out_f}x{in_f} {block} {density}", flush=True)
    return cells


# --------------------------------------------------------------------------- timing and report


def measure(
    cells: list[Cell], rounds: int, target_ms: float, seed: int
) -> list[list[float] | None]:
    """Interleaved rounds over every cell; returns the load average after each round."""
    import random

    import torch

    rng = random.Random(seed)
    threads = sorted({c.threads for c in cells})
    for cell in cells:  # warm-up and the calls per measurement
        torch.set_num_threads(cell.threads)
        cell.run(2)
        once = cell.run(3)
        cell.inner = max(1, min(200, round(target_ms / max(once, 1e-3))))
    loads: list[list[float] | None] = []
    for r in range(rounds):
        for t in threads:
            torch.set_num_threads(t)
            group = [c for c in cells if c.threads == t]
            rng.shuffle(group)
            for cell in group:
                cell.rounds_ms.append(cell.run(cell.inner))
        load = [round(v, 2) for v in os.getloadavg()]
        loads.append(load)
        print(f"round {r + 1}/{rounds} done, load {load}", flush=True)
    return loads


def _key(cell: Cell) -> tuple[Any, ...]:
    return (cell.model, cell.shape, cell.tokens, cell.threads)


def report(cells: list[Cell]) -> list[dict[str, Any]]:
    """One row per cell with its speed-up over ``ort-dense`` and ``torch-dense``."""
    dense: dict[tuple[Any, ...], dict[str, float]] = {}
    fastest: dict[tuple[Any, ...], float] = {}
    for cell in cells:
        if cell.block is None:  # torch, ONNX Runtime and DeepSparse on the dense weight
            dense.setdefault(_key(cell), {})[cell.candidate] = statistics.median(cell.rounds_ms)
        if cell.block is None and cell.candidate == "ort-dense":
            fastest[_key(cell)] = min(cell.rounds_ms)
    rows = []
    for cell in cells:
        median = statistics.median(cell.rounds_ms)
        ref = dense[_key(cell)]
        rows.append(
            {
                "model": cell.model,
                "shape": f"{cell.shape[0]}x{cell.shape[1]}",
                "tokens": cell.tokens,
                "block": None if cell.block is None else f"{cell.block[0]}x{cell.block[1]}",
                "density": cell.density,
                "sparsity": round(1 - cell.density, 4),
                "threads": cell.threads,
                "candidate": cell.candidate,
                "median_ms": round(median, 5),
                "min_ms": round(min(cell.rounds_ms), 5),
                "rounds_ms": [round(v, 5) for v in cell.rounds_ms],
                "calls_per_round": cell.inner,
                "speedup_vs_ort_dense": round(ref["ort-dense"] / median, 4),
                "speedup_vs_torch_dense": round(ref["torch-dense"] / median, 4),
                # over the fastest dense path of this shape and thread count (torch, ONNX
                # Runtime or DeepSparse on the dense weight)
                "best_dense": min(ref, key=lambda k: ref[k]),
                "speedup_vs_best_dense": round(min(ref.values()) / median, 4),
                # the same from the fastest round of each (the uncontended estimate on a
                # loaded machine)
                "speedup_vs_ort_dense_min": round(fastest[_key(cell)] / min(cell.rounds_ms), 4),
                "max_abs_err": cell.max_abs_err,
                **cell.extra,
            }
        )
    return rows


SHORT = {
    "torch-dense": "torch dense",
    "ort-dense": "ORT dense",
    "deepsparse": "DeepSparse",
    "torch-bsr": "torch BSR",
    "torch-gather-rows": "torch gather rows",
    "torch-gather-batched": "torch gather batched",
    "torch-compact": "torch compaction",
    "ort-block-gather": "ORT block-gather",
    "ort-gather-rows": "ORT gather rows",
}


def markdown(data: dict[str, Any]) -> str:
    """The tables of docs/results.md from a results file (speed-ups over dense ONNX Runtime)."""
    import math

    rows = data["rows"]
    configs = [
        (b, s) for b, s in (("16x16", 0.5), ("16x16", 0.75), ("32x32", 0.5), ("32x32", 0.75))
    ]
    head = " | ".join(f"{b} {s:.0%}" for b, s in configs)
    out: list[str] = []
    for t in sorted({r["threads"] for r in rows}):
        out += [
            f"**{t} thread{'s' if t > 1 else ''}**: median ms of dense ONNX Runtime (min over "
            "rounds), torch and DeepSparse on the dense weight; then the speed-up over the "
            "fastest of the three of DeepSparse / of the best other candidate",
            "",
            "| model | OUTxIN | tokens | dense ORT ms | dense torch ms | dense DeepSparse ms | "
            + head
            + " |",
            "|---|---|---:|---:|---:|---:|" + "---|" * len(configs),
        ]
        cases = list(dict.fromkeys((r["model"], r["shape"], r["tokens"]) for r in rows))
        for model, shape, tokens in cases:
            mine = [r for r in rows if (r["model"], r["shape"], r["threads"]) == (model, shape, t)]
            dense = {r["candidate"]: r for r in mine if r["block"] is None}
            cells = []
            for b, sp in configs:
                at = [r for r in mine if r["block"] == b and r["sparsity"] == sp]
                ds = [r["speedup_vs_best_dense"] for r in at if r["candidate"] == "deepsparse"]
                others = [r for r in at if r["candidate"] != "deepsparse"]
                best = max(others, key=lambda r: r["speedup_vs_best_dense"])
                ds_text = (
                    f"**{ds[0]:.2f}x**" if ds and ds[0] >= 1.3 else (f"{ds[0]:.2f}x" if ds else "-")
                )
                cells.append(
                    f"{ds_text} / {best['speedup_vs_best_dense']:.2f}x {SHORT[best['candidate']]}"
                )
            ort, torch_d = dense["ort-dense"], dense["torch-dense"]
            ds_d = dense.get("deepsparse")
            ds_ms = f"{ds_d['median_ms']:.3f}" if ds_d else "-"
            out.append(
                f"| {model} | {shape} | {tokens} | {ort['median_ms']:.3f} ({ort['min_ms']:.3f}) "
                f"| {torch_d['median_ms']:.3f} | {ds_ms} | " + " | ".join(cells) + " |"
            )
        out.append("")
    out += [
        "Geometric mean over the 9 shapes of each candidate's speed-up over the fastest dense "
        "path (over dense ONNX Runtime from the fastest round of each)",
        "",
        "| candidate | threads | " + head + " |",
        "|---|---:|" + "---:|" * len(configs),
    ]

    def gmean(name: str, t: int, b: str, sp: float, key: str) -> float:
        x = [
            r[key]
            for r in rows
            if r["candidate"] == name
            and r["threads"] == t
            and r["block"] == b
            and r["sparsity"] == sp
        ]
        return math.exp(sum(math.log(v) for v in x) / len(x)) if x else math.nan

    for name in SPARSE:
        for t in sorted({r["threads"] for r in rows}):
            values = [
                f"{gmean(name, t, b, sp, 'speedup_vs_best_dense'):.2f}x "
                f"({gmean(name, t, b, sp, 'speedup_vs_ort_dense_min'):.2f}x)"
                for b, sp in configs
            ]
            out.append(f"| {SHORT[name]} | {t} | " + " | ".join(values) + " |")
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Speed-up over the fastest dense path per case, one panel per thread count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    threads = sorted({r["threads"] for r in rows})
    sparse = [r for r in rows if r["block"] is not None]
    cases = list(dict.fromkeys((r["model"], r["shape"], r["block"], r["sparsity"]) for r in sparse))
    names = list(dict.fromkeys(r["candidate"] for r in sparse))
    fig, axes = plt.subplots(len(threads), 1, figsize=(18, 4.2 * len(threads)), squeeze=False)
    width = 0.8 / len(names)
    for ax, t in zip(axes[:, 0], threads, strict=True):
        for j, name in enumerate(names):
            values = []
            for case in cases:
                match = [
                    r["speedup_vs_best_dense"]
                    for r in sparse
                    if (r["model"], r["shape"], r["block"], r["sparsity"]) == case
                    and r["candidate"] == name
                    and r["threads"] == t
                ]
                values.append(match[0] if match else np.nan)
            ax.bar(np.arange(len(cases)) + j * width, values, width, label=name)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylabel(f"speed-up vs fastest dense\n({t} thread{'s' if t > 1 else ''})")
        ax.set_xticks(np.arange(len(cases)) + 0.4 - width / 2)
        ax.set_xticklabels(
            [f"{m} {s}\n{b} {sp:.0%}" for m, s, b, sp in cases], fontsize=6, rotation=90
        )
    axes[0, 0].legend(ncol=len(names), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.25))
    fig.suptitle(
        "Block-sparse Linear on CPU, batch 1: time of the fastest dense path / time of each"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Build every cell, time them in interleaved rounds, write the JSON and the plot."""
    parser = make_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--target-ms", type=float, default=5.0, help="time of one measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="two shapes, 2 rounds (a smoke test)")
    parser.add_argument("--no-deepsparse", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=PLOT)
    parser.add_argument(
        "--markdown", action="store_true", help="print the tables of --output, measure nothing"
    )
    parser.add_argument("--ds-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ds_worker:
        ds_worker()
        return
    if args.markdown:
        print(markdown(json.loads(args.output.read_text(encoding="utf-8"))))
        return
    # Idle OpenMP threads sleep: on this shared 2-core machine a spinning team waits a whole
    # time slice for its descheduled second thread (x@W 384x384 at 2 threads: 28 ms vs 0.33 ms).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from obert_core.shared import cpu_flags, cpu_info

    start = time.perf_counter()
    threads = [int(t) for t in args.threads.split(",")]
    shapes = SHAPES[:2] if args.quick else SHAPES
    rounds = 2 if args.quick else args.rounds
    ds = None if args.no_deepsparse or not DS_PYTHON.exists() else DeepSparse()
    load_start = [round(v, 2) for v in os.getloadavg()]
    try:
        ds_version = ds.ask(op="version")["version"] if ds is not None else None
        with tempfile.TemporaryDirectory(prefix="block-sparse-") as tmp:
            cells = build_cells(shapes, CONFIGS, threads, ds, Path(tmp), args.seed)
            built = time.perf_counter() - start
            loads = measure(cells, rounds, args.target_ms, args.seed)
    finally:
        if ds is not None:
            ds.close()
    import onnxruntime

    rows = report(cells)
    command = "OMP_NUM_THREADS=1 .venv/bin/python experiments/block_sparse_kernels.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    total = round(time.perf_counter() - start, 1)
    data: dict[str, Any] = {
        "command": command.strip(),
        "machine": {
            **cpu_info().to_dict(),
            "simd": [f for f in cpu_flags() if f.startswith(("avx512", "avx2", "amx", "avx_vnni"))],
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "deepsparse": ds_version,
        },
        "settings": {
            "rounds": rounds,
            "threads": threads,
            "target_ms": args.target_ms,
            "seed": args.seed,
            "batch": 1,
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
        "load_average": {"start": load_start, "after_each_round": loads},
        "seconds": {"build": round(built, 1), "total": round(time.perf_counter() - start, 1)},
        "rows": rows,
    }
    if args.quick:  # a smoke test never replaces the results
        quick = Path(tempfile.gettempdir())
        args.output = quick / RESULTS.name if args.output == RESULTS else args.output
        args.plot = quick / PLOT.name if args.plot == PLOT else args.plot
    write_results(args.output, data)
    plot(rows, args.plot)
    best = [r for r in rows if r["block"] is not None]
    best.sort(key=lambda r: -r["speedup_vs_best_dense"])
    print(f"wrote {args.output} and {args.plot} in {total} s")
    for r in best[:8]:
        case = f"{r['model']} {r['shape']} {r['block']} {r['sparsity']:.0%} {r['threads']}t"
        speed = f"x{r['speedup_vs_best_dense']:.2f} vs the fastest dense ({r['best_dense']})"
        print(f"{r['candidate']:22s} {case}: {r['median_ms']:.3f} ms, {speed}")


if __name__ == "__main__":
    main()
