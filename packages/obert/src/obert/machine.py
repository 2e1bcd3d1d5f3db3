"""The machine a report was measured on: CPU, its vector and matrix extensions, load, versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

from obert_core.shared import cpu_flags, cpu_info, load_average

__all__ = ["PACKAGES", "machine_info", "versions"]

PACKAGES = (
    "obert",
    "obert-core",
    "obert-train",
    "obert-deploy",
    "torch",
    "transformers",
    "onnx",
    "onnxruntime",
    "numpy",
)
"""Distributions whose versions go into the report."""


def versions() -> dict[str, str | None]:
    """Installed versions of :data:`PACKAGES` (None for one that is not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def machine_info() -> dict[str, Any]:
    """CPU model, cores, ISA flags (AVX2, AVX-512, VNNI, AMX), memory, load and versions."""
    cpu = cpu_info().to_dict()
    memory = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {
        "cpu": cpu,
        "flags": cpu_flags(),
        "memory_bytes": memory,
        "platform": platform.platform(),
        "load_average": load_average(),
        "versions": versions(),
        "executable": sys.executable,
    }
