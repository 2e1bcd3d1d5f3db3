"""DeepZero's feature reuse: a perturbation inside stage ``k`` reruns only stages ``k, k+1, …``.

A model is seen as a chain of *stages* (modules called once per forward, in order, each output a
function of the previous one: the embeddings, each transformer layer, the pooler, the head). One
unperturbed forward records every stage's output; while a coordinate of stage ``k`` is perturbed,
stages ``0 … k−1`` return their recorded outputs instead of computing (their instance
``forward`` is replaced for the duration), so a coordinate-wise estimate (arXiv 2310.02025,
§4, "feature reuse"; docs/math.md §9, (Z-2)) costs the forward of the remaining stages only.
A parameter shared by several stages (tied embeddings) belongs to the earliest, and one in no
stage to none: both rerun the whole model, which is always correct.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from obert_train.errors import ModelError

__all__ = ["FeatureReuse", "default_stages"]


def default_stages(model: torch.nn.Module) -> list[str]:
    """The stages of a BERT-like Hugging Face model: embeddings, layers, pooler, head modules.

    Raises:
        ModelError: the model has no ``<base>.embeddings`` and ``<base>.encoder.layer``; pass
            the stage names yourself.
    """
    prefix = str(getattr(model, "base_model_prefix", "") or "")
    base = getattr(model, prefix, None) if prefix else None
    embeddings = getattr(base, "embeddings", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(embeddings, torch.nn.Module) or not isinstance(layers, torch.nn.ModuleList):
        raise ModelError(
            f"cannot find the stages of {type(model).__name__} (no {prefix or '<base>'}.embeddings "
            "and .encoder.layer); pass stages=[...] with its module names in forward order"
        )
    names = [f"{prefix}.embeddings"] + [f"{prefix}.encoder.layer.{i}" for i in range(len(layers))]
    if isinstance(getattr(base, "pooler", None), torch.nn.Module):
        names.append(f"{prefix}.pooler")
    for name, child in model.named_children():
        if name != prefix and any(True for _ in child.parameters()):
            names.append(name)
    return names


class FeatureReuse:
    """Records the stage outputs of one forward and replays those before a given stage.

    Args:
        model: The model.
        stages: Module names (as in ``model.named_modules()``) in forward order, none inside
            another.

    Raises:
        ModelError: an unknown or nested stage name.
    """

    def __init__(self, model: torch.nn.Module, stages: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        unknown = [n for n in stages if n not in modules]
        if unknown:
            raise ModelError(
                f"stages {unknown[:3]} are not modules of the model; use names of "
                "model.named_modules() in forward order"
            )
        for a in stages:
            for b in stages:
                if a != b and b.startswith(a + "."):
                    raise ModelError(f"stage {b!r} lies inside stage {a!r}; list disjoint modules")
        self.names = list(stages)
        self.modules = [modules[n] for n in stages]
        self._owner: dict[int, int] = {}
        for k, module in enumerate(self.modules):
            for p in module.parameters():
                self._owner.setdefault(id(p), k)
        self._outputs: list[Any] = []

    def stage_of(self, param: torch.nn.Parameter) -> int:
        """The first stage whose output ``param`` can change (0: rerun everything)."""
        return self._owner.get(id(param), 0)

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Record each stage's output during the forward run inside the block.

        Raises:
            ModelError: a stage ran other than exactly once (it cannot be replayed).
        """
        seen: list[list[Any]] = [[] for _ in self.modules]

        def hook(k: int) -> Any:
            def record(module: torch.nn.Module, args: Any, output: Any) -> None:
                seen[k].append(output)

            return record

        handles = [m.register_forward_hook(hook(k)) for k, m in enumerate(self.modules)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
        counts = [len(s) for s in seen]
        bad = [(n, c) for n, c in zip(self.names, counts, strict=True) if c != 1]
        if bad:
            raise ModelError(
                f"feature reuse needs every stage to run once per forward, got {bad[:3]} "
                "(name, runs); pass stages that the model calls once each, in order"
            )
        self._outputs = [s[0] for s in seen]

    @contextmanager
    def replay(self, stage: int) -> Iterator[None]:
        """Inside the block, stages ``0 … stage−1`` return their recorded outputs."""
        if stage and not self._outputs:
            raise ModelError("feature reuse: no forward was recorded; call recording() first")
        patched = self.modules[:stage]
        for module, output in zip(patched, self._outputs, strict=False):
            module.forward = _returning(output)
        try:
            yield
        finally:
            for module in patched:
                del module.forward


def _returning(output: Any) -> Any:
    def forward(*args: Any, **kwargs: Any) -> Any:
        return output

    return forward
