"""One Linear layer as an ONNX graph, with ``r×c`` block-sparse weights, and its measured latency.

Two forms of ``y = x Wᵀ`` for a weight ``W`` (``OUT×IN``) whose pruned entries are whole ``r×c``
blocks (LPViT, arXiv 2407.02068; docs/math.md §8):

* ``"matmul"``: one ``MatMul`` with the dense weight, zeros included (what an exported model
  holds);
* ``"block-gather"``: per block-row ``i`` (``r`` output rows), only the input columns of its kept
  blocks ``K_i`` take part: ``y[:, rows_i] = x[:, cols(K_i)] · W[rows_i, cols(K_i)]ᵀ``. All
  block-rows run as one batched product: the block-rows are padded to the largest kept count
  ``k`` (padded slots read columns ``0 … c-1`` with zero weights): ``Transpose(x)`` →
  ``Gather(xᵀ, idx)`` (``B×kc×T``) → ``MatMul`` with the packed ``B×r×kc`` weights →
  ``Reshape`` → ``Transpose`` (:func:`pack_block_rows`). Its gathered input holds ``B = OUT/r``
  copies of the kept columns, ``OUT/r`` times the bytes of ``x`` at full density: on a CPU it is
  slower than the dense ``MatMul`` at 50 and 75 % block sparsity (docs/results.md, "Block-sparse
  Linear kernels on CPU").

:func:`measure_latency_table` times one form on one engine at several densities of random block
masks (:func:`random_block_mask`) and returns the table obert-train's allocator reads
(format :data:`obert_core.shared.LATENCY_TABLE_FORMAT`, :func:`obert_train.load_latency_table`);
:func:`write_latency_table` writes it atomically. Torch-free: it runs in the DeepSparse
environment too.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from obert_core.shared import LATENCY_TABLE_FORMAT, atomic_write_text, cpu_info, load_average

from .._choices import ENGINES, LINEAR_FORMS
from .._errors import ObertDeployError, brief
from ._engines import create_runner, engine_version, require_engine

__all__ = [
    "LINEAR_FORMS",
    "block_gather_reference",
    "linear_graph",
    "measure_latency_table",
    "pack_block_rows",
    "parse_block",
    "parse_shapes",
    "random_block_mask",
    "write_latency_table",
]

#: Opset and IR version of the one-Linear graphs: readable by ONNX Runtime, OpenVINO and
#: DeepSparse 1.8 (onnx 1.14, IR 8).
_OPSET = 13
_IR_VERSION = 8


def _dims(text: str, what: str, example: str) -> tuple[int, int]:
    head, sep, tail = text.strip().lower().partition("x")
    if not sep or not head.isdigit() or not tail.isdigit() or not int(head) or not int(tail):
        raise ObertDeployError(f"{what} {text!r} is not two positive integers like {example!r}")
    return int(head), int(tail)


def parse_block(text: str) -> tuple[int, int]:
    """``"16x16"`` → ``(16, 16)``: a block of ``r`` rows (outputs) by ``c`` columns (inputs).

    Raises:
        ObertDeployError: Not ``RxC`` with positive integers.
    """
    return _dims(text, "block", "16x16")


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``"384x384,1536x384"`` → ``[(384, 384), (1536, 384)]``: Linear weights ``OUTxIN``.

    Raises:
        ObertDeployError: An entry is not ``OUTxIN`` with positive integers, or none is given.
    """
    shapes = [_dims(part, "shape", "1536x384") for part in text.split(",") if part.strip()]
    if not shapes:
        raise ObertDeployError(f"no weight shape in {text!r}; pass e.g. --shapes 384x384,1536x384")
    return list(dict.fromkeys(shapes))


def _check_block(shape: tuple[int, int], block: tuple[int, int]) -> tuple[int, int]:
    (rows, cols), (r, c) = shape, block
    if r < 1 or c < 1 or rows % r or cols % c:
        raise ObertDeployError(
            f"block {r}x{c} does not divide the weight shape {rows}x{cols} (OUTxIN); pick a "
            "block whose sides divide both dimensions, e.g. 16x16 for 384x1536"
        )
    return rows // r, cols // c


def random_block_mask(
    shape: tuple[int, int], block: tuple[int, int], density: float, *, seed: int = 0
) -> np.ndarray:
    """A keep-mask (``True`` = kept) of whole ``r×c`` blocks, ``round(density·n)`` of ``n`` kept.

    The kept blocks are drawn uniformly at random (seeded), as an unstructured choice of blocks.

    Args:
        shape: Weight shape ``(OUT, IN)``.
        block: ``(r, c)``; must divide ``shape``.
        density: Fraction of blocks kept, in [0, 1].
        seed: Seed of the draw.

    Returns:
        Boolean array of ``shape``.

    Raises:
        ObertDeployError: ``block`` does not divide ``shape`` or ``density`` is outside [0, 1].
    """
    if not 0.0 <= density <= 1.0:  # also False for NaN
        raise ObertDeployError(f"density {density!r} is not in [0, 1]; pass e.g. 0.5")
    grid = _check_block(shape, block)
    n = grid[0] * grid[1]
    keep = np.zeros(n, dtype=bool)
    keep[np.random.default_rng(seed).permutation(n)[: round(density * n)]] = True
    r, c = block
    return np.repeat(np.repeat(keep.reshape(grid), r, axis=0), c, axis=1)


def pack_block_rows(
    weight: np.ndarray, block: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, float]:
    """The block-gather form of ``weight``: input columns and packed weights per block-row.

    A block is kept when any of its entries is non-zero. Block-row ``i`` keeps ``k_i`` blocks;
    all are padded to ``k = max(1, max_i k_i)`` blocks, the padded slots reading input columns
    ``0 … c-1`` with zero weights, so ``y[:, i·r:(i+1)·r] = x[:, idx[i]] · packed[i]``.

    Args:
        weight: ``OUT×IN`` weight (float).
        block: ``(r, c)``; must divide the shape.

    Returns:
        ``idx`` (``B×kc`` int64 input columns, ``B = OUT / r``), ``packed`` (``B×kc×r``, the
        weight's dtype) and the padding: the fraction of ``B·k`` block slots that are padding.

    Raises:
        ObertDeployError: ``weight`` is not 2-D or ``block`` does not divide it.
    """
    w = np.asarray(weight)
    if w.ndim != 2:
        raise ObertDeployError(f"weight of shape {list(w.shape)} is not a 2-D Linear weight")
    (br, bc), (r, c) = _check_block((int(w.shape[0]), int(w.shape[1])), block), block
    blocks = w.reshape(br, r, bc, c)
    alive = np.any(blocks != 0, axis=(1, 3))  # B×C grid of kept blocks
    counts = alive.sum(axis=1)
    k = max(1, int(counts.max(initial=0)))
    idx = np.tile(np.arange(c, dtype=np.int64), (br, k))  # padding: columns 0..c-1
    packed = np.zeros((br, k * c, r), dtype=w.dtype)
    for i in range(br):
        for slot, j in enumerate(np.flatnonzero(alive[i])):
            idx[i, slot * c : (slot + 1) * c] = np.arange(j * c, (j + 1) * c)
            packed[i, slot * c : (slot + 1) * c, :] = blocks[i, :, j, :].T
    padding = 1.0 - float(counts.sum()) / (br * k)
    return idx, packed, padding


def block_gather_reference(x: np.ndarray, weight: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """``x Wᵀ`` computed in float64 through the block-gather form (:func:`pack_block_rows`).

    The oracle the ONNX graph is tested against, and which the tests check against the dense
    float64 product ``x Wᵀ``.

    Args:
        x: ``…×IN`` inputs.
        weight: ``OUT×IN`` weight with whole-block zeros.
        block: ``(r, c)``.

    Returns:
        ``…×OUT`` float64 outputs.
    """
    idx, packed, _ = pack_block_rows(np.asarray(weight, dtype=np.float64), block)
    xs = np.asarray(x, dtype=np.float64)
    gathered = xs[..., idx]  # …×B×kc
    out: np.ndarray = np.einsum("...bk,bkr->...br", gathered, packed)
    return out.reshape(*xs.shape[:-1], -1)


def linear_graph(
    weight: np.ndarray,
    tokens: int,
    *,
    form: str = "matmul",
    block: tuple[int, int] | None = None,
) -> onnx.ModelProto:
    """One Linear ``y = x Wᵀ`` as an ONNX model: input ``x`` ``1×T×IN``, output ``y`` ``1×T×OUT``.

    Args:
        weight: ``OUT×IN`` float32 weight (pruned blocks exactly zero).
        tokens: ``T``, rows of ``x`` (197 for DeiT at 224 px, 128 for MiniLM on SST-2).
        form: ``"matmul"`` (dense) or ``"block-gather"`` (see the module docstring).
        block: ``(r, c)``, needed by ``"block-gather"``.

    Returns:
        The model (opset 13, IR 8, static shapes).

    Raises:
        ObertDeployError: Unknown ``form``, ``block`` missing or not dividing the weight,
            ``tokens < 1``.
    """
    if form not in LINEAR_FORMS:
        raise ObertDeployError(f"unknown form {form!r}; choose one of {', '.join(LINEAR_FORMS)}")
    if tokens < 1:
        raise ObertDeployError(f"tokens must be >= 1, got {tokens}")
    w = np.ascontiguousarray(weight, dtype=np.float32)
    if w.ndim != 2:
        raise ObertDeployError(f"weight of shape {list(w.shape)} is not a 2-D Linear weight")
    out_f, in_f = (int(d) for d in w.shape)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, tokens, in_f])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, tokens, out_f])
    if form == "matmul":
        inits = [numpy_helper.from_array(np.ascontiguousarray(w.T), "weight_t")]
        nodes = [helper.make_node("MatMul", ["x", "weight_t"], ["y"])]
    else:
        if block is None:
            raise ObertDeployError("form 'block-gather' needs the block (r, c), e.g. 16x16")
        idx, packed, _ = pack_block_rows(w, block)
        rows_first = np.ascontiguousarray(packed.transpose(0, 2, 1))[None]  # 1×B×r×kc
        inits = [
            numpy_helper.from_array(idx, "columns"),
            numpy_helper.from_array(rows_first, "packed"),
            numpy_helper.from_array(np.array([1, out_f, tokens], dtype=np.int64), "out_shape"),
        ]
        # xᵀ first, so each block-row gathers whole rows of T values (contiguous copies).
        nodes = [
            helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),  # 1×IN×T
            helper.make_node("Gather", ["xt", "columns"], ["g"], axis=1),  # 1×B×kc×T
            helper.make_node("MatMul", ["packed", "g"], ["p"]),  # 1×B×r×T
            helper.make_node("Reshape", ["p", "out_shape"], ["pt"]),  # 1×OUT×T
            helper.make_node("Transpose", ["pt"], ["y"], perm=[0, 2, 1]),  # 1×T×OUT
        ]
    graph = helper.make_graph(nodes, f"linear_{form}", [x], [y], inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", _OPSET)],
        producer_name="obert-deploy",
    )
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    return model


def _machine_line(engine: str, threads: int) -> str:
    info = cpu_info()
    simd = "AMX" if info.amx else "AVX-512" if info.avx512 else "AVX2" if info.avx2 else "no AVX2"
    return (
        f"{info.brand}, {info.logical_cores} logical cores ({simd}), {threads} thread(s), "
        f"{engine} {engine_version(engine)}"
    )


def measure_latency_table(
    shapes: Sequence[tuple[int, int]],
    densities: Sequence[float],
    block: tuple[int, int],
    *,
    tokens: int = 128,
    engine: str = "onnxruntime",
    form: str = "matmul",
    threads: int = 1,
    rounds: int = 5,
    iterations: int = 20,
    warmup: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure one Linear per weight shape and density; return a latency table.

    Every ``(shape, density)`` is a one-Linear graph (:func:`linear_graph`) with a random block
    mask (:func:`random_block_mask`) compiled by ``engine``; all of them run in ``rounds``
    interleaved rounds (a change of machine load hits them alike), ``iterations`` timed calls
    each after ``warmup``; a cell's latency is the median over rounds of each round's median.

    Args:
        shapes: Weight shapes ``(OUT, IN)``.
        densities: Fractions of blocks kept, each in (0, 1]; 1.0 (dense) is always measured.
        block: ``(r, c)``; must divide every shape.
        tokens: Rows of the input (sequence length, or patches + 1 for a ViT).
        engine: One of :data:`obert_deploy.ENGINES`.
        form: One of :data:`LINEAR_FORMS`.
        threads: Engine threads.
        rounds: Interleaved rounds.
        iterations: Timed calls per cell and round.
        warmup: Untimed calls per cell before the first round.
        seed: Seed of the masks, weights and inputs.

    Returns:
        The table as a JSON-ready dict: ``format`` (:data:`obert_core.shared.LATENCY_TABLE_FORMAT`),
        ``unit`` (``"ms"``), ``machine``, ``layers`` (``{"OUTxIN": {"density": ms}}``, the
        format :func:`obert_train.load_latency_table` reads) and the settings it was measured
        with (``engine``, ``form``, ``block``, ``tokens``, ``threads``, ``rounds``,
        ``iterations``, ``cpu``, ``load_average`` before and after, ``timestamp``).

    Raises:
        ObertDeployError: Bad shapes, block, density, engine, form or counts (named).
        EngineNotInstalledError: ``engine`` is not installed here.
    """
    if engine not in ENGINES:
        raise ObertDeployError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if form not in LINEAR_FORMS:
        raise ObertDeployError(f"unknown form {form!r}; choose one of {', '.join(LINEAR_FORMS)}")
    for name, value, low in (
        ("tokens", tokens, 1),
        ("threads", threads, 1),
        ("rounds", rounds, 1),
        ("iterations", iterations, 1),
        ("warmup", warmup, 0),
    ):
        if value < low:
            raise ObertDeployError(f"{name} must be >= {low}, got {value}")
    if not shapes:
        raise ObertDeployError("no weight shape given; pass e.g. --shapes 384x384,1536x384")
    bad = [d for d in densities if not (0.0 < d <= 1.0)]
    if bad:
        raise ObertDeployError(
            f"densities {bad} are not in (0, 1]; pass fractions of blocks kept, e.g. 1.0,0.5,0.25"
        )
    for shape in shapes:
        _check_block(shape, block)
    require_engine(engine)
    grid = sorted({1.0, *(float(d) for d in densities)}, reverse=True)
    rng = np.random.default_rng(seed)
    load_before = load_average()
    cells: list[tuple[tuple[int, int], float, Any, dict[str, np.ndarray]]] = []
    with tempfile.TemporaryDirectory(prefix="obert-latency-") as tmp:
        for shape in shapes:
            dense = (rng.standard_normal(shape) * 0.05).astype(np.float32)
            feed = {"x": rng.standard_normal((1, tokens, shape[1])).astype(np.float32)}
            for density in grid:
                mask = random_block_mask(shape, block, density, seed=seed)
                path = Path(tmp) / f"{shape[0]}x{shape[1]}_{density:g}.onnx"
                onnx.save(linear_graph(dense * mask, tokens, form=form, block=block), path)
                try:
                    runner = create_runner(
                        engine, path, batch_size=1, seq_len=tokens, threads=threads
                    )
                except ObertDeployError:
                    raise
                except Exception as exc:  # the engine's own error
                    raise ObertDeployError(
                        f"{engine} cannot compile the {shape[0]}x{shape[1]} Linear ({brief(exc)})"
                    ) from exc
                for _ in range(warmup):
                    runner.run(feed)
                cells.append((shape, density, runner, feed))
        samples: dict[int, list[float]] = {i: [] for i in range(len(cells))}
        order = list(range(len(cells)))
        for _ in range(rounds):
            order = [order[int(j)] for j in rng.permutation(len(order))]
            for i in order:
                _, _, runner, feed = cells[i]
                times = []
                for _ in range(iterations):
                    t0 = time.perf_counter_ns()
                    runner.run(feed)
                    times.append(time.perf_counter_ns() - t0)
                samples[i].append(statistics.median(times) / 1e6)
    layers: dict[str, dict[str, float]] = {}
    for i, (shape, density, _, _) in enumerate(cells):
        key = f"{shape[0]}x{shape[1]}"
        layers.setdefault(key, {})[f"{density:g}" if density < 1 else "1.0"] = round(
            statistics.median(samples[i]), 6
        )
    return {
        "format": LATENCY_TABLE_FORMAT,
        "unit": "ms",
        "machine": _machine_line(engine, threads),
        "layers": layers,
        "engine": engine,
        "engine_version": engine_version(engine),
        "form": form,
        "block": f"{block[0]}x{block[1]}",
        "tokens": tokens,
        "threads": threads,
        "rounds": rounds,
        "iterations": iterations,
        "seed": seed,
        "cpu": cpu_info().to_dict(),
        "load_average": {"before": load_before, "after": load_average()},
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_latency_table(table: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``table`` (from :func:`measure_latency_table`) as indented JSON, atomically.

    Raises:
        ObertDeployError: ``table`` is not a latency table (its ``format`` or ``layers``).
    """
    if table.get("format") != LATENCY_TABLE_FORMAT or not isinstance(table.get("layers"), dict):
        raise ObertDeployError(
            f"not a latency table (format {table.get('format')!r}); build it with "
            "measure_latency_table"
        )
    for key, curve in table["layers"].items():
        if "1.0" not in curve or not all(math.isfinite(v) for v in curve.values()):
            raise ObertDeployError(f"latency table entry {key!r} lacks a finite dense latency")
    out = Path(path)
    atomic_write_text(out, json.dumps(table, indent=2) + "\n")
    return out
