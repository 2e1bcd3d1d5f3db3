"""``torch.distributed`` helpers: who owns which Fisher blocks, and the collectives the pruner uses.

Fisher blocks are sharded *by parameter*: every target tensor is owned by one rank, which builds
its inverse-Fisher blocks, scores and OBS update; masks are chosen on the all-gathered scores so
every rank selects the same weights, and the owner broadcasts the updated tensor.  Works with any
backend (tests use gloo on CPU).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from obert_train.errors import OptionError

__all__ = ["DistContext", "shard_by_size"]


@dataclass(frozen=True)
class DistContext:
    """The process group the pruner runs in.

    Attributes:
        rank: This process's rank.
        world_size: Number of processes.
    """

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> DistContext:
        """The default process group if ``torch.distributed`` is initialised, else one process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def active(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks in place (no-op for one process)."""
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def reduce_sum(self, tensor: torch.Tensor, dst: int) -> torch.Tensor:
        """Sum ``tensor`` over ranks into rank ``dst`` (other ranks' copies are undefined)."""
        if self.active:
            dist.reduce(tensor, dst=dst, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
        """Overwrite ``tensor`` on every rank with rank ``src``'s copy."""
        if self.active:
            dist.broadcast(tensor, src=src)
        return tensor


def shard_by_size(numels: Mapping[str, int], world_size: int) -> dict[str, int]:
    """Assign each tensor to a rank, balancing the total number of weights per rank.

    Greedy longest-processing-time: tensors in decreasing size (ties by name) go to the rank
    with the fewest weights so far (ties to the lower rank).  Deterministic, so every rank
    computes the same assignment without communication.

    Args:
        numels: ``{name: number of weights}``.
        world_size: Number of ranks (>= 1).

    Returns:
        ``{name: owner rank}``.
    """
    if world_size < 1:
        raise OptionError(f"world_size must be >= 1, got {world_size}")
    load = [0] * world_size
    owners: dict[str, int] = {}
    for name in sorted(numels, key=lambda n: (-numels[n], n)):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        owners[name] = rank
        load[rank] += numels[name]
    return {name: owners[name] for name in numels}
