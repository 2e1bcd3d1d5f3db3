"""Semi-structured ``r×c`` block pruning of Linear weights (LPViT, arXiv 2407.02068).

* :mod:`.grid` — aligned ``r×c`` blocks of a 2-D weight and keep-masks that keep a layer's
  best-scored blocks at a pruning ratio (:func:`block_keep_mask`).
* :mod:`.scores` — block scores: LPViT's ``|w ⊙ g|`` (:func:`taylor_block_scores`), the magnitude
  baseline, and the OBS block saliency with the blocked Fisher (:func:`obs_block_saliency`), with
  its joint update (:func:`obs_block_update`).
* :mod:`.curves` — per-layer curves over the ratio: LPViT's distortion or the exact OBS loss, the
  kept FLOPs, a measured latency, LPViT's power proxy; EMA smoothing and five-point-stencil slopes.
* :mod:`.allocation` — per-layer ratios under a FLOPs or latency budget by equal slopes, with a
  bisection on the slope exponent (:func:`allocate_ratios`), reached in rounds by
  :func:`round_sparsities`.
* :mod:`.plan` — the whole LPViT / OBS / uniform allocation from a model's weights in one call
  (:func:`allocate_blocks`).

The math: docs/math.md §8 ((B-1)–(B-3): blocks, scores, update; (B-4)–(B-10): curves,
allocation, rounds).
"""

from __future__ import annotations

from .allocation import RULES, SPACINGS, Allocation, allocate_ratios, round_sparsities
from .curves import (
    DEFAULT_DAMP,
    count_ratios,
    ema,
    flops_curve,
    latency_curve,
    lpvit_power_curve,
    obs_distortion_curve,
    pruned_blocks,
    ratio_grid,
    stencil_slopes,
    taylor_distortion_curve,
)
from .grid import (
    block_grid,
    block_keep_mask,
    block_ratio,
    expand_blocks,
    parse_block,
    reduce_blocks,
)
from .plan import METHODS, allocate_blocks
from .scores import (
    magnitude_block_scores,
    obs_block_saliency,
    obs_block_update,
    taylor_block_scores,
)

__all__ = [
    "DEFAULT_DAMP",
    "METHODS",
    "RULES",
    "SPACINGS",
    "Allocation",
    "allocate_blocks",
    "allocate_ratios",
    "block_grid",
    "block_keep_mask",
    "block_ratio",
    "count_ratios",
    "ema",
    "expand_blocks",
    "flops_curve",
    "latency_curve",
    "lpvit_power_curve",
    "magnitude_block_scores",
    "obs_block_saliency",
    "obs_block_update",
    "obs_distortion_curve",
    "parse_block",
    "pruned_blocks",
    "ratio_grid",
    "reduce_blocks",
    "round_sparsities",
    "stencil_slopes",
    "taylor_block_scores",
    "taylor_distortion_curve",
]
