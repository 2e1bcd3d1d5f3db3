"""Where the structural atoms of a Transformer layer are, per model family.

An *FFN neuron* k is row k of the up (and gate) projections and column k of the down
projection; a *head* h is rows ``[h·dh, (h+1)·dh)`` of the query, key and value projections and
the same columns of the attention output projection (Michel et al. 2019; Kurtic et al. 2023,
ZipLM).  obert-train prunes these atoms and obert-deploy removes them physically; both read the
module names from this one table.

Paths are module names relative to a *block*: the FFN or attention module inside one encoder or
decoder layer (``""`` is the layer itself).  A path relative to the layer is
``f"{block}.{path}"``; see :meth:`FfnLayout.layer_paths` and :meth:`AttentionLayout.layer_paths`.

==============  =============================================  =============================
family          FFN (up, gate → down)                          attention (q, k, v → o)
==============  =============================================  =============================
``bert``        ``intermediate.dense`` → ``output.dense``      ``attention.self.{query,key,
                                                               value}`` → ``attention.output.
                                                               dense``
``distilbert``  ``ffn.lin1`` → ``ffn.lin2``                    ``attention.{q,k,v}_lin`` →
                                                               ``attention.out_lin``
``gated-mlp``   ``mlp.{up_proj,gate_proj}`` → ``mlp.down_proj``  ``self_attn.{q,k,v}_proj`` →
                                                               ``self_attn.o_proj``
``mlp``         ``mlp.up_proj`` → ``mlp.down_proj``            (as ``gated-mlp``)
==============  =============================================  =============================

BERT's layout covers RoBERTa, ELECTRA and the other BERT-style encoders; ``gated-mlp`` covers
LLaMA, Qwen2, Mistral and their relatives.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ATTENTION_LAYOUTS", "FFN_LAYOUTS", "AttentionLayout", "FfnLayout", "describe_layouts"]


def _join(block: str, path: str) -> str:
    return f"{block}.{path}" if block else path


@dataclass(frozen=True)
class FfnLayout:
    """Module names of one family's feed-forward block.

    Attributes:
        family: Family name (``bert``, ``distilbert``, ``gated-mlp``, ``mlp``).
        block: The FFN's module inside a layer (``""``: the layer itself).
        ups: Projections whose output rows are the neurons, relative to ``block``; the up
            projection first, then the gate where the family has one.
        down: Projection whose input columns are the neurons, relative to ``block``.
        width_attr: Config attribute holding the FFN width (``intermediate_size``, ...).
    """

    family: str
    block: str
    ups: tuple[str, ...]
    down: str
    width_attr: str

    def layer_paths(self) -> tuple[tuple[str, ...], str]:
        """``(ups, down)`` relative to the layer instead of the block."""
        return tuple(_join(self.block, p) for p in self.ups), _join(self.block, self.down)


@dataclass(frozen=True)
class AttentionLayout:
    """Module names of one family's self-attention block.

    Attributes:
        family: Family name.
        block: The attention module inside a layer.
        holder: Submodule of ``block`` that holds the head count and head size (``""``: the
            block itself), or ``None`` where the count is read from the model config only.
        qkv: Query, key and value projections, relative to ``block``.
        out: Output projection, relative to ``block``.
        heads_attr: Attribute of ``holder`` holding the (live) head count, or ``None`` as for
            ``holder``.
    """

    family: str
    block: str
    holder: str | None
    qkv: tuple[str, str, str]
    out: str
    heads_attr: str | None

    def layer_paths(self) -> tuple[tuple[str, ...], str]:
        """``(qkv, out)`` relative to the layer instead of the block."""
        return tuple(_join(self.block, p) for p in self.qkv), _join(self.block, self.out)


FFN_LAYOUTS: tuple[FfnLayout, ...] = (
    FfnLayout("bert", "", ("intermediate.dense",), "output.dense", "intermediate_size"),
    FfnLayout("distilbert", "ffn", ("lin1",), "lin2", "hidden_dim"),
    FfnLayout("gated-mlp", "mlp", ("up_proj", "gate_proj"), "down_proj", "intermediate_size"),
    FfnLayout("mlp", "mlp", ("up_proj",), "down_proj", "intermediate_size"),
)
"""The known FFN layouts, most specific first (a gated MLP before a plain one)."""

ATTENTION_LAYOUTS: tuple[AttentionLayout, ...] = (
    AttentionLayout(
        "bert",
        "attention",
        "self",
        ("self.query", "self.key", "self.value"),
        "output.dense",
        "num_attention_heads",
    ),
    AttentionLayout(
        "distilbert", "attention", "", ("q_lin", "k_lin", "v_lin"), "out_lin", "n_heads"
    ),
    AttentionLayout("gated-mlp", "self_attn", None, ("q_proj", "k_proj", "v_proj"), "o_proj", None),
)
"""The known attention layouts."""


def describe_layouts() -> str:
    """One line naming every known layout, relative to a layer, for error messages."""
    ffn = "; ".join(f"{' + '.join(u)} -> {d}" for u, d in (f.layer_paths() for f in FFN_LAYOUTS))
    attention = "; ".join(
        f"{', '.join(qkv)} -> {out}" for qkv, out in (a.layer_paths() for a in ATTENTION_LAYOUTS)
    )
    return f"FFN: {ffn}; attention: {attention}"
