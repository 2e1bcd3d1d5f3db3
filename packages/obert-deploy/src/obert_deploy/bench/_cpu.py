"""CPU description for benchmark reports: model name, core count and SIMD flags.

Uses the ``cpuinfo`` module (``py-cpuinfo2``/``py-cpuinfo``) and falls back to ``/proc/cpuinfo``.
"""

from __future__ import annotations

import functools
import importlib
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["CpuInfo", "available_cores", "cpu_info"]


@dataclass(frozen=True)
class CpuInfo:
    """What matters about a CPU for sparse/int8 inference speed.

    Attributes:
        brand: Marketing name, e.g. ``"AMD EPYC"``.
        arch: Machine architecture, e.g. ``"x86_64"``.
        logical_cores: Logical CPUs in the machine.
        available_cores: Logical CPUs this process may run on (affinity mask).
        avx2: AVX2 present.
        avx512: AVX-512 Foundation present.
        vnni: An int8 dot-product extension (AVX512-VNNI or AVX-VNNI) present.
        amx: Intel AMX tiles present.
    """

    brand: str
    arch: str
    logical_cores: int
    available_cores: int
    avx2: bool
    avx512: bool
    vnni: bool
    amx: bool

    @property
    def isa(self) -> str:
        """Short label of the best vector ISA: ``avx512_vnni``, ``avx512``, ``avx2`` or other."""
        if self.avx512:
            return "avx512_vnni" if self.vnni else "avx512"
        if self.avx2:
            return "avx2_vnni" if self.vnni else "avx2"
        return self.arch

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (including :attr:`isa`)."""
        return {**asdict(self), "isa": self.isa}


def available_cores() -> int:
    """Number of logical CPUs this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _flags_and_brand() -> tuple[set[str], str]:
    try:
        info = importlib.import_module("cpuinfo").get_cpu_info()
        return {str(f).lower() for f in info.get("flags", [])}, str(info.get("brand_raw", ""))
    except Exception:  # not installed or unsupported platform: parse /proc/cpuinfo
        proc = Path("/proc/cpuinfo")
        flags: set[str] = set()
        brand = platform.processor()
        if proc.is_file():
            for line in proc.read_text(errors="replace").splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "flags" and not flags:
                    flags = set(value.split())
                elif key.strip() == "model name" and value.strip():
                    brand = value.strip()
        return flags, brand


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """Describe this machine's CPU (cached)."""
    flags, brand = _flags_and_brand()
    return CpuInfo(
        brand=brand or "unknown",
        arch=platform.machine(),
        logical_cores=os.cpu_count() or 1,
        available_cores=available_cores(),
        avx2="avx2" in flags,
        avx512="avx512f" in flags,
        vnni=bool(flags & {"avx512_vnni", "avx512vnni", "avx_vnni", "avxvnni"}),
        amx=bool(flags & {"amx_tile", "amx-tile", "amx_int8"}),
    )
