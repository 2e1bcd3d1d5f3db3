"""A small fine-tuning loop (AdamW, linear warm-up/decay) that keeps existing zeros at zero.

Used to produce the dense task model that one-shot pruning starts from, and to fine-tune a pruned
checkpoint with its mask fixed (``keep_masks=True``: weights that are exactly zero in the pruned
tensors stay zero, the mask = ``weight != 0`` rule of :func:`obert_train.current_masks`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from obert_train._grads import to_device
from obert_train._params import resolve_target_params
from obert_train._tasks import Task

__all__ = ["FinetuneResult", "finetune"]


@dataclass(frozen=True)
class FinetuneResult:
    """What :func:`finetune` did.

    Attributes:
        steps: Optimizer steps taken.
        examples: Training examples seen.
        final_loss: Mean training loss over the last 50 steps.
        seconds: Wall-clock time of the loop.
    """

    steps: int
    examples: int
    final_loss: float
    seconds: float


def finetune(
    model: torch.nn.Module,
    task: Task,
    *,
    epochs: float = 1.0,
    batch_size: int = 32,
    learning_rate: float = 5e-5,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.06,
    seed: int = 0,
    keep_masks: bool = False,
    target_patterns: list[str] | None = None,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune ``model`` on ``task``'s training features in place.

    Args:
        model: The model (its head must match ``task``).
        task: Provides training batches with labels.
        epochs: Passes over the training features (fractions allowed).
        batch_size: Examples per optimizer step.
        learning_rate: Peak AdamW learning rate.
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        warmup_ratio: Fraction of steps with linear warm-up; linear decay to 0 afterwards.
        seed: Seed of the data order and of dropout.
        keep_masks: Re-zero the weights of the target tensors that were zero at the start after
            every step (sparse fine-tuning with a fixed mask).
        target_patterns: Patterns of the pruned tensors for ``keep_masks`` (default: BERT encoder
            Linear weights).
        progress: Show a tqdm bar.

    Returns:
        Steps, examples and loss of the run.

    Raises:
        ValueError: If ``epochs``, ``batch_size`` or ``learning_rate`` is not positive.
    """
    if epochs <= 0 or batch_size < 1 or learning_rate <= 0:
        raise ValueError(
            f"epochs ({epochs}), batch_size ({batch_size}) and learning_rate ({learning_rate}) "
            "must be positive"
        )
    torch.manual_seed(seed)
    steps_per_epoch = len(task.train_features) // batch_size
    total_steps = max(1, math.ceil(steps_per_epoch * epochs))
    masks: dict[str, torch.Tensor] = {}
    if keep_masks:
        params = resolve_target_params(model, target_patterns)
        masks = {name: p.detach() != 0 for name, p in params.items()}
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "LayerNorm" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "LayerNorm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0}],
        lr=learning_rate,
    )
    scheduler = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, int(warmup_ratio * total_steps), total_steps
    )
    named = dict(model.named_parameters())
    batches = task.infinite_batches(batch_size, seed=seed)
    device = next(model.parameters()).device
    losses: list[float] = []
    model.train()
    start = time.perf_counter()
    bar = tqdm(range(total_steps), desc="fine-tune", disable=not progress)
    for _ in bar:
        batch = to_device(next(batches), device)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if masks:
            with torch.no_grad():
                for name, mask in masks.items():
                    named[name].mul_(mask)
        losses.append(float(loss.detach()))
        if len(losses) % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    model.eval()
    tail = losses[-50:]
    return FinetuneResult(
        steps=total_steps,
        examples=total_steps * batch_size,
        final_loss=sum(tail) / len(tail),
        seconds=time.perf_counter() - start,
    )
