"""Atomic-expert pruning (HEAPr) of a small MoE language model trained here on WikiText-2.

An OLMoE-style model built from a ``transformers`` config (4 layers, 8 experts of 128 neurons,
top-2 routing, hidden 128; the MiniLM WordPiece tokenizer, its 8,191 most frequent tokens in the
training text kept and the rest mapped to one "rare" id, so the vocabulary is 8,192) is trained
from scratch as a causal LM on ``wiki.valid.raw`` and evaluated on ``wiki.test.raw``
(perplexity per token). Then, through ``oneshot_prune(model, "structured", s,
settings={"structure": "experts", ...})``, 25 / 50 / 75 / 90 % of all experts' neurons are
removed with HEAPr's score as published (per-expert normalisation, no weight update), HEAPr
weighted by routed tokens, the same plus the OBS re-fit (ours), and the expert-frequency and
random baselines. ``fidelity`` checks the saliency against the truth: for a random sample of
atoms, the loss increase measured when that atom alone is removed, against
the predicted score (Spearman rank correlation).  Results go to
``experiments/results/moe_wikitext.json`` (finished parts are skipped on a re-run)::

    .venv/bin/python experiments/moe_wikitext.py train
    .venv/bin/python experiments/moe_wikitext.py prune
    .venv/bin/python experiments/moe_wikitext.py fidelity
    .venv/bin/python experiments/moe_wikitext.py report
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import TYPE_CHECKING, Any

from _common import (
    RESULTS_DIR,
    RUNS_ROOT,
    add_run_options,
    data_dir,
    load_results,
    make_parser,
    minilm_dir,
    save_entry,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

RUN = RUNS_ROOT / "moe-wikitext"
RESULTS = RESULTS_DIR / "moe_wikitext.json"
SEQ = 128
VOCAB = 8192
WIDTH = 128
CALIBRATION = {"num_batches": 16, "grad_batch_size": 8, "seed": 0, "min_keep": 0, "multiple": 1}
LEVELS = (0.25, 0.5, 0.75, 0.9)
TARGETS = [r"mlp\.experts\.(gate_up|down)_proj$"]
VARIANTS: dict[str, dict[str, Any]] = {
    "heapr": {"score": "heapr", "weight_by_routing": False, "correct": False},
    "heapr-routed": {"score": "heapr", "weight_by_routing": True, "correct": False},
    "heapr-routed+obs": {"score": "heapr", "weight_by_routing": True, "correct": True},
    "frequency": {"score": "frequency", "correct": False},
    "random": {"score": "random", "correct": False},
}


def _ids(tokenizer: Any, split: str) -> list[int]:
    from obert_train import read_raw_text

    text = "\n".join(read_raw_text(data_dir("wikitext-2-raw") / f"wiki.{split}.raw"))
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def vocabulary(tokenizer: Any) -> dict[int, int]:
    """WordPiece id -> model id: the VOCAB - 1 most frequent training tokens, then "rare" (0)."""
    import numpy as np

    counts = np.bincount(_ids(tokenizer, "valid"))
    top = np.argsort(-counts, kind="stable")[: VOCAB - 1]
    return {int(t): i + 1 for i, t in enumerate(top) if counts[t] > 0}


class LMTask:
    """Blocks of ``SEQ`` tokens of a text file, as ``oneshot_prune`` reads a task."""

    def __init__(self, tokenizer: Any, split: str, vocab: dict[int, int]) -> None:
        import torch

        ids = [vocab.get(i, 0) for i in _ids(tokenizer, split)]
        blocks = torch.tensor(ids[: len(ids) // SEQ * SEQ]).reshape(-1, SEQ)
        self.train_features = [{"input_ids": row} for row in blocks]

    @staticmethod
    def collate(features: Any) -> dict[str, torch.Tensor]:
        import torch

        ids = torch.stack([f["input_ids"] for f in features])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def save(key: str, value: Any) -> None:
    """Set ``key`` of the results file (and its ``machine``)."""
    save_entry(RESULTS, key, value, None, default={}, machine=True, allow_nan=True)


def perplexity(model: Any, task: LMTask, batch: int = 16) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    feats = task.train_features
    with torch.no_grad():
        for i in range(0, len(feats), batch):
            b = task.collate(feats[i : i + batch])
            loss = model(**b).loss
            n = b["input_ids"].numel() - b["input_ids"].shape[0]  # shifted targets
            total, count = total + float(loss) * n, count + n
    return math.exp(total / count)


def build() -> Any:
    import torch
    from transformers import OlmoeConfig, OlmoeForCausalLM

    config = OlmoeConfig(
        vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=WIDTH, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, num_experts=8, num_experts_per_tok=2,
        max_position_embeddings=SEQ, tie_word_embeddings=True, pad_token_id=0, eos_token_id=0,
        bos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    return OlmoeForCausalLM(config)


def cmd_train(args: argparse.Namespace) -> None:
    if (RUN / "model" / "model.safetensors").is_file():
        print("trained model exists; delete runs/moe-wikitext/model to retrain")
        return
    import torch
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from obert_core.shared import atomic_write_text

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    vocab = vocabulary(tokenizer)
    train, test = LMTask(tokenizer, "valid", vocab), LMTask(tokenizer, "test", vocab)
    model = build()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    steps = args.epochs * (len(train.train_features) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps, pct_start=0.1)
    history = [{"epoch": 0, "test_ppl": perplexity(model, test)}]
    print(history[-1], flush=True)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(train.train_features), generator=gen).tolist()
        n = len(order) // args.batch
        for i in tqdm(range(n), desc=f"epoch {epoch}", mininterval=30):
            batch = train.collate(
                [train.train_features[j] for j in order[i * args.batch :][: args.batch]]
            )
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        history.append(
            {"epoch": epoch, "test_ppl": perplexity(model, test), "train_loss": float(loss)}
        )
        print(history[-1], flush=True)
    model.save_pretrained(RUN / "model")
    tokenizer.save_pretrained(RUN / "model")
    atomic_write_text(RUN / "model" / "vocab_map.json", json.dumps(vocab) + "\n")
    info = {
        "history": history,
        "seconds": time.perf_counter() - start,
        "train_tokens": len(train.train_features) * SEQ,
        "test_tokens": len(test.train_features) * SEQ,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    save("train", {**info, **vars(args)})


def _load() -> tuple[Any, LMTask, LMTask]:
    from transformers import AutoTokenizer, OlmoeForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(RUN / "model")
    raw = json.loads((RUN / "model" / "vocab_map.json").read_text())
    vocab = {int(k): int(v) for k, v in raw.items()}
    model = OlmoeForCausalLM.from_pretrained(RUN / "model").eval()  # type: ignore[no-untyped-call]
    return model, LMTask(tokenizer, "valid", vocab), LMTask(tokenizer, "test", vocab)


def cmd_prune(args: argparse.Namespace) -> None:
    import torch

    from obert_train import oneshot_prune

    torch.set_num_threads(args.threads)
    _, train, test = _load()
    done = load_results(RESULTS, {}).get("prune", {})
    if "dense" not in done:
        done["dense"] = perplexity(_load()[0], test)
        save("prune", done)
    for variant, settings in VARIANTS.items():
        for sparsity in LEVELS:
            key = f"{variant}/{sparsity:.2f}"
            if key in done:
                continue
            model = _load()[0]
            start = time.perf_counter()
            oneshot_prune(
                model, "structured", sparsity,
                settings={**CALIBRATION, **settings, "structure": "experts", "targets": TARGETS},
                task=train, progress=False, log=lambda _line: None,
            )  # fmt: skip
            done[key] = {
                "test_ppl": perplexity(model, test),
                "seconds": time.perf_counter() - start,
            }
            save("prune", done)
            print(key, done[key], flush=True)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    import numpy as np

    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def cmd_fidelity(args: argparse.Namespace) -> None:
    """Predicted saliency vs measured loss increase of removing one atom, for ``--atoms`` atoms."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from obert_train import StructuredPruning, create_method

    torch.set_num_threads(args.threads)
    model, train, _ = _load()
    kinds = {
        "heapr (per-expert N)": {"score": "heapr", "weight_by_routing": False},
        "heapr, routed-weighted": {"score": "heapr", "weight_by_routing": True},
        "unfactorised, routed-weighted": {"score": "heapr-full", "weight_by_routing": True},
    }
    scores = {}
    calib = None
    for label, settings in kinds.items():
        method = create_method(
            "structured", **{**CALIBRATION, **settings, "structure": "experts", "correct": False}
        )
        assert isinstance(method, StructuredPruning)
        calib = method.gradient_sampler(model, train.train_features, train.collate, progress=False)
        scores[label] = method.score_atoms(calib)
    assert calib is not None
    batches = calib.batches(0)

    def loss() -> float:
        with torch.no_grad():
            return float(np.mean([float(model(**b).loss) for b in batches]))

    base = loss()
    units = sorted(next(iter(scores.values())))
    rng = np.random.default_rng(0)
    which = rng.integers(0, len(units), args.atoms)
    neuron = rng.integers(0, WIDTH, args.atoms)
    picks = [(units[i], int(k)) for i, k in zip(which, neuron, strict=True)]
    measured = []
    for unit, k in tqdm(picks, desc="atoms", mininterval=30):
        layer, e = unit.rsplit(".", 1)
        experts = model.get_submodule(layer)
        e = int(e)
        with torch.no_grad():  # a zero down column removes the atom's whole contribution
            saved = experts.down_proj[e][:, k].clone()
            experts.down_proj[e][:, k] = 0
            measured.append(loss() - base)
            experts.down_proj[e][:, k] = saved
    out = {"atoms": args.atoms, "base_loss": base, "spearman": {}}
    meas = np.asarray(measured)
    for label, sc in scores.items():
        pred = np.asarray([float(sc[u][k]) for u, k in picks])
        out["spearman"][label] = _spearman(pred, meas)
    out["measured_mean"] = float(meas.mean())
    save("fidelity", out)
    print(json.dumps(out, indent=2))


def cmd_report(args: argparse.Namespace) -> None:
    del args
    r = load_results(RESULTS, {})
    hist = r["train"]["history"]
    print(f"trained {r['train']['parameters'] / 1e6:.1f} M parameters, test perplexity "
          f"{hist[0]['test_ppl']:.0f} (untrained) -> {hist[-1]['test_ppl']:.1f} after "
          f"{len(hist) - 1} epochs ({r['train']['seconds'] / 60:.0f} min)\n")  # fmt: skip
    prune = r.get("prune", {})
    cols = " | ".join(f"{s:.0%} removed" for s in LEVELS)
    print(f"| method (dense {prune.get('dense', 0):.1f}) | {cols} |")
    print("|---|" + "---|" * len(LEVELS))
    for variant in VARIANTS:
        cells = [prune.get(f"{variant}/{s:.2f}", {}).get("test_ppl") for s in LEVELS]
        print(
            f"| {variant} | " + " | ".join("–" if c is None else f"{c:.1f}" for c in cells) + " |"
        )
    if "fidelity" in r:
        f = r["fidelity"]
        print(f"\nSpearman(predicted, measured), {f['atoms']} atoms removed one at a time:")
        for label, rho in f["spearman"].items():
            print(f"- {label}: {rho:.3f}")


def main() -> None:
    parser = make_parser(__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("train", "prune", "fidelity", "report"):
        p = sub.add_parser(name)
        add_run_options(p, threads=1)
        p.add_argument("--epochs", type=int, default=6)
        p.add_argument("--batch", type=int, default=16)
        p.add_argument("--lr", type=float, default=2e-3)
        p.add_argument("--atoms", type=int, default=300)
    args = parser.parse_args()
    commands = {"train": cmd_train, "prune": cmd_prune, "fidelity": cmd_fidelity}
    commands.get(args.cmd, cmd_report)(args)


if __name__ == "__main__":
    main()
