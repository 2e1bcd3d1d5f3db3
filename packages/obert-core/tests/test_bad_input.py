"""Bad input to every public obert-core function: one clear ObertError naming the value.

The table lists, per entry point, a call a new user could plausibly make and a substring the
message must contain (the bad value or the remedy). Each case must raise :class:`ObertError`
(never a raw NumPy/torch error), with a one-line message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from core_helpers import HAS_TORCH

import obert_core as oc

RNG = np.random.default_rng(0)
G = RNG.standard_normal((6, 32))  # 6 gradients of a 4 x 8 weight
W = RNG.standard_normal((4, 8))
FINV = oc.block_fisher_inverse(G, 8, 1e-4)
MF = oc.MFACInverse(G, 1e-4, block_size=8)
KEEP = np.ones((4, 8), dtype=bool)

# (id, call, substring of the message)
CASES: list[tuple[str, Callable[[], Any], str]] = [
    # block_fisher_inverse / BlockFisherBuilder
    ("fisher-1d", lambda: oc.block_fisher_inverse(G[0], 8, 1e-4), "non-empty 2-D array"),
    ("fisher-empty", lambda: oc.block_fisher_inverse(G[:0], 8, 1e-4), "got shape (0, 32)"),
    ("fisher-list", lambda: oc.block_fisher_inverse(G.tolist(), 8, 1e-4), "numpy.asarray"),
    ("fisher-block-0", lambda: oc.block_fisher_inverse(G, 0, 1e-4), "got 0"),
    ("fisher-block-float", lambda: oc.block_fisher_inverse(G, 8.0, 1e-4), "got 8.0"),
    ("fisher-block-big", lambda: oc.block_fisher_inverse(G, 64, 1e-4), "block_size <= 32"),
    ("fisher-damp-neg", lambda: oc.block_fisher_inverse(G, 8, -1.0), "got -1.0"),
    ("fisher-damp-str", lambda: oc.block_fisher_inverse(G, 8, "1e-4"), "got '1e-4'"),
    ("fisher-damp-inf", lambda: oc.block_fisher_inverse(G, 8, np.inf), "got inf"),
    ("fisher-method", lambda: oc.block_fisher_inverse(G, 8, 1e-4, method="fast"), "'fast'"),
    ("fisher-backend", lambda: oc.block_fisher_inverse(G, 8, 1e-4, backend="cuda"), "'cuda'"),
    ("fisher-chunk-0", lambda: oc.block_fisher_inverse(G, 8, 1e-4, chunk_size=0), "chunk_size"),
    ("fisher-num-grads", lambda: oc.block_fisher_inverse(G, 8, 1e-4, num_grads=3), "num_grads=3"),
    ("fisher-nan", lambda: oc.block_fisher_inverse(G * np.nan, 8, 1e-4), "NaN or inf"),
    ("fisher-dtype-f16", lambda: oc.block_fisher_inverse(G, 8, 1e-4, dtype="float16"), "float16"),
    ("fisher-dtype-int", lambda: oc.block_fisher_inverse(G, 8, 1e-4, dtype=np.int32), "float32"),
    (
        "fisher-gram-prec",
        lambda: oc.block_fisher_inverse(G, 8, 1e-4, gram_precision="half"),
        "'half'",
    ),
    ("builder-width", lambda: oc.BlockFisherBuilder(32, 8, 1e-4, 6).add(G[:, :16]), "(k, 32)"),
    ("builder-too-many", lambda: oc.BlockFisherBuilder(32, 8, 1e-4, 2).add(G), "num_grads=2"),
    ("builder-empty", lambda: oc.BlockFisherBuilder(32, 8, 1e-4, 2).finalize(), "add(grads)"),
    ("memory-itemsize", lambda: oc.fisher_memory_bytes(100, 10, itemsize=0), "itemsize"),
    ("memory-method", lambda: oc.fisher_memory_bytes(100, 10, method="x"), "'x'"),
    # obs_saliency / obs_update / obs_nm_mask
    ("saliency-list", lambda: oc.obs_saliency(W.tolist(), FINV), "numpy.asarray"),
    ("saliency-size", lambda: oc.obs_saliency(np.ones(40), FINV), "ceil(40/8)"),
    ("saliency-nan", lambda: oc.obs_saliency(W * np.nan, FINV), "NaN or inf"),
    ("saliency-empty", lambda: oc.obs_saliency(np.ones(0), FINV), "empty"),
    ("saliency-group", lambda: oc.obs_saliency(W, FINV, group_size=3), "group_size=3"),
    ("saliency-finv-2d", lambda: oc.obs_saliency(W, FINV[0]), "(num_blocks, B, B)"),
    ("saliency-finv-nan", lambda: oc.obs_saliency(W, FINV * np.nan), "finv contains NaN"),
    ("saliency-mfac-size", lambda: oc.obs_saliency(np.ones(16), MF), "built for 32 weights"),
    (
        "update-prune-int",
        lambda: oc.obs_update(W, FINV, np.ones((4, 8))),
        "prune must be a boolean",
    ),
    ("update-prune-size", lambda: oc.obs_update(W, FINV, np.ones(31, bool)), "31 entries"),
    ("update-prune-transposed", lambda: oc.obs_update(W, FINV, KEEP.T), "shape (8, 4)"),
    (
        "update-mask-transposed",
        lambda: oc.obs_update(W, FINV, ~KEEP, current_mask=KEEP.T),
        "transposed",
    ),
    ("update-mode", lambda: oc.obs_update(W, FINV, ~KEEP, mode="exact"), "'exact'"),
    ("nm-pattern", lambda: oc.obs_nm_mask(W, FINV, "4:2"), "0 < N < M"),
    ("nm-pattern-float", lambda: oc.obs_nm_mask(W, FINV, (2.5, 4)), "(2.5, 4)"),
    ("nm-block", lambda: oc.obs_nm_mask(W, FINV, "2:16"), "M=16"),
    (
        "nm-mask-size",
        lambda: oc.obs_nm_mask(W, FINV, "2:4", current_mask=np.ones(6, bool)),
        "6 entries",
    ),
    ("nm-nan", lambda: oc.obs_nm_mask(W * np.nan, FINV, "2:4"), "NaN or inf"),
    # select_mask / parse_nm / sparsity_of
    ("select-array", lambda: oc.select_mask(np.ones(8), 0.5), "wrap it in a dict"),
    ("select-list", lambda: oc.select_mask([np.ones(8)], 0.5), "got list"),
    ("select-empty", lambda: oc.select_mask({}, 0.5), "scores is empty"),
    ("select-sparsity-1", lambda: oc.select_mask({"w": np.ones(8)}, 1.0), "got 1.0"),
    ("select-sparsity-pct", lambda: oc.select_mask({"w": np.ones(8)}, 90), "0.9 for 90%"),
    ("select-sparsity-none", lambda: oc.select_mask({"w": np.ones(8)}, None), "nm='2:4'"),
    ("select-scope", lambda: oc.select_mask({"w": np.ones(8)}, 0.5, scope="model"), "'model'"),
    (
        "select-masks-array",
        lambda: oc.select_mask({"w": np.ones(8)}, 0.5, current_masks=np.ones(8, bool)),
        "current_masks",
    ),
    (
        "select-mask-int",
        lambda: oc.select_mask({"w": np.ones(8)}, 0.5, current_masks={"w": np.ones(8)}),
        "dtype float64",
    ),
    (
        "select-mask-transposed",
        lambda: oc.select_mask({"w": np.ones((4, 8))}, 0.5, current_masks={"w": KEEP.T}),
        "shape (8, 4)",
    ),
    (
        "select-regrow",
        lambda: oc.select_mask(
            {"w": np.ones(4)}, 0.25, current_masks={"w": np.array([0, 0, 1, 1], bool)}
        ),
        "never regrow",
    ),
    (
        "select-nm-contradiction",
        lambda: oc.select_mask({"w": np.ones(8)}, 0.3, nm="2:4"),
        "contradicts",
    ),
    ("select-nan", lambda: oc.select_mask({"w": np.array([1.0, np.nan])}, 0.5), "scores['w']"),
    ("parse-nm-int", lambda: oc.parse_nm(24), "'2:4'"),
    ("parse-nm-3", lambda: oc.parse_nm("2:4:8"), "'2:4:8'"),
    ("sparsity-of-array", lambda: oc.sparsity_of(np.ones(4, bool)), "wrap it in a dict"),
    (
        "sparsity-of-float",
        lambda: oc.sparsity_of({"w": np.ones(4)}),
        "masks['w'] must be a boolean",
    ),
    # schedules
    (
        "cubic-nan-step",
        lambda: oc.cubic_sparsity(float("nan"), 0.0, 0.9, 0, 10),
        "step must be finite",
    ),
    ("cubic-str", lambda: oc.cubic_sparsity("1", 0.0, 0.9, 0, 10), "step must be a number"),
    ("cubic-order", lambda: oc.cubic_sparsity(1, 0.0, 0.9, 10, 0), "start <= end"),
    ("cubic-final", lambda: oc.cubic_sparsity(1, 0.0, 90, 0, 10), "final_sparsity"),
    ("linear-init", lambda: oc.linear_sparsity(1, -0.1, 0.9, 0, 10), "init_sparsity"),
    ("steps-freq-0", lambda: oc.pruning_steps(0, 10, 0), "frequency must be a positive"),
    ("steps-freq-str", lambda: oc.pruning_steps(0, 10, "2"), "frequency must be a number"),
    ("steps-too-many", lambda: oc.pruning_steps(0, 1e9, 1e-3), "larger frequency"),
    ("recompute-down", lambda: oc.recomputation_sparsities(0.5, 0.3, 2), "never regrow"),
    ("recompute-k", lambda: oc.recomputation_sparsities(0.1, 0.3, 0), "num_recomputations"),
    # MFACInverse
    ("mfac-1d", lambda: oc.MFACInverse(G[0], 1e-4), "non-empty (num_grads, num_weights)"),
    ("mfac-block", lambda: oc.MFACInverse(G, 1e-4, block_size=64), "use <= 32"),
    ("mfac-damp", lambda: oc.MFACInverse(G, 0.0), "damp"),
    ("mfac-nan", lambda: oc.MFACInverse(G * np.nan, 1e-4), "NaN or inf"),
    ("mfac-matvec-size", lambda: MF.matvec(np.ones(5)), "32 entries, got 5"),
    ("mfac-matvec-nan", lambda: MF.matvec(np.full(32, np.nan)), "v contains NaN"),
    # FisherBlocks
    ("fisherblocks-shape", lambda: oc.FisherBlocks(np.zeros((4, 8)), 1e-4, 6, 32), "shape"),
    ("fisherblocks-count", lambda: oc.FisherBlocks(np.zeros((3, 8, 8)), 1e-4, 6, 32), "ceil("),
    # LowRankFisher
    ("lowrank-1d", lambda: oc.LowRankFisher(G[0], 8, 1e-4), "non-empty 2-D array"),
    ("lowrank-damp", lambda: oc.LowRankFisher(G, 8, 0.0), "damp"),
    ("lowrank-nan", lambda: oc.LowRankFisher(G * np.nan, 8, 1e-4), "NaN or inf"),
    # fill_unseen_curvature
    ("fill-unseen-shape", lambda: oc.fill_unseen_curvature(np.zeros((8, 8)), 2), "shape"),
    ("fill-unseen-m", lambda: oc.fill_unseen_curvature(np.zeros((1, 8, 8)), 0), "num_grads"),
    # joint_well_posed / obs_quadratic_increase / obs_update(mode="auto")
    ("well-posed-m", lambda: oc.joint_well_posed(np.array([3]), 0, 8), "num_grads"),
    ("quadratic-mfac", lambda: oc.obs_quadratic_increase(W, MF), "M-FAC"),
    ("quadratic-size", lambda: oc.obs_quadratic_increase(np.ones(5), FINV), "ceil("),
    ("update-auto-m", lambda: oc.obs_update(W, FINV, ~KEEP, mode="auto"), "num_grads=m"),
]


@pytest.mark.parametrize(("call", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_obert_error(call: Callable[[], Any], message: str) -> None:
    with pytest.raises(oc.ObertError) as info:
        call()
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text


def test_every_public_function_has_a_case() -> None:
    covered = " ".join(c[0] for c in CASES)
    short = {
        "block_fisher_inverse": "fisher",
        "BlockFisherBuilder": "builder",
        "fisher_memory_bytes": "memory",
        "obs_saliency": "saliency",
        "obs_update": "update",
        "obs_nm_mask": "nm-",
        "select_mask": "select",
        "parse_nm": "parse-nm",
        "sparsity_of": "sparsity-of",
        "cubic_sparsity": "cubic",
        "linear_sparsity": "linear",
        "pruning_steps": "steps",
        "recomputation_sparsities": "recompute",
        "MFACInverse": "mfac",
        "FisherBlocks": "fisherblocks",
        "LowRankFisher": "lowrank",
        "fill_unseen_curvature": "fill-unseen",
        "joint_well_posed": "well-posed",
        "obs_quadratic_increase": "quadratic",
    }
    # The structured-pruning API (obert_core.structured) has its own bad-input tests.
    functions = {
        n
        for n in oc.__all__
        if callable(getattr(oc, n))
        and not n.endswith("Error")
        and not getattr(oc, n).__module__.startswith("obert_core.structured")
    }
    assert functions == set(short), functions ^ set(short)
    assert all(prefix in covered for prefix in short.values())


# --- shapes: results come back in the input's shape -------------------------------------------


def test_shaped_weights_give_shaped_scores_masks_and_updates() -> None:
    rho = oc.obs_saliency(W, FINV)
    assert rho.shape == (4, 8)
    np.testing.assert_array_equal(rho.reshape(-1), oc.obs_saliency(W.reshape(-1), FINV))
    rho4 = oc.obs_saliency(W, FINV, group_size=4)
    assert rho4.shape == (4, 2)
    keep = oc.select_mask({"w": rho4}, 0.5, group_size=4)["w"]
    assert keep.shape == (4, 8) and keep.dtype == bool
    np.testing.assert_array_equal(
        keep.reshape(-1),
        oc.select_mask({"w": rho4.reshape(-1)}, 0.5, group_size=4)["w"],
    )
    new = oc.obs_update(W, FINV, ~keep)
    assert new.shape == (4, 8) and new.dtype == W.dtype
    assert np.all(new[~keep] == 0)
    flat = oc.obs_update(W.reshape(-1), FINV, ~keep.reshape(-1))
    np.testing.assert_array_equal(new.reshape(-1), flat)
    nothing = oc.obs_update(W, FINV, np.zeros((4, 8), bool))  # the early-return path
    assert nothing.shape == (4, 8)
    assert oc.obs_nm_mask(W, FINV, "2:4").shape == (4, 8)
    assert MF.matvec(W).shape == (4, 8)
    assert MF.diag().shape == (32,)  # flat by nature, documented


def test_groups_straddling_rows_give_flat_scores() -> None:
    w = RNG.standard_normal((8, 4))  # 32 weights, groups of 8 straddle the rows of 4
    assert oc.obs_saliency(w, FINV, group_size=8).shape == (4,)


def test_flat_masks_still_accepted_for_shaped_weights() -> None:
    out = oc.obs_update(W, FINV, np.zeros(32, bool), current_mask=np.ones(32, bool))
    assert out.shape == (4, 8)


# --- half precision: accepted, accumulated in fp32/fp64, never a silent inf --------------------


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("method", ["batched", "streaming"])
def test_half_precision_torch_gradients_give_a_finite_float32_inverse(
    dtype: str, method: str
) -> None:
    import torch

    g = torch.from_numpy(G[:4].copy()).to(getattr(torch, dtype))  # m=4 < B=8: 1/damp entries
    finv = oc.block_fisher_inverse(g, 8, 1e-7, method=method)
    assert finv.dtype == torch.float32
    assert bool(torch.isfinite(finv).all())
    ref = oc.block_fisher_inverse(g.double(), 8, 1e-7, method=method)
    assert float((finv.double() - ref).norm() / ref.norm()) < 1e-5
    with pytest.raises(oc.ObertError, match=rf"dtype={dtype} cannot hold the inverse Fisher"):
        oc.block_fisher_inverse(g, 8, 1e-7, dtype=getattr(torch, dtype))


def test_half_precision_numpy_gradients_give_a_finite_float32_inverse() -> None:
    finv = oc.block_fisher_inverse(G[:4].astype(np.float16), 8, 1e-7, backend="numpy")
    assert finv.dtype == np.float32 and np.isfinite(finv).all()


def test_non_finite_inverse_is_an_error_not_a_silent_inf(monkeypatch: pytest.MonkeyPatch) -> None:
    from obert_core.backends import _numpy

    def overflowing(self: object, *args: object) -> np.ndarray:
        return np.full((4, 8, 8), np.inf)

    monkeypatch.setattr(_numpy.NumpyBackend, "gram_to_inverse", overflowing)
    with pytest.raises(oc.ObertError, match=r"inverse Fisher has NaN or inf entries.*damp"):
        oc.block_fisher_inverse(G, 8, 1e-4, backend="numpy")


def test_one_error_root() -> None:
    """Every obert-core error is an ObertError; bad values stay ValueErrors, a missing backend is
    an ImportError too (``except ValueError`` and ``except ImportError`` code keeps working)."""
    assert issubclass(oc.ObertError, ValueError)
    assert issubclass(oc.BackendUnavailableError, oc.ObertError)
    assert issubclass(oc.BackendUnavailableError, ImportError)
    exported = [getattr(oc, name) for name in oc.__all__]
    errors = [e for e in exported if isinstance(e, type) and issubclass(e, BaseException)]
    assert errors and all(issubclass(e, oc.ObertError) for e in errors), errors
