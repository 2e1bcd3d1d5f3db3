"""Peak memory of ZOTrainer steps against backprop and plain inference (MiniLM-L6, SST-2).

Issue 20's claim: a zeroth-order step (``obert_train.ZOTrainer``: two ``no_grad`` forwards,
directions regenerated tensor by tensor) needs the memory of inference, where a backprop step
with AdamW also holds activations for the backward, the gradients and two moments per weight.
Each mode runs in its own process (``--mode`` runs one and prints its JSON); the parent records
the resident set size after the model and data are loaded and the process peak (``ru_maxrss``):

* ``inference``: ``--steps`` eval-mode forwards under ``torch.no_grad``;
* ``backprop``: a ``transformers.Trainer`` with AdamW, ``--steps`` steps;
* ``zo``: ``ZOTrainer`` (dense MeZO), ``--steps`` steps;
* ``zo-sparse``: ``ZOTrainer`` with 90 % random keep-masks on the encoder Linear weights.

Run from the repository root (a few minutes on 1 thread)::

    .venv/bin/python experiments/zo_memory.py
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, add_run_options, cpu_info, data_dir, make_parser, minilm_dir

RESULTS = RESULTS_DIR / "zo_memory.json"
MODES = ("inference", "backprop", "zo", "zo-sparse")


def _rss_mib() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def run_mode(mode: str, steps: int, batch_size: int, threads: int) -> dict[str, Any]:
    """One mode in this process: RSS after loading, peak RSS, steps done."""
    import torch
    from transformers import AutoTokenizer, Trainer, TrainingArguments

    from obert_train import ZOSettings, ZOTrainer, load_task, resolve_target_params

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    task = load_task(
        "sst2",
        tokenizer,
        data_dir=data_dir("SST-2"),
        max_seq_length=64,
        max_train_samples=steps * batch_size,
        need_dev=False,
    )
    model = task.load_model(str(minilm_dir()))
    loaded = _rss_mib()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            out,
            per_device_train_batch_size=batch_size,
            max_steps=steps,
            learning_rate=1e-6 if mode.startswith("zo") else 2e-5,
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            remove_unused_columns=False,
        )
        common: dict[str, Any] = {
            "model": model,
            "args": args,
            "train_dataset": task.train_features,
            "data_collator": task.collate,
        }
        if mode == "inference":
            model.eval()  # type: ignore[no-untyped-call]
            loader = Trainer(**common).get_train_dataloader()
            with torch.no_grad():
                for batch in loader:
                    model(**batch)
        elif mode == "backprop":
            Trainer(**common).train()
        else:
            masks = None
            if mode == "zo-sparse":
                gen = torch.Generator().manual_seed(0)
                masks = {
                    n: torch.rand(p.shape, generator=gen) >= 0.9
                    for n, p in resolve_target_params(model).items()
                }
            ZOTrainer(**common, zo=ZOSettings(mu=1e-3, seed=0), masks=masks).train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    weights = sum(p.numel() for p in model.parameters())
    return {
        "rss_loaded_mib": round(loaded, 1),
        "peak_rss_mib": round(peak, 1),
        "peak_over_loaded_mib": round(peak - loaded, 1),
        "weights": weights,
        "fp32_weights_mib": round(weights * 4 / 2**20, 1),
        "steps": steps,
        "batch_size": batch_size,
        "max_seq_length": 64,
    }


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--mode", choices=MODES, help="run one mode here and print its JSON")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    add_run_options(parser, threads=1)
    args = parser.parse_args()
    if args.mode is not None:
        print(json.dumps(run_mode(args.mode, args.steps, args.batch_size, args.threads)))
        return
    from _common import write_results

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    results: dict[str, Any] = {}
    for mode in MODES:
        cmd = [sys.executable, str(Path(__file__)), "--mode", mode, "--steps", str(args.steps)]
        cmd += ["--batch-size", str(args.batch_size), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(mode, results[mode], flush=True)
    command = "python experiments/zo_memory.py " + " ".join(sys.argv[1:])
    write_results(RESULTS, {"runs": results, "machine": cpu_info(), "command": command.strip()})
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
