"""Choose the tensors to prune by regular expressions over parameter names.

The default targets are the six encoder ``Linear`` weights of every layer of a BERT-family model
(Kurtic et al. 2022, Sec. 4: ``attention.self.{query,key,value}``, ``attention.output.dense``,
``intermediate.dense``, ``output.dense``); embeddings, biases, LayerNorm, pooler and task heads are
left dense, so "x % sparsity" refers to these tensors only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from obert_train._validate import check_str_sequence
from obert_train.errors import TargetError

__all__ = ["BERT_ENCODER_PATTERNS", "VIT_ENCODER_PATTERNS", "TargetError", "resolve_target_params"]

_LAYER = r"(^|\.)encoder\.layer\.\d+\."
BERT_ENCODER_PATTERNS: tuple[str, ...] = (
    _LAYER + r"attention\.self\.query\.weight$",
    _LAYER + r"attention\.self\.key\.weight$",
    _LAYER + r"attention\.self\.value\.weight$",
    _LAYER + r"attention\.output\.dense\.weight$",
    _LAYER + r"intermediate\.dense\.weight$",
    _LAYER + r"output\.dense\.weight$",
)
"""Regexes (``re.search``) of the six pruned Linear weights per BERT/RoBERTa encoder layer."""

_VIT_LAYER = r"(^|\.)layers\.\d+\."

VIT_ENCODER_PATTERNS: tuple[str, ...] = (
    _VIT_LAYER + r"attention\.q_proj\.weight$",
    _VIT_LAYER + r"attention\.k_proj\.weight$",
    _VIT_LAYER + r"attention\.v_proj\.weight$",
    _VIT_LAYER + r"attention\.o_proj\.weight$",
    _VIT_LAYER + r"mlp\.fc1\.weight$",
    _VIT_LAYER + r"mlp\.fc2\.weight$",
)
"""The same six Linear weights per layer of a ViT or DeiT encoder in transformers 5
(``layers.N.attention.{q,k,v,o}_proj``, ``layers.N.mlp.fc{1,2}``); the default targets of a model
whose ``config.model_type`` is ``vit`` or ``deit``."""

_VIT_TYPES = ("vit", "deit")


def resolve_target_params(
    model: torch.nn.Module, patterns: Sequence[str] | None = None
) -> dict[str, torch.nn.Parameter]:
    """Return the parameters whose names match any of ``patterns``, in model order.

    Args:
        model: Any ``torch.nn.Module`` (typically a ``transformers`` model).
        patterns: Regular expressions searched (``re.search``) in each parameter name;
            default :data:`BERT_ENCODER_PATTERNS` (:data:`VIT_ENCODER_PATTERNS` for a ViT or
            DeiT model).

    Returns:
        ``{name: parameter}`` in ``model.named_parameters()`` order.

    Raises:
        TargetError: If a pattern is not a valid regex, if some patterns match no parameter (all
            such patterns are listed, with a sample of the model's parameter names), or if a match
            is not a floating-point tensor.
    """
    check_str_sequence(patterns, "patterns", "resolve_target_params")
    if patterns is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        patterns = VIT_ENCODER_PATTERNS if model_type in _VIT_TYPES else BERT_ENCODER_PATTERNS
    pats = list(patterns)
    if not pats:
        raise TargetError("no target patterns given; pass at least one regular expression")
    compiled = []
    for pattern in pats:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise TargetError(f"target pattern {pattern!r} is not a valid regex: {exc}") from exc
    named = list(model.named_parameters())
    hits = [False] * len(compiled)
    selected: dict[str, torch.nn.Parameter] = {}
    for name, param in named:
        matched = [i for i, rx in enumerate(compiled) if rx.search(name)]
        for i in matched:
            hits[i] = True
        if matched:
            if not param.is_floating_point():
                raise TargetError(f"parameter {name!r} matched but has dtype {param.dtype}")
            selected[name] = param
    unmatched = [p for p, hit in zip(pats, hits, strict=True) if not hit]
    if unmatched:
        sample = [n for n, _ in named[:8]]
        raise TargetError(
            f"target pattern(s) {'  '.join(unmatched)} matched no parameter of "
            f"{type(model).__name__} "
            f"({len(named)} parameters, e.g. {sample}); pass patterns matching its names"
        )
    return selected
