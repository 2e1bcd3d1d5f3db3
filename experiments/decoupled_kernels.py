"""The block kernels (decoupled coordinates, Eq. 6c; lanes) against those of an older commit.

The Numba kernels of ``obert_core.backends`` now factor only each block's live coordinates
(docs/math.md §2.1, Eq. 6c; §2.2, "Few live columns"). This script times, in one process, the
kernels of ``--before`` (read with ``git show``) and those of the working tree, each copied into
a temporary package, on the same random blocks with a fraction of the coordinates zeroed (the
masked gradients of pruned weights), process CPU seconds, best of ``--repeats``, one thread, and
checks that both give the same values::

    .venv/bin/python experiments/decoupled_kernels.py --before 37d4acb

* ``FisherBlocks`` ``diag(F̂⁻¹)`` and ``F̂⁻¹z`` (``z_b ≠ 0`` in every block, as in a step from
  dense): 8,192 Gram blocks ``50 × 50`` from 128 float32 gradients;
* ``LowRankFisher`` ``diag(F̂⁻¹)`` and ``F̂⁻¹z`` (half the blocks with ``z_b = 0``): 32,768
  gradient blocks ``16 × 50``.

Results go to ``experiments/results/decoupled_kernels.json`` with the machine's CPU flags.
"""

from __future__ import annotations

import contextlib
import inspect
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import REPO, RESULTS_DIR, cpu_info, make_parser, save_entry

RESULTS = RESULTS_DIR / "decoupled_kernels.json"
FILES = ("_block_kernels.py", "_lowrank_kernels.py", "_linalg.py", "_lane_kernels.py")


def _kernels(commit: str | None, where: Path, package: str) -> Any:
    """The kernel modules of ``obert_core.backends`` at ``commit`` (None: the working tree).

    Copied into ``where/package`` and imported from there, so that both versions are loaded the
    same way (and side by side) without importing the package's internal modules by name.
    """
    pkg = where / package
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    backends = "packages/obert-core/src/obert_core/backends"
    for name in FILES:
        if commit is None:
            src = (REPO / backends / name).read_text()
        else:
            shown = subprocess.run(
                ["git", "show", f"{commit}:{backends}/{name}"],
                cwd=REPO, check=False, capture_output=True, text=True,
            )  # fmt: skip
            if shown.returncode != 0:
                continue  # a module the commit does not have (nor import)
            src = shown.stdout
        for mod in ("_arrays", "_errors"):  # the package's own modules: today's
            src = src.replace(f"from ..{mod} import", f"from obert_core.{mod} import")
        (pkg / name).write_text(src)
    if str(where) not in sys.path:
        sys.path.insert(0, str(where))
    import importlib

    block = importlib.import_module(f"{package}._block_kernels")
    lowrank = importlib.import_module(f"{package}._lowrank_kernels")
    return block, lowrank


def _best(kernel: Any, repeats: int, *args: Any) -> float:
    """Best process time of ``kernel`` over all blocks; a version's own extra arguments added.

    ``diag_inverse_kernel`` took ``lanes`` and the factor arrays after ``bad`` from this
    session's commit on; it is compiled and run under ``slp_vectorize`` where that exists.
    """
    module = sys.modules[kernel.py_func.__module__]
    names = list(inspect.signature(kernel.py_func).parameters)
    if "lanes" in names:
        args = (*args, True, *module._NO_FACTORS)
    lanes = sys.modules.get(module.__name__.rsplit(".", 1)[0] + "._lane_kernels")
    slp = getattr(lanes, "slp_vectorize", contextlib.nullcontext)
    with slp():
        kernel(0, 16, *args)  # compile / load from the cache
        best = float("inf")
        for _ in range(repeats):
            start = time.process_time()
            kernel(0, args[0].shape[0], *args)
            best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--before", default="37d4acb", help="commit of the old kernels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dead", type=float, nargs="+", default=[0.0, 0.5, 0.8])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        old_block, old_lowrank = _kernels(args.before, Path(tmp), "before_backends")
        new_block, new_lowrank = _kernels(None, Path(tmp), "after_backends")
        for dead in args.dead:
            nb, n = 8192, 50
            g = rng.standard_normal((nb, 128, n)).astype(np.float32)
            g[:, :, rng.random(n) < dead] = 0
            gram = np.einsum("bmi,bmj->bij", g, g).astype(np.float32)
            gl = rng.standard_normal((4 * nb, 16, n)).astype(np.float32)
            gl[:, :, rng.random(n) < dead] = 0
            z = rng.standard_normal((4 * nb, n))
            z[rng.random(4 * nb) < 0.5] = 0
            zf = rng.standard_normal((nb, n))  # every block loses weights (a step from dense)
            cases = {
                "FisherBlocks diag": (
                    old_block.diag_inverse_kernel, new_block.diag_inverse_kernel,
                    (gram, 1e-7, 1 / 128), nb,
                ),
                "FisherBlocks F^-1 z": (
                    old_block.solve_kernel, new_block.solve_kernel,
                    (gram, 1e-7, 1 / 128, zf), nb,
                ),
                "LowRankFisher diag": (
                    old_lowrank.lowrank_diag_kernel, new_lowrank.lowrank_diag_kernel,
                    (gl, 16e-7, 1e-7), 4 * nb,
                ),
                "LowRankFisher F^-1 z": (
                    old_lowrank.lowrank_matvec_kernel, new_lowrank.lowrank_matvec_kernel,
                    (gl, 16e-7, 1e-7, z), 4 * nb,
                ),
            }  # fmt: skip
            for name, (old, new, inputs, count) in cases.items():
                outs, secs = [], []
                for kernel in (old, new):
                    out, bad = np.empty((count, n)), np.zeros(count, dtype=bool)
                    secs.append(_best(kernel, args.repeats, *inputs, out, bad))
                    outs.append(out)
                diff = float(np.abs(outs[0] - outs[1]).max() / np.abs(outs[0]).max())
                row = {"kernel": name, "masked": dead, "before_s": secs[0], "after_s": secs[1],
                       "max_rel_diff": diff}  # fmt: skip
                rows.append(row)
                print(f"{name:22s} masked {dead:.0%}: before {secs[0]:.3f} s, after "
                      f"{secs[1]:.3f} s, max difference {diff:.1e}", flush=True)  # fmt: skip
    save_entry(
        RESULTS,
        f"before-{args.before}",
        {"rows": rows, "machine": cpu_info(), "command": " ".join(sys.argv)},
    )


if __name__ == "__main__":
    main()
