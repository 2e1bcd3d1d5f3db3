"""Memory planning for an oBERT step: fit the block inverse-Fisher into RAM, group by group.

The inverse-Fisher blocks of a tensor with d weights take ``4 * ceil(d/B) * B**2`` bytes in fp32
(Kurtic et al. 2022, Sec. 3.2; BERT-base encoder at B = 50: about 17 GB); the batched build also
holds a Gram accumulator.  While it is built, the gradient sampler holds a chunk of ``k``
flattened gradients (``4 * k * d`` bytes) and autograd one full gradient (``4 * d``).  For the
whole step every weight costs 10 bytes: its fp32 score, old and new mask, and its OBS-updated
copy (fp32 or narrower), held until the last group is done so that every group's gradients are
taken at the starting weights.  The planner packs tensors into groups whose peak fits the
budget; groups are processed one after another (gradients re-collected per group).  If a single
tensor cannot fit even with one-gradient chunks, it refuses and names a block size that would
fit.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import psutil

import obert_core as oc
from obert_core.shared import format_bytes
from obert_train.errors import MemoryPlanError, OptionError

__all__ = [
    "MemoryPlan",
    "MemoryPlanError",
    "available_bytes",
    "default_budget_bytes",
    "fisher_bytes",
    "format_bytes",
    "gram_precision",
    "group_peak_bytes",
    "parse_memory",
    "plan_memory",
]

_FLOAT = 4
_METHODS = ("batched", "streaming")


_MEM = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


def parse_memory(text: str | int) -> int:
    """Parse ``"20GB"``, ``"512MiB"``, ``"1.5G"`` or a byte count into bytes (powers of 1024).

    Raises:
        OptionError: If the text is not a size (a ``ValueError``).
    """
    if isinstance(text, int):
        return text
    match = _MEM.match(text)
    if match is None:
        raise OptionError(f"cannot parse memory size {text!r}; use e.g. '20GB' or '512MiB'")
    unit = (match.group(2) or "B").upper()[0]
    scale = {"B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[unit]
    return int(float(match.group(1)) * scale)


def fisher_bytes(numel: int, block_size: int) -> int:
    """Bytes of the ``ceil(d/B)`` fp32 inverse-Fisher blocks (B x B) of one tensor."""
    return int(oc.fisher_memory_bytes(numel, block_size, itemsize=_FLOAT))


@dataclass(frozen=True)
class MemoryPlan:
    """How an oBERT step is split to fit in memory.

    Attributes:
        groups: Tensor names per group, processed one after another.
        group_peak_bytes: Estimated peak bytes while each group is processed (incl. resident).
        fisher_bytes: Stored (fp32) inverse-Fisher bytes per tensor.
        resident_bytes: Bytes held for the whole step (scores, masks and updated copies).
        chunk_size: Gradients buffered per chunk.
        budget_bytes: The budget the plan was made for.
        fisher_method: ``"batched"`` or ``"streaming"`` construction the estimate is for.
    """

    groups: list[list[str]]
    group_peak_bytes: list[int]
    fisher_bytes: dict[str, int]
    resident_bytes: int
    chunk_size: int
    budget_bytes: int
    fisher_method: str = "batched"

    @property
    def total_fisher_bytes(self) -> int:
        """Stored inverse-Fisher bytes of all tensors together."""
        return sum(self.fisher_bytes.values())

    def describe(self) -> str:
        """A short multi-line summary to print before the step starts."""
        if not self.groups:
            return "oBERT memory plan: no tensors on this rank"
        lines = [
            f"oBERT memory plan: inverse Fisher {format_bytes(self.total_fisher_bytes)} (fp32) for "
            f"{len(self.fisher_bytes)} tensors, {self.fisher_method} build, gradient chunks of "
            f"{self.chunk_size}, budget {format_bytes(self.budget_bytes)}",
        ]
        if len(self.groups) == 1:
            lines.append(f"  one group, estimated peak {format_bytes(self.group_peak_bytes[0])}")
        else:
            lines.append(
                f"  {len(self.groups)} groups processed one after another "
                "(gradients re-collected per group):"
            )
            for i, (group, peak) in enumerate(zip(self.groups, self.group_peak_bytes, strict=True)):
                lines.append(
                    f"    group {i}: {len(group)} tensors ({group[0]} ...), "
                    f"estimated peak {format_bytes(peak)}"
                )
        return "\n".join(lines)


def available_bytes(fraction: float = 0.8) -> int:
    """``fraction`` of the RAM currently available (psutil)."""
    return int(psutil.virtual_memory().available * fraction)


def grad_batching_bytes() -> int:
    """Default memory of the gradient sampler's batched passes: 1/8 of the RAM, at most 2 GiB.

    Taken from the machine's total RAM, not its free RAM, so that the same run on the same
    machine plans the same passes (bit-identical gradients after a resume); the default budget
    of the step (:func:`default_budget_bytes`) leaves it out.
    """
    return min(int(psutil.virtual_memory().total) // 8, 2 * 2**30)


def default_budget_bytes() -> int:
    """The default budget: 80 % of the available RAM, shared by the ranks on this host.

    Minus the memory of the gradient sampler's batched passes (:func:`grad_batching_bytes`) of
    a single process, which the sampler takes on top of the planned Fisher memory.

    Under ``torchrun`` every rank of a host plans at the same time from the same free RAM, so
    the 80 % is divided by ``LOCAL_WORLD_SIZE`` (the number of ranks on this host; 1 if unset).

    Raises:
        OptionError: If ``LOCAL_WORLD_SIZE`` is set but not a positive integer.
    """
    raw = os.environ.get("LOCAL_WORLD_SIZE", "1")
    try:
        local = int(raw)
    except ValueError:
        local = 0
    if local < 1:
        raise OptionError(
            f"LOCAL_WORLD_SIZE={raw!r} is not a positive integer; unset it or launch with torchrun"
        )
    budget = available_bytes() // local
    if local == 1:  # batched gradient passes run in one process only
        budget = max(budget - grad_batching_bytes(), budget // 2)
    return budget


def gram_precision(num_grads: int, block_size: int) -> str:
    """Gram accumulator dtype the pruner asks ``BlockFisherBuilder`` for (batched build).

    float64 when ``m < B`` (a rank-deficient Gram whose null space float32 round-off would
    pollute at the paper's tiny damp), float32 otherwise; the inversion is float64 either way.
    """
    return "float64" if num_grads < block_size else "float32"


def group_peak_bytes(
    numels: Sequence[int],
    block_size: int,
    chunk_size: int,
    fisher_method: str,
    num_grads: int | None = None,
    overwrite_gram: bool = False,
) -> int:
    """Estimated peak bytes while the inverse Fisher of one group is built.

    With ``S_i`` the fp32 inverse bytes of tensor i (``obert_core.fisher_memory_bytes``),
    ``A_i`` its accumulator (the inverse itself for ``"streaming"``; for ``"batched"`` a Gram of
    ``S_i`` or ``2 S_i`` bytes, see :func:`gram_precision`), D the group's weights, k the chunk:

    * while gradients stream in: ``sum A_i`` plus ``4 (k + 1) D`` (chunk buffers and one
      autograd gradient per tensor) plus an ``8 k d_max`` conversion copy;
    * while tensors are inverted one by one (batched): ``sum max(A_i, S_i) + S_max`` plus the
      float64 LAPACK chunks (at most 2048 blocks, three arrays on each of two threads).

    Args:
        numels: Weights of each tensor of the group.
        block_size: B.
        chunk_size: Gradients per chunk.
        fisher_method: ``"batched"`` or ``"streaming"``.
        num_grads: m (decides the Gram dtype; None assumes float64, the upper bound).
        overwrite_gram: The factored Fisher keeps ``diag(F^-1)``'s factors in its Gram; their
            side arrays (``obert_core.FisherBlocks.factor_bytes``, about 10 bytes per weight)
            are held with the Gram from the inversion on.
    """
    if fisher_method not in _METHODS:
        raise OptionError(f"fisher_method must be one of {_METHODS}, got {fisher_method!r}")
    if not numels:
        return 0
    stored = [fisher_bytes(d, block_size) for d in numels]
    d_total, d_max = sum(numels), max(numels)
    streaming = _FLOAT * (chunk_size + 1) * d_total + 8 * chunk_size * d_max
    if fisher_method == "streaming":
        return sum(stored) + streaming
    wide = num_grads is None or gram_precision(num_grads, block_size) == "float64"
    acc = [2 * s if wide else s for s in stored]
    blocks = min(-(-d_max // block_size), 2048)
    workspace = 2 * 3 * 8 * blocks * block_size * block_size
    invert = sum(max(a, s) for a, s in zip(acc, stored, strict=True)) + max(stored) + workspace
    if overwrite_gram:
        invert += sum(oc.FisherBlocks.factor_bytes(d, block_size) for d in numels)
    return max(sum(acc) + streaming, invert)


_MARGIN = 1.10  # allocator caching/fragmentation and strided-copy transients on top of the model


def _fitting_block_size(numel: int, room: int, fisher_method: str, upper: int, m: int) -> int:
    """Largest B < ``upper`` whose one-tensor peak (chunks of 1) fits ``room``; 0 if none."""
    lo, hi = 0, upper - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _MARGIN * group_peak_bytes([numel], mid, 1, fisher_method, m) <= room:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _pack(
    names: list[str], chunk: int, peak: Callable[[Sequence[str], int], int], room: int
) -> list[list[str]]:
    """Greedy packing in model order: start a new group when the next tensor does not fit."""
    groups: list[list[str]] = []
    current: list[str] = []
    for name in names:
        if current and peak([*current, name], chunk) > room:
            groups.append(current)
            current = [name]
        else:
            current = [*current, name]
    groups.append(current)
    return groups


# Bytes per target weight held for the whole step: fp32 score (4), old and new mask (1 + 1), and
# the OBS-updated copy (4, fp32 or narrower), written into the model only after the last group.
_RESIDENT = 10
_SELECT = 28  # transient bytes per weight while global masks are chosen (float64 keys, sort)


def plan_memory(
    numels: Mapping[str, int],
    block_size: int,
    *,
    num_grads: int,
    chunk_size: int = 32,
    budget_bytes: int | None = None,
    fisher_method: str = "batched",
    overwrite_gram: bool = False,
) -> MemoryPlan:
    """Pack tensors (in the given order) into groups whose estimated peak fits the budget.

    The peak of a group is :func:`group_peak_bytes` plus 10 % (allocator caching and strided
    copies: the BERT-base demonstration in docs/benchmarks.md measured 5 % above the bare
    model).  10 bytes per weight of all tensors (fp32 scores, old and new masks, and the updated
    fp32 copy each tensor waits in until the last group is done) are held for the whole step, and
    choosing global masks briefly needs 28 bytes per weight (plus, when everything is one group,
    the kept inverses).  The chunk size is halved (down to 1) while the largest tensor does not
    fit, and lowered further (down to 4) when that gives fewer groups.

    Args:
        numels: ``{name: number of weights}`` of the tensors this process handles (may be
            empty: a rank that owns no tensor gets an empty plan).
        block_size: Fisher block size B.
        num_grads: m (chunks never exceed it; decides the Gram dtype).
        chunk_size: Preferred gradients per chunk.
        budget_bytes: Memory budget of this process; default :func:`default_budget_bytes`
            (80 % of the available RAM divided by ``LOCAL_WORLD_SIZE``).
        fisher_method: ``"batched"`` or ``"streaming"`` inverse construction.
        overwrite_gram: Budget the side arrays of factors kept in the Gram (see
            :func:`group_peak_bytes`).

    Returns:
        The plan.

    Raises:
        MemoryPlanError: If even one tensor with one-gradient chunks exceeds the budget; the
            message names the tensor and a block size (or construction) that would fit.
    """
    budget = default_budget_bytes() if budget_bytes is None else int(budget_bytes)
    fisher = {n: fisher_bytes(d, block_size) for n, d in numels.items()}
    if not numels:
        return MemoryPlan([], [], {}, 0, 0, budget, fisher_method)
    d_all = sum(numels.values())
    resident = _RESIDENT * d_all
    room = budget - resident

    def peak(names: Sequence[str], chunk: int) -> int:
        sizes = [numels[n] for n in names]
        return int(
            _MARGIN
            * group_peak_bytes(sizes, block_size, chunk, fisher_method, num_grads, overwrite_gram)
        )

    chunk = max(1, min(chunk_size, num_grads))
    largest = max(numels, key=lambda n: numels[n])
    d_big = numels[largest]
    while chunk > 1 and peak([largest], chunk) > room:
        chunk = max(1, chunk // 2)
    need = peak([largest], chunk)
    if need > room or _SELECT * d_all > room:
        fit_b = _fitting_block_size(d_big, room, fisher_method, block_size, num_grads)
        hints = []
        if fit_b >= 1:
            hints.append(f"use --block-size {fit_b} or smaller")
        if (
            fisher_method == "batched"
            and _MARGIN * group_peak_bytes([d_big], block_size, 1, "streaming") <= room
        ):
            hints.append(
                "use fisher_method=streaming (recipe field or --set fisher_method=streaming; "
                "no Gram accumulator)"
            )
        hint = " or ".join(hints) if hints else "free memory or use a machine with more RAM"
        raise MemoryPlanError(
            f"tensor {largest!r} ({d_big} weights) needs about {format_bytes(need + resident)} "
            f"at block size {block_size} ({fisher_method} build), but the budget is "
            f"{format_bytes(budget)}; {hint} (or raise --max-memory if more RAM is free)"
        )
    groups = _pack(list(numels), chunk, peak, room)
    # Smaller chunks free room for more Fisher blocks per group: take the chunk size (down to 4)
    # that gives the fewest groups, the larger one on ties (fewer, bigger GEMMs).
    smaller = chunk // 2
    while smaller >= 4:
        trial = _pack(list(numels), smaller, peak, room)
        if len(trial) < len(groups):
            groups, chunk = trial, smaller
        smaller //= 2
    current = groups[-1]
    kept = sum(fisher.values())
    if overwrite_gram:  # the factors' side arrays are kept with the Gram
        kept += sum(oc.FisherBlocks.factor_bytes(d, block_size) for d in numels.values())
    if len(groups) == 1 and kept + _SELECT * d_all > room:
        # One group would keep every inverse while global masks are chosen: split it in two.
        half = max(1, len(current) // 2)
        groups = [current[:half], current[half:]] if len(current) > 1 else groups
    peaks = [peak(g, chunk) + resident for g in groups]
    return MemoryPlan(groups, peaks, fisher, resident, chunk, budget, fisher_method)
