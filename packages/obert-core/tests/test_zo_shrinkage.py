"""Black-box OBS from shrunk per-tensor ZO traces (docs/math.md §9, (Z-8)–(Z-10)).

Oracles: a Monte-Carlo mean of real RGE rows for (Z-8); a float64 sort of the formula for (Z-9);
an explicit evaluation of every grid point for (Z-10).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from core_helpers import HAS_TORCH
from hypothesis import given, settings
from hypothesis import strategies as st

from obert_core import ObertError, select_mask
from obert_core.zo import (
    calibrate_shrinkage,
    rge,
    secant_curvatures,
    shrunk_tensor_saliency,
    tensor_curvatures,
)

needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")


def _model(seed: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    rng = np.random.default_rng(seed)
    weights = {
        "a": rng.standard_normal((6, 5)),
        "b": 0.5 * rng.standard_normal(20),
        "c": 2.0 * rng.standard_normal((3, 4)),
    }
    curv = {"a": 1e-6, "b": 3e-5, "c": 2e-8}
    return weights, curv


def _reference_mask(
    weights: dict[str, np.ndarray], curv: dict[str, float], rho: float, damp: float, s: float
) -> dict[str, np.ndarray]:
    """Brute force: (Z-9) in float64 written out, then a global sort (ties by position)."""
    sizes = {n: w.size for n, w in weights.items()}
    mean = sum(sizes[n] * curv[n] for n in weights) / sum(sizes.values())
    flat = np.concatenate(
        [w.reshape(-1) ** 2 * ((1 - rho) * curv[n] + rho * mean + damp) for n, w in weights.items()]
    )
    k = round(s * flat.size)
    keep = np.ones(flat.size, dtype=bool)
    keep[np.argsort(flat, kind="stable")[:k]] = False
    out, at = {}, 0
    for n, w in weights.items():
        out[n] = keep[at : at + w.size].reshape(w.shape)
        at += w.size
    return out


# ---------------------------------------------------------------------------------------------
# (Z-8): the per-tensor trace from the squared norms of Gaussian RGE rows.


@pytest.mark.parametrize("q", [1, 4])
def test_tensor_curvatures_invert_the_rge_norm_inflation(q: int) -> None:
    # a linear loss: central RGE is exactly (1/q) Σ (uᵀg) u, so E‖ĝ‖² = ‖g‖²(1 + (d + 1)/q)
    rng = np.random.default_rng(3)
    g = {"a": rng.standard_normal(12), "b": 0.1 * rng.standard_normal(30)}
    norms: dict[str, list[float]] = {}
    for k, (name, gk) in enumerate(g.items()):
        rows = [
            rge(lambda x, gk=gk: float(gk @ x), np.zeros(gk.size), q=q, seed=k, step=t,
                scheme="central")
            for t in range(4000)
        ]  # fmt: skip
        norms[name] = [float(r @ r) for r in rows]
    c = tensor_curvatures(norms, {n: v.size for n, v in g.items()}, q)
    for name, gk in g.items():
        assert c[name] == pytest.approx(gk @ gk / gk.size, rel=0.08)
    # and the formula itself, in float64
    exact = tensor_curvatures({"x": [2.0, 4.0]}, {"x": 9}, 2)
    assert exact["x"] == 3.0 / (1 + 10 / 2) / 9


# ---------------------------------------------------------------------------------------------
# (Z-9): the saliency and its ends (ρ = 0: per-tensor OBS, ρ = 1: magnitude).


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    rho=st.sampled_from([0.0, 0.1, 0.35, 0.8, 1.0]),
    damp=st.sampled_from([0.0, 1e-7]),
    s=st.sampled_from([0.3, 0.5, 0.7]),
)
def test_shrunk_saliency_masks_equal_the_float64_reference(
    seed: int, rho: float, damp: float, s: float
) -> None:
    weights, curv = _model(seed)
    scores = shrunk_tensor_saliency(weights, curv, rho, damp=damp)
    masks = select_mask(scores, s, scope="global")
    ref = _reference_mask(weights, curv, rho, damp, s)
    for n in weights:
        assert scores[n].dtype == np.float64 and scores[n].shape == weights[n].shape
        assert np.array_equal(masks[n], ref[n])


def test_shrinkage_ends_are_per_tensor_obs_and_magnitude() -> None:
    weights, curv = _model(1)
    obs = select_mask(shrunk_tensor_saliency(weights, curv, 0.0), 0.6)
    per_tensor = select_mask({n: w**2 * curv[n] for n, w in weights.items()}, 0.6)
    mag = select_mask(shrunk_tensor_saliency(weights, curv, 1.0), 0.6)
    magnitude = select_mask({n: np.abs(w) for n, w in weights.items()}, 0.6)
    for n in weights:
        assert np.array_equal(obs[n], per_tensor[n])
        assert np.array_equal(mag[n], magnitude[n])
    # curvature scale does not change the ranking
    scaled = select_mask(
        shrunk_tensor_saliency(weights, {n: 7.0 * c for n, c in curv.items()}, 0.3), 0.6
    )
    base = select_mask(shrunk_tensor_saliency(weights, curv, 0.3), 0.6)
    assert all(np.array_equal(scaled[n], base[n]) for n in weights)


@needs_torch
def test_torch_weights_give_the_numpy_saliencies() -> None:
    import torch

    weights, curv = _model(2)
    tw = {n: torch.from_numpy(w.astype(np.float32)) for n, w in weights.items()}
    got = shrunk_tensor_saliency(tw, curv, 0.4, damp=1e-7)
    ref = shrunk_tensor_saliency(
        {n: w.astype(np.float32) for n, w in weights.items()}, curv, 0.4, damp=1e-7
    )
    for n in weights:
        assert isinstance(got[n], torch.Tensor) and got[n].dtype == torch.float64
        np.testing.assert_allclose(got[n].numpy(), ref[n], rtol=1e-15)


# ---------------------------------------------------------------------------------------------
# (Z-10): the shrinkage chosen by the black-box loss of the pruned model.


def _quadratic_loss(weights: dict[str, np.ndarray], true_c: dict[str, float]) -> Any:
    """The loss increase of pruning under a diagonal quadratic model with per-tensor curvature."""

    def loss(masks: Any) -> float:
        return float(sum(true_c[n] * (weights[n][~masks[n]] ** 2).sum() for n in weights))

    return loss


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibration_picks_the_grid_point_of_least_loss(seed: int) -> None:
    weights, curv = _model(seed)
    rng = np.random.default_rng(seed + 10)
    true_c = {n: c * rng.uniform(0.3, 3.0) for n, c in curv.items()}  # the traces are noisy
    loss = _quadratic_loss(weights, true_c)
    grid = [0.0, 0.2, 0.5, 0.9, 1.0]
    calls: list[int] = []

    def counted(masks: Any) -> float:
        calls.append(1)
        return loss(masks)

    choice = calibrate_shrinkage(weights, curv, 0.6, counted, grid=grid)
    # brute force: every grid point's loss from an independent mask
    brute = {r: loss(_reference_mask(weights, curv, r, 0.0, 0.6)) for r in grid}
    assert choice.losses == pytest.approx(brute)
    best = min(brute.values())
    assert choice.shrinkage == max(r for r, v in brute.items() if v == best)
    ref = _reference_mask(weights, curv, choice.shrinkage, 0.0, 0.6)
    assert all(np.array_equal(choice.masks[n], ref[n]) for n in weights)
    distinct = {tuple(np.concatenate([m.reshape(-1) for m in _reference_mask(
        weights, curv, r, 0.0, 0.6).values()])) for r in grid}  # fmt: skip
    assert len(calls) == len(distinct)  # a repeated mask is not evaluated again


def test_calibration_with_the_true_curvatures_prefers_them_to_magnitude() -> None:
    weights, curv = _model(4)
    loss = _quadratic_loss(weights, curv)
    choice = calibrate_shrinkage(weights, curv, 0.5, loss, grid=[0.0, 1.0])
    assert choice.shrinkage == 0.0 and choice.losses[0.0] < choice.losses[1.0]
    # identical losses: the tie goes to the larger shrinkage (closer to magnitude)
    tie = calibrate_shrinkage(weights, curv, 0.5, lambda m: 1.0, grid=[0.0, 0.5, 1.0])
    assert tie.shrinkage == 1.0


# ---------------------------------------------------------------------------------------------
# (Z-11): secant curvatures along each tensor's pruning step.


def _bowl(weights: dict[str, np.ndarray], seed: int) -> tuple[Any, np.ndarray, list[str]]:
    """A quadratic loss with its minimum at ``weights`` and a dense SPD Hessian over all tensors."""
    names = list(weights)
    w0 = np.concatenate([weights[n].reshape(-1) for n in names])
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((w0.size, w0.size))
    h = a @ a.T / w0.size + 0.1 * np.eye(w0.size)
    calls: list[Any] = []

    def loss(replaced: Any) -> float:
        calls.append(sorted(replaced))
        v = np.concatenate([np.asarray(replaced.get(n, weights[n])).reshape(-1) for n in names])
        return float(0.5 * (v - w0) @ h @ (v - w0) + 1.0)

    loss.calls = calls  # type: ignore[attr-defined]
    return loss, h, names


def test_secant_curvatures_are_the_hessian_rayleigh_quotients_along_the_steps() -> None:
    weights, _ = _model(5)
    loss, h, names = _bowl(weights, 6)
    keep = select_mask({n: np.abs(w) for n, w in weights.items()}, 0.6, scope="layer")
    c = secant_curvatures(weights, keep, loss)
    at = 0
    for n in names:  # brute force: δ_k in the full space, δᵀHδ / ‖δ‖²
        delta = np.zeros(h.shape[0])
        size = weights[n].size
        delta[at : at + size] = (weights[n] * ~keep[n]).reshape(-1)
        at += size
        assert c[n] == pytest.approx(delta @ h @ delta / (delta @ delta), rel=1e-9)
    # one dense evaluation, then one per tensor with only that tensor replaced
    assert loss.calls == [[]] + [[n] for n in names]  # type: ignore[attr-defined]


def test_secant_curvature_of_a_loss_decrease_is_zero() -> None:
    weights = {"a": np.array([1.0, 2.0]), "b": np.array([3.0, -1.0])}
    keep = {"a": np.array([True, False]), "b": np.array([False, True])}

    def loss(replaced: Any) -> float:
        return -1.0 if "a" in replaced else (0.5 if "b" in replaced else 0.0)

    c = secant_curvatures(weights, keep, loss)
    assert c == {"a": 0.0, "b": 2 * 0.5 / 9.0}


@needs_torch
def test_secant_curvatures_take_torch_weights() -> None:
    import torch

    weights, _ = _model(7)
    loss, _, _ = _bowl(weights, 8)
    keep = select_mask({n: np.abs(w) for n, w in weights.items()}, 0.5, scope="layer")
    tw = {n: torch.from_numpy(w) for n, w in weights.items()}

    def torch_loss(replaced: Any) -> float:
        return loss({n: v.numpy() for n, v in replaced.items()})

    got = secant_curvatures(tw, keep, torch_loss)
    ref = secant_curvatures(weights, keep, loss)
    assert got == pytest.approx(ref, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Bad input: a clear ObertError naming the value.


def test_bad_input_is_named() -> None:
    weights, curv = _model(0)
    with pytest.raises(ObertError, match="q must be a positive integer, got 0"):
        tensor_curvatures({"a": [1.0]}, {"a": 3}, 0)
    with pytest.raises(ObertError, match="sizes has no entry for 'a'"):
        tensor_curvatures({"a": [1.0]}, {}, 1)
    with pytest.raises(ObertError, match=r"sq_norms\['a'\] has no rows"):
        tensor_curvatures({"a": []}, {"a": 3}, 1)
    with pytest.raises(ObertError, match=r"sq_norms\['a'\] holds -1.0"):
        tensor_curvatures({"a": [2.0, -1.0]}, {"a": 3}, 1)
    with pytest.raises(ObertError, match=r"sizes\['a'\] must be a positive integer"):
        tensor_curvatures({"a": [1.0]}, {"a": 0}, 1)
    with pytest.raises(ObertError, match="weights is empty"):
        shrunk_tensor_saliency({}, {}, 0.5)
    with pytest.raises(ObertError, match="curvatures has no entry for 'b'"):
        shrunk_tensor_saliency(weights, {"a": 1.0}, 0.5)
    with pytest.raises(ObertError, match=r"curvatures\['a'\] is -1.0"):
        shrunk_tensor_saliency(weights, {**curv, "a": -1.0}, 0.5)
    with pytest.raises(ObertError, match=r"curvatures\['a'\] must be finite"):
        shrunk_tensor_saliency(weights, {**curv, "a": float("nan")}, 0.5)
    for rho in (-0.1, 1.5, float("inf")):
        with pytest.raises(ObertError, match="shrinkage must be"):
            shrunk_tensor_saliency(weights, curv, rho)
    with pytest.raises(ObertError, match="damp must be ≥ 0, got -1"):
        shrunk_tensor_saliency(weights, curv, 0.5, damp=-1.0)
    with pytest.raises(ObertError, match="grid must be a non-empty sequence"):
        calibrate_shrinkage(weights, curv, 0.5, lambda m: 0.0, grid=[])
    with pytest.raises(ObertError, match=r"shrinkage must be in \[0, 1\].*got 2"):
        calibrate_shrinkage(weights, curv, 0.5, lambda m: 0.0, grid=[0.0, 2.0])
    with pytest.raises(ObertError, match=r"sparsity must be in \[0, 1\)"):
        calibrate_shrinkage(weights, curv, 1.0, lambda m: 0.0)
    with pytest.raises(ObertError, match="loss returned nan for the masks at shrinkage 0"):
        calibrate_shrinkage(weights, curv, 0.5, lambda m: float("nan"))
    with pytest.raises(ObertError, match="it must return one finite scalar"):
        calibrate_shrinkage(weights, curv, 0.5, lambda m: np.zeros(2))
    with pytest.raises(ObertError, match="it must return one finite scalar"):
        calibrate_shrinkage(weights, curv, 0.5, lambda m: "loss")  # type: ignore[arg-type,return-value]


def test_bad_secant_probes_are_named() -> None:
    weights = {"a": np.array([1.0, 2.0]), "b": np.array([0.0, 3.0])}
    keep = {"a": np.array([True, False]), "b": np.array([False, True])}  # b prunes only a zero
    with pytest.raises(ObertError, match="weights is empty"):
        secant_curvatures({}, {}, lambda r: 0.0)
    with pytest.raises(ObertError, match="keep has no mask for 'b'"):
        secant_curvatures(weights, {"a": keep["a"]}, lambda r: 0.0)
    with pytest.raises(ObertError, match=r"keep\['a'\] must be a boolean mask of shape \(2,\)"):
        secant_curvatures(weights, {**keep, "a": np.ones(2)}, lambda r: 0.0)
    with pytest.raises(ObertError, match=r"keep\['b'\] prunes no non-zero weight"):
        secant_curvatures(weights, keep, lambda r: 0.0)
    ok = {"a": keep["a"], "b": np.array([True, False])}
    with pytest.raises(ObertError, match="loss returned nan for the dense weights"):
        secant_curvatures(weights, ok, lambda r: float("nan"))
    with pytest.raises(ObertError, match="loss returned inf for 'a' pruned alone"):
        secant_curvatures(weights, ok, lambda r: float("inf") if r else 0.0)
