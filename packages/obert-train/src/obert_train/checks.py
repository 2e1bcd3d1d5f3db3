"""Checks of a model against its task and of its weights, run before any long stage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from obert_train.errors import ModelError

__all__ = [
    "check_finite_weights",
    "check_model_fits_task",
    "check_tokens_known",
    "distillable_outputs",
]


def check_finite_weights(model: torch.nn.Module, who: str = "the model") -> None:
    """Refuse a model with NaN or infinite weights, naming the tensors.

    Training or pruning such a model yields a checkpoint of NaNs (every loss is NaN), so it is
    refused before any work.

    Raises:
        ModelError: Naming up to five non-finite tensors and how many there are.
    """
    bad = [
        name
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        shown = ", ".join(bad[:5]) + (f", ... ({len(bad)} in all)" if len(bad) > 5 else "")
        raise ModelError(
            f"{who} has non-finite (NaN or inf) weights in {shown}; training or pruning it "
            "gives NaN results: load a healthy checkpoint"
        )


def check_model_fits_task(model: torch.nn.Module, task: Any, who: str = "the model") -> None:
    """The task's sequences must fit the model's position embeddings, its tokens the vocabulary.

    Raises:
        ModelError: Naming the task's ``max_seq_length`` (``--max-seq-length``) and the model's
            maximum, or the tokenizer's and the model's vocabulary sizes.
    """
    check_images = getattr(task, "check_model", None)
    if callable(check_images):  # image tasks: the processor's image size is the model's
        check_images(model, who)
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    seq = getattr(task, "max_seq_length", None)
    if isinstance(limit, int) and isinstance(seq, int) and seq > limit:
        raise ModelError(
            f"max_seq_length (--max-seq-length) {seq} is above the maximum {limit} of {who} "
            f"(max_position_embeddings); use --max-seq-length {limit} or less"
        )
    embeddings = getattr(model, "get_input_embeddings", lambda: None)()
    tokenizer = getattr(task, "tokenizer", None)
    if embeddings is not None and tokenizer is not None:
        rows = int(embeddings.weight.shape[0])
        if len(tokenizer) > rows:
            raise ModelError(
                f"the tokenizer has {len(tokenizer)} tokens but {who} embeds only {rows}: the "
                "tokenizer belongs to another model; save the model with its own tokenizer"
            )


def check_tokens_known(task: Any, who: str = "the tokenizer", limit: int = 64) -> None:
    """Refuse a tokenizer that maps most of the training text to the unknown token.

    A model folder without tokenizer files can load a tokenizer with an empty vocabulary; every
    word then becomes ``[UNK]`` and training learns nothing, without an error.

    Raises:
        ModelError: If more than half of the (non-special) tokens of the first ``limit``
            training features are the unknown token.
    """
    tokenizer = getattr(task, "tokenizer", None)
    unk = getattr(tokenizer, "unk_token_id", None)
    features = list(getattr(task, "train_features", []))[:limit]
    if tokenizer is None or unk is None or not features:
        return
    special = set(getattr(tokenizer, "all_special_ids", [])) - {unk}
    ids = [int(i) for f in features for i in f.get("input_ids", []) if int(i) not in special]
    unknown = sum(i == unk for i in ids)
    if ids and unknown > len(ids) / 2:
        share = unknown / len(ids)
        raise ModelError(
            f"{who} maps {share:.0%} of the training tokens to its unknown token "
            f"{tokenizer.unk_token!r} (vocabulary of {len(tokenizer)}): it is not the model's "
            "tokenizer; save the model folder with its tokenizer files"
        )


def distillable_outputs(
    model: torch.nn.Module, batch: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """The outputs distillation can compare: one forward pass on ``batch``, the loss left out.

    The pass runs in eval mode without gradients (the model's training mode is restored) on the
    inputs the Trainer gives the teacher: ``labels`` removed; other label keys (SQuAD's
    ``start_positions``/``end_positions``) only add a ``loss``, which is left out.

    Args:
        model: A Hugging Face model (its forward returns a ``ModelOutput`` or a mapping).
        batch: A collated batch of the task's features.

    Returns:
        Output name -> tensor, in the model's output order, for every tensor output but ``loss``.

    Raises:
        ModelError: If the forward returns a tuple (``return_dict=False``): distillation needs
            named outputs.
    """
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = model(**inputs)
    finally:
        model.train(was)
    if not isinstance(outputs, Mapping):
        raise ModelError(
            f"the model's forward returned a {type(outputs).__name__}, not named outputs; "
            "distillation compares outputs by name: load it with return_dict=True"
        )
    return {k: v for k, v in outputs.items() if isinstance(v, torch.Tensor) and k != "loss"}
