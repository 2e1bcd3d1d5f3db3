"""Per-group weight gradients of ``nn.Linear`` layers from one backward pass over many groups.

The empirical Fisher of a pruning step needs m gradients, each the gradient of the mean loss over
one mini-batch ("group") of ``n`` examples (Kurtic et al. 2022, Sec. 3).  For a Linear layer
``Y = X Wᵀ + b`` the weight gradient of any loss is ``∂L/∂W = Σ_t dY_tᵀ X_t`` over the rows
``t`` (tokens) that went through it.  In eval mode the examples of different groups do not
interact, so one forward/backward pass over the concatenation of G groups with the loss
``L = (1/N) Σ_s ℓ_s`` (N loss terms in all, the model's own mean) gives each row's ``dY`` as
``(1/N) ∂ℓ_s/∂Y``, and the gradient of group g's own mean loss (``n_g`` terms) is

    ∂L_g/∂W = (N / n_g) · dY_gᵀ X_g,

one batched GEMM ``(G, out, n_g T) · (G, n_g T, in)`` over all groups (the per-example gradient
trick of Goodfellow 2015 and Opacus, here per group).  The weights themselves take no gradient:
every parameter is frozen during the pass and the graph starts at the outputs of the target
Linears that have no grad-requiring input; each target output passes through an identity
autograd function whose backward forms the G weight gradients from the saved input and the
incoming ``dY``, writing them straight into the sampler's buffer.

Groups collated to different lengths are right-padded to the longest (attention mask 0, labels
-100, ``input_ids`` with the model's pad token).  A padded position is masked out as a key in
every attention layer (its softmax weight is exactly 0) and feeds nothing else that reaches the
loss, so its ``dY`` is exactly 0 and it adds nothing to ``dY_gᵀ X_g``: the result equals the
per-group pass up to float32 round-off.  The sampler checks that claim once per sampler against
a sequential pass (see :class:`~obert_train.GradientSampler`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from obert_train.errors import DataError

__all__ = [
    "SavedBytes",
    "UngroupedError",
    "batched_group_grads",
    "concat_groups",
    "linear_modules",
]

# The keys concat_groups knows how to right-pad, with their padding values (None: pad token).
_PAD_VALUES: dict[str, int | None] = {
    "input_ids": None,
    "attention_mask": 0,
    "token_type_ids": 0,
    "labels": -100,
}


def linear_modules(
    model: torch.nn.Module, params: Mapping[str, torch.nn.Parameter]
) -> tuple[dict[str, torch.nn.Linear], str]:
    """The ``nn.Linear`` whose ``weight`` is each target parameter, or why there is none.

    Returns:
        ``({name: module}, "")`` when every target is the weight of exactly one Linear and appears
        nowhere else in the model (no tied weights); otherwise ``({}, reason)``.
    """
    uses: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        uses[id(p)] = uses.get(id(p), 0) + 1
    owner: dict[int, torch.nn.Linear] = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and type(module).forward is torch.nn.Linear.forward:
            owner[id(module.weight)] = module
    found: dict[str, torch.nn.Linear] = {}
    for name, p in params.items():
        if id(p) not in owner:
            return {}, f"{name!r} is not the weight of a plain torch.nn.Linear"
        if uses.get(id(p), 0) != 1:
            return {}, f"{name!r} is shared by several modules (tied weights)"
        found[name] = owner[id(p)]
    return found, ""


def _right_padded(mask: torch.Tensor) -> bool:
    """Whether every row of a 0/1 attention mask is ones followed by zeros."""
    m = mask.to(torch.int64)
    return bool(((m == 0) | (m == 1)).all()) and bool((m[:, 1:] <= m[:, :-1]).all())


def concat_groups(
    batches: Sequence[Mapping[str, torch.Tensor]], pad_token_id: int
) -> dict[str, torch.Tensor] | None:
    """The groups' batches as one batch, right-padded to the longest; None if not possible.

    Batches of equal shapes are concatenated as they are.  Otherwise only 2-D
    ``(rows, length)`` tensors of the keys ``input_ids``, ``attention_mask``, ``token_type_ids``
    and ``labels`` may differ, in their length only, every batch must carry a right-padded 0/1
    ``attention_mask`` (ones, then zeros), and they are padded with ``pad_token_id``, 0, 0 and
    -100.  Anything else (left padding, other keys of varying shape) gives None: the caller
    takes the groups one by one.
    """
    keys = list(batches[0])
    if any(list(b) != keys for b in batches):
        return None
    out: dict[str, torch.Tensor] = {}
    lengths: set[int] = set()
    for key in keys:
        values = [b[key] for b in batches]
        first = values[0]
        if all(v.shape[1:] == first.shape[1:] and v.dtype == first.dtype for v in values):
            out[key] = torch.cat(values)
            continue
        if key not in _PAD_VALUES or any(v.ndim != 2 for v in values):
            return None
        lengths.update(int(v.shape[1]) for v in values)
        pad = _PAD_VALUES[key]
        value = pad_token_id if pad is None else pad
        width = max(int(v.shape[1]) for v in values)
        out[key] = torch.cat(
            [torch.nn.functional.pad(v, (0, width - int(v.shape[1])), value=value) for v in values]
        )
    if lengths:
        masks = [b.get("attention_mask") for b in batches]
        if any(m is None or m.ndim != 2 or not _right_padded(m) for m in masks):
            return None
        for b in batches:  # every padded tensor of a batch must share that batch's length
            widths = {int(b[k].shape[1]) for k in keys if k in _PAD_VALUES and b[k].ndim == 2}
            if len(widths) > 1:
                return None
    return out


class UngroupedError(DataError):
    """A target Linear saw rows that are not the batch's examples in order (batch first)."""


class _Capture(torch.autograd.Function):
    """Identity on a Linear's output whose backward adds the per-group weight gradients."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, x: torch.Tensor, sink: _Sink) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.sink = sink
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        ctx.sink.add(x, dy)
        return dy, None, None


class _Sink:
    """Where one target's G gradients go: ``out[g] (+)= scale_g · dY_gᵀ X_g``."""

    def __init__(self, out: torch.Tensor, groups: int, scale: float | None) -> None:
        self.out, self.groups, self.scale, self.calls = out, groups, scale, 0

    def add(self, x: torch.Tensor, dy: torch.Tensor) -> None:
        g = self.groups
        xs = x.reshape(g, -1, x.shape[-1])
        dys = dy.reshape(g, -1, dy.shape[-1])
        target = self.out.view(g, dy.shape[-1], x.shape[-1])
        alpha = 1.0 if self.scale is None else self.scale
        if xs.dtype == target.dtype and dys.dtype == target.dtype:
            torch.baddbmm(
                target, dys.transpose(1, 2), xs, beta=1.0 if self.calls else 0.0, alpha=alpha,
                out=target,
            )  # fmt: skip
        else:
            part = torch.bmm(dys.transpose(1, 2), xs).to(target.dtype) * alpha
            target.copy_(part) if not self.calls else target.add_(part)
        self.calls += 1


def batched_group_grads(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, Mapping[str, torch.Tensor]], torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    modules: Mapping[str, torch.nn.Linear],
    out: Mapping[str, torch.Tensor],
    weights: Sequence[float],
) -> None:
    """Write the G per-group weight gradients of every target into ``out`` (one pass).

    Args:
        model: The model, in eval mode.
        loss_fn: ``loss_fn(model, batch)``, the mean of the batch's loss terms.
        batch: The G groups concatenated (:func:`concat_groups`), each group's rows contiguous
            and every group the same number of rows.
        modules: ``{name: nn.Linear}`` of the targets (:func:`linear_modules`).
        out: ``{name: float32 tensor (G, numel)}``, overwritten with group g's gradient of its
            own mean loss in row g.
        weights: The number of loss terms of each group (``n_g``); the loss of the whole batch
            is taken as their mean over ``N = Σ n_g`` terms.

    Raises:
        DataError: If a target received no gradient (it does not reach the loss).
        UngroupedError: If a target's input is not batch-first (e.g. sequence-first layouts,
            expert routing): the groups cannot be told apart.
    """
    groups = len(weights)
    rows = int(next(iter(batch.values())).shape[0])
    total = float(sum(weights))
    equal = all(w == weights[0] for w in weights)
    sinks = {n: _Sink(out[n], groups, total / weights[0] if equal else None) for n in modules}
    roots: list[torch.Tensor] = []

    def hook_for(name: str) -> Callable[..., torch.Tensor]:
        def hook(
            _module: torch.nn.Module,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            y: torch.Tensor,
        ) -> torch.Tensor:
            x = args[0] if args else kwargs["input"]
            if x.ndim < 2 or x.shape[0] != rows or y.shape[0] != rows:
                raise UngroupedError(
                    f"target {name!r} saw an input of shape {tuple(x.shape)}, not the batch's "
                    f"{rows} examples first; its rows cannot be split into groups"
                )
            if not y.requires_grad:  # no target upstream: the graph starts here
                y = y.detach().requires_grad_()
                roots.append(y)
            return _Capture.apply(y, x.detach(), sinks[name])  # type: ignore[no-any-return,no-untyped-call]

        return hook

    frozen = [p for p in model.parameters() if p.requires_grad]
    handles = [m.register_forward_hook(hook_for(n), with_kwargs=True) for n, m in modules.items()]
    try:
        for p in frozen:
            p.requires_grad_(False)
        loss = loss_fn(model, batch)
        if not roots or not loss.requires_grad:
            raise DataError(
                "the loss does not depend on the target weights "
                f"({', '.join(list(modules)[:3])} ...); check the target parameters"
            )
        torch.autograd.grad(loss, roots, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
        for p in frozen:
            p.requires_grad_(True)
    for name, sink in sinks.items():
        if sink.calls == 0:
            raise DataError(
                f"target {name!r} received no gradient: its output does not reach the loss"
            )
        if not equal:
            scale = torch.tensor(
                [total / w for w in weights], dtype=out[name].dtype, device=out[name].device
            )
            out[name].mul_(scale[:, None])


class SavedBytes:
    """Bytes autograd saves for backward inside the context (parameters excluded).

    ``linear`` counts tensors with the sequence length once in their shape, ``quadratic`` those
    with it twice (attention scores), so an estimate can scale each with the padded length.
    """

    def __init__(self, model: torch.nn.Module, length: int) -> None:
        self.length = length
        self.linear = 0
        self.quadratic = 0
        self._params = {p.data_ptr() for p in model.parameters()}
        self._seen: set[int] = set()
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr in self._params or ptr in self._seen:
            return t
        self._seen.add(ptr)
        nbytes = t.untyped_storage().nbytes()
        if self.length > 1 and list(t.shape).count(self.length) >= 2:
            self.quadratic += nbytes
        else:
            self.linear += nbytes
        return t

    def __enter__(self) -> SavedBytes:
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
