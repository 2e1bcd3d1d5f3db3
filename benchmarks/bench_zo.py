"""One CGE step of ``ZOTrainer``: full reruns vs feature reuse, 1 vs 2 worker processes.

    pytest benchmarks/bench_zo.py --bench-scale full --benchmark-only   # MiniLM-sized BERT
    pytest benchmarks/bench_zo.py --benchmark-disable                   # correctness only (CI)

DeepZero's coordinate-wise estimate (arXiv 2310.02025; docs/math.md §9, (Z-2)) costs one loss
query per coordinate; feature reuse reruns only the stages from the coordinate's on, and
``workers`` split the coordinates across processes by cost. Each case trains two steps of a
randomly initialised BERT classifier (smoke: 2 layers, hidden 32; full: MiniLM-L6's shape,
6 layers, hidden 384, intermediate 1536) whose encoder Linear weights are the only trained
tensors, ``PER_TENSOR`` random coordinates of each per step. Every case checks its weights
after the steps against the one-process full-rerun oracle, bit for bit (same θ, same queries,
one thread per process); ``extra_info`` has the loss queries per second of the second step
(the first starts the worker pool). experiments/zo_throughput.py measures the same on the real
MiniLM-L6 with rounds interleaved and the machine load.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import pytest
import torch
import transformers

from obert_train import ZOSettings, ZOTrainer

SHAPES: dict[str, dict[str, Any]] = {
    "smoke": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64},
    "full": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
             "intermediate_size": 1536},
}  # fmt: skip
PER_TENSOR = {"smoke": 4, "full": 4}
BATCH, LENGTH = 8, 32
CASES = [(mode, workers) for workers in (1, 2) for mode in ("full", "reuse")]
_oracle: dict[str, dict[str, Any]] = {}


def _model(scale: str) -> Any:
    torch.manual_seed(0)
    fields: dict[str, Any] = {"vocab_size": 1000, "num_labels": 2, "hidden_dropout_prob": 0.0}
    config = transformers.BertConfig(**fields, **SHAPES[scale])
    model = transformers.BertForSequenceClassification(config)
    for name, p in model.named_parameters():
        p.requires_grad_(".encoder.layer." in name and name.endswith("weight") and p.dim() == 2)
    return model


def _features() -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 1000, (BATCH, LENGTH), generator=gen)
    return [
        {"input_ids": row, "attention_mask": torch.ones(LENGTH, dtype=torch.long), "labels": i % 2}
        for i, row in enumerate(ids)
    ]


def _collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "input_ids": torch.stack([r["input_ids"] for r in rows]),
        "attention_mask": torch.stack([r["attention_mask"] for r in rows]),
        "labels": torch.tensor([r["labels"] for r in rows]),
    }


def _train(scale: str, mode: str, workers: int) -> tuple[dict[str, Any], float]:
    """The weights after two steps and the queries per second of the second step."""
    model = _model(scale)
    keep = PER_TENSOR[scale]
    sparsity = {n: 1.0 - keep / p.numel() for n, p in model.named_parameters() if p.requires_grad}
    zo = ZOSettings(
        estimator="cge",
        seed=0,
        gradient_sparsity=sparsity,
        stages=None if mode == "reuse" else (),
        workers=workers,
    )
    seconds: list[float] = []

    class StepTimes(transformers.TrainerCallback):
        start = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            seconds.append(time.perf_counter() - self.start)

    with tempfile.TemporaryDirectory() as tmp:
        args = transformers.TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=BATCH,
            learning_rate=1e-3,
            lr_scheduler_type="constant",
            max_steps=2,
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = ZOTrainer(
            model=model,
            args=args,
            train_dataset=_features(),
            data_collator=_collate,
            zo=zo,
            callbacks=[StepTimes()],
        )
        trainer.train()
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    return weights, trainer.zo_queries[1] / seconds[1]


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


@pytest.mark.parametrize(("mode", "workers"), CASES, ids=[f"{m}-{w}" for m, w in CASES])
def test_cge_step(benchmark: Any, bench_scale: str, mode: str, workers: int) -> None:
    if workers > _cores():
        pytest.skip(f"{workers} workers need {workers} cores")
    torch.set_num_threads(1)
    if bench_scale not in _oracle:
        _oracle[bench_scale] = _train(bench_scale, "full", 1)[0]
    benchmark.group = f"zo-cge-{bench_scale}"
    benchmark.extra_info.update({"mode": mode, "workers": workers, "scale": bench_scale})
    weights, rate = benchmark.pedantic(
        _train, args=(bench_scale, mode, workers), rounds=1, iterations=1, warmup_rounds=0
    )
    benchmark.extra_info["queries_per_second_step2"] = round(rate, 1)
    for name, value in _oracle[bench_scale].items():
        assert torch.equal(weights[name], value), name
