"""Extractive question answering on SQuAD v1.1: features, span post-processing, F1 / EM.

The metric is the official SQuAD v1.1 evaluation (Rajpurkar et al. 2016, ``evaluate-v1.1.py``):
answers are normalised (lower case, punctuation and the articles a/an/the removed, whitespace
collapsed); EM and token-overlap F1 take the maximum over the gold answers and are averaged over
questions, reported as fractions in ``[0, 1]`` like every metric of the project (printed in
percent by :func:`obert_core.shared.format_metric`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import AutoModelForQuestionAnswering, PreTrainedModel, PreTrainedTokenizerBase

from obert_core import ObertError
from obert_core.shared import (
    SQUAD_MAX_ANSWER_LENGTH,
    SQUAD_MAX_QUERY_LENGTH,
    SQUAD_N_BEST,
    squad_normalize_answer,
    squad_predictions,
    squad_scores,
    squad_windows,
)
from obert_train.tasks.base import Feature, Task, _batches
from obert_train.tasks.data import DataError, SquadExample

__all__ = ["SquadTask", "squad_metrics", "squad_normalize_answer"]


def squad_metrics(
    predictions: Mapping[str, str], examples: Sequence[SquadExample]
) -> dict[str, float]:
    """Official SQuAD v1.1 exact match and F1 (fractions in ``[0, 1]``) of ``predictions``.

    Args:
        predictions: ``{question id: predicted answer text}``.
        examples: The gold examples; every one must have a prediction.

    Returns:
        ``{"exact_match": ..., "f1": ...}``.

    Raises:
        DataError: If a question has no prediction.
    """
    if not examples:
        raise DataError("no SQuAD examples to score")
    missing = [e.qid for e in examples if e.qid not in predictions]
    if missing:
        raise DataError(f"{len(missing)} questions have no prediction, e.g. {missing[:3]}")
    em = f1 = 0.0
    for example in examples:
        exact, overlap = squad_scores(predictions[example.qid], example.answers)
        em += exact
        f1 += overlap
    n = len(examples)
    return {"exact_match": em / n, "f1": f1 / n}


class SquadTask(Task):
    """SQuAD v1.1: sliding-window features with start/end labels; metric: dev F1 and EM.

    Args:
        tokenizer: A *fast* tokenizer (offset mappings are needed).
        train: Training questions.
        dev: Dev questions.
        max_seq_length: Tokens per window (question + context + special tokens).
        doc_stride: Overlap, in tokens, between consecutive context windows (``None``: 128,
            or half the context room of shorter windows;
            :func:`obert_core.shared.squad_doc_stride`).
        max_query_length: Questions are cut to this many tokens.
        max_answer_length: Longest predicted answer span in tokens.
        n_best: Start/end candidates considered per window in post-processing.
    """

    name: str = "squad"
    primary_metric: ClassVar[str] = "f1"

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        train: Sequence[SquadExample],
        dev: Sequence[SquadExample],
        *,
        max_seq_length: int = 384,
        doc_stride: int | None = None,
        max_query_length: int = SQUAD_MAX_QUERY_LENGTH,
        max_answer_length: int = SQUAD_MAX_ANSWER_LENGTH,
        n_best: int = SQUAD_N_BEST,
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise DataError(
                f"SQuAD needs a fast tokenizer (character offsets); got {type(tokenizer).__name__}"
                ": save the model with its tokenizer.json"
            )
        self.max_seq_length, self.doc_stride = max_seq_length, doc_stride
        self.max_query_length, self.max_answer_length, self.n_best = (
            max_query_length,
            max_answer_length,
            n_best,
        )
        self._tok = tokenizer
        self.dev_examples = list(dev)
        super().__init__(tokenizer, self._train_features(train))
        self.dev_features, self._dev_offsets, self._dev_example = self._dev_features(dev)

    def _encode(self, examples: Sequence[SquadExample]) -> Any:
        try:  # the one windowing rule of obert-train and obert-deploy (obert_core.shared)
            return self._windows(examples)
        except ObertError as exc:
            raise DataError(str(exc)) from None

    def _windows(self, examples: Sequence[SquadExample]) -> Any:
        return squad_windows(
            self._tok,
            [e.question for e in examples],
            [e.context for e in examples],
            max_seq_length=self.max_seq_length,
            doc_stride=self.doc_stride,
            max_query_length=self.max_query_length,
        )

    def _input_keys(self, enc: Any) -> list[str]:
        """The model inputs the tokenizer produced (RoBERTa/DistilBERT have no token_type_ids)."""
        return [k for k in self._tok.model_input_names if k in enc]

    def _train_features(self, examples: Sequence[SquadExample]) -> list[Feature]:
        if not examples:
            return []
        enc = self._encode(examples)
        features: list[Feature] = []
        for i, offsets in enumerate(enc["offset_mapping"]):
            example = examples[enc["overflow_to_sample_mapping"][i]]
            start_char = example.answer_starts[0]
            end_char = start_char + len(example.answers[0])
            seq_ids = enc.sequence_ids(i)
            ctx = [j for j, s in enumerate(seq_ids) if s == 1]
            start_tok = end_tok = 0  # CLS when the answer is not inside this window
            if offsets[ctx[0]][0] <= start_char and offsets[ctx[-1]][1] >= end_char:
                start_tok = next(j for j in ctx if offsets[j][1] > start_char)
                end_tok = next(j for j in reversed(ctx) if offsets[j][0] < end_char)
            feature = {k: enc[k][i] for k in self._input_keys(enc)}
            feature["start_positions"], feature["end_positions"] = start_tok, end_tok
            features.append(feature)
        return features

    def _dev_features(
        self, examples: Sequence[SquadExample]
    ) -> tuple[list[Feature], list[list[tuple[int, int] | None]], list[int]]:
        if not examples:
            return [], [], []
        enc = self._encode(examples)
        features, offsets_out, example_idx = [], [], []
        for i, offsets in enumerate(enc["offset_mapping"]):
            seq_ids = enc.sequence_ids(i)
            features.append({k: enc[k][i] for k in self._input_keys(enc)})
            offsets_out.append(
                [tuple(o) if s == 1 else None for o, s in zip(offsets, seq_ids, strict=True)]
            )
            example_idx.append(enc["overflow_to_sample_mapping"][i])
        return features, offsets_out, example_idx

    def load_model(self, name_or_path: str, **kwargs: Any) -> PreTrainedModel:
        """Load ``AutoModelForQuestionAnswering``."""
        model: PreTrainedModel = AutoModelForQuestionAnswering.from_pretrained(
            name_or_path, **kwargs
        )
        return model

    def postprocess(
        self, start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray]
    ) -> dict[str, str]:
        """Best answer text per dev question from per-window start/end logits.

        The one SQuAD post-processing of the project (:func:`obert_core.shared.squad_predictions`,
        also obert-deploy's): per window the ``n_best`` highest start and end logits among the
        context tokens are paired; reversed spans and spans longer than ``max_answer_length``
        are skipped; the span with the largest ``start + end`` logit over all windows of a
        question wins.
        """
        windows = (
            (self._dev_example[f], s_log, e_log, self._dev_offsets[f])
            for f, (s_log, e_log) in enumerate(zip(start_logits, end_logits, strict=True))
        )
        texts = squad_predictions(
            windows,
            [example.context for example in self.dev_examples],
            n_best=self.n_best,
            max_answer_length=self.max_answer_length,
        )
        return {example.qid: text for example, text in zip(self.dev_examples, texts, strict=True)}

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, *, batch_size: int = 64, progress: bool = True
    ) -> dict[str, float]:
        """Official F1 / EM over all dev questions."""
        if not self.dev_features:
            raise DataError("SQuAD task: no dev examples to evaluate on")
        model.eval()
        starts: list[np.ndarray] = []
        ends: list[np.ndarray] = []
        for batch in _batches(self.dev_features, batch_size, self.collate, "eval", progress, model):
            out = model(**batch)
            mask = batch["attention_mask"].bool()
            for i in range(len(mask)):
                n = int(mask[i].sum())
                starts.append(out.start_logits[i, :n].float().cpu().numpy())
                ends.append(out.end_logits[i, :n].float().cpu().numpy())
        metrics = squad_metrics(self.postprocess(starts, ends), self.dev_examples)
        metrics["num_examples"] = float(len(self.dev_examples))
        return metrics
