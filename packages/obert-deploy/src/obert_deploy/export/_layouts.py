"""Per-family module layouts of Transformer FFNs and attention blocks, and finding them.

Finding each family's FFN and attention modules in a model (used by :mod:`._shrink`); the
module names are :data:`obert_core.shared.FFN_LAYOUTS` and
:data:`~obert_core.shared.ATTENTION_LAYOUTS`:

* ``bert``: FFN ``<layer>.intermediate.dense`` (up) / ``<layer>.output.dense`` (down); heads
  ``attention.self.{query,key,value}`` / ``attention.output.dense``.
* ``distilbert``: FFN ``ffn.lin1`` / ``ffn.lin2``; heads ``attention.{q,k,v}_lin`` /
  ``attention.out_lin``.
* ``gated-mlp``: FFN ``mlp.gate_proj`` + ``mlp.up_proj`` / ``mlp.down_proj``; heads are not
  removed (grouped key/value heads).
* ``mlp``: FFN ``mlp.up_proj`` / ``mlp.down_proj`` without a gate; heads are not removed.

BERT covers its relatives with the same module names (RoBERTa, XLM-R, ELECTRA, MiniLM, ...);
``gated-mlp`` covers LLaMA, Qwen2/3, Mistral and the shared experts of Qwen2-MoE.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from obert_core.shared import ATTENTION_LAYOUTS, FFN_LAYOUTS

if TYPE_CHECKING:
    import torch

__all__ = [
    "EXPECTED_LAYOUTS",
    "LAYER_COUNT_ATTRS",
    "AttentionBlock",
    "FfnBlock",
    "find_blocks",
    "layer_index",
    "linear_at",
    "replace_submodule",
    "submodule",
]

# The module names per family come from obert_core.shared (the one table obert-train prunes by).
#: family -> (up/gate projection paths, down projection path, config attribute of the width)
_FFN_LAYOUTS: tuple[tuple[str, tuple[str, ...], str, str], ...] = tuple(
    (f.family, f.ups, f.down, f.width_attr) for f in FFN_LAYOUTS
)
#: family -> (module holding the head count, q/k/v paths, output projection, head-count attr);
#: only the families whose heads can be removed (grouped-query attention cannot).
_ATTENTION_LAYOUTS: tuple[tuple[str, str, tuple[str, str, str], str, str], ...] = tuple(
    (a.family, a.holder, a.qkv, a.out, a.heads_attr)
    for a in ATTENTION_LAYOUTS
    if a.holder is not None and a.heads_attr is not None
)
#: Config attributes holding the number of layers, for the "one FFN per layer" test.
LAYER_COUNT_ATTRS = ("num_hidden_layers", "n_layers")
EXPECTED_LAYOUTS = (
    "BERT-style '<layer>.intermediate.dense' + '<layer>.output.dense' and "
    "'attention.self.{query,key,value}' + 'attention.output.dense'; DistilBERT 'ffn.lin1' + "
    "'ffn.lin2' and 'attention.{q,k,v}_lin' + 'attention.out_lin'; LLaMA/Qwen-style "
    "'mlp.gate_proj' + 'mlp.up_proj' + 'mlp.down_proj'"
)


@dataclass
class FfnBlock:
    """One FFN found in a model: its module, family, projection paths and width attribute."""

    name: str
    family: str
    owner: torch.nn.Module
    ups: tuple[str, ...]
    down: str
    config_attr: str


@dataclass
class AttentionBlock:
    """One attention module found in a model: family, head holder, projections, head count."""

    name: str
    family: str
    owner: torch.nn.Module
    heads_path: str
    qkv: tuple[str, ...]
    out: str
    heads_attr: str


def submodule(module: torch.nn.Module, path: str) -> torch.nn.Module | None:
    """The submodule at dotted ``path`` (``""``: ``module`` itself), or ``None``."""
    try:
        return module.get_submodule(path) if path else module
    except AttributeError:
        return None


def linear_at(module: torch.nn.Module, path: str) -> torch.nn.Linear | None:
    """The ``nn.Linear`` at dotted ``path``, or ``None`` (absent or another module type)."""
    import torch

    found = submodule(module, path)
    return found if isinstance(found, torch.nn.Linear) else None


def replace_submodule(module: torch.nn.Module, path: str, new: torch.nn.Module) -> None:
    """Put ``new`` at dotted ``path`` under ``module``."""
    parent_path, _, attr = path.rpartition(".")
    parent = submodule(module, parent_path)
    assert parent is not None
    setattr(parent, attr, new)


def layer_index(name: str) -> int | None:
    """The last integer component of a module name (its layer), or ``None``."""
    numbers = [part for part in name.split(".") if re.fullmatch(r"\d+", part)]
    return int(numbers[-1]) if numbers else None


def find_blocks(model: torch.nn.Module) -> tuple[list[FfnBlock], list[AttentionBlock]]:
    """Every FFN and attention module of a known family in ``model``, in module order."""
    ffns: list[FfnBlock] = []
    attentions: list[AttentionBlock] = []
    for name, module in model.named_modules():
        for family, ups, down, attr in _FFN_LAYOUTS:
            if family == "mlp" and submodule(module, "gate_proj") is not None:
                continue
            up_layers = [linear_at(module, path) for path in ups]
            down_layer = linear_at(module, down)
            if down_layer is None or any(layer is None for layer in up_layers):
                continue
            widths = {layer.out_features for layer in up_layers if layer is not None}
            if widths == {down_layer.in_features}:
                ffns.append(FfnBlock(name, family, module, ups, down, attr))
                break
        for family, heads_path, qkv, out, heads_attr in _ATTENTION_LAYOUTS:
            holder = submodule(module, heads_path)
            projections = [linear_at(module, path) for path in qkv]
            out_layer = linear_at(module, out)
            if holder is None or out_layer is None or any(p is None for p in projections):
                continue
            heads = getattr(holder, heads_attr, None)
            head_size = getattr(holder, "attention_head_size", None)
            if not isinstance(heads, int) or not isinstance(head_size, int) or heads < 1:
                continue
            width = heads * head_size
            if out_layer.in_features == width and all(
                p is not None and p.out_features == width for p in projections
            ):
                attentions.append(
                    AttentionBlock(name, family, module, heads_path, qkv, out, heads_attr)
                )
                break
    return ffns, attentions
