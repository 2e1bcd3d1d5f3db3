"""Validated settings of a one-shot pruning run (the ``recipe.yaml`` written next to checkpoints).

Field names follow the SparseML oBERT recipes where they exist (``num_grads``, ``damp``,
``mask_type``, ``num_recomputations``, ``fisher_block_size`` is ``block_size`` here).  Unknown
keys are errors; numbers given as strings in YAML (``damp: 1e-7`` is a string in YAML 1.1) are
converted once, here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["OneShotConfig", "parse_memory", "parse_nm"]

_NM = re.compile(r"^(\d+):(\d+)$")
_MEM = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


def parse_nm(mask_type: str) -> tuple[int, int] | None:
    """``"2:4"`` -> ``(2, 4)`` (N of every M consecutive weights pruned); other types -> None.

    Args:
        mask_type: A mask type such as ``"unstructured"``, ``"block4"`` or ``"N:M"``.

    Returns:
        ``(N, M)`` for an ``"N:M"`` type, else None.
    """
    match = _NM.match(mask_type)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def parse_memory(text: str | int) -> int:
    """Parse ``"20GB"``, ``"512MiB"``, ``"1.5G"`` or a byte count into bytes (powers of 1024).

    Raises:
        ValueError: If the text is not a size.
    """
    if isinstance(text, int):
        return text
    match = _MEM.match(text)
    if match is None:
        raise ValueError(f"cannot parse memory size {text!r}; use e.g. '20GB' or '512MiB'")
    unit = (match.group(2) or "B").upper()[0]
    scale = {"B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[unit]
    return int(float(match.group(1)) * scale)


class OneShotConfig(BaseModel):
    """Settings of one pruning run (one target sparsity).

    Attributes:
        method: ``"obert"`` (second-order, Kurtic et al. 2022), ``"magnitude"`` (|w|), or a
            method added with :func:`~obert_train.register_method`.
        sparsity: Target fraction of zeros over the target tensors, in [0, 1).
        num_grads: m, gradients per empirical-Fisher estimate.
        grad_batch_size: Examples per gradient.
        block_size: Fisher block size B (consecutive weights of one flattened tensor).
        damp: Dampening lambda of ``F = lambda I + (1/m) sum g g^T``.
        mask_type: ``"unstructured"``, ``"block4"`` (groups of 4 consecutive weights) or
            ``"N:M"`` (e.g. ``"2:4"``: N of every M consecutive weights pruned).
        mode: OBS update when several weights of one Fisher block are pruned: ``"joint"``
            (exact joint solve) or ``"superpose"`` (sum of single-weight updates, as SparseML).
        num_recomputations: Sub-steps with linearly spaced sparsities, each with new gradients
            and a new Fisher (Kurtic et al. 2022, Sec. 3.3).
        scope: ``"global"`` (one threshold over all tensors) or ``"layer"`` (each tensor).
        targets: Regexes of the tensors to prune; None = BERT encoder Linear weights.
        max_memory: Memory budget in bytes for the Fisher work; None = 80 % of available RAM.
        chunk_size: Gradients buffered at once per tensor.
        fisher_method: Inverse construction, ``"batched"`` (Gram + Cholesky) or
            ``"streaming"`` (Sherman-Morrison, as SparseML).
        seed: Seed of the gradient batches.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = "obert"
    sparsity: float = Field(ge=0.0, lt=1.0)
    num_grads: int = Field(default=1024, ge=1)
    grad_batch_size: int = Field(default=16, ge=1)
    block_size: int = Field(default=50, ge=1)
    damp: float = Field(default=1e-7, gt=0.0)
    mask_type: str = "unstructured"
    mode: Literal["joint", "superpose"] = "joint"
    num_recomputations: int = Field(default=1, ge=1)
    scope: Literal["global", "layer"] = "global"
    targets: list[str] | None = None
    max_memory: int | None = Field(default=None, ge=1)
    chunk_size: int = Field(default=32, ge=1)
    fisher_method: Literal["batched", "streaming"] = "batched"
    seed: int = 0

    @field_validator("method")
    @classmethod
    def _check_method(cls, value: str) -> str:
        from obert_train._oneshot import METHODS  # registry lives with the driver

        if value not in METHODS:
            raise ValueError(f"method {value!r} unknown; expected one of {sorted(METHODS)}")
        return value

    @field_validator("mask_type")
    @classmethod
    def _check_mask_type(cls, value: str) -> str:
        if value in ("unstructured", "block4"):
            return value
        nm = parse_nm(value)
        if nm is None:
            raise ValueError(
                f"mask_type {value!r} unknown; use 'unstructured', 'block4' or 'N:M' like '2:4'"
            )
        n, m = nm
        if not 1 <= n < m:
            raise ValueError(f"mask_type {value!r}: need 1 <= N < M")
        return value

    @field_validator("max_memory", mode="before")
    @classmethod
    def _parse_memory(cls, value: Any) -> Any:
        return parse_memory(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_block4(self) -> OneShotConfig:
        if self.mask_type == "block4" and self.method == "obert" and self.block_size % 4:
            raise ValueError(
                f"mask_type 'block4' needs block_size divisible by 4, got {self.block_size} "
                "(the paper uses 32)"
            )
        return self

    @property
    def group_size(self) -> int:
        """Weights scored and pruned together (4 for block4, else 1)."""
        return 4 if self.mask_type == "block4" else 1

    @property
    def nm(self) -> tuple[int, int] | None:
        """``(N, M)`` for N:M masks, else None."""
        return parse_nm(self.mask_type)

    def to_yaml(self) -> str:
        """The settings as YAML (``recipe.yaml``)."""
        return yaml.safe_dump(self.model_dump(), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> OneShotConfig:
        """Load and validate settings from a YAML file."""
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a YAML mapping of settings, got {type(data)}")
        return cls.model_validate(data)
