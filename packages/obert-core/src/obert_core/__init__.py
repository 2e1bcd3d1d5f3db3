"""obert-core: the second-order math of the Optimal BERT Surgeon (Kurtic et al., EMNLP 2022).

Framework-agnostic (NumPy in → NumPy out, torch in → torch out); ``import obert_core`` loads NumPy
only — Numba and torch are optional backends imported on first use.

Public API:
    block_fisher_inverse, BlockFisherBuilder, fisher_memory_bytes  — blocked inverse Fisher
    FisherBlocks                                                   — damped Fisher, un-inverted
    obs_saliency, obs_update                                       — OBS scores and weight update
    obs_quadratic_increase, joint_well_posed                       — the quadratic model's check
    select_mask, parse_nm, sparsity_of                             — global / layer-wise / N:M masks
    obs_nm_mask                                                    — N:M by joint OBS saliency
    cubic_sparsity, linear_sparsity, pruning_steps, recomputation_sparsities — schedules
    MFACInverse                                                    — M-FAC O(d·m) inverse Fisher
    StructuredStats, output_saliency                               — atoms' output-space saliency
    obs_group_saliency, obs_group_correction, obs_group_prune      — structured OBS correction
    select_atoms, StructuredPruneResult                            — atoms to remove, rounded sizes
"""

from __future__ import annotations

from ._errors import BackendUnavailableError, ObertError
from ._nm import obs_nm_mask
from .fisher import BlockFisherBuilder, block_fisher_inverse, fisher_memory_bytes
from .fisher_blocks import FisherBlocks
from .fisher_fill import fill_unseen_curvature
from .fisher_lowrank import LowRankFisher
from .masks import parse_nm, select_mask, sparsity_of
from .mfac import MFACInverse
from .obs import joint_well_posed, obs_quadratic_increase, obs_saliency, obs_update
from .schedules import cubic_sparsity, linear_sparsity, pruning_steps, recomputation_sparsities
from .structured import (
    StructuredPruneResult,
    StructuredStats,
    obs_group_correction,
    obs_group_prune,
    obs_group_saliency,
    output_saliency,
    select_atoms,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "BlockFisherBuilder",
    "FisherBlocks",
    "LowRankFisher",
    "MFACInverse",
    "ObertError",
    "StructuredPruneResult",
    "StructuredStats",
    "__version__",
    "block_fisher_inverse",
    "cubic_sparsity",
    "fill_unseen_curvature",
    "fisher_memory_bytes",
    "joint_well_posed",
    "linear_sparsity",
    "obs_group_correction",
    "obs_group_prune",
    "obs_group_saliency",
    "obs_nm_mask",
    "obs_quadratic_increase",
    "obs_saliency",
    "obs_update",
    "output_saliency",
    "parse_nm",
    "pruning_steps",
    "recomputation_sparsities",
    "select_atoms",
    "select_mask",
    "sparsity_of",
]
