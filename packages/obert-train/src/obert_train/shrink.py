"""Physically smaller checkpoints of structurally pruned models, loadable by plain transformers.

Structured pruning (:class:`~obert_train.pruning.structured.StructuredPruning`) removes FFN
neurons and attention heads by zeroing them: the checkpoint keeps the original shapes (the
*zero-padded form*), which ``from_pretrained`` loads as is.  :func:`shrink_model` removes the
zeros from the tensors and says so in the config, so ``save_pretrained`` writes a checkpoint
whose matrices are smaller and that plain ``AutoModelFor....from_pretrained(path)`` loads:

* **FFN neurons**: neuron ``k`` of a layer is gone when column ``k`` of its down projection is
  all zero (its output then never depends on the neuron, whatever its up row holds).  A
  config has one width for every layer (``intermediate_size``; DistilBERT ``hidden_dim``), so
  the layers must keep the same number of neurons: structured pruning with
  ``allocation: uniform``.  Rows of the up (and gate) projections, their biases and columns of
  the down projection of the gone neurons are dropped; ``config.intermediate_size`` becomes the
  kept count.  With ``pad=True`` layers of different widths are cut to the widest one (the
  others keep some zero neurons, exactly as before).
* **Attention heads**: head ``h`` is gone when its block of output-projection columns is all
  zero.  BERT-like models (BERT, RoBERTa, MiniLM, DistilBERT, ...) in transformers 5 compute the
  head size as ``hidden_size / num_attention_heads`` and have no ``pruned_heads`` any more
  (transformers 4's ``config.pruned_heads`` and ``prune_heads`` were removed), so a smaller
  ``num_attention_heads`` would change the head size: their attention stays in the zero-padded
  form, exact (a zero head's values are zero and its output columns too).  Models whose config
  states the head size (``config.head_dim``: LLaMA, Qwen2, Mistral without grouped-query
  attention) get ``num_attention_heads`` (and ``num_key_value_heads``) = the kept count, when
  every layer keeps the same number.
* **Layers** dropped by :func:`~obert_train.drop_layers` (or a recipe's
  ``!LayerDroppingModifier``) are already gone from the checkpoint (``num_hidden_layers``).

Where per-layer widths differ (``allocation: global``), what loads is: the zero-padded
checkpoint (the run folder itself, same shapes, plain ``from_pretrained``), its ONNX export
(``obert-deploy export`` removes each layer's zero rows/columns), or :func:`shrink_model` with
``pad=True`` (every layer at the widest layer's width).

The result is checked before it is returned: a fresh model built from the new config alone
must have exactly the new tensors' shapes (what ``from_pretrained`` builds), and the shrunk
model's outputs must equal the zero-padded model's (:func:`max_output_difference`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import torch

from obert_train._validate import check_mapping, check_path
from obert_train.errors import ArgumentError, ModelError, TargetError
from obert_train.pruning.layout import AttentionAtoms, FfnAtoms, find_attention, find_ffns

__all__ = [
    "FFN_WIDTH_FIELDS",
    "SHRINK_REPORT_FILE",
    "check_same_outputs",
    "max_output_difference",
    "save_shrunk",
    "shrink_model",
]

SHRINK_REPORT_FILE = "shrink.json"
"""What :func:`shrink_model` removed (sizes before and after), beside the shrunk checkpoint."""

FFN_WIDTH_FIELDS = ("intermediate_size", "hidden_dim", "ffn_dim", "n_inner")
"""Config fields that hold the FFN width, by family (BERT/LLaMA, DistilBERT, OPT, GPT-2)."""

_TOLERANCE = 1e-4
"""Largest output difference :func:`shrink_model` accepts (relative to the outputs' scale)."""


def _alive_neurons(ffn: FfnAtoms) -> torch.Tensor:
    """Indices of the neurons whose down-projection column is not all zero."""
    return ffn.down.weight.detach().ne(0).any(0).nonzero().flatten()


def _alive_heads(att: AttentionAtoms) -> torch.Tensor:
    """Indices of the heads whose output-projection columns are not all zero."""
    w = att.out.weight.detach().reshape(att.out.weight.shape[0], att.num_heads, att.head_dim)
    return w.ne(0).any(-1).any(0).nonzero().flatten()


def _width_field(config: Any, width: int) -> str:
    """The config field holding the FFN width ``width``.

    Raises:
        ModelError: If no known field holds it.
    """
    for name in FFN_WIDTH_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value == width:
            return name
    raise ModelError(
        f"{type(config).__name__} has no FFN width field ({', '.join(FFN_WIDTH_FIELDS)}) equal "
        f"to the FFN width {width}; shrink supports configs with one FFN width for all layers"
    )


def _linear(old: torch.nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None) -> Any:
    """A new Linear with the ``rows`` (outputs) and ``cols`` (inputs) of ``old`` kept."""
    weight = old.weight.detach()
    if rows is not None:
        weight = weight[rows]
    if cols is not None:
        weight = weight[:, cols]
    bias = old.bias
    new = torch.nn.Linear(
        int(weight.shape[1]),
        int(weight.shape[0]),
        bias=bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias.detach()[rows] if rows is not None else bias.detach())
    new.train(old.training)
    return new


def _replace(model: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


def _head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    return (heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).flatten()


def _fill(alive: torch.Tensor, size: int, width: int) -> torch.Tensor:
    """``alive`` plus the first gone indices up to ``width`` entries, in increasing order."""
    live = set(alive.tolist())
    gone = [i for i in range(size) if i not in live]
    extra = torch.as_tensor(gone[: width - len(alive)], dtype=alive.dtype)
    return torch.sort(torch.cat([alive, extra])).values


def _check_describes(model: torch.nn.Module, config: Any) -> None:
    """A model built from ``config`` alone has exactly the shrunk model's tensor shapes.

    Raises:
        ModelError: Naming a tensor that ``from_pretrained`` would build another shape.
    """
    with torch.device("meta"):
        fresh = type(model)(config)
    want = {n: tuple(p.shape) for n, p in fresh.named_parameters()}
    have = {n: tuple(p.shape) for n, p in model.named_parameters()}
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))
        raise ModelError(
            f"the shrunk {type(model).__name__} has tensors its new config would build with "
            f"other shapes (e.g. {diff[:2]}); this architecture cannot be shrunk: load the "
            "zero-padded checkpoint or its ONNX export (obert-deploy export)"
        )


def _heads_plan(
    model: torch.nn.Module, config: Any
) -> tuple[list[AttentionAtoms], list[torch.Tensor], str | None]:
    """The attention blocks, their live heads, and why heads stay zero-padded (None: they go)."""
    try:
        blocks = find_attention(model)
    except TargetError as exc:
        return [], [], f"attention not shrunk: {exc}"
    alive = [_alive_heads(b) for b in blocks]
    counts = [len(a) for a in alive]
    if all(c == b.num_heads for c, b in zip(counts, blocks, strict=True)):
        return blocks, alive, "every head is kept"
    head_dim = getattr(config, "head_dim", None)
    if not isinstance(head_dim, int) or isinstance(head_dim, bool):
        return (
            blocks,
            alive,
            f"{type(config).__name__} has no head_dim: the head size is hidden_size / "
            "num_attention_heads, so fewer heads cannot be stated in the config (transformers 5 "
            "has no pruned_heads); the removed heads stay as zeros (exact), obert-deploy export "
            "removes them from the ONNX graph",
        )
    if len(set(counts)) > 1:
        return (
            blocks,
            alive,
            f"layers keep different numbers of heads ({counts}); one num_attention_heads "
            "cannot state them: the removed heads stay as zeros (prune with allocation: "
            "uniform to shrink them)",
        )
    if 0 in counts:
        return blocks, alive, "a layer has no head left; heads stay as zeros"
    trial = copy.deepcopy(config)
    trial.num_attention_heads = counts[0]
    if getattr(trial, "num_key_value_heads", None) is not None:
        trial.num_key_value_heads = counts[0]
    validate = getattr(trial, "validate", None)
    try:
        if callable(validate):
            validate()
    except Exception as exc:  # transformers' own config rules (e.g. hidden_size % heads)
        cause = exc.__cause__ or exc
        return (
            blocks,
            alive,
            f"{type(config).__name__} refuses num_attention_heads = {counts[0]} ({cause}); the "
            "removed heads stay as zeros (exact), obert-deploy export removes them",
        )
    return blocks, alive, None


def shrink_model(model: torch.nn.Module, *, pad: bool = False) -> dict[str, Any]:
    """Remove the zeroed FFN neurons (and heads, where the config can say so) physically.

    See the module docstring for what is removed and why heads of BERT-like models stay.  The
    model is changed in place only when every check passed; on an error it is unchanged.

    Args:
        model: A ``transformers`` model pruned structurally (zero down-projection columns).
        pad: If the layers keep different numbers of neurons, cut every layer to the widest
            one instead of refusing.

    Returns:
        A report: ``ffn_field``, ``intermediate_size`` before/after, per-layer kept neurons,
        ``num_attention_heads`` before/after, per-layer kept heads, ``heads`` (what happened to
        them), ``num_hidden_layers``, ``parameters`` before/after.

    Raises:
        ModelError: If the model has no config or no FFN of a known layout, nothing was
            removed, a layer has no neuron left, the layers' widths differ (without ``pad``), or
            the new config does not describe the new tensors; the message says what can be
            loaded instead.
    """
    config = getattr(model, "config", None)
    if config is None:
        raise ModelError(f"{type(model).__name__} has no config; shrink needs a HF model")
    try:
        ffns = find_ffns(model)
    except TargetError as exc:
        raise ModelError(f"cannot shrink: {exc}") from None
    width = ffns[0].width
    if any(f.width != width for f in ffns):
        raise ModelError(
            f"the FFNs of {type(model).__name__} have different widths "
            f"({[f.width for f in ffns]}); shrink needs one configured width"
        )
    field = _width_field(config, width)
    alive = [_alive_neurons(f) for f in ffns]
    counts = [len(a) for a in alive]
    empty = [f.name for f, c in zip(ffns, counts, strict=True) if c == 0]
    if empty:
        raise ModelError(
            f"{empty[0]} has no FFN neuron left ({len(empty)} such layer(s)); a config cannot "
            f"say {field} = 0 for one layer: load the zero-padded checkpoint, or export it with "
            "obert-deploy export (the ONNX graph removes each layer's zeros)"
        )
    new_width = max(counts)
    if len(set(counts)) > 1 and not pad:
        shown = ", ".join(f"{f.name}: {c}" for f, c in zip(ffns, counts, strict=True))
        raise ModelError(
            f"the layers keep different numbers of FFN neurons ({shown}); a config has one "
            f"{field} for all layers. Load the zero-padded checkpoint as it is (same shapes, "
            "plain from_pretrained), export it with obert-deploy export (ONNX, each layer "
            f"shrunk), shrink with --pad-to-widest ({field} = {new_width}), or prune with "
            "allocation: uniform"
        )
    keep = [a if len(a) == new_width else _fill(a, width, new_width) for a in alive]
    blocks, heads_alive, heads_note = _heads_plan(model, config)
    if new_width == width and heads_note is not None:
        raise ModelError(
            f"{type(model).__name__} has no FFN neuron removed (every down-projection column "
            f"of its {len(ffns)} layers holds a non-zero) and no head that its config can "
            "drop: nothing to shrink; prune it first (structured pruning, allocation: uniform)"
        )
    new_config = copy.deepcopy(config)
    setattr(new_config, field, new_width)
    head_counts = [len(a) for a in heads_alive]
    old_heads = getattr(config, "num_attention_heads", None)
    if heads_note is None:
        new_config.num_attention_heads = head_counts[0]
        if getattr(config, "num_key_value_heads", None) is not None:
            new_config.num_key_value_heads = head_counts[0]
    before = sum(p.numel() for p in model.parameters())
    originals: list[tuple[str, torch.nn.Module]] = []

    def swap(name: str, module: torch.nn.Module) -> None:
        originals.append((name, model.get_submodule(name)))
        _replace(model, name, module)

    try:
        for ffn, idx in zip(ffns, keep, strict=True):
            for up, up_name in zip(ffn.ups, ffn.up_names, strict=True):
                swap(up_name, _linear(up, idx, None))
            swap(ffn.down_name, _linear(ffn.down, None, idx))
        if heads_note is None:
            for block, idx in zip(blocks, heads_alive, strict=True):
                rows = _head_rows(idx, block.head_dim)
                for proj, proj_name in zip(block.qkv, block.qkv_names, strict=True):
                    swap(proj_name, _linear(proj, rows, None))
                swap(block.out_name, _linear(block.out, None, rows))
        _check_describes(model, new_config)
    except BaseException:
        for name, module in reversed(originals):
            _replace(model, name, module)
        raise
    setattr(config, field, new_width)  # the model's own config, shared by its modules
    if heads_note is None:
        config.num_attention_heads = new_config.num_attention_heads
        if getattr(config, "num_key_value_heads", None) is not None:
            config.num_key_value_heads = new_config.num_key_value_heads
        for module in model.modules():  # attention modules that kept their own head count
            for attr in ("num_heads", "num_attention_heads", "num_key_value_heads"):
                value = getattr(module, attr, None)
                if module is not model and isinstance(value, int) and value == old_heads:
                    setattr(module, attr, head_counts[0])
    return {
        "ffn_field": field,
        "intermediate_size": {"before": width, "after": new_width},
        "kept_neurons": counts,
        "padded": len(set(counts)) > 1,
        "num_attention_heads": {
            "before": old_heads,
            "after": head_counts[0] if heads_note is None else old_heads,
        },
        "kept_heads": head_counts,
        "heads": "removed" if heads_note is None else heads_note,
        "num_hidden_layers": getattr(config, "num_hidden_layers", None),
        "parameters": {"before": before, "after": sum(p.numel() for p in model.parameters())},
    }


def _probe_inputs(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Two token sequences (one padded) of the model's vocabulary, on its device."""
    config = getattr(model, "config", None)
    vocab = int(getattr(config, "vocab_size", 100) or 100)
    positions = int(getattr(config, "max_position_embeddings", 16) or 16)
    length = max(2, min(12, positions))
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, length // 2 :] = 0
    device = next(model.parameters()).device
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def _float_outputs(out: Any) -> dict[str, torch.Tensor]:
    """Every floating-point output tensor but the loss (logits, start/end logits, ...)."""
    if hasattr(out, "items"):
        found = {
            str(k): v
            for k, v in out.items()
            if isinstance(v, torch.Tensor) and k != "loss" and v.is_floating_point()
        }
        if found:
            return found
    if isinstance(out, Sequence) and out and isinstance(out[0], torch.Tensor):
        return {"0": out[0]}
    raise ModelError(f"cannot compare outputs of type {type(out).__name__}")


def max_output_difference(
    a: torch.nn.Module, b: torch.nn.Module, inputs: dict[str, torch.Tensor] | None = None
) -> float:
    """Largest absolute difference of the two models' outputs (logits) on the same tokens.

    Args:
        a: One model (eval mode is set for the comparison and restored).
        b: The other (the same vocabulary).
        inputs: Model inputs; default two sequences of 12 seeded tokens, one half padding.

    Returns:
        ``max |a(x) - b(x)|`` in float64 over every floating-point output (``inf`` when the two
        models do not return the same outputs).
    """
    batch = inputs if inputs is not None else _probe_inputs(a)
    outs = [_outputs_of(model, batch) for model in (a, b)]
    if set(outs[0]) != set(outs[1]):
        return float("inf")
    return max(float((outs[0][k] - outs[1][k]).abs().max()) for k in outs[0])


def _outputs_of(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return {k: v.double() for k, v in _float_outputs(model(**batch)).items()}
    finally:
        model.train(was)


def check_same_outputs(
    shrunk: torch.nn.Module,
    padded: torch.nn.Module,
    inputs: dict[str, torch.Tensor] | None = None,
) -> float:
    """The shrunk model computes what the zero-padded one computes (:data:`_TOLERANCE`).

    Args:
        shrunk: The shrunk model (or a checkpoint of it loaded back).
        padded: The zero-padded model it came from.
        inputs: Model inputs (e.g. dev examples); default two seeded token sequences.

    Returns:
        The largest absolute difference.

    Raises:
        ModelError: If it is larger than ``1e-4 · max(1, max |output|)``.
        ArgumentError: ``inputs`` is not a dict of model inputs.
    """
    check_mapping(inputs, "inputs", "check_same_outputs")
    batch = inputs if inputs is not None else _probe_inputs(padded)
    diff = max_output_difference(shrunk, padded, batch)
    scale = max(float(v.abs().max()) for v in _outputs_of(padded, batch).values())
    if diff > _TOLERANCE * max(1.0, scale):
        raise ModelError(
            f"the shrunk model's outputs differ from the zero-padded model's by {diff:.3g} "
            f"(outputs up to {scale:.3g}); the removed parts were not all zero: this is a bug, "
            "please report it with the checkpoint"
        )
    return diff


def save_shrunk(
    model: torch.nn.Module,
    output_dir: str | os.PathLike[str],
    report: dict[str, Any],
    *,
    tokenizer: Any = None,
) -> None:
    """Save a model :func:`shrink_model` shrank, with its :data:`SHRINK_REPORT_FILE`, atomically.

    The checkpoint is what ``obert-train shrink`` writes: plain ``from_pretrained`` loads it,
    and ``sparsity.json`` reports the layers' matrices (:func:`obert_train.save_checkpoint`).

    Args:
        model: The shrunk model.
        output_dir: The checkpoint folder.
        report: :func:`shrink_model`'s report (and anything to record with it, e.g. the source).
        tokenizer: Saved with the model when given.

    Raises:
        ArgumentError: ``output_dir`` is not a path or ``report`` not a dict (before any write).
    """
    import re

    check_path(output_dir, "output_dir", "save_shrunk")
    if check_mapping(report, "report", "save_shrunk") is None:
        raise ArgumentError(
            "save_shrunk: report=None must be a dict (shrink_model's report), got NoneType"
        )

    from obert_train.checkpoint import json_text, save_checkpoint
    from obert_train.layers import find_layers

    name, _ = find_layers(model)
    weights = [
        rf"^{re.escape(n)}$"
        for n, p in model.named_parameters()
        if n.startswith(name + ".") and p.dim() == 2
    ]
    save_checkpoint(
        model,
        output_dir,
        tokenizer=tokenizer,
        patterns=weights,
        extra_files={SHRINK_REPORT_FILE: json_text(report) + "\n"},
    )
