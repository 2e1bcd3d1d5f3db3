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

**Kept FFN widths are rounded up to a multiple** (``width_multiple``, 16 by default): dense
GEMM kernels are blocked in 8/16/32/64 columns, and an odd width such as 1,535 (one neuron of
9,216 removed from MiniLM-L6 by 90 % unstructured pruning) measured no faster than 1,536 on
ONNX Runtime and OpenVINO (within 1 %, ``docs/benchmarks.md``), so the odd shape buys nothing.
The extra units are removable (all-zero) neurons kept as zero columns, those with the
largest up-projection rows first, so the outputs are unchanged; a layer whose rounded width
reaches its full width is not shrunk at all. ``width_multiple=1`` removes every removable
neuron. Heads are whole units already and are not rounded.

The layouts recognised, by module names, are those of :mod:`._layouts` (BERT family,
DistilBERT, gated and plain MLPs). Fused 3-D MoE expert tensors and other families are left
alone with a note in the report.

transformers 5 dropped ``PreTrainedModel.prune_heads``; :func:`remove_heads` does the same job
(:mod:`._pruned_heads` loads transformers-4 checkpoints whose heads are already cut out).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import ObertDeployError
from .._validate import check_type
from ._layouts import (
    EXPECTED_LAYOUTS,
    LAYER_COUNT_ATTRS,
    AttentionBlock,
    FfnBlock,
    find_blocks,
    layer_index,
    linear_at,
    replace_submodule,
    submodule,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "ShrinkReport",
    "ShrinkRow",
    "check_width_multiple",
    "config_pruned_heads",
    "normalise_pruned_heads",
    "remove_heads",
    "rounded_width",
    "shrink_model",
]

_LOG = logging.getLogger(__name__)


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
        kept_zero: Removable (all-zero) units kept: the one unit of a layer whose units are all
            zero, and the FFN neurons that round the kept width up to ``width_multiple``.
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
        width_multiple: Kept FFN widths are rounded up to a multiple of this (1: no rounding).
    """

    rows: list[ShrinkRow] = field(default_factory=list)
    parameters_before: int = 0
    parameters_after: int = 0
    config_updates: dict[str, int] = field(default_factory=dict)
    pruned_heads_on_load: dict[int, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    applied: bool = True
    width_multiple: int = 1

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
            "width_multiple": self.width_multiple,
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
        padded = sum(row.kept_zero for row in ffn) if self.width_multiple > 1 else 0
        if padded:
            text += (
                f" FFN widths rounded up to a multiple of {self.width_multiple}: {padded} "
                "all-zero neurons kept (width_multiple 1 removes them)."
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


def config_pruned_heads(config: Any) -> dict[int, list[int]]:
    """``config.pruned_heads`` normalised (layer -> sorted heads), or ``{}``."""
    return normalise_pruned_heads(getattr(config, "pruned_heads", None))


def normalise_pruned_heads(raw: Any) -> dict[int, list[int]]:
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
    return any(id(submodule(owner, path)) in shared for path in paths)


def rounded_width(alive: int, width: int, multiple: int) -> int:
    """FFN width kept for ``alive`` live neurons of ``width``: rounded up to ``multiple``.

    At least one neuron is kept, and never more than ``width``: ``rounded_width(1535, 1536,
    16) == 1536``, ``rounded_width(1000, 1536, 16) == 1008``, ``rounded_width(0, 1536, 16) ==
    16``, ``rounded_width(1000, 1536, 1) == 1000``.
    """
    return min(width, -(-max(alive, 1) // multiple) * multiple)


def _padding_neurons(ffn: FfnBlock, dead: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` of the removable neurons ``dead``, those with the largest up-projection rows.

    They are kept as all-zero down-projection columns (so they add exactly zero); which ones is
    immaterial to the outputs, the largest rows are the ones a later fine-tune would most
    likely revive.
    """
    import torch

    norms = torch.zeros(dead.numel(), dtype=torch.float64)
    for path in ffn.ups:
        up = linear_at(ffn.owner, path)
        assert up is not None
        norms += up.weight.detach()[dead].double().pow(2).sum(dim=1).cpu()
    order = torch.argsort(-norms, stable=True)  # ties: the lowest index first
    return dead[order[:count]]


def _shrink_ffn(ffn: FfnBlock, apply: bool, notes: list[str], multiple: int) -> ShrinkRow:
    import torch

    down = linear_at(ffn.owner, ffn.down)
    assert down is not None
    width = down.in_features
    alive = (down.weight.detach() != 0).any(dim=0)
    live = torch.nonzero(alive).flatten()
    target = rounded_width(live.numel(), width, multiple)
    kept_zero = target - live.numel()
    if live.numel() == 0:
        kept = "one is kept" if target == 1 else f"{target} are kept (width_multiple)"
        notes.append(
            f"{ffn.name}: every FFN neuron has an all-zero down-projection column; {kept} "
            "(zero-width layers are not exported), the FFN adds only its output bias"
        )
    if kept_zero:
        dead = torch.nonzero(~alive).flatten()
        keep = torch.sort(torch.cat([live, _padding_neurons(ffn, dead, kept_zero)])).values
    else:
        keep = live
    removed = width - keep.numel()
    params = 0
    if removed:
        ups = [linear_at(ffn.owner, path) for path in ffn.ups]
        for up in ups:
            assert up is not None
            params += removed * (up.in_features + (up.bias is not None))
        params += removed * down.out_features
        if apply:
            for path, up in zip(ffn.ups, ups, strict=True):
                assert up is not None
                replace_submodule(ffn.owner, path, _select(up, keep, 0))
            replace_submodule(ffn.owner, ffn.down, _select(down, keep, 1))
            if isinstance(getattr(ffn.owner, "intermediate_size", None), int):
                setattr(ffn.owner, "intermediate_size", int(keep.numel()))  # noqa: B010
    return ShrinkRow(
        module=ffn.name,
        kind="ffn",
        family=ffn.family,
        layer=layer_index(ffn.name),
        before=width,
        kept=int(keep.numel()),
        parameters_removed=params,
        kept_zero=kept_zero,
    )


def _head_rows(heads: Sequence[int], head_size: int) -> list[int]:
    return [i for h in heads for i in range(h * head_size, (h + 1) * head_size)]


def _cut_heads(attention: AttentionBlock, keep_heads: Sequence[int]) -> None:
    """Keep only ``keep_heads`` (current numbering) of one attention module."""
    import torch

    holder = submodule(attention.owner, attention.heads_path)
    assert holder is not None
    head_size = int(getattr(holder, "attention_head_size"))  # noqa: B009
    index = torch.tensor(_head_rows(keep_heads, head_size), dtype=torch.long)
    for path in attention.qkv:
        layer = linear_at(attention.owner, path)
        assert layer is not None
        replace_submodule(attention.owner, path, _select(layer, index, 0))
    out = linear_at(attention.owner, attention.out)
    assert out is not None
    replace_submodule(attention.owner, attention.out, _select(out, index, 1))
    setattr(holder, attention.heads_attr, len(keep_heads))
    if isinstance(getattr(holder, "all_head_size", None), int):
        setattr(holder, "all_head_size", len(keep_heads) * head_size)  # noqa: B010


def _shrink_heads(attention: AttentionBlock, apply: bool, notes: list[str]) -> ShrinkRow:
    holder = submodule(attention.owner, attention.heads_path)
    out = linear_at(attention.owner, attention.out)
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
            layer = linear_at(attention.owner, path)
            assert layer is not None
            params += rows * (layer.in_features + (layer.bias is not None))
        params += rows * out.out_features
        if apply:
            _cut_heads(attention, keep)
    return ShrinkRow(
        module=attention.name,
        kind="heads",
        family=attention.family,
        layer=layer_index(attention.name),
        before=heads,
        kept=len(keep),
        removed_indices=removed,
        parameters_removed=params,
        kept_zero=kept_zero,
    )


def _update_config(
    model: torch.nn.Module, ffns: list[FfnBlock], rows: list[ShrinkRow], notes: list[str]
) -> dict[str, int]:
    """Set the config's FFN width when every FFN is the model's one FFN and they agree."""
    config = getattr(model, "config", None)
    ffn_rows = [row for row in rows if row.kind == "ffn"]
    if config is None or not ffn_rows or not any(row.removed for row in ffn_rows):
        return {}
    attrs = {ffn.config_attr for ffn in ffns}
    layers = next((getattr(config, a) for a in LAYER_COUNT_ATTRS if hasattr(config, a)), None)
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
    model: torch.nn.Module, attentions: list[AttentionBlock], rows: list[ShrinkRow]
) -> None:
    """Merge removed heads into ``config.pruned_heads`` in the original model's numbering."""
    config = getattr(model, "config", None)
    total = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None)
    if config is None or not isinstance(total, int):
        return
    pruned = config_pruned_heads(config)
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


def shrink_model(
    model: torch.nn.Module, *, dry_run: bool = False, width_multiple: int = 16
) -> ShrinkReport:
    """Remove FFN neurons and attention heads that are entirely zero, in place.

    A neuron is removable when its down-projection column is all zero; a head when its block of
    output-projection columns is all zero (see the module docstring for the layouts). Each
    FFN's kept width is rounded up to a multiple of ``width_multiple`` with removable neurons
    kept as zero columns (:func:`rounded_width`), so a layer that would lose only a few neurons
    keeps its full, kernel-friendly width. The model computes exactly what it computed before
    (up to float rounding of the now shorter sums). Unstructured sparsity removes nothing unless
    a whole column / block is zero.

    Args:
        model: A loaded Hugging Face (or any torch) model; changed in place unless ``dry_run``.
        dry_run: Only report what would be removed.
        width_multiple: Round kept FFN widths up to a multiple of this (>= 1; 1 removes every
            removable neuron). Heads are not rounded.

    Returns:
        The :class:`ShrinkReport`: per module neurons/heads before and kept, parameters removed,
        config attributes updated, and notes (e.g. an unrecognised layout: nothing removed).

    Raises:
        ObertDeployError: ``model`` is not a torch module, or ``width_multiple`` is below 1.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ObertDeployError(
            f"shrink_model needs a torch.nn.Module, got {type(model).__name__}; load the "
            "checkpoint first (obert_deploy.load_checkpoint)"
        )
    check_width_multiple(width_multiple, "shrink_model")
    report = ShrinkReport(applied=not dry_run, width_multiple=width_multiple)
    report.pruned_heads_on_load = config_pruned_heads(getattr(model, "config", None))
    report.parameters_before = _count(model)
    ffns, attentions = find_blocks(model)
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
            f"no FFN or attention layout of a known family found (expected {EXPECTED_LAYOUTS}); "
            f"{type(model).__name__} is not shrunk"
        )
        if any(p.ndim == 3 for p in model.parameters()):
            report.notes.append("3-D (fused mixture-of-experts) weights are not shrunk")
        report.parameters_after = report.parameters_before
        return report
    with torch.no_grad():
        ffn_rows = [
            _shrink_ffn(ffn, not dry_run, report.notes, width_multiple) for ffn in kept_ffns
        ]
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


def check_width_multiple(value: object, where: str) -> None:
    """Refuse a ``width_multiple`` that is not an integer >= 1.

    Raises:
        ArgumentError: Not an integer (``16.0``, ``"16"``, ``True``).
        ObertDeployError: Below 1.
    """
    check_type(value, "width_multiple", where, "int")
    assert isinstance(value, int)
    if value < 1:
        raise ObertDeployError(
            f"width_multiple must be >= 1, got {value}; pass 16 (the default: kept FFN widths "
            "rounded up to a multiple of 16) or 1 to remove every all-zero neuron"
        )


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
    _, attentions = find_blocks(model)
    by_layer = {
        layer_index(a.name): a
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
                f"expected {EXPECTED_LAYOUTS})"
            )
        holder = submodule(attention.owner, attention.heads_path)
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
