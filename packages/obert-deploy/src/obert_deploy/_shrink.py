"""Physically remove structurally pruned FFN neurons and attention heads from a torch model.

A structured pruner (oBERT's, ZipLM, HEAPr, a hand-written mask, ...) leaves whole neurons and
heads as zeros at their original shapes; ONNX Runtime multiplies those zeros like any other
number. This module finds them in a loaded Hugging Face model and replaces the affected
``nn.Linear`` layers by smaller ones, so every engine runs fewer FLOPs. What counts as removable
is decided from the weights alone, so it works however the model was pruned:

* **FFN neuron** ``k``: removable when column ``k`` of the down projection is entirely zero.
  Its output then never reaches the residual stream, whatever the up (and gate) projection
  computes for it, bias included (``act(b) * 0 = 0``); row ``k`` of the up/gate projections,
  their bias entry ``k`` and column ``k`` of the down projection are removed. A zero *up* row
  alone does not make a neuron removable (``GELU(bias) != 0``).
* **Attention head** ``h`` (encoders): removable when the output projection's column block
  ``[h * d_h, (h + 1) * d_h)`` is entirely zero; its query/key/value rows (and bias entries) and
  that column block are removed, and the attention module's head count is updated.

At least one neuron and one head are kept per layer (zero-width ``Linear`` layers would make
zero-sized ONNX initializers); a kept all-zero neuron or head still contributes exactly zero.

Layouts recognised, by module names (so every architecture that reuses them is covered):

* ``bert``: FFN ``<layer>.intermediate.dense`` (up) / ``<layer>.output.dense`` (down); heads
  ``attention.self.{query,key,value}`` / ``attention.output.dense``.
* ``distilbert``: FFN ``ffn.lin1`` / ``ffn.lin2``; heads ``attention.{q,k,v}_lin`` /
  ``attention.out_lin``.
* ``gated-mlp``: FFN ``mlp.gate_proj`` + ``mlp.up_proj`` / ``mlp.down_proj``; heads are not
  removed (grouped key/value heads).
* ``mlp``: FFN ``mlp.up_proj`` / ``mlp.down_proj`` without a gate; heads are not removed.

BERT covers its relatives with the same module names (RoBERTa, XLM-R, ELECTRA, MiniLM, ...);
``gated-mlp`` covers LLaMA, Qwen2/3, Mistral and the shared experts of Qwen2-MoE. Fused 3-D MoE
expert tensors and other families are left alone with a note in the report.

transformers 5 dropped ``PreTrainedModel.prune_heads`` and ignores ``config.pruned_heads``;
:func:`remove_heads` does the same job, and :func:`restore_pruned_heads` loads a checkpoint
whose ``config.pruned_heads`` says some heads were already cut out (transformers 4 format).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import CheckpointError, ObertDeployError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ShrinkReport",
    "ShrinkRow",
    "checkpoint_pruned_heads",
    "from_pretrained_with_pruned_heads",
    "remove_heads",
    "restore_pruned_heads",
    "shrink_model",
]

_LOG = logging.getLogger(__name__)

#: family -> (up/gate projection paths, down projection path, config attribute of the width)
_FFN_LAYOUTS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("bert", ("intermediate.dense",), "output.dense", "intermediate_size"),
    ("distilbert", ("lin1",), "lin2", "hidden_dim"),
    ("gated-mlp", ("gate_proj", "up_proj"), "down_proj", "intermediate_size"),
    ("mlp", ("up_proj",), "down_proj", "intermediate_size"),
)
#: family -> (module holding the head count, q/k/v paths, output projection, head-count attr)
_ATTENTION_LAYOUTS: tuple[tuple[str, str, tuple[str, str, str], str, str], ...] = (
    (
        "bert",
        "self",
        ("self.query", "self.key", "self.value"),
        "output.dense",
        "num_attention_heads",
    ),
    ("distilbert", "", ("q_lin", "k_lin", "v_lin"), "out_lin", "n_heads"),
)
#: Config attributes holding the number of layers, for the "one FFN per layer" test.
_LAYER_COUNT_ATTRS = ("num_hidden_layers", "n_layers")
_EXPECTED = (
    "BERT-style '<layer>.intermediate.dense' + '<layer>.output.dense' and "
    "'attention.self.{query,key,value}' + 'attention.output.dense'; DistilBERT 'ffn.lin1' + "
    "'ffn.lin2' and 'attention.{q,k,v}_lin' + 'attention.out_lin'; LLaMA/Qwen-style "
    "'mlp.gate_proj' + 'mlp.up_proj' + 'mlp.down_proj'"
)


@dataclass(frozen=True)
class ShrinkRow:
    """What was removed from one FFN or one attention module.

    Attributes:
        module: Module name (the layer for BERT FFNs, the MLP/attention module otherwise).
        kind: ``"ffn"`` (units are intermediate neurons) or ``"heads"``.
        family: Layout that matched (``bert``, ``distilbert``, ``gated-mlp``, ``mlp``).
        layer: Layer index (the last integer in ``module``), or ``None``.
        before: Neurons / heads in the model before shrinking.
        kept: Neurons / heads after shrinking.
        removed_indices: Indices (numbering before shrinking) of the removed heads; empty for
            FFN rows (only the count is kept, ``before - kept``).
        parameters_removed: Weights and biases removed from this module's ``Linear`` layers.
        kept_zero: Units kept although all-zero (every unit was zero; one is kept).
    """

    module: str
    kind: str
    family: str
    layer: int | None
    before: int
    kept: int
    removed_indices: tuple[int, ...] = ()
    parameters_removed: int = 0
    kept_zero: int = 0

    @property
    def removed(self) -> int:
        """Number of removed neurons / heads."""
        return self.before - self.kept

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "module": self.module,
            "kind": self.kind,
            "family": self.family,
            "layer": self.layer,
            "before": self.before,
            "kept": self.kept,
            "removed": self.removed,
            "removed_indices": list(self.removed_indices),
            "parameters_removed": self.parameters_removed,
            "kept_zero": self.kept_zero,
        }


@dataclass
class ShrinkReport:
    """Result of :func:`shrink_model`.

    Attributes:
        rows: One row per recognised FFN and attention module, in module order.
        parameters_before: Parameters of the model before shrinking.
        parameters_after: Parameters after shrinking (equal to before for a dry run that found
            nothing, and for a dry run the count it *would* have).
        config_updates: Config attributes changed (``intermediate_size`` when every FFN ended
            with one width; otherwise the per-layer widths live only in the modules and in the
            exported graph).
        pruned_heads_on_load: ``config.pruned_heads`` of the model as given (layer -> head
            indices of the original model), i.e. heads already physically absent.
        notes: Human-readable remarks (unknown family, layers kept at one all-zero unit, ...).
        applied: False for a dry run (the model was not changed).
    """

    rows: list[ShrinkRow] = field(default_factory=list)
    parameters_before: int = 0
    parameters_after: int = 0
    config_updates: dict[str, int] = field(default_factory=dict)
    pruned_heads_on_load: dict[int, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    applied: bool = True

    @property
    def parameters_removed(self) -> int:
        """Parameters removed (or that a dry run would remove)."""
        return self.parameters_before - self.parameters_after

    @property
    def neurons_removed(self) -> int:
        """FFN neurons removed, over all layers."""
        return sum(row.removed for row in self.rows if row.kind == "ffn")

    @property
    def heads_removed(self) -> int:
        """Attention heads removed, over all layers (not counting ``pruned_heads_on_load``)."""
        return sum(row.removed for row in self.rows if row.kind == "heads")

    @property
    def changed(self) -> bool:
        """True when something was (or, for a dry run, would be) removed."""
        return self.parameters_removed > 0

    @property
    def supported(self) -> bool:
        """True when at least one FFN or attention module of a known layout was found."""
        return bool(self.rows)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "applied": self.applied,
            "supported": self.supported,
            "changed": self.changed,
            "parameters_before": self.parameters_before,
            "parameters_after": self.parameters_after,
            "parameters_removed": self.parameters_removed,
            "neurons_removed": self.neurons_removed,
            "heads_removed": self.heads_removed,
            "config_updates": dict(self.config_updates),
            "pruned_heads_on_load": {str(k): v for k, v in self.pruned_heads_on_load.items()},
            "rows": [row.to_dict() for row in self.rows],
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        """One line: what was removed, in how many layers, and the parameters saved."""
        if not self.supported:
            return "Structured zeros: model layout not recognised, nothing removed."
        ffn = [row for row in self.rows if row.kind == "ffn"]
        heads = [row for row in self.rows if row.kind == "heads"]
        verb = "removed" if self.applied else "removable"
        parts = [
            f"{self.neurons_removed} of {sum(r.before for r in ffn)} FFN neurons "
            f"({sum(r.removed > 0 for r in ffn)} of {len(ffn)} layers)"
        ]
        if heads:
            parts.append(
                f"{self.heads_removed} of {sum(r.before for r in heads)} attention heads "
                f"({sum(r.removed > 0 for r in heads)} of {len(heads)} layers)"
            )
        share = self.parameters_removed / self.parameters_before if self.parameters_before else 0
        text = (
            f"Structured zeros {verb}: {', '.join(parts)}; {self.parameters_removed:,} "
            f"parameters ({share:.1%} of {self.parameters_before:,})."
        )
        if self.pruned_heads_on_load:
            on_load = sum(len(v) for v in self.pruned_heads_on_load.values())
            text += f" {on_load} heads of config.pruned_heads were already absent."
        return text

    def to_markdown(self) -> str:
        """Summary line, notes, and a per-module table of the modules that changed."""
        lines = [self.summary()]
        lines += [f"- note: {note}" for note in self.notes]
        changed = [row for row in self.rows if row.removed or row.kept_zero]
        if changed:
            lines += [
                "",
                "| module | kind | before | kept | removed | parameters removed |",
                "|---|---|---:|---:|---|---:|",
            ]
            for row in changed:
                removed = str(row.removed)
                if row.removed_indices:
                    removed += f" ({', '.join(map(str, row.removed_indices))})"
                lines.append(
                    f"| {row.module} | {row.kind} | {row.before} | {row.kept} | {removed} | "
                    f"{row.parameters_removed:,} |"
                )
        return "\n".join(lines)


@dataclass
class _Ffn:
    name: str
    family: str
    owner: torch.nn.Module
    ups: tuple[str, ...]
    down: str
    config_attr: str


@dataclass
class _Attention:
    name: str
    family: str
    owner: torch.nn.Module
    heads_path: str
    qkv: tuple[str, ...]
    out: str
    heads_attr: str


def _get(module: torch.nn.Module, path: str) -> torch.nn.Module | None:
    try:
        return module.get_submodule(path) if path else module
    except AttributeError:
        return None


def _linear(module: torch.nn.Module, path: str) -> torch.nn.Linear | None:
    import torch

    found = _get(module, path)
    return found if isinstance(found, torch.nn.Linear) else None


def _set(module: torch.nn.Module, path: str, new: torch.nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = _get(module, parent_path)
    assert parent is not None
    setattr(parent, attr, new)


def _layer_index(name: str) -> int | None:
    numbers = [part for part in name.split(".") if re.fullmatch(r"\d+", part)]
    return int(numbers[-1]) if numbers else None


def _find(model: torch.nn.Module) -> tuple[list[_Ffn], list[_Attention]]:
    ffns: list[_Ffn] = []
    attentions: list[_Attention] = []
    for name, module in model.named_modules():
        for family, ups, down, attr in _FFN_LAYOUTS:
            if family == "mlp" and _get(module, "gate_proj") is not None:
                continue
            up_layers = [_linear(module, path) for path in ups]
            down_layer = _linear(module, down)
            if down_layer is None or any(layer is None for layer in up_layers):
                continue
            widths = {layer.out_features for layer in up_layers if layer is not None}
            if widths == {down_layer.in_features}:
                ffns.append(_Ffn(name, family, module, ups, down, attr))
                break
        for family, heads_path, qkv, out, heads_attr in _ATTENTION_LAYOUTS:
            holder = _get(module, heads_path)
            projections = [_linear(module, path) for path in qkv]
            out_layer = _linear(module, out)
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
                    _Attention(name, family, module, heads_path, qkv, out, heads_attr)
                )
                break
    return ffns, attentions


def _select(layer: torch.nn.Linear, index: torch.Tensor, dim: int) -> torch.nn.Linear:
    """A new ``Linear`` keeping ``index`` along ``dim`` (0: outputs/rows, 1: inputs/columns)."""
    import torch

    weight = layer.weight.detach().index_select(dim, index.to(layer.weight.device))
    bias = layer.bias
    new = torch.nn.Linear(
        weight.shape[1],
        weight.shape[0],
        bias=bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias.detach()[index] if dim == 0 else bias.detach())
    new.weight.requires_grad_(layer.weight.requires_grad)
    if bias is not None:
        new.bias.requires_grad_(bias.requires_grad)
    new.train(layer.training)
    return new


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _config_pruned_heads(config: Any) -> dict[int, list[int]]:
    return _normalise_pruned_heads(getattr(config, "pruned_heads", None))


def _normalise_pruned_heads(raw: Any) -> dict[int, list[int]]:
    """``{"0": [1, 3]}`` (JSON) or ``{0: [1, 3]}`` -> ``{0: [1, 3]}``; anything else -> ``{}``."""
    if not isinstance(raw, Mapping):
        return {}
    try:
        return {int(k): sorted(int(h) for h in v) for k, v in raw.items() if v}
    except (TypeError, ValueError):
        return {}


def _shared_linears(model: torch.nn.Module) -> set[int]:
    """Return the ids of the ``Linear`` modules reachable under more than one name (tied/shared)."""
    import torch

    seen: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, torch.nn.Linear):
            seen[id(module)] = seen.get(id(module), 0) + 1
    return {key for key, count in seen.items() if count > 1}


def _is_shared(owner: torch.nn.Module, paths: Sequence[str], shared: set[int]) -> bool:
    return any(id(_get(owner, path)) in shared for path in paths)


def _shrink_ffn(ffn: _Ffn, apply: bool, notes: list[str]) -> ShrinkRow:
    import torch

    down = _linear(ffn.owner, ffn.down)
    assert down is not None
    width = down.in_features
    alive = (down.weight.detach() != 0).any(dim=0)
    keep = torch.nonzero(alive).flatten()
    kept_zero = 0
    if keep.numel() == 0:
        keep = torch.zeros(1, dtype=torch.long)
        kept_zero = 1
        notes.append(
            f"{ffn.name}: every FFN neuron has an all-zero down-projection column; one is kept "
            "(zero-width layers are not exported), the FFN adds only its output bias"
        )
    removed = width - keep.numel()
    params = 0
    if removed:
        ups = [_linear(ffn.owner, path) for path in ffn.ups]
        for up in ups:
            assert up is not None
            params += removed * (up.in_features + (up.bias is not None))
        params += removed * down.out_features
        if apply:
            for path, up in zip(ffn.ups, ups, strict=True):
                assert up is not None
                _set(ffn.owner, path, _select(up, keep, 0))
            _set(ffn.owner, ffn.down, _select(down, keep, 1))
            if isinstance(getattr(ffn.owner, "intermediate_size", None), int):
                setattr(ffn.owner, "intermediate_size", int(keep.numel()))  # noqa: B010
    return ShrinkRow(
        module=ffn.name,
        kind="ffn",
        family=ffn.family,
        layer=_layer_index(ffn.name),
        before=width,
        kept=int(keep.numel()),
        parameters_removed=params,
        kept_zero=kept_zero,
    )


def _head_rows(heads: Sequence[int], head_size: int) -> list[int]:
    return [i for h in heads for i in range(h * head_size, (h + 1) * head_size)]


def _cut_heads(attention: _Attention, keep_heads: Sequence[int]) -> None:
    """Keep only ``keep_heads`` (current numbering) of one attention module."""
    import torch

    holder = _get(attention.owner, attention.heads_path)
    assert holder is not None
    head_size = int(getattr(holder, "attention_head_size"))  # noqa: B009
    index = torch.tensor(_head_rows(keep_heads, head_size), dtype=torch.long)
    for path in attention.qkv:
        layer = _linear(attention.owner, path)
        assert layer is not None
        _set(attention.owner, path, _select(layer, index, 0))
    out = _linear(attention.owner, attention.out)
    assert out is not None
    _set(attention.owner, attention.out, _select(out, index, 1))
    setattr(holder, attention.heads_attr, len(keep_heads))
    if isinstance(getattr(holder, "all_head_size", None), int):
        setattr(holder, "all_head_size", len(keep_heads) * head_size)  # noqa: B010


def _shrink_heads(attention: _Attention, apply: bool, notes: list[str]) -> ShrinkRow:
    holder = _get(attention.owner, attention.heads_path)
    out = _linear(attention.owner, attention.out)
    assert holder is not None
    assert out is not None
    heads = int(getattr(holder, attention.heads_attr))
    head_size = int(getattr(holder, "attention_head_size"))  # noqa: B009
    blocks = out.weight.detach().reshape(out.out_features, heads, head_size)
    alive = (blocks != 0).any(dim=2).any(dim=0)
    keep = [h for h in range(heads) if bool(alive[h])]
    kept_zero = 0
    if not keep:
        keep, kept_zero = [0], 1
        notes.append(
            f"{attention.name}: every head has an all-zero output-projection block; one is kept "
            "(zero-width layers are not exported), the attention adds only its output bias"
        )
    removed = tuple(h for h in range(heads) if h not in keep)
    params = 0
    if removed:
        rows = len(removed) * head_size
        for path in attention.qkv:
            layer = _linear(attention.owner, path)
            assert layer is not None
            params += rows * (layer.in_features + (layer.bias is not None))
        params += rows * out.out_features
        if apply:
            _cut_heads(attention, keep)
    return ShrinkRow(
        module=attention.name,
        kind="heads",
        family=attention.family,
        layer=_layer_index(attention.name),
        before=heads,
        kept=len(keep),
        removed_indices=removed,
        parameters_removed=params,
        kept_zero=kept_zero,
    )


def _update_config(
    model: torch.nn.Module, ffns: list[_Ffn], rows: list[ShrinkRow], notes: list[str]
) -> dict[str, int]:
    """Set the config's FFN width when every FFN is the model's one FFN and they agree."""
    config = getattr(model, "config", None)
    ffn_rows = [row for row in rows if row.kind == "ffn"]
    if config is None or not ffn_rows or not any(row.removed for row in ffn_rows):
        return {}
    attrs = {ffn.config_attr for ffn in ffns}
    layers = next((getattr(config, a) for a in _LAYER_COUNT_ATTRS if hasattr(config, a)), None)
    kept = {row.kept for row in ffn_rows}
    attr = next(iter(attrs))
    has_experts = any("expert" in ffn.name for ffn in ffns)
    if (
        len(attrs) == 1
        and len(kept) == 1
        and layers == len(ffn_rows)
        and not has_experts
        and {row.before for row in ffn_rows} == {getattr(config, attr, None)}
    ):
        setattr(config, attr, kept.pop())
        return {attr: int(getattr(config, attr))}
    notes.append(
        "FFN widths after shrinking ("
        + ", ".join(str(row.kept) for row in ffn_rows)
        + f") are not one per-model config.{attr}: the config is left as is; the per-layer "
        "shapes live in the modules and in the exported ONNX graph (save_pretrained() of this "
        "model does not reload)"
    )
    return {}


def _record_pruned_heads(
    model: torch.nn.Module, attentions: list[_Attention], rows: list[ShrinkRow]
) -> None:
    """Merge removed heads into ``config.pruned_heads`` in the original model's numbering."""
    config = getattr(model, "config", None)
    total = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None)
    if config is None or not isinstance(total, int):
        return
    pruned = _config_pruned_heads(config)
    changed = False
    for attention, row in zip(attentions, rows, strict=True):
        layer = row.layer
        if not row.removed_indices or layer is None or not attention.name.endswith("attention"):
            continue
        if attention.name.endswith("crossattention"):
            continue
        original = [h for h in range(total) if h not in pruned.get(layer, [])]
        if len(original) != row.before:
            continue
        pruned[layer] = sorted(
            {*pruned.get(layer, []), *(original[h] for h in row.removed_indices)}
        )
        changed = True
    if changed:
        config.pruned_heads = pruned


def shrink_model(model: torch.nn.Module, *, dry_run: bool = False) -> ShrinkReport:
    """Remove FFN neurons and attention heads that are entirely zero, in place.

    A neuron is removed when its down-projection column is all zero; a head when its block of
    output-projection columns is all zero (see the module docstring for the layouts). The
    model computes exactly what it computed before (up to float rounding of the now shorter
    sums). Unstructured sparsity removes nothing unless a whole column / block is zero.

    Args:
        model: A loaded Hugging Face (or any torch) model; changed in place unless ``dry_run``.
        dry_run: Only report what would be removed.

    Returns:
        The :class:`ShrinkReport`: per module neurons/heads before and kept, parameters removed,
        config attributes updated, and notes (e.g. an unrecognised layout: nothing removed).
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ObertDeployError(
            f"shrink_model needs a torch.nn.Module, got {type(model).__name__}; load the "
            "checkpoint first (obert_deploy.load_checkpoint)"
        )
    report = ShrinkReport(applied=not dry_run)
    report.pruned_heads_on_load = _config_pruned_heads(getattr(model, "config", None))
    report.parameters_before = _count(model)
    ffns, attentions = _find(model)
    shared = _shared_linears(model)
    kept_ffns = []
    for ffn in ffns:
        if _is_shared(ffn.owner, (*ffn.ups, ffn.down), shared):
            report.notes.append(f"{ffn.name}: its Linear layers are shared (tied); not shrunk")
        else:
            kept_ffns.append(ffn)
    kept_attentions = []
    for attention in attentions:
        if _is_shared(attention.owner, (*attention.qkv, attention.out), shared):
            report.notes.append(f"{attention.name}: its Linear layers are shared; not shrunk")
        else:
            kept_attentions.append(attention)
    if not ffns and not attentions:
        report.notes.append(
            f"no FFN or attention layout of a known family found (expected {_EXPECTED}); "
            f"{type(model).__name__} is not shrunk"
        )
        if any(p.ndim == 3 for p in model.parameters()):
            report.notes.append("3-D (fused mixture-of-experts) weights are not shrunk")
        report.parameters_after = report.parameters_before
        return report
    with torch.no_grad():
        ffn_rows = [_shrink_ffn(ffn, not dry_run, report.notes) for ffn in kept_ffns]
        head_rows = [_shrink_heads(a, not dry_run, report.notes) for a in kept_attentions]
    rows = ffn_rows + head_rows
    report.rows = sorted(rows, key=lambda row: (row.layer is None, row.layer or 0, row.kind))
    if any(p.ndim == 3 for p in model.parameters()):
        report.notes.append("3-D (fused mixture-of-experts) expert weights are not shrunk")
    if dry_run:
        report.parameters_after = report.parameters_before - sum(
            row.parameters_removed for row in rows
        )
        return report
    report.config_updates = _update_config(model, kept_ffns, ffn_rows, report.notes)
    _record_pruned_heads(model, kept_attentions, head_rows)
    report.parameters_after = _count(model)
    _LOG.info("%s", report.summary())
    return report


def remove_heads(model: torch.nn.Module, heads: Mapping[int, Sequence[int]]) -> None:
    """Physically remove attention heads, like transformers 4's ``prune_heads``.

    transformers 5 no longer has ``PreTrainedModel.prune_heads``; this slices the query, key
    and value rows and the output-projection columns of the listed heads of each layer's
    self-attention and updates its head count. It does not touch ``config.pruned_heads``.

    Args:
        model: A model of a family with a known attention layout (BERT family, DistilBERT).
        heads: Layer index -> head indices in that layer's *current* numbering.

    Raises:
        ObertDeployError: No self-attention module for a listed layer, a head index out of
            range, or every head of a layer listed.
    """
    _, attentions = _find(model)
    by_layer = {
        _layer_index(a.name): a
        for a in attentions
        if a.name.endswith("attention") and not a.name.endswith("crossattention")
    }
    for layer, listed in sorted(heads.items()):
        remove = sorted({int(h) for h in listed})
        if not remove:
            continue
        attention = by_layer.get(int(layer))
        if attention is None:
            raise ObertDeployError(
                f"cannot remove heads {remove} of layer {layer}: no self-attention module for "
                f"that layer (layers found: {sorted(k for k in by_layer if k is not None)}; "
                f"expected {_EXPECTED})"
            )
        holder = _get(attention.owner, attention.heads_path)
        assert holder is not None
        count = int(getattr(holder, attention.heads_attr))
        bad = [h for h in remove if not 0 <= h < count]
        if bad:
            raise ObertDeployError(
                f"head indices {bad} of layer {layer} are out of range: {attention.name} has "
                f"{count} heads (0..{count - 1})"
            )
        if len(remove) == count:
            raise ObertDeployError(
                f"cannot remove all {count} heads of layer {layer} ({attention.name}); keep "
                "at least one"
            )
        import torch

        with torch.no_grad():
            _cut_heads(attention, [h for h in range(count) if h not in remove])


def checkpoint_pruned_heads(source: str) -> dict[int, list[int]]:
    """``pruned_heads`` of the checkpoint's config.json (layer -> heads), or ``{}``."""
    config_file = Path(source) / "config.json"
    if config_file.is_file():
        try:
            data = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return _normalise_pruned_heads(data.get("pruned_heads"))
    try:
        from transformers import AutoConfig

        return _config_pruned_heads(AutoConfig.from_pretrained(source))
    except Exception:  # the model loader reports unreadable configs itself
        return {}


def _weight_files(source: str) -> list[str]:
    """Local paths of the checkpoint's weight files (resolving sharded indexes)."""
    from transformers.utils.hub import cached_file

    def resolve(name: str) -> str | None:
        local = Path(source) / name
        if local.is_file():
            return str(local)
        try:
            found = cached_file(source, name, _raise_exceptions_for_missing_entries=False)
        except Exception:
            return None
        return str(found) if found else None

    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = resolve(index_name)
        if index is not None:
            weight_map = json.loads(Path(index).read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
            return [path for path in (resolve(s) for s in shards) if path is not None]
    for name in ("model.safetensors", "pytorch_model.bin"):
        path = resolve(name)
        if path is not None:
            return [path]
    return []


def _read_tensors(source: str, names: set[str], prefix: str) -> dict[str, torch.Tensor]:
    """Read the checkpoint tensors for model parameter ``names`` (with/without ``prefix.``)."""
    import torch

    def candidates(name: str) -> list[str]:
        out = [name]
        if prefix and name.startswith(prefix + "."):
            out.append(name[len(prefix) + 1 :])
        if prefix:
            out.append(f"{prefix}.{name}")
        return out

    found: dict[str, torch.Tensor] = {}
    for path in _weight_files(source):
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as handle:
                keys = set(handle.keys())
                for name in names - set(found):
                    key = next((k for k in candidates(name) if k in keys), None)
                    if key is not None:
                        found[name] = handle.get_tensor(key)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            for name in names - set(found):
                key = next((k for k in candidates(name) if k in state), None)
                if key is not None:
                    found[name] = state[key]
    return found


def restore_pruned_heads(
    model: torch.nn.Module,
    source: str,
    pruned_heads: Mapping[int, Sequence[int]],
    mismatched: Sequence[str],
) -> None:
    """Finish loading a checkpoint whose ``config.pruned_heads`` heads are physically absent.

    transformers 5 builds every layer with all heads and (with ``ignore_mismatched_sizes``)
    re-initialises the smaller query/key/value/output weights. This removes the listed heads
    from the freshly built model (original numbering) and then loads those weights from the
    checkpoint files.

    Args:
        model: The model as ``from_pretrained(..., ignore_mismatched_sizes=True)`` returned it.
        source: The checkpoint directory (or Hub id in the local cache).
        pruned_heads: Layer -> heads removed, from the checkpoint's config.
        mismatched: Names of the parameters transformers reported as mismatched.

    Raises:
        CheckpointError: A mismatched weight is not explained by the pruned heads, or cannot
            be read from the checkpoint.
    """
    import torch

    try:
        remove_heads(model, pruned_heads)
    except ObertDeployError as exc:
        raise CheckpointError(
            f"checkpoint {source!r} lists pruned_heads {dict(pruned_heads)} in its config, "
            f"which do not fit the model: {exc}"
        ) from exc
    names = set(mismatched)
    tensors = _read_tensors(source, names, str(getattr(model, "base_model_prefix", "")))
    params = dict(model.named_parameters())
    bad = []
    for name in sorted(names):
        tensor, param = tensors.get(name), params.get(name)
        if tensor is None or param is None or tuple(tensor.shape) != tuple(param.shape):
            bad.append(
                f"{name} (checkpoint {None if tensor is None else list(tensor.shape)}, model "
                f"{None if param is None else list(param.shape)})"
            )
            continue
        with torch.no_grad():
            param.copy_(tensor.to(param.dtype))
    if bad:
        raise CheckpointError(
            f"checkpoint {source!r}: weights whose shapes do not match the model even after "
            f"removing config.pruned_heads {dict(pruned_heads)}: {'; '.join(bad[:4])}"
            f"{' ...' if len(bad) > 4 else ''}; the checkpoint does not fit its config.json"
        )


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


def from_pretrained_with_pruned_heads(
    auto_class: Any, source: str, **kwargs: Any
) -> tuple[Any, dict[str, Any]]:
    """Load like ``from_pretrained``, also when ``config.pruned_heads`` heads are absent.

    Without ``pruned_heads`` this is exactly ``auto_class.from_pretrained(source,
    output_loading_info=True, **kwargs)``. With them, the smaller attention weights are loaded
    with ``ignore_mismatched_sizes`` (transformers' report of those expected mismatches is
    silenced), and :func:`restore_pruned_heads` cuts the heads out and loads the real weights;
    the returned loading info then lists no mismatched keys.

    Raises:
        CheckpointError: From :func:`restore_pruned_heads`.
    """
    pruned = checkpoint_pruned_heads(source)
    if not pruned:
        model, info = auto_class.from_pretrained(source, output_loading_info=True, **kwargs)
        return model, dict(info)
    # transformers logs its load report (a table of the expected "MISMATCH, reinit" rows) as
    # a warning of this logger; missing keys are still reported by load_checkpoint itself.
    report_logger = logging.getLogger("transformers.modeling_utils")
    drop_report = _DropLoadReport()
    report_logger.addFilter(drop_report)
    try:
        model, info = auto_class.from_pretrained(
            source, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    finally:
        report_logger.removeFilter(drop_report)
    info = dict(info)
    mismatched = [str(item[0]) for item in info.get("mismatched_keys", ())]
    restore_pruned_heads(model, source, pruned, mismatched)
    info["mismatched_keys"] = []
    _LOG.info("%s: heads %s of config.pruned_heads are physically absent", source, pruned)
    return model, info
