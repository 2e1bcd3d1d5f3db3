"""Output-space saliency of structured atoms (HEAPr, arXiv 2509.22299) and calibration statistics.

A layer ``y_t = W a_t`` (``W`` of shape ``(d, m)``, torch ``Linear`` layout) whose ``m`` input
columns are pruned in groups of ``g`` consecutive columns: an FFN *atom* is intermediate neuron
``k`` (``g = 1``: column ``k`` of the down projection, with row ``k`` of the up/gate
projections), an attention *head* ``h`` is the column block ``h·dh … (h+1)·dh − 1`` of the output
projection (``g = dh``, with the head's Q/K/V rows). Removing group ``q`` changes the output by

    Δy_t = −W_q a_{t,q}          (W_q = W[:, q-columns] ∈ R^{d×g},  a_{t,q} ∈ R^g)

and, with the per-token loss gradient ``g_t = ∂L/∂y_t`` at a (near-)optimum and the empirical Fisher
``g_t g_tᵀ`` standing in for the output-space Hessian, the loss by

    ΔL_q ≈ ½ (1/N) Σ_t (g_tᵀ Δy_t)² = ½ (1/N) Σ_t (b_{t,q} · a_{t,q})²,   b_t = Wᵀ g_t   (S-U)

(the *unfactorised* saliency; ``b_{t,q} · a_{t,q} = Σ_{j∈q} b_{t,j} a_{t,j}``, for ``g = 1`` simply
``(a_{t,k} · w_kᵀ g_t)²``). Treating ``a`` and ``g`` as independent factorises the expectation:

    ΔL_q ≈ ½ tr( A_qq · W_qᵀ G W_q ),   A = (1/N) Σ_t a_t a_tᵀ,   G = (1/N) Σ_t g_t g_tᵀ   (S-F)

which for ``g = 1`` is HEAPr's ``E[a_k²] · w_kᵀ G w_k`` (``vec(W_q)ᵀ (A_qq ⊗ G) vec(W_q)`` — the
Kronecker-factored Fisher). Both forms carry the ½ of the second-order model, like
:func:`~obert_core.obs_saliency`, so they are predicted loss increases in the same units and
directly comparable; HEAPr's published score is exactly 2× (S-F) (the ranking is the same).

Tokens are weighted (``token_weight``: a padding mask, or a routing indicator/count for an MoE
expert, so that ``N`` counts only the tokens routed to it); ``N = Σ_t token_weight_t``.

Tokens are the samples of the empirical Fisher, as in HEAPr: for a loss per sequence the exact
per-sample form would square ``Σ_{t∈seq} g_tᵀ Δy_t`` instead (cross-token terms are dropped). Scale:
``g_t`` is the gradient of the *summed* loss; autograd of a batch-mean loss gives ``g_t / B`` and
scales every score of that batch by ``1/B²`` — harmless for rankings when all batches have the same
``B``, otherwise multiply the gradients by ``B`` (or use ``reduction="sum"``).
"""

from __future__ import annotations

from typing import Any

from .._arrays import check_finite, framework_of
from .._errors import ObertError
from .._validate import check_choice
from ._common import as_rows, check_groups, group_blocks, token_weights, weight_matrix

__all__ = ["KINDS", "StructuredStats", "output_saliency"]

KINDS = ("factorised", "unfactorised")


class StructuredStats:
    """Streaming calibration statistics of one layer whose input columns are pruned in groups.

    Feed token batches as they come (forward hook: the layer's input ``a``; backward hook: the
    gradient of the loss w.r.t. the layer's output ``g``); nothing per token is stored. Accumulated,
    in float64 on the weight's device:

    * ``Σ_t w_t a_t a_tᵀ`` (``m×m``, with ``input_hessian=True``; else only its ``g×g`` diagonal
      blocks) and ``Σ_t w_t a_t`` — for :meth:`input_hessian` and the factorised score (S-F);
    * ``Σ_t w_t g_t g_tᵀ`` (``d×d``, with ``output_fisher=True``) — ``G`` of (S-F);
    * ``Σ_t w_t (b_{t,q} · a_{t,q})²`` per group — the unfactorised score (S-U), which needs the
      weight (it is copied at construction; build a new object after the weight changes).

    Args:
        weight: ``(d, m)`` weight of the layer (the down projection of an FFN or one expert, or the
            attention output projection), torch ``Linear`` layout (out × in). NumPy or torch; the
            statistics live in its framework and on its device.
        group_size: columns per atom: 1 for FFN neurons, the head dimension for attention heads.
        input_hessian: accumulate the full ``m×m`` ``E[a aᵀ]`` (needed for the OBS correction,
            ``O(T·m²)`` per batch); ``False`` keeps only its diagonal blocks (scores only).
        output_fisher: accumulate ``G`` (``d×d``, ``O(T·d²)``); needed only for ``"factorised"``.

    Example (one FFN, torch; ``a`` is ``(batch, seq, m)``, ``g`` is ``(batch, seq, d)``, ``mask``
    the ``(batch, seq)`` attention mask)::

        stats = StructuredStats(ffn.down_proj.weight)
        for a, g, mask in batches:
            stats.add(a, g, token_weight=mask)
        scores = stats.saliency("factorised")   # (m,), HEAPr / 2
        hessian = stats.input_hessian()          # (m, m) E[a aᵀ], for obs_group_correction
    """

    def __init__(
        self,
        weight: Any,
        *,
        group_size: int = 1,
        input_hessian: bool = True,
        output_fisher: bool = True,
    ) -> None:
        xp, w = weight_matrix(weight)
        self._xp = xp
        self._framework = framework_of(weight)
        self._w = w
        self._device = w.device if xp.torch else None
        self.out_features, self.in_features = int(w.shape[0]), int(w.shape[1])
        self.group_size, self.num_groups = check_groups(self.in_features, group_size)
        m, n, g = self.in_features, self.num_groups, self.group_size
        self._aa = xp.zeros((m, m)) if input_hessian else None
        self._ablocks = None if input_hessian else xp.zeros((n, g, g))
        self._asum = xp.zeros((m,))
        self._gg = xp.zeros((self.out_features, self.out_features)) if output_fisher else None
        self._unf = xp.zeros((n,))
        self._n_in = 0.0
        self._n_pair = 0.0

    @property
    def num_tokens(self) -> float:
        """``N`` of the input statistics: the sum of token weights of every batch added."""
        return self._n_in

    @property
    def num_grad_tokens(self) -> float:
        """``N`` of the gradient statistics: the sum of token weights of batches with ``grads``."""
        return self._n_pair

    def add(self, inputs: Any, grads: Any = None, *, token_weight: Any = None) -> None:
        """Add one batch of tokens.

        Args:
            inputs: ``(..., m)`` layer inputs ``a`` (e.g. ``(batch, seq, m)``); for an MoE expert,
                only the tokens routed to it (or pass all with a 0/1 ``token_weight``).
            grads: ``(..., d)`` gradients of the loss w.r.t. the layer output ``y`` for the same
                tokens (for an expert: before its routing weight multiplies it), or ``None`` for a
                forward-only batch (it then counts only towards :meth:`input_hessian`).
            token_weight: shape ``inputs.shape[:-1]``: a boolean/0-1 mask (padding excluded) or
                non-negative weights; default 1 per token.

        Raises:
            ObertError: wrong shapes, mixed frameworks, non-finite values, negative weights.
        """
        names = ("inputs", "grads", "token_weight")
        fw = framework_of(inputs, grads, token_weight, names=names)
        if fw != self._framework:
            raise ObertError(
                f"inputs are {fw} but the weight was {self._framework}; feed one framework "
                "(torch.from_numpy(x) or t.detach().cpu().numpy())."
            )
        xp, m, n, g = self._xp, self.in_features, self.num_groups, self.group_size
        dev = self._device
        a = as_rows(xp, inputs, m, "inputs", f"the layer input, m = weight.shape[1] = {m}", dev)
        lead = tuple(inputs.shape[:-1])
        if grads is not None:
            gshape = tuple(getattr(grads, "shape", ()))
            if gshape[:-1] != lead:
                raise ObertError(
                    f"grads must have the leading shape of inputs {lead} (one gradient per token), "
                    f"got shape {gshape}."
                )
        wt = None if token_weight is None else token_weights(xp, token_weight, lead, dev)
        aw = a if wt is None else a * wt[:, None]
        count = float(a.shape[0]) if wt is None else float(wt.sum())
        self._n_in += count
        self._asum = self._asum + aw.sum(0)
        if self._aa is not None:
            self._aa = self._aa + aw.T @ a
        else:
            t = a.shape[0]
            self._ablocks = self._ablocks + xp.einsum(
                "tqi,tqj->qij", aw.reshape(t, n, g), a.reshape(t, n, g)
            )
        if grads is None:
            return
        d = self.out_features
        gr = as_rows(xp, grads, d, "grads", f"the output gradient, d = weight.shape[0] = {d}", dev)
        self._n_pair += count
        if self._gg is not None:
            gw = gr if wt is None else gr * wt[:, None]
            self._gg = self._gg + gw.T @ gr
        u = (a * (gr @ self._w)).reshape(a.shape[0], n, g).sum(-1)  # b_{t,q} · a_{t,q}
        uu = u * u if wt is None else u * u * wt[:, None]
        self._unf = self._unf + uu.sum(0)

    def _need_inputs(self) -> None:
        if self._n_in <= 0:
            raise ObertError(
                f"no calibration tokens: num_tokens={self._n_in!r} (N = 0: nothing added, or every "
                "token masked out / never routed to this expert); add(inputs, ...) first."
            )

    def _need_grads(self) -> None:
        if self._n_pair <= 0:
            raise ObertError(
                f"no gradient tokens: num_grad_tokens={self._n_pair!r} (N = 0); the output-space "
                "statistics need add(inputs, grads) with the loss gradients of the layer output."
            )

    def input_hessian(self, *, bias: bool = False) -> Any:
        """``H = E[a aᵀ] = (1/N) Σ_t w_t a_t a_tᵀ``, ``(m, m)`` float64 (framework of the weight).

        Args:
            bias: return the ``(m+1, m+1)`` statistic of ``[a; 1]`` instead (last row/column
                ``E[a]`` and 1), for corrections that also update the layer bias
                (``obs_group_correction(..., bias=b)``).
        """
        if self._aa is None:
            raise ObertError(
                "the full input Hessian was not accumulated; build StructuredStats(..., "
                "input_hessian=True) (the default) to use the OBS correction."
            )
        self._need_inputs()
        h = self._aa / self._n_in
        if bias:
            xp, m = self._xp, self.in_features
            mean = self._asum / self._n_in
            out = xp.zeros((m + 1, m + 1))
            out[:m, :m] = h
            out[:m, m] = mean
            out[m, :m] = mean
            out[m, m] = 1.0
            h = out
        check_finite(h, "the input Hessian statistic")
        return h

    def output_fisher(self) -> Any:
        """``G = (1/N) Σ_t w_t g_t g_tᵀ``, ``(d, d)`` float64 (framework of the weight)."""
        if self._gg is None:
            raise ObertError(
                "G was not accumulated; build StructuredStats(..., output_fisher=True) (the "
                "default) for the factorised score."
            )
        self._need_grads()
        out = self._gg / self._n_pair
        check_finite(out, "the output Fisher statistic G")
        return out

    def input_blocks(self) -> Any:
        """The ``g×g`` diagonal blocks ``A_qq`` of ``E[a aᵀ]``, ``(num_groups, g, g)`` float64."""
        self._need_inputs()
        if self._aa is not None:
            blocks = group_blocks(self._xp, self._aa, self.num_groups, self.group_size)
        else:
            blocks = self._ablocks
        out = blocks / self._n_in
        check_finite(out, "the input statistic E[a aᵀ]")
        return out

    def saliency(self, kind: str = "factorised") -> Any:
        """Predicted loss increase of removing each group alone, ``(num_groups,)`` float64.

        Args:
            kind: ``"factorised"`` (S-F, HEAPr's score / 2) or ``"unfactorised"`` (S-U, exact under
                the empirical-Fisher quadratic model).
        """
        check_choice(kind, "kind", KINDS)
        xp, n, g = self._xp, self.num_groups, self.group_size
        if kind == "unfactorised":
            self._need_grads()
            out = 0.5 * self._unf / self._n_pair
        else:
            gmat = self.output_fisher()
            blocks = self.input_blocks()
            d = self.out_features
            w3 = self._w.reshape(d, n, g)
            gw3 = (gmat @ self._w).reshape(d, n, g)
            wgw = xp.einsum("dqi,dqj->qij", w3, gw3)  # W_qᵀ G W_q
            out = 0.5 * (wgw * blocks).sum(-1).sum(-1)
        check_finite(out, f"the {kind} saliency")
        return out


def output_saliency(
    weight: Any,
    inputs: Any,
    grads: Any,
    *,
    group_size: int = 1,
    kind: str = "factorised",
    token_weight: Any = None,
) -> Any:
    """One-shot output-space saliency (S-F or S-U) of every group of input columns of ``weight``.

    The same as feeding all tokens to one :class:`StructuredStats` (which streams batches).

    Args:
        weight: ``(d, m)`` layer weight (torch ``Linear`` layout).
        inputs: ``(..., m)`` layer inputs ``a``.
        grads: ``(..., d)`` loss gradients w.r.t. the layer output, same tokens.
        group_size: 1 for FFN neurons, the head dimension for attention heads.
        kind: ``"factorised"`` (HEAPr / 2) or ``"unfactorised"``.
        token_weight: ``inputs.shape[:-1]`` mask or non-negative weights.

    Returns:
        ``(m // group_size,)`` float64 predicted loss increases, framework of ``weight``.
    """
    check_choice(kind, "kind", KINDS)
    stats = StructuredStats(
        weight,
        group_size=group_size,
        input_hessian=False,
        output_fisher=kind == "factorised",
    )
    stats.add(inputs, grads, token_weight=token_weight)
    return stats.saliency(kind)
