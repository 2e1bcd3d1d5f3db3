"""One mask state for the pruned tensors: keep-masks (True = kept) that never regrow.

The driver of a run (one-shot or the Trainer callback) owns one :class:`MaskState`.  Pruned
weights are held at exactly zero: the state masks every gradient as it is computed (tensor hooks,
so gradient clipping and the optimizer get zero gradients for pruned coordinates; the callback
also zeroes their optimizer moments when it prunes them) and re-zeroes the weights after every
optimizer step (:meth:`MaskState.apply`), whatever the optimizer or weight decay did.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

from obert_train.errors import ObertTrainError

__all__ = ["MaskState"]


class MaskState:
    """Flat keep-masks (True = kept) of the target tensors.

    Args:
        params: The target tensors by name.
        masks: Initial flat keep-masks; default: a weight is pruned iff it is exactly zero (so a
            pruned checkpoint keeps its pattern and a dense one starts fully kept).
    """

    def __init__(
        self,
        params: Mapping[str, torch.nn.Parameter],
        masks: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        self.params = dict(params)
        if masks is None:
            masks = {name: (p.detach() != 0).reshape(-1) for name, p in self.params.items()}
        self.masks: dict[str, torch.Tensor] = {}
        self._set(masks)
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._parent: MaskState | None = None

    def view(self, names: list[str]) -> MaskState:
        """A mask state over a subset of the tensors that writes its updates through to this one.

        Each pruning modifier of a recipe works on its own view (its sparsity is measured over
        its own tensors); the driver holds the one state of all of them.
        """
        child = MaskState({n: self.params[n] for n in names}, {n: self.masks[n] for n in names})
        child._parent = self
        return child

    def _set(self, masks: Mapping[str, torch.Tensor]) -> None:
        if set(masks) != set(self.params):
            missing = sorted(set(self.params) - set(masks))
            extra = sorted(set(masks) - set(self.params))
            raise ObertTrainError(
                f"masks do not match the target tensors (missing {missing[:4]}, extra {extra[:4]})"
            )
        for name, p in self.params.items():
            mask = masks[name].reshape(-1).to(device=p.device, dtype=torch.bool)
            if mask.numel() != p.numel():
                raise ObertTrainError(
                    f"mask of {name!r} has {mask.numel()} entries, the tensor {p.numel()}"
                )
            self.masks[name] = mask

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.masks)

    def __len__(self) -> int:
        return len(self.masks)

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, flat keep-mask)`` pairs."""
        return iter(self.masks.items())

    def as_dict(self) -> dict[str, torch.Tensor]:
        """A shallow copy ``{name: flat keep-mask}``."""
        return dict(self.masks)

    def update(self, new: Mapping[str, torch.Tensor]) -> None:
        """Replace the masks of the tensors in ``new`` and zero their newly pruned weights.

        Raises:
            ObertTrainError: If a new mask keeps a weight the current mask prunes (masks never
                regrow) or its size differs.
        """
        for name, mask in new.items():
            old = self.masks[name]
            mask = mask.reshape(-1).to(device=old.device, dtype=torch.bool)
            if mask.numel() != old.numel():
                raise ObertTrainError(
                    f"new mask of {name!r} has {mask.numel()} entries, the tensor {old.numel()}"
                )
            regrown = int((mask & ~old).sum())
            if regrown:
                raise ObertTrainError(
                    f"new mask of {name!r} would regrow {regrown} pruned weights; "
                    "masks never regrow"
                )
            self.masks[name] = mask
        if self._parent is not None:
            self._parent.update(new)
        self.apply(list(new))

    @torch.no_grad()
    def apply(self, names: list[str] | None = None) -> None:
        """Set the pruned weights to exactly zero (after every optimizer step)."""
        for name in names if names is not None else self.masks:
            p = self.params[name]
            p.mul_(self.masks[name].view(p.shape).to(p.dtype))

    def mask_gradients(self) -> None:
        """Register hooks that zero the gradient of every pruned weight as it is computed.

        Idempotent; :meth:`remove_hooks` undoes it.
        """
        if self._hooks:
            return
        for name, p in self.params.items():
            self._hooks.append(p.register_hook(self._grad_hook(name)))  # type: ignore[no-untyped-call]

    def _grad_hook(self, name: str) -> Any:
        def hook(grad: torch.Tensor) -> torch.Tensor:
            return grad * self.masks[name].view(grad.shape).to(grad.dtype)

        return hook

    def remove_hooks(self) -> None:
        """Remove the gradient hooks of :meth:`mask_gradients`."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    def sparsity(self) -> float:
        """Fraction of pruned weights over all target tensors."""
        total = sum(m.numel() for m in self.masks.values())
        kept = sum(int(m.sum()) for m in self.masks.values())
        return (total - kept) / total if total else 0.0

    def tensor_sparsity(self) -> dict[str, float]:
        """Fraction of pruned weights per tensor."""
        return {n: 1.0 - float(m.float().mean()) for n, m in self.masks.items()}

    def max_tensor_sparsity(self) -> float:
        """The largest per-tensor sparsity (the floor of a layer-wise target)."""
        return max(self.tensor_sparsity().values(), default=0.0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{name: bool mask}`` on the CPU, for checkpoints."""
        return {n: m.detach().cpu().clone() for n, m in self.masks.items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore masks saved by :meth:`state_dict` and zero the pruned weights."""
        self._set(state)
        if self._parent is not None:
            self._parent.load_state_dict({**self._parent.masks, **self.masks})
        self.apply()
