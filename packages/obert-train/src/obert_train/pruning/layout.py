"""Where the structural atoms of a model are: FFN neurons and attention heads per layer.

An *FFN atom* k is intermediate neuron k: row k of the up (and gate) projections, its bias, and
column k of the down projection.  A *head* h is rows ``[h·dh, (h+1)·dh)`` of the query, key and
value projections (and their biases) and the same columns of the attention output projection.
Removing an atom zeroes all of those; the layer's output then no longer depends on it, which is
what ``obert-deploy export`` detects to shrink the matrices (a zero down-projection column, a
zero block of output-projection columns).

Known layouts (module names inside each encoder/decoder layer):

==========================  ==========================================  ============================
family                      FFN (up / gate → down)                      attention (q, k, v → o)
==========================  ==========================================  ============================
BERT, RoBERTa, ELECTRA, …   ``intermediate.dense`` → ``output.dense``   ``attention.self.{query,key,
                                                                        value}`` → ``attention.
                                                                        output.dense``
DistilBERT                  ``ffn.lin1`` → ``ffn.lin2``                 ``attention.{q,k,v}_lin`` →
                                                                        ``attention.out_lin``
LLaMA, Qwen2, Mistral, …    ``mlp.{up_proj,gate_proj}`` →               ``self_attn.{q,k,v}_proj``
                            ``mlp.down_proj``                           → ``self_attn.o_proj``
==========================  ==========================================  ============================
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from obert_core.shared import ATTENTION_LAYOUTS, FFN_LAYOUTS
from obert_train.errors import TargetError

__all__ = [
    "AttentionAtoms",
    "ExpertAtoms",
    "FfnAtoms",
    "find_attention",
    "find_experts",
    "find_ffns",
]


@dataclass(frozen=True)
class FfnAtoms:
    """One FFN whose intermediate neurons are atoms.

    Attributes:
        name: The FFN's layer prefix (e.g. ``bert.encoder.layer.3``).
        ups: Modules whose output rows are the atoms (up, and gate where there is one).
        down: Module whose input columns are the atoms (``weight`` of shape ``(d, m)``).
        up_names: Qualified names of ``ups``.
        down_name: Qualified name of ``down``.
    """

    name: str
    ups: tuple[torch.nn.Linear, ...]
    down: torch.nn.Linear
    up_names: tuple[str, ...]
    down_name: str

    @property
    def width(self) -> int:
        """Number of atoms (intermediate size)."""
        return int(self.down.weight.shape[1])


@dataclass(frozen=True)
class AttentionAtoms:
    """One attention block whose heads are atoms.

    Attributes:
        name: The layer prefix.
        qkv: Query, key and value projections (rows ``[h·dh, (h+1)·dh)`` belong to head h).
        out: Output projection (columns of head h likewise).
        qkv_names: Qualified names of ``qkv``.
        out_name: Qualified name of ``out``.
        num_heads: Heads of the block.
        head_dim: ``dh``.
    """

    name: str
    qkv: tuple[torch.nn.Linear, ...]
    out: torch.nn.Linear
    qkv_names: tuple[str, ...]
    out_name: str
    num_heads: int
    head_dim: int


# (up names, down name) and (q, k, v, o) relative to a layer prefix, per family: the one table
# obert-deploy's shrinking reads too (obert_core.shared). The plain "mlp" layout is the gated one
# without its gate, which the gated entry already matches (the gate is optional below).
_FFN_LAYOUTS = tuple(f.layer_paths() for f in FFN_LAYOUTS if f.family != "mlp")
_ATTN_LAYOUTS = tuple(a.layer_paths() for a in ATTENTION_LAYOUTS)
_LAYER = re.compile(r"^(.*\.(?:layer|layers|h|block|blocks)\.\d+)$")


def _layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if _LAYER.match(n)]


def _linear(layer: torch.nn.Module, path: str) -> torch.nn.Linear | None:
    try:
        module = layer.get_submodule(path)
    except AttributeError:
        return None
    return module if isinstance(module, torch.nn.Linear) else None


def _expected() -> str:
    ffn = "; ".join(f"{' + '.join(u)} -> {d}" for u, d in _FFN_LAYOUTS)
    return f"expected FFN modules per layer like: {ffn}"


def find_ffns(model: torch.nn.Module) -> list[FfnAtoms]:
    """Every FFN of a known layout, in layer order.

    Raises:
        TargetError: If the model has no layer of a known FFN layout (naming what was expected).
    """
    found: list[FfnAtoms] = []
    for prefix, layer in _layers(model):
        for up_paths, down_path in _FFN_LAYOUTS:
            down = _linear(layer, down_path)
            ups = [(p, _linear(layer, p)) for p in up_paths]
            present = [(p, u) for p, u in ups if u is not None]
            if down is None or not present or present[0][0] != up_paths[0]:
                continue
            if down_path == "output.dense" and _linear(layer, "intermediate.dense") is None:
                continue
            width = int(down.weight.shape[1])
            if any(int(u.weight.shape[0]) != width for _, u in present):
                continue
            found.append(
                FfnAtoms(
                    prefix,
                    tuple(u for _, u in present),
                    down,
                    tuple(f"{prefix}.{p}" for p, _ in present),
                    f"{prefix}.{down_path}",
                )
            )
            break
    if not found:
        raise TargetError(
            f"{type(model).__name__} has no FFN of a known layout; {_expected()} (inside "
            "modules named '...layer.N' / '...layers.N')"
        )
    return found


def find_attention(model: torch.nn.Module) -> list[AttentionAtoms]:
    """Every attention block of a known layout whose heads can be removed, in layer order.

    Raises:
        TargetError: If none is found, if the head count does not divide the projection width,
            or for grouped-query attention (key/value heads shared by several query heads).
    """
    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None)
    found: list[AttentionAtoms] = []
    for prefix, layer in _layers(model):
        for qkv_paths, out_path in _ATTN_LAYOUTS:
            mods = [_linear(layer, p) for p in qkv_paths]
            out = _linear(layer, out_path)
            if out is None or any(m is None for m in mods):
                continue
            if not isinstance(heads, int) or heads < 1:
                raise TargetError(
                    f"{type(model).__name__}: config.num_attention_heads is {heads!r}; "
                    "head pruning needs the head count"
                )
            if kv_heads is not None and kv_heads != heads:
                raise TargetError(
                    f"{type(model).__name__} uses grouped-query attention ({heads} query heads, "
                    f"{kv_heads} key/value heads): removing one head would change the shared "
                    "key/value heads; prune FFN neurons only (structure='neurons')"
                )
            width = int(out.weight.shape[1])
            parent = layer.get_submodule(qkv_paths[0].rsplit(".", 1)[0])
            live = getattr(parent, "num_attention_heads", None)  # fewer after prune_heads
            n = live if isinstance(live, int) and live > 0 else heads
            if width % n:
                raise TargetError(
                    f"{prefix}.{out_path}: width {width} is not divisible by {n} heads"
                )
            found.append(
                AttentionAtoms(
                    prefix,
                    tuple(m for m in mods if m is not None),
                    out,
                    tuple(f"{prefix}.{p}" for p in qkv_paths),
                    f"{prefix}.{out_path}",
                    n,
                    width // n,
                )
            )
            break
    if not found:
        att = "; ".join(f"{', '.join(q)} -> {o}" for q, o in _ATTN_LAYOUTS)
        raise TargetError(
            f"{type(model).__name__} has no attention block of a known layout; expected per "
            f"layer: {att}"
        )
    return found


@dataclass(frozen=True)
class ExpertAtoms:
    """The fused experts of one MoE layer (transformers 5: 3-D ``gate_up_proj`` / ``down_proj``).

    Expert e's atom k (an *atomic expert*, HEAPr) is row k (gate) and row ``I + k`` (up) of
    ``gate_up_proj[e]`` (``(E, 2I, d)``) and column k of ``down_proj[e]`` (``(E, d, I)``).

    Attributes:
        name: Qualified name of the experts module.
        module: The module (its ``forward(hidden, top_k_index, top_k_weights)`` is wrapped
            during calibration).
        num_experts: E.
        width: I, the neurons of each expert.
    """

    name: str
    module: torch.nn.Module
    num_experts: int
    width: int


def find_experts(model: torch.nn.Module) -> list[ExpertAtoms]:
    """Every fused-experts module (Qwen2-MoE, OLMoE, Mixtral, ... in transformers 5).

    Raises:
        TargetError: If the model has none (naming the parameters that were expected).
    """
    found: list[ExpertAtoms] = []
    for name, module in model.named_modules():
        gate_up = getattr(module, "gate_up_proj", None)
        down = getattr(module, "down_proj", None)
        if not isinstance(gate_up, torch.nn.Parameter) or not isinstance(down, torch.nn.Parameter):
            continue
        if gate_up.dim() != 3 or down.dim() != 3 or not hasattr(module, "act_fn"):
            continue
        flags = {
            "has_bias": False,
            "has_gate": True,
            "has_post_expert_norm": False,
            "is_concatenated": True,
            "is_transposed": False,
        }
        odd = [f for f, want in flags.items() if getattr(module, f, want) != want]
        if odd:
            raise TargetError(
                f"{name} ({type(module).__name__}) computes its experts differently from the "
                f"gate/up/down form structured pruning supports ({', '.join(odd)}); prune "
                "FFN neurons of another layer type, or open an issue for this architecture"
            )
        experts, width = int(down.shape[0]), int(down.shape[2])
        if tuple(gate_up.shape[:2]) != (experts, 2 * width):
            continue
        found.append(ExpertAtoms(name, module, experts, width))
    if not found:
        raise TargetError(
            f"{type(model).__name__} has no fused MoE experts; expected modules with 3-D "
            "parameters gate_up_proj (E, 2I, d) and down_proj (E, d, I) and an act_fn "
            "(Qwen2-MoE, OLMoE, Mixtral in transformers 5)"
        )
    return found
