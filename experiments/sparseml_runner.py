"""Run a recipe file through SparseML 1.8's own PyTorch API (run in .venv-sparseml).

``experiments/sparseml_sst2.py sparseml`` writes the tokenised rows (the same seeded SST-2
subset ``obert-train`` trains on, and the dev set) to a JSON file and calls this script with the
SparseML environment's Python (``scripts/sparseml_env.sh`` creates it). It needs torch,
transformers and sparseml only, never an oBERT package but obert-core's atomic write and CPU
report, so the project's environment never gets SparseML.

The training loop is SparseML's documented integration: ``ScheduledModifierManager.from_yaml``,
``manager.modify(model, optimizer, steps_per_epoch, distillation_teacher=..., grad_sampler=...)``
(the wrapped optimizer's ``step`` runs the modifiers: LR, pruning, masks),
``manager.loss_update(...)`` with the student's outputs and inputs (the distillation loss), then
``manager.finalize``. AdamW, weight decay 0 and gradient clipping at norm 1.0, as the Hugging
Face Trainer ``obert-train run`` uses. Each call of ``OBSPruningModifier.check_mask_update`` (one
pruning step: the gradient samples, the Fisher inverses, the scores, the masks and the OBS
update) is timed, and so is its gradient collection, by wrapping SparseML's methods in timers.

Usage::

    .venv-sparseml/bin/python experiments/sparseml_runner.py RECIPE DATA.json MODEL TEACHER OUT
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any

from _common import SIMD_PREFIXES, make_parser


def _pad(rows: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Pad tokenised rows into a batch of tensors (dynamic padding, as the HF collator)."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    batch: dict[str, Any] = {}
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
        if key in rows[0]:
            batch[key] = torch.tensor([r[key] + [fill] * (width - len(r[key])) for r in rows])
    batch["labels"] = torch.tensor([r["labels"] for r in rows])
    return batch


def _sparsity(model: Any, patterns: list[str]) -> float:
    """Fraction of zeros over the parameters matching the recipe's ``re:`` patterns."""
    regexes = [re.compile(p[3:] if p.startswith("re:") else re.escape(p)) for p in patterns]
    zeros = total = 0
    for name, param in model.named_parameters():
        if any(r.match(name) for r in regexes):
            zeros += int((param == 0).sum())
            total += param.numel()
    return zeros / max(total, 1)


def _accuracy(model: Any, rows: list[dict[str, Any]], pad_id: int) -> float:
    """Dev accuracy: argmax of the logits against the label, batches of 64."""
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(rows), 64):
            batch = _pad(rows[start : start + 64], pad_id)
            logits = model(**batch).logits
            correct += int((logits.argmax(-1) == batch["labels"]).sum())
    return correct / len(rows)


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("recipe", help="the recipe file (SparseML YAML)")
    parser.add_argument("data", help="the JSON file of tokenised train and dev rows")
    parser.add_argument("model", help="the HF checkpoint to prune (the student)")
    parser.add_argument("teacher", help="the HF checkpoint distilled from")
    parser.add_argument("out", help="output folder: the final model and result.json")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    args = parser.parse_args()

    import sparseml
    import torch
    import transformers
    from sparseml.pytorch.optim import ScheduledModifierManager
    from sparseml.pytorch.sparsification import OBSPruningModifier
    from transformers import AutoModelForSequenceClassification

    from obert_core.shared import atomic_write_text, cpu_flags, cpu_info

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = json.loads(Path(args.data).read_text(encoding="utf-8"))
    train, dev, pad_id = data["train"], data["dev"], int(data["pad_token_id"])
    model = AutoModelForSequenceClassification.from_pretrained(args.model)
    teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher).eval()
    steps_per_epoch = math.ceil(len(train) / args.batch_size)

    steps: list[dict[str, Any]] = []
    gradients: list[float] = []
    check_mask_update = OBSPruningModifier.check_mask_update
    collect = OBSPruningModifier._collect_grad_samples

    def timed_collect(self: Any, module: Any, grad_sampler: Any) -> None:
        start = time.perf_counter()
        collect(self, module, grad_sampler)
        gradients.append(time.perf_counter() - start)

    def timed_check(self: Any, module: Any, epoch: float, steps_per_epoch: int, **kw: Any) -> None:
        gradients.clear()
        start = time.perf_counter()
        check_mask_update(self, module, epoch, steps_per_epoch, **kw)
        seconds = time.perf_counter() - start
        applied = self.applied_sparsity  # one value per parameter (all equal: global sparsity)
        target = max(applied) if isinstance(applied, list) else applied
        record = {
            "index": len(steps),
            "epoch": float(epoch),
            "target_sparsity": float(target or 0.0),
            "sparsity": _sparsity(module, list(self.params)),
            "seconds": seconds,
            "timings": {"gradients_s": sum(gradients), "rest_s": seconds - sum(gradients)},
        }
        steps.append(record)
        print(json.dumps({"pruning_step": record}), flush=True)

    OBSPruningModifier.check_mask_update = timed_check
    OBSPruningModifier._collect_grad_samples = timed_collect

    sampler_rng = torch.Generator().manual_seed(args.seed + 1)

    def data_loader_builder(kwargs: dict[str, Any] | None) -> Any:
        """Shuffled batches of the training rows, with labels (the task loss), for GradSampler."""
        size = int((kwargs or {}).get("batch_size", args.batch_size))

        def batches() -> Any:
            order = torch.randperm(len(train), generator=sampler_rng).tolist()
            for start in range(0, len(order) - size + 1, size):
                yield [], _pad([train[i] for i in order[start : start + size]], pad_id), None

        return batches

    def loss_function(outputs: Any, _target: Any) -> Any:
        return outputs["loss"]

    manager = ScheduledModifierManager.from_yaml(args.recipe)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.0)
    wrapped = manager.modify(
        model,
        optimizer,
        steps_per_epoch,
        distillation_teacher=teacher,
        grad_sampler={"data_loader_builder": data_loader_builder, "loss_function": loss_function},
    )
    epochs = math.ceil(manager.max_epochs)
    order_rng = torch.Generator().manual_seed(args.seed)
    log: list[dict[str, float]] = []
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(train), generator=order_rng).tolist()
        total = 0.0
        for step in range(steps_per_epoch):
            rows = [train[i] for i in order[step * args.batch_size : (step + 1) * args.batch_size]]
            batch = _pad(rows, pad_id)
            model.train()
            outputs = model(**batch)
            loss = manager.loss_update(
                outputs.loss,
                model,
                optimizer,
                wrapped.wrapped_epoch,
                steps_per_epoch,
                student_outputs=outputs,
                student_inputs=batch,
                student_labels=batch["labels"],
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            wrapped.step()
            optimizer.zero_grad()
            total += float(loss)
        lr = optimizer.param_groups[0]["lr"]
        log.append({"epoch": epoch + 1, "loss": total / steps_per_epoch, "lr": lr})
        print(json.dumps(log[-1]), flush=True)
    train_seconds = time.perf_counter() - start
    manager.finalize(model)
    patterns = [p for m in manager.modifiers if isinstance(m, OBSPruningModifier) for p in m.params]
    out = Path(args.out)
    model.save_pretrained(out)
    result = {
        "accuracy": _accuracy(model, dev, pad_id),
        "sparsity": _sparsity(model, patterns),
        "pruning_steps": steps,
        "train_seconds": train_seconds,
        "epoch_log": log,
        "train_examples": len(train),
        "dev_examples": len(dev),
        "steps_per_epoch": steps_per_epoch,
        "versions": {
            "sparseml": sparseml.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "machine": {
            "cpu": cpu_info().brand,
            "simd": [f for f in cpu_flags() if f.startswith(SIMD_PREFIXES)],
            "threads": torch.get_num_threads(),
        },
    }
    atomic_write_text(out / "result.json", json.dumps(result, indent=2) + "\n")
    print(json.dumps({"accuracy": result["accuracy"], "sparsity": result["sparsity"]}))


if __name__ == "__main__":
    main()
