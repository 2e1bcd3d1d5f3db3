"""Memory demo: one oBERT step at B = 50 on a randomly initialised BERT-base geometry.

BERT-base (12 layers, hidden 768, intermediate 3072) has 84.9 M weights in its 72 encoder Linear
tensors; their fp32 inverse-Fisher blocks at B = 50 take 17.0 GB, more than this 24 GB machine can
hold next to everything else.  ``oneshot_prune`` prints its memory plan, processes the tensors in
groups that fit the budget (global masks: a first pass scores every group, a second pass rebuilds
each group's Fisher for the OBS update) and the script samples the process RSS every 0.1 s.

Run from the repository root (takes tens of minutes on 2 cores)::

    .venv/bin/python experiments/memory_bert_base.py --max-memory 14GB
    .venv/bin/python experiments/memory_bert_base.py --plot-only   # redraw the RSS plot

The weights are random (the point is memory and feasibility, not accuracy); the gradients are real
task-loss gradients on SST-2 sentences tokenised with the bert-base-uncased vocabulary of MiniLM.
"""

from __future__ import annotations

import json
import random
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import (
    IMG,
    RESULTS_DIR,
    data_dir,
    load_results,
    machine_line,
    make_parser,
    minilm_dir,
    write_results,
)

RESULTS = RESULTS_DIR / "memory_bert_base.json"
PLOT = IMG / "memory_bert_base_rss.png"


class RssSampler(threading.Thread):
    """Samples the resident set size of this process; remembers the peak and a trace."""

    def __init__(self, interval: float = 0.1) -> None:
        import psutil

        super().__init__(daemon=True)
        self.interval = interval
        self.proc = psutil.Process()
        self.peak = 0
        self.trace: list[tuple[float, int]] = []
        self.start_time = time.perf_counter()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = self.proc.memory_info().rss
            self.peak = max(self.peak, rss)
            self.trace.append((time.perf_counter() - self.start_time, rss))
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def block_size_of(report: dict[str, Any]) -> int:
    """B of a saved report (``fisher_block_size``; ``block_size`` before obert-train 0.2)."""
    settings = report["settings"]
    return int(settings.get("fisher_block_size", settings.get("block_size")))


def plot(report: dict[str, Any], path: Path = PLOT) -> Path:
    """RSS over time with the budget and the process peak (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times, mib = zip(*report["rss_trace_mib"], strict=True)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.plot([t / 60 for t in times], [m / 1024 for m in mib], color="tab:blue", label="RSS")
    budget = report["settings"]["max_memory"]
    if budget:  # the budget is for the pruning step, on top of the loaded model
        budget += report["rss_after_model_bytes"]
        ax.axhline(budget / 2**30, color="tab:red", ls="--", label="model + --max-memory")
    ax.axhline(report["peak_rss_bytes"] / 2**30, color="tab:gray", ls=":", label="peak RSS")
    block_size = block_size_of(report)
    total = report["target_weights"] * block_size * 4 / 2**30
    ax.axhline(total, color="tab:orange", ls="-.", label="whole fp32 inverse Fisher")
    ax.set_ylim(0, 1.08 * max(total, report["peak_rss_bytes"] / 2**30, (budget or 0) / 2**30))
    ax.set_xlabel("minutes")
    ax.set_ylabel("GiB")
    ax.set_title(
        f"One oBERT step, BERT-base geometry ({report['target_weights'] / 1e6:.1f} M weights), "
        f"B = {block_size}"
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument(
        "--plot-only", action="store_true", help=f"only redraw {PLOT.name} from the saved JSON"
    )
    parser.add_argument("--max-memory", default=None, help="budget, e.g. 14GB (default 80%% free)")
    parser.add_argument("--num-grads", type=int, default=64)
    parser.add_argument("--grad-batch-size", type=int, default=8)
    parser.add_argument("--max-seq-length", type=int, default=32)
    parser.add_argument("--block-size", type=int, default=50)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.plot_only:
        if not RESULTS.is_file():
            sys.exit(f"{RESULTS} missing: run without --plot-only first")
        print(plot(load_results(RESULTS)))
        return
    import psutil
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from obert_core.shared import format_bytes
    from obert_train import (
        ClassificationTask,
        oneshot_prune,
        read_glue_tsv,
        resolve_target_params,
    )

    torch.set_num_threads(args.threads)

    sentences = random.Random(0).sample(read_glue_tsv(data_dir() / "train.tsv"), 4000)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())  # (for its tokenizer)
    task = ClassificationTask(tokenizer, sentences, [], max_seq_length=args.max_seq_length)

    sampler = RssSampler()
    sampler.start()
    torch.manual_seed(0)
    config = BertConfig(num_labels=2)  # type: ignore[call-arg]  # BERT-base geometry
    model = BertForSequenceClassification(config).eval()  # type: ignore[no-untyped-call]
    targets = resolve_target_params(model)
    numel = sum(p.numel() for p in targets.values())
    rss_model = psutil.Process().memory_info().rss
    settings = {
        "num_grads": args.num_grads,
        "grad_batch_size": args.grad_batch_size,
        "fisher_block_size": args.block_size,
        "max_memory": args.max_memory or None,  # "14GB" is parsed by the oBERT settings
    }
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        print(line)

    t0 = time.perf_counter()
    result = oneshot_prune(
        model,
        "obert",
        args.sparsity,
        settings=settings,
        task=task,
        log=log,
    )
    seconds = time.perf_counter() - t0
    sampler.stop()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report = {
        "machine": machine_line(ram=format_bytes(psutil.virtual_memory().total)),
        "target_tensors": len(targets),
        "target_weights": numel,
        "settings": {
            "method": result.method,
            "sparsity": result.target_sparsity,
            **json.loads(result.settings.model_dump_json()),
        },
        "max_seq_length": args.max_seq_length,
        "plan": lines,
        "rss_after_model_bytes": rss_model,
        "peak_rss_bytes": max(sampler.peak, maxrss),
        "peak_rss": format_bytes(max(sampler.peak, maxrss)),
        "achieved_sparsity": result.sparsity,
        "timings": result.timings,
        "wall_seconds": seconds,
        "rss_trace_mib": [(round(t, 1), rss // 2**20) for t, rss in sampler.trace[::50]],
    }
    write_results(RESULTS, report)
    print(json.dumps({k: v for k, v in report.items() if k != "rss_trace_mib"}, indent=2))
    print(plot(report))


if __name__ == "__main__":
    main()
