"""Structured second-order pruning: FFN neurons, attention heads and MoE atomic experts as atoms.

* :mod:`.saliency` — output-space saliency of atoms (HEAPr, arXiv 2509.22299), factorised and
  unfactorised, and the streaming calibration statistics (:class:`StructuredStats`).
* :mod:`.correction` — OBS on the layer-input Hessian ``E[a aᵀ]`` (as in OBC / ZipLM): the optimal
  re-fit of the remaining columns after removing groups, and greedy group-OBS selection.
* :mod:`.selection` — global / per-layer ranking with a minimum kept and rounded layer sizes.

One implementation serves FFN atoms (``group_size=1``) and attention heads (``group_size`` = head
dimension): a group is a block of consecutive input columns of the layer weight ``(d, m)``.
"""

from __future__ import annotations

from .correction import (
    DEFAULT_DAMP,
    StructuredPruneResult,
    obs_group_correction,
    obs_group_prune,
    obs_group_saliency,
)
from .saliency import KINDS, StructuredStats, output_saliency
from .selection import select_atoms

__all__ = [
    "DEFAULT_DAMP",
    "KINDS",
    "StructuredPruneResult",
    "StructuredStats",
    "obs_group_correction",
    "obs_group_prune",
    "obs_group_saliency",
    "output_saliency",
    "select_atoms",
]
