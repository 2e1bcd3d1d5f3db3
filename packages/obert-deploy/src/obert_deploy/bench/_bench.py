"""CPU latency/throughput harness for ONNX models on ONNX Runtime, OpenVINO or DeepSparse.

Scenarios follow ``deepsparse.benchmark``: *latency* runs one request at a time (synchronous,
one stream) and reports per-request percentiles; *throughput* keeps ``streams`` requests in
flight from as many threads and reports items per second. Times come from
``time.perf_counter_ns`` around ``run`` only, after ``warmup`` untimed runs.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from obert_core.shared import available_cores, cpu_info

from .._checks import check_seq_len, onnx_max_positions
from .._choices import ENGINES, SCENARIOS
from .._errors import ObertDeployError, OnnxModelError, brief
from .._validate import check_fields, check_path
from ..size._sparsity import onnx_weight_sparsity
from ._engines import Runner, check_sparse_rate, create_runner, engine_version, require_engine
from ._inputs import (
    check_input_shapes,
    has_token_inputs,
    infer_vocab_size,
    is_static,
    load_onnx,
    make_inputs,
    onnx_inputs,
)

__all__ = [
    "SCENARIOS",
    "BenchConfig",
    "BenchResult",
    "benchmark",
    "check_models",
]


@dataclass(frozen=True)
class BenchConfig:
    """Options of :func:`benchmark`.

    Attributes:
        engine: ``"onnxruntime"``, ``"openvino"`` or ``"deepsparse"``.
        batch_size: Items per request.
        seq_len: Tokens per item.
        threads: Threads/cores given to the engine; ``None`` means all available cores.
        scenario: ``"latency"`` (one request at a time) or ``"throughput"`` (``streams``
            concurrent requests).
        iterations: Timed requests (in total, over all streams).
        warmup: Untimed requests before timing (per stream).
        streams: Concurrent requests in the throughput scenario; ``None`` means ``threads``.
        seed: Seed of the synthetic inputs.
        sparse_weights_decompression_rate: OpenVINO only: int8 MatMul weights with at least
            this fraction of zeros are stored packed (the CPU plugin's
            ``CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE``; it needs AMX, see
            :func:`~obert_deploy.bench.create_runner`); ``None``: OpenVINO's default (off).
    """

    engine: str = "onnxruntime"
    batch_size: int = 1
    seq_len: int = 128
    threads: int | None = None
    scenario: str = "latency"
    iterations: int = 100
    warmup: int = 10
    streams: int | None = None
    seed: int = 0
    sparse_weights_decompression_rate: float | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if self.engine not in ENGINES:
            raise ObertDeployError(
                f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}"
            )
        if self.scenario not in SCENARIOS:
            raise ObertDeployError(
                f"unknown scenario {self.scenario!r}; choose one of {', '.join(SCENARIOS)}"
            )
        for name in ("batch_size", "seq_len", "iterations"):
            if getattr(self, name) < 1:
                raise ObertDeployError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ObertDeployError(f"warmup must be >= 0, got {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise ObertDeployError(f"threads must be >= 1, got {self.threads}")
        if self.streams is not None and self.streams < 1:
            raise ObertDeployError(f"streams must be >= 1, got {self.streams}")
        check_sparse_rate(self.sparse_weights_decompression_rate, self.engine)

    @property
    def resolved_threads(self) -> int:
        """``threads`` with the default (all available cores) applied."""
        return self.threads or available_cores()

    @property
    def resolved_streams(self) -> int:
        """Concurrent requests: 1 for latency, ``streams`` (default ``threads``) for throughput."""
        if self.scenario == "latency":
            return 1
        return self.streams or self.resolved_threads


@dataclass
class BenchResult:
    """One model benchmarked under one configuration.

    Attributes:
        model: Path of the ONNX file.
        name: Short label (file stem unless given).
        engine: Engine name.
        engine_version: Engine package version.
        scenario: ``latency`` or ``throughput``.
        batch_size: Items per request.
        seq_len: Tokens per item (0 for a model without token inputs, e.g. an image model).
        threads: Threads/cores given to the engine.
        streams: Concurrent requests.
        iterations: Timed requests.
        warmup: Untimed requests per stream.
        latency_ms: Per-request latency statistics in milliseconds (``p50``, ``p90``, ``p99``,
            ``mean``, ``std``, ``min``, ``max``).
        items_per_s: Items (sequences) per second over the timed window.
        static_shapes: Whether the model's inputs are fully static.
        weight_sparsity: Fraction of zeros over non-embedding 2-D weight initializers.
        cpu: CPU description (:class:`obert_deploy.CpuInfo` as a dict).
        meta: Python, platform and timestamp.
    """

    model: str
    name: str
    engine: str
    engine_version: str
    scenario: str
    batch_size: int
    seq_len: int
    threads: int
    streams: int
    iterations: int
    warmup: int
    latency_ms: dict[str, float]
    items_per_s: float
    static_shapes: bool
    weight_sparsity: float
    cpu: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


def _stats(samples_ns: Sequence[int]) -> dict[str, float]:
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "mean": float(ms.mean()),
        "std": float(ms.std()),
        "min": float(ms.min()),
        "max": float(ms.max()),
    }


def _run_latency(
    runner: Runner, feeds: dict[str, np.ndarray], config: BenchConfig, label: str
) -> tuple[list[int], float]:
    for _ in range(config.warmup):
        runner.run(feeds)
    samples: list[int] = []
    start = time.perf_counter_ns()
    for _ in tqdm(range(config.iterations), desc=label, leave=False, disable=None):
        t0 = time.perf_counter_ns()
        runner.run(feeds)
        samples.append(time.perf_counter_ns() - t0)
    return samples, (time.perf_counter_ns() - start) / 1e9


def _run_throughput(
    runners: list[Runner], feeds: dict[str, np.ndarray], config: BenchConfig, label: str
) -> tuple[list[int], float]:
    for runner in runners:
        for _ in range(config.warmup):
            runner.run(feeds)
    lock = threading.Lock()
    remaining = [config.iterations]
    samples: list[int] = []
    progress = tqdm(total=config.iterations, desc=label, leave=False, disable=None)

    def worker(runner: Runner) -> None:
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            t0 = time.perf_counter_ns()
            runner.run(feeds)
            elapsed = time.perf_counter_ns() - t0
            with lock:
                samples.append(elapsed)
                progress.update(1)

    start = time.perf_counter_ns()
    with ThreadPoolExecutor(max_workers=len(runners)) as pool:
        for future in [pool.submit(worker, runner) for runner in runners]:
            future.result()
    wall = (time.perf_counter_ns() - start) / 1e9
    progress.close()
    return samples, wall


def _check_model(proto: Any, path: Path, config: BenchConfig) -> None:
    """Shape and length checks of one model against ``config`` (no engine involved)."""
    inputs = onnx_inputs(proto)
    check_input_shapes(inputs, config.batch_size, config.seq_len, model_name=os.fspath(path))
    if has_token_inputs(inputs):  # images have no sequence axis
        check_seq_len(config.seq_len, onnx_max_positions(proto), f"ONNX model {str(path)!r}")


def check_models(models: Sequence[str | os.PathLike[str]], config: BenchConfig) -> None:
    """Check every model loads and fits ``config`` before any of them is timed.

    Raises:
        EngineNotInstalledError: ``config.engine`` is not installed here.
        OnnxModelError: A model is missing, a directory or corrupt.
        ShapeMismatchError: A static shape or the position limit does not fit the request.
    """
    require_engine(config.engine)
    for model in models:
        _check_model(load_onnx(model, load_weights=False), Path(model), config)


def benchmark(
    model: str | os.PathLike[str], config: BenchConfig | None = None, *, name: str | None = None
) -> BenchResult:
    """Benchmark one ONNX model.

    Args:
        model: ONNX file.
        config: Benchmark options; defaults to :class:`BenchConfig()`.
        name: Label in tables and plots; defaults to the file stem.

    Returns:
        Latency percentiles, items/s and the context needed to compare runs.

    Raises:
        EngineNotInstalledError: The engine is not installed (the message says how to get it).
        OnnxModelError: Missing/corrupt file, or one the engine cannot run.
        ShapeMismatchError: ``batch_size``/``seq_len`` do not fit the model's static shapes or
            ``seq_len`` exceeds its position embeddings.
    """
    check_path(model, "model", "benchmark")
    config = config or BenchConfig()
    path = Path(model)
    proto = load_onnx(path)
    _check_model(proto, path, config)
    inputs = onnx_inputs(proto)
    vocab = infer_vocab_size(proto)
    weights = [w for w in onnx_weight_sparsity(proto) if not w.is_embedding]
    total = sum(int(np.prod(w.shape)) for w in weights)
    sparsity = sum(w.sparsity * int(np.prod(w.shape)) for w in weights) / total if total else 0.0
    del proto
    threads = config.resolved_threads
    streams = config.resolved_streams
    label = name or path.stem
    if config.engine == "onnxruntime" and streams > 1:
        per_stream = max(1, threads // streams)
        runners = [
            create_runner(
                "onnxruntime",
                path,
                batch_size=config.batch_size,
                seq_len=config.seq_len,
                threads=per_stream,
            )
            for _ in range(streams)
        ]
    else:
        runners = [
            create_runner(
                config.engine,
                path,
                batch_size=config.batch_size,
                seq_len=config.seq_len,
                threads=threads,
                streams=streams,
                sparse_weights_decompression_rate=config.sparse_weights_decompression_rate,
            )
        ]
        runners *= streams
    feeds = make_inputs(
        inputs, config.batch_size, config.seq_len, vocab_size=vocab, seed=config.seed
    )
    try:
        if config.scenario == "latency":
            samples, wall = _run_latency(runners[0], feeds, config, label)
        else:
            samples, wall = _run_throughput(runners, feeds, config, label)
    except Exception as exc:  # the engine's own error, e.g. a shape it cannot broadcast
        raise OnnxModelError(
            f"{config.engine} cannot run {str(path)!r} on inputs of shapes "
            f"{[list(v.shape) for v in feeds.values()]} ({brief(exc)}); check "
            "--batch-size/--max-seq-length "
            "against the model, or re-create it with `obert-deploy export`"
        ) from exc
    return BenchResult(
        model=str(path),
        name=label,
        engine=config.engine,
        engine_version=engine_version(config.engine),
        scenario=config.scenario,
        batch_size=config.batch_size,
        seq_len=config.seq_len if has_token_inputs(inputs) else 0,
        threads=threads,
        streams=streams,
        iterations=config.iterations,
        warmup=config.warmup,
        latency_ms=_stats(samples),
        items_per_s=config.iterations * config.batch_size / wall,
        static_shapes=is_static(inputs),
        weight_sparsity=float(sparsity),
        cpu=cpu_info().to_dict(),
        meta={
            **runners[0].info(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
