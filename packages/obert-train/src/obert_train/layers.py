"""Layer dropping: keep some of a model's transformer layers (the paper's 6- and 3-layer models).

The oBERT models with 6 and 3 layers were made by dropping layers of the 12-layer model and
training the smaller model further (Kurtic et al. 2022; which layers were kept is not
published).  :func:`drop_layers` is the first half, a pure model operation: the kept layers,
with their weights unchanged, become layers ``0 .. k-1`` of the same model class, the config says
``k`` layers (per-layer config lists such as ``layer_types`` are cut to the kept entries, layer
indices such as ``mlp_only_layers`` and ``pruned_heads`` renumbered), so ``save_pretrained``
gives a checkpoint that plain ``transformers`` loads, whose outputs are exactly those of running
only the kept layers of the original.

Known layer lists (a ``torch.nn.ModuleList`` with ``config.num_hidden_layers`` entries):

=================================  ===========================================
module name                        families
=================================  ===========================================
``...encoder.layer``               BERT, RoBERTa, ELECTRA, MiniLM, XLM-R, ...
``...transformer.layer``           DistilBERT
``...model.layers`` / ``layers``   LLaMA, Qwen2, Mistral, Gemma, ... (decoders)
=================================  ===========================================

``num_layers=K`` keeps evenly spaced layers: the last layer of each of ``K`` consecutive groups
of ``n/K`` layers, ``ceil((i+1)·n/K) - 1`` for ``i = 0 .. K-1`` (6 → 3: layers 1, 3, 5;
12 → 6: 1, 3, ..., 11; 12 → 3: 3, 7, 11), i.e. every other layer for 6 → 3, always ending
with the top layer, whose output the task head was trained on (MiniLM-L6 fine-tuned on SST-2,
83.0 % dev accuracy, cut to 3 layers without retraining: 74.3 % with layers 1, 3, 5, 50.9 % with
0, 2, 4; docs/train.md).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from typing import Any

import torch

from obert_train._validate import check_int
from obert_train.errors import ArgumentError, ModelError, OptionError

__all__ = ["LAYER_LISTS", "drop_layers", "evenly_spaced_layers", "find_layers"]

LAYER_LISTS: tuple[tuple[str, str], ...] = (
    (r"(^|\.)encoder\.layer$", "...encoder.layer (BERT, RoBERTa, ELECTRA, MiniLM)"),
    (r"(^|\.)transformer\.layer$", "...transformer.layer (DistilBERT)"),
    (r"(^|\.)model\.layers$|^layers$", "...model.layers (LLaMA, Qwen2, Mistral)"),
)
"""``(regex of the ModuleList's qualified name, what it is)`` of the known layer lists."""

# Config fields with one entry per layer (cut to the kept layers) ...
_PER_LAYER_LISTS = (
    "layer_types",
    "mlp_layer_types",
    "no_rope_layers",
    "layers_block_type",
    "layer_rope_theta",
    "num_attention_heads_per_layer",
    "num_key_value_heads_per_layer",
)
# ... and fields that list layer indices (renumbered, dropped layers removed).
_LAYER_INDEX_LISTS = ("mlp_only_layers", "moe_layers")


def find_layers(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The model's list of transformer layers and its qualified name.

    Raises:
        ModelError: If no known layer list (or more than one) is found, naming what was
            expected and the module lists the model has.
    """
    lists = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0
    ]
    found = [(n, m) for n, m in lists if any(re.search(rx, n) for rx, _ in LAYER_LISTS)]
    if len(found) == 1:
        return found[0]
    expected = ", ".join(what for _, what in LAYER_LISTS)
    if not found:
        present = ", ".join(f"{n} ({len(m)})" for n, m in lists[:4]) or "none"
        raise ModelError(
            f"{type(model).__name__} has no known list of transformer layers: expected a "
            f"ModuleList named {expected}; its module lists: {present}"
        )
    raise ModelError(
        f"{type(model).__name__} has several layer lists ({', '.join(n for n, _ in found)}); "
        "layer dropping needs a model with one stack of layers (an encoder or a decoder)"
    )


def evenly_spaced_layers(num_layers: int, keep: int) -> list[int]:
    """Indices of ``keep`` evenly spaced layers out of ``num_layers``, ending with the top one.

    Layer ``ceil((i+1)·num_layers/keep) - 1`` for ``i = 0 .. keep-1``: the last of each of
    ``keep`` consecutive groups (6 → 3: ``[1, 3, 5]``; 12 → 6: ``[1, 3, 5, 7, 9, 11]``).

    Raises:
        OptionError: If ``keep`` is not in ``1 .. num_layers``.
    """
    value: object = keep
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= num_layers:
        raise OptionError(
            f"num_layers (--num-layers) {keep!r}: the model has {num_layers} layers; keep "
            f"between 1 and {num_layers}"
        )
    return [math.ceil((i + 1) * num_layers / keep) - 1 for i in range(keep)]


def _check_keep(keep: Sequence[int], num_layers: int) -> list[int]:
    shown = ",".join(str(i) for i in keep)
    if not keep:
        raise OptionError("keep (--keep) is empty: name the layers to keep, e.g. --keep 0,2,4")
    bad = [i for i in keep if isinstance(i, bool) or not isinstance(i, int)]
    if bad:
        raise OptionError(f"keep (--keep) {shown}: layer indices are whole numbers, got {bad}")
    outside = [i for i in keep if not 0 <= i < num_layers]
    if outside:
        raise OptionError(
            f"keep (--keep) {shown}: layer(s) {outside} out of range; the model has "
            f"{num_layers} layers, numbered 0 to {num_layers - 1}"
        )
    if len(set(keep)) != len(keep):
        twice = sorted({i for i in keep if list(keep).count(i) > 1})
        raise OptionError(f"keep (--keep) {shown}: layer(s) {twice} given twice; name each once")
    if list(keep) != sorted(keep):
        raise OptionError(
            f"keep (--keep) {shown}: give the layers in increasing order "
            f"({','.join(str(i) for i in sorted(keep))}); layers cannot be reordered"
        )
    return list(keep)


def _config_count(config: Any) -> int | None:
    value = getattr(config, "num_hidden_layers", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _config_changes(config: Any, keep: list[int], num_layers: int) -> dict[str, Any]:
    """The config fields that change when only the ``keep`` layers remain, with new values."""
    changes: dict[str, Any] = {"num_hidden_layers": len(keep)}
    position = {old: new_index for new_index, old in enumerate(keep)}
    for name in _PER_LAYER_LISTS:
        value = getattr(config, name, None)
        if isinstance(value, list | tuple) and len(value) == num_layers:
            changes[name] = type(value)(value[i] for i in keep)
    for name in _LAYER_INDEX_LISTS:
        value = getattr(config, name, None)
        if isinstance(value, list | tuple) and value:
            changes[name] = type(value)(position[i] for i in value if i in position)
    heads = getattr(config, "pruned_heads", None)
    if isinstance(heads, dict) and heads:
        changes["pruned_heads"] = {
            position[int(k)]: list(v) for k, v in heads.items() if int(k) in position
        }
    return changes


def _check_describes(model: torch.nn.Module, config: Any) -> None:
    """The new config must build exactly the tensors of the smaller model (what loading needs).

    Raises:
        ModelError: Naming a tensor the config would build differently (a config field that
            depends on the layer numbers in a way this function does not know).
    """
    if not hasattr(type(model), "config_class"):
        return
    with torch.device("meta"):
        fresh = type(model)(config)
    want = {n: tuple(p.shape) for n, p in fresh.named_parameters()}
    have = {n: tuple(p.shape) for n, p in model.named_parameters()}
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))
        raise ModelError(
            f"after dropping layers, the config of {type(model).__name__} would build other "
            f"tensors than the kept layers have (e.g. {diff[:2]}); a config field ties the "
            "layers' structure to their numbers in a way drop_layers does not handle"
        )


def drop_layers(
    model: torch.nn.Module,
    keep: Sequence[int] | None = None,
    *,
    num_layers: int | None = None,
) -> torch.nn.Module:
    """Keep only the layers ``keep`` of ``model`` (in place), updating its config.

    The kept layers, weights unchanged, become layers ``0 .. k-1``; ``config.num_hidden_layers``
    becomes ``k``, per-layer config lists (``layer_types``, ...) keep the kept entries, layer
    index lists (``mlp_only_layers``, ``pruned_heads``) are renumbered, and every module's
    ``layer_idx`` (the KV-cache slot of decoders) is renumbered.  ``save_pretrained`` then
    writes a checkpoint that plain ``transformers`` loads; its outputs are exactly those of
    running only the kept layers of the original model.  Distil it from the full model next
    (``obert-train run`` with a ``!DistillationModifier`` recipe and the full model as
    ``--teacher``).

    Args:
        model: A ``transformers`` model with a known layer list (see :data:`LAYER_LISTS`).
        keep: Indices of the layers kept, increasing, each once.
        num_layers: Instead of ``keep``: keep this many evenly spaced layers
            (:func:`evenly_spaced_layers`: 6 → 3 keeps 1, 3, 5).

    Returns:
        ``model`` itself, now with ``len(keep)`` layers.

    Raises:
        OptionError: If both or neither of ``keep`` and ``num_layers`` are given, or a layer
            index is out of range, repeated or out of order (nothing is changed).
        ModelError: If the model has no known layer list, or its config cannot describe the
            kept layers (nothing is changed).
    """
    if num_layers is not None:
        check_int(num_layers, "num_layers", "drop_layers")
    if isinstance(keep, str | bytes):
        raise ArgumentError(
            f"drop_layers: keep={keep!r} must be a list of layer indices such as [0, 2, 4], "
            f"got {type(keep).__name__}"
        )
    if keep is not None and num_layers is not None:
        raise OptionError(
            "give either keep (--keep, the layers kept) or num_layers (--num-layers, how many "
            "evenly spaced layers), not both"
        )
    if keep is None and num_layers is None:
        raise OptionError(
            "name the layers to keep: keep (--keep, e.g. 0,2,4) or num_layers (--num-layers, "
            "how many evenly spaced layers)"
        )
    config = getattr(model, "config", None)
    if config is None:
        raise ModelError(f"{type(model).__name__} has no config; drop_layers needs a HF model")
    name, layers = find_layers(model)
    count = len(layers)
    declared = _config_count(config)
    if declared is not None and declared != count:
        raise ModelError(
            f"{type(model).__name__}: config.num_hidden_layers is {declared} but {name} holds "
            f"{count} layers; the checkpoint is inconsistent"
        )
    kept = (
        evenly_spaced_layers(count, num_layers)
        if num_layers is not None
        else _check_keep(list(keep or []), count)
    )
    changes = _config_changes(config, kept, count)
    new_config = copy.deepcopy(config)
    for key, value in changes.items():
        setattr(new_config, key, value)
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    attr = name.rpartition(".")[2]
    smaller = torch.nn.ModuleList([layers[i] for i in kept])
    setattr(parent, attr, smaller)
    try:
        _check_describes(model, new_config)
    except BaseException:
        setattr(parent, attr, layers)
        raise
    for new_index, layer in enumerate(smaller):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                setattr(module, "layer_idx", new_index)  # noqa: B010 (module attributes)
    for key, value in changes.items():  # the model's own config object, shared by its modules
        setattr(config, key, value)
    return model
