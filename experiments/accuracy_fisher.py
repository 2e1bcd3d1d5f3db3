"""Accuracy of every backend × method × dtype against the float64 inverse, in the hard regime.

    python experiments/accuracy_fisher.py

damp = 1e-7 (the paper's), m = 40 gradients < B = 50, 30 % masked (all-zero) coordinates, d = 1003
(a padded tail block). Prints the max relative Frobenius error per block and the max relative error
of diag(F̂⁻¹), which OBS saliencies divide by.
"""

from __future__ import annotations

import importlib.util

from _common import make_parser


def main() -> None:
    """Print the error table."""
    make_parser(__doc__).parse_args()
    import numpy as np

    import obert_core as oc

    rng = np.random.default_rng(0)
    d, bsz, m, damp = 1003, 50, 40, 1e-7
    g = rng.standard_normal((m, d)).astype(np.float32)
    g[:, rng.random(d) < 0.3] = 0
    nb = -(-d // bsz)
    gp = np.zeros((m, nb * bsz))
    gp[:, :d] = g
    x = gp.reshape(m, nb, bsz).transpose(1, 0, 2)
    ref = np.linalg.inv(np.einsum("nmi,nmj->nij", x, x) / m + damp * np.eye(bsz))
    backends = ["numpy"] + [b for b in ("numba", "torch") if importlib.util.find_spec(b)]
    print("| backend | method | dtype | max rel. error per block | max rel. error of diag |")
    print("|---|---|---|---|---|")
    for be in backends:
        for meth in ("batched", "streaming"):
            for dt in (np.float32, np.float64):
                out = np.asarray(
                    oc.block_fisher_inverse(g.astype(dt), bsz, damp, backend=be, method=meth)
                ).astype(np.float64)
                fro = np.linalg.norm(out - ref, axis=(1, 2)) / np.linalg.norm(ref, axis=(1, 2))
                rd = np.diagonal(ref, 0, 1, 2)
                dg = np.abs(np.diagonal(out, 0, 1, 2) - rd) / rd
                print(f"| {be} | {meth} | {np.dtype(dt).name} | {fro.max():.1e} | {dg.max():.1e} |")


if __name__ == "__main__":
    main()
