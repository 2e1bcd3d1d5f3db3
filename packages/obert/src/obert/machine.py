"""The machine a report was measured on: CPU, its vector and matrix extensions, load, versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "cpu_flags", "load_average", "machine_info", "versions"]

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

_FLAG_PREFIXES = ("avx2", "avx512", "avx_vnni", "amx", "fma")


def cpu_flags() -> list[str]:
    """The CPU's AVX2 / AVX-512 / VNNI / AMX / FMA flags (from ``/proc/cpuinfo``), sorted."""
    proc = Path("/proc/cpuinfo")
    if not proc.is_file():
        return []
    for line in proc.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return sorted({f for f in value.split() if f.startswith(_FLAG_PREFIXES)})
    return []


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


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
    from obert_deploy import cpu_info

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
