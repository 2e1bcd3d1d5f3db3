"""Masked language modelling on raw text; metric: masked-token perplexity.

Text is tokenised, concatenated and cut into blocks of ``max_seq_length`` tokens (with the
model's special tokens), the usual ``run_mlm.py`` grouping.  Training batches are masked on the
fly (BERT's 15 % with 80/10/10 replacement, ``DataCollatorForLanguageModeling``); the dev set is
masked once with a fixed seed so that every model is scored on the same masked tokens.
Perplexity is ``exp`` of the mean cross-entropy over all masked dev tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from transformers import (
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from obert_train.errors import DataError, ModelError, OptionError
from obert_train.tasks.base import Feature, Task, _batches

__all__ = ["MaskedLMTask"]


class MaskedLMTask(Task):
    """MLM on raw text lines; metric: dev perplexity (lower is better).

    Args:
        tokenizer: Tokenizer with a mask token.
        train: Training text lines.
        dev: Dev text lines.
        max_seq_length: Tokens per block including the special tokens.
        mlm_probability: Fraction of tokens masked.
        seed: Seed of the fixed dev masks.  Training batches are masked with torch's global
            RNG, as in the Hugging Face ``Trainer``; the gradient sampler seeds it per batch,
            so its Fisher batches are reproducible.
    """

    name: str = "mlm"
    primary_metric: ClassVar[str] = "perplexity"
    higher_is_better: ClassVar[bool] = False

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        train: Sequence[str],
        dev: Sequence[str],
        *,
        max_seq_length: int = 128,
        mlm_probability: float = 0.15,
        seed: int = 0,
    ) -> None:
        if tokenizer.mask_token is None:
            raise ModelError(
                f"tokenizer {type(tokenizer).__name__} has no mask token; MLM needs one"
            )
        if not 0 < mlm_probability < 1:
            raise OptionError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        self.max_seq_length = max_seq_length
        self._tok = tokenizer
        self._collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability)
        super().__init__(tokenizer, self._blocks(train, "train"))
        self.dev_features = self._blocks(dev, "dev") if dev else []
        with torch.random.fork_rng():  # fixed dev masks, global RNG state left untouched
            torch.manual_seed(seed)
            self._dev_fixed = [self._collator([b]) for b in self.dev_features]

    def _blocks(self, lines: Sequence[str], split: str) -> list[Feature]:
        ids: list[int] = []
        for row in self._tok(list(lines), add_special_tokens=False)["input_ids"]:
            ids.extend(row)
        prefix, suffix = _specials(self._tok)
        body = self.max_seq_length - len(prefix) - len(suffix)
        if body < 1:
            raise DataError(f"max_seq_length {self.max_seq_length} leaves no room for text")
        if len(ids) < body:
            raise DataError(
                f"MLM {split} text has {len(ids)} tokens, fewer than one block of {body}; "
                "provide more text or lower max_seq_length"
            )
        blocks = []
        for start in range(0, len(ids) - body + 1, body):
            input_ids = prefix + ids[start : start + body] + suffix
            blocks.append({"input_ids": input_ids, "attention_mask": [1] * len(input_ids)})
        return blocks

    def collate(self, features: Sequence[Feature]) -> dict[str, torch.Tensor]:
        """Pad and mask a training batch (labels = -100 except at masked positions)."""
        batch = self._collator(list(features))
        return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}

    def load_model(self, name_or_path: str, **kwargs: Any) -> PreTrainedModel:
        """Load ``AutoModelForMaskedLM``."""
        model: PreTrainedModel = AutoModelForMaskedLM.from_pretrained(name_or_path, **kwargs)
        return model

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, *, batch_size: int = 64, progress: bool = True
    ) -> dict[str, float]:
        """Masked-token perplexity and mean loss on the fixed-mask dev blocks."""
        if not self._dev_fixed:
            raise DataError("MLM task: no dev text to evaluate on")
        model.eval()
        loss_sum, count = 0.0, 0
        for batch in _batches(self._dev_fixed, batch_size, _stack, "eval", progress, model):
            labels = batch.pop("labels")
            logits = model(**batch).logits
            loss_sum += float(
                torch.nn.functional.cross_entropy(
                    logits.flatten(0, 1).float(), labels.flatten(), reduction="sum"
                )
            )
            count += int((labels != -100).sum())
        if count == 0:
            raise DataError("MLM dev set has no masked tokens; provide more dev text")
        mean = loss_sum / count
        return {
            "perplexity": math.exp(mean),
            "loss": mean,
            "masked_tokens": float(count),
            "num_examples": float(len(self._dev_fixed)),
        }


def _specials(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """Ids put around each block: [CLS] ... [SEP] (BERT), <s> ... </s> (RoBERTa), or nothing."""
    for first, last in (("cls_token_id", "sep_token_id"), ("bos_token_id", "eos_token_id")):
        a, b = getattr(tokenizer, first, None), getattr(tokenizer, last, None)
        if isinstance(a, int) and isinstance(b, int):
            return [a], [b]
    return [], []


def _stack(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate pre-masked single-block batches (all blocks have the same length)."""
    return {k: torch.cat([item[k] for item in items]) for k in items[0]}
