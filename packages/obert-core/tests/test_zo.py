"""obert_core.zo against autograd and NumPy oracles (docs/math.md §9, DeepZero arXiv 2310.02025)."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np
import pytest
from core_helpers import HAS_TORCH
from hypothesis import given, settings
from hypothesis import strategies as st

from obert_core import (
    BlockFisherBuilder,
    MFACInverse,
    ObertError,
    block_fisher_inverse,
    obs_saliency,
    select_mask,
)
from obert_core.zo import (
    cge,
    random_layer_masks,
    rge,
    zo_direction,
    zo_fisher_rows,
    zo_grasp_ratios,
    zo_grasp_scores,
    zo_hvp,
)

needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")


def _quadratic(d: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d))
    return a @ a.T / d + np.eye(d), rng.standard_normal(d), rng.standard_normal(d)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a.reshape(-1)))
    rb = np.argsort(np.argsort(b.reshape(-1)))
    return float(np.corrcoef(ra, rb)[0, 1])


# ---------------------------------------------------------------------------------------------
# CGE: the true gradient to O(μ) (forward) and O(μ²) (central), checked against autograd.


def _smooth_torch(x: Any) -> Any:
    """A smooth, non-quadratic loss of a (3, 4) parameter matrix (softplus + quartic)."""
    import torch

    a = torch.linspace(-1.0, 1.0, 12, dtype=x.dtype).reshape(3, 4)
    return torch.nn.functional.softplus((a * x).sum(1)).sum() + 0.1 * (x**4).sum()


@needs_torch
@pytest.mark.parametrize(("scheme", "order"), [("forward", 1), ("central", 2)])
def test_cge_is_the_autograd_gradient_to_order_mu(scheme: str, order: int) -> None:
    import torch

    theta = torch.linspace(-0.7, 0.9, 12, dtype=torch.float64).reshape(3, 4)
    true = torch.func.grad(_smooth_torch)(theta)
    errors = []
    for mu in (1e-2, 1e-3):
        est = cge(_smooth_torch, theta, mu=mu, scheme=scheme)
        assert est.shape == theta.shape and est.dtype == torch.float64
        errors.append(float((est - true).abs().max()))
    assert errors[0] < 1e-2**order
    ratio = errors[0] / errors[1]
    assert 10**order / 2 < ratio < 10**order * 2  # the error shrinks as μ^order


@needs_torch
def test_cge_numpy_reference_equals_torch_and_respects_the_mask() -> None:
    import torch

    theta = torch.linspace(-0.7, 0.9, 12, dtype=torch.float64).reshape(3, 4)
    mask = (torch.arange(12).reshape(3, 4) % 3) != 0

    def loss_np(x: np.ndarray) -> float:
        return float(_smooth_torch(torch.from_numpy(x)))

    est_t = cge(_smooth_torch, theta, mask, mu=1e-4)
    est_n = cge(loss_np, theta.numpy(), mask.numpy(), mu=1e-4)
    assert isinstance(est_n, np.ndarray) and est_n.dtype == np.float64
    np.testing.assert_allclose(est_t.numpy(), est_n, rtol=0, atol=1e-12)
    assert (est_t[~mask] == 0).all()
    true = torch.func.grad(_smooth_torch)(theta)
    np.testing.assert_allclose(est_t[mask].numpy(), true[mask].numpy(), atol=1e-3)


@needs_torch
def test_cge_float32_uses_the_representable_step() -> None:
    import torch

    theta = torch.linspace(-0.7, 0.9, 12, dtype=torch.float32).reshape(3, 4) * 3
    true = torch.func.grad(_smooth_torch)(theta.double())
    est = cge(_smooth_torch, theta, mu=1e-2, scheme="central")
    assert est.dtype == torch.float32
    np.testing.assert_allclose(est.double().numpy(), true.numpy(), rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# RGE: unbiased for the smoothed gradient.


def _mean_and_stderr(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return samples.mean(0), samples.std(0, ddof=1) / np.sqrt(samples.shape[0])


@pytest.mark.parametrize(
    ("distribution", "segments"), [("gaussian", None), ("sphere", None), ("sphere", [2, 3])]
)
def test_rge_mean_over_seeds_is_the_gradient_on_a_quadratic(
    distribution: str, segments: list[int] | None
) -> None:
    h, b, theta = _quadratic(5, 0)

    def loss(x: np.ndarray) -> float:
        return float(0.5 * x @ h @ x + b @ x)

    samples = np.stack(
        [
            rge(loss, theta, mu=0.3, seed=s, distribution=distribution, segments=segments)
            for s in range(3000)
        ]
    )
    mean, se = _mean_and_stderr(samples)
    assert np.all(np.abs(mean - (h @ theta + b)) < 4.5 * se)


def test_rge_converges_to_the_smoothed_gradient_not_the_gradient() -> None:
    # l(x) = Σ cos(x_j): Gaussian smoothing gives l_μ = e^{−μ²/2} l, so ∇l_μ = −e^{−μ²/2} sin x.
    theta = np.array([0.9, -1.2, 1.5])
    mu = 0.6
    samples = np.stack(
        [
            rge(lambda x: float(np.cos(x).sum()), theta, mu=mu, seed=s, scheme="central")
            for s in range(20000)
        ]
    )
    mean, se = _mean_and_stderr(samples)
    smoothed = -np.exp(-(mu**2) / 2) * np.sin(theta)
    assert np.all(np.abs(mean - smoothed) < 4.5 * se)
    assert np.max(np.abs(mean + np.sin(theta)) / se) > 8  # the plain gradient is rejected


def test_rge_is_the_formula_with_regenerated_directions() -> None:
    h, b, theta = _quadratic(4, 1)

    def loss(x: np.ndarray) -> float:
        return float(0.5 * x @ h @ x + b @ x)

    mu, q = 1e-2, 3
    want = np.zeros(4)
    for i in range(q):
        u = zo_direction(theta, 7, 2, i)
        want += (loss(theta + mu * u) - loss(theta)) / mu * u / q
    np.testing.assert_allclose(rge(loss, theta, mu=mu, q=q, seed=7, step=2), want, rtol=1e-12)


@needs_torch
def test_rge_torch_is_the_formula_and_batched_calls_agree() -> None:
    import torch

    h, b, theta_np = _quadratic(6, 2)
    ht, bt, theta = torch.from_numpy(h), torch.from_numpy(b), torch.from_numpy(theta_np)

    def loss(x: Any) -> Any:
        return 0.5 * x @ ht @ x + bt @ x

    def batched(xs: Any) -> Any:
        return 0.5 * torch.einsum("ki,ij,kj->k", xs, ht, xs) + xs @ bt

    mu, q = 1e-3, 4
    want = torch.zeros(6, dtype=torch.float64)
    for i in range(q):
        u = zo_direction(theta, 3, 0, i)
        assert u.dtype == torch.float64
        want += (loss(theta + mu * u) - loss(theta)) / mu * u / q
    got = rge(loss, theta, mu=mu, q=q, seed=3)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    got_b = rge(batched, theta, mu=mu, q=q, seed=3, batch_size=3)
    torch.testing.assert_close(got_b, want, rtol=1e-10, atol=1e-10)


def test_sphere_directions_have_the_segment_radii() -> None:
    u = zo_direction(np.zeros(10), 0, 0, 0, distribution="sphere", segments=[4, 6])
    np.testing.assert_allclose(
        [np.linalg.norm(u[:4]), np.linalg.norm(u[4:])], [2.0, np.sqrt(6)], rtol=1e-14
    )


# ---------------------------------------------------------------------------------------------
# ZO Hessian-vector product.


@settings(max_examples=20, deadline=None)
@given(
    d=st.integers(1, 7), seed=st.integers(0, 2**16), scheme=st.sampled_from(["forward", "central"])
)
def test_zo_hvp_with_cge_is_the_exact_hvp_on_quadratics(d: int, seed: int, scheme: str) -> None:
    h, b, theta = _quadratic(d, seed)
    v = np.random.default_rng(seed + 1).standard_normal(d)

    def loss(x: np.ndarray) -> float:
        return float(0.5 * x @ h @ x + b @ x)

    got = zo_hvp(loss, theta, v, estimator="cge", mu=1e-2, scheme=scheme)
    np.testing.assert_allclose(got, h @ v, rtol=1e-6, atol=1e-6 * np.abs(h @ v).max())


def test_zo_hvp_with_rge_is_the_projected_hvp_and_unbiased() -> None:
    h, b, theta = _quadratic(4, 3)
    v = np.array([1.0, -0.5, 0.25, 2.0])

    def loss(x: np.ndarray) -> float:
        return float(0.5 * x @ h @ x + b @ x)

    q = 5
    u = np.stack([zo_direction(theta, 11, 4, i) for i in range(q)])
    got = zo_hvp(loss, theta, v, q=q, seed=11, step=4, mu=1e-2)
    np.testing.assert_allclose(got, u.T @ (u @ (h @ v)) / q, rtol=1e-6, atol=1e-6)
    samples = np.stack([zo_hvp(loss, theta, v, seed=s) for s in range(3000)])
    mean, se = _mean_and_stderr(samples)
    assert np.all(np.abs(mean - h @ v) < 4.5 * se)


@needs_torch
def test_zo_hvp_torch_matches_autograd_hvp() -> None:
    import torch

    h, b, theta_np = _quadratic(5, 4)
    ht, bt, theta = torch.from_numpy(h), torch.from_numpy(b), torch.from_numpy(theta_np)
    v = torch.linspace(-1, 1, 5, dtype=torch.float64)

    def loss(x: Any) -> Any:
        return 0.5 * x @ ht @ x + bt @ x + 0.0 * torch.cos(x).sum() ** 2

    exact = torch.autograd.functional.hvp(loss, theta, v)[1]
    got = zo_hvp(loss, theta, v, estimator="cge", mu=1e-3)
    torch.testing.assert_close(got, exact, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# ZO-GraSP and DeepZero's random layer masks.


def test_zo_grasp_scores_rank_like_the_exact_grasp_scores() -> None:
    h, b, theta = _quadratic(8, 5)

    def loss(x: np.ndarray) -> float:
        return float(0.5 * x @ h @ x + b @ x)

    exact = -theta * (h @ (h @ theta + b))
    scores = zo_grasp_scores(loss, theta, q=4000, mu=1e-2, seed=1)
    assert scores.shape == theta.shape
    assert _spearman(np.abs(scores), np.abs(exact)) > 0.9
    again = zo_grasp_scores(loss, theta, q=4000, mu=1e-2, seed=1)
    assert np.array_equal(scores, again)


def test_zo_grasp_ratios_are_the_per_tensor_sparsities_of_the_global_ranking() -> None:
    rng = np.random.default_rng(0)
    scores = {"a": rng.standard_normal((4, 5)), "b": 3 * rng.standard_normal(30)}
    ratios = zo_grasp_ratios(scores, 0.6)
    masks = select_mask({k: np.abs(v) for k, v in scores.items()}, 0.6)
    for name, mask in masks.items():
        assert ratios[name] == pytest.approx(1 - mask.mean())
    total = sum(ratios[n] * scores[n].size for n in scores)
    assert total == pytest.approx(0.6 * 50)
    assert ratios["a"] > ratios["b"]  # the larger |S| of b survive the global ranking


def test_random_layer_masks_prune_exact_counts_reproducibly() -> None:
    like = {"a": np.zeros((10, 10)), "b": np.zeros(7), "c": np.zeros(3)}
    masks = random_layer_masks(like, {"a": 0.35, "b": 0.5}, seed=4, step=2)
    assert [int((~m).sum()) for m in masks.values()] == [35, 4, 0]
    assert masks["a"].shape == (10, 10) and masks["a"].dtype == bool
    again = random_layer_masks(like, {"a": 0.35, "b": 0.5}, seed=4, step=2)
    assert all(np.array_equal(masks[k], again[k]) for k in like)
    other = random_layer_masks(like, {"a": 0.35, "b": 0.5}, seed=4, step=3)
    assert not np.array_equal(masks["a"], other["a"])


# ---------------------------------------------------------------------------------------------
# ZO Fisher rows feeding the blocked inverse / M-FAC and the OBS saliency.


def _logistic_problem(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * rng.uniform(0.2, 2.0, d)
    w = rng.standard_normal(d)
    y = np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-x @ w)), 1.0, -1.0)
    return x, y, w


def _per_sample_grads(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Analytic gradients of log(1 + exp(−y x·w)) (the autograd-free oracle)."""
    s = 1 / (1 + np.exp(y * (x @ w)))
    return -(y * s)[:, None] * x


def _sample_losses(x: np.ndarray, y: np.ndarray) -> list[Any]:
    return [
        (lambda w, xi=xi, yi=yi: float(np.logaddexp(0.0, -yi * (xi @ w))))
        for xi, yi in zip(x, y, strict=True)
    ]


@pytest.mark.parametrize(("estimator", "q", "min_corr"), [("cge", 1, 0.999), ("rge", 256, 0.9)])
def test_zo_fisher_rows_give_obs_saliencies_like_the_true_gradients(
    estimator: str, q: int, min_corr: float
) -> None:
    x, y, w = _logistic_problem(64, 8, 0)
    true = _per_sample_grads(x, y, w)
    rows = np.stack(
        list(
            zo_fisher_rows(
                _sample_losses(x, y), w, estimator=estimator, q=q, mu=1e-4, scheme="central"
            )
        )
    )
    assert rows.shape == true.shape
    if estimator == "cge":
        np.testing.assert_allclose(rows, true, atol=1e-8)
    exact = obs_saliency(w, block_fisher_inverse(true, 4, 1e-3))
    for finv in (block_fisher_inverse(rows, 4, 1e-3), MFACInverse(rows, 1e-3, block_size=4)):
        assert _spearman(obs_saliency(w, finv), exact) > min_corr
    builder = BlockFisherBuilder(8, 4, 1e-3, 64)
    for row in zo_fisher_rows(
        _sample_losses(x, y), w, estimator=estimator, q=q, mu=1e-4, scheme="central"
    ):
        builder.add(row)
    np.testing.assert_allclose(builder.finalize(), block_fisher_inverse(rows, 4, 1e-3), rtol=1e-12)


def test_zo_fisher_rows_draw_fresh_directions_per_row() -> None:
    x, y, w = _logistic_problem(3, 5, 1)
    rows = list(zo_fisher_rows(_sample_losses(x, y), w, q=2, seed=9, step=5))
    for t, row in enumerate(rows):
        np.testing.assert_array_equal(row, rge(_sample_losses(x, y)[t], w, q=2, seed=9, step=5 + t))


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")),
    reason="onnx / onnxruntime not installed",
)
def test_zo_fisher_rows_from_an_onnx_runtime_loss_oracle() -> None:
    """A model without autograd: per-sample logistic losses of a batch of weight vectors."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    x, y, w = _logistic_problem(32, 6, 2)
    nodes = [
        helper.make_node("MatMul", ["W", "Xt"], ["z"]),  # (k, n)
        helper.make_node("Mul", ["z", "negy"], ["m"]),
        helper.make_node("Exp", ["m"], ["e"]),  # softplus(m) = log(1 + exp(m))
        helper.make_node("Add", ["e", "one"], ["p"]),
        helper.make_node("Log", ["p"], ["L"]),
    ]
    graph = helper.make_graph(
        nodes,
        "logistic",
        [helper.make_tensor_value_info("W", TensorProto.DOUBLE, ["k", 6])],
        [helper.make_tensor_value_info("L", TensorProto.DOUBLE, ["k", 32])],
        [
            numpy_helper.from_array(x.T.copy(), "Xt"),
            numpy_helper.from_array(-y, "negy"),
            numpy_helper.from_array(np.array(1.0), "one"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def sample_loss(t: int) -> Any:
        return lambda ws: session.run(None, {"W": ws})[0][:, t]  # batched: (k, 6) -> (k,)

    losses = [sample_loss(t) for t in range(32)]
    rows = np.stack(
        list(zo_fisher_rows(losses, w, estimator="cge", mu=1e-4, scheme="central", batch_size=6))
    )
    true = _per_sample_grads(x, y, w)
    np.testing.assert_allclose(rows, true, atol=1e-8)
    finv = block_fisher_inverse(rows, 6, 1e-4)
    np.testing.assert_allclose(
        obs_saliency(w, finv), obs_saliency(w, block_fisher_inverse(true, 6, 1e-4)), rtol=1e-5
    )


# ---------------------------------------------------------------------------------------------
# Reproducibility: the key (seed, step, index) fixes everything; workers never change a bit.


def _loss_np(x: np.ndarray) -> float:
    return float(np.sum(np.sin(x) * np.arange(1, x.size + 1)))


def test_same_seed_is_bit_identical_and_workers_change_nothing() -> None:
    theta = np.linspace(-1, 1, 9)
    first = rge(_loss_np, theta, q=6, seed=3, step=8)
    assert np.array_equal(first, rge(_loss_np, theta, q=6, seed=3, step=8))
    assert not np.array_equal(first, rge(_loss_np, theta, q=6, seed=4, step=8))
    assert not np.array_equal(first, rge(_loss_np, theta, q=6, seed=3, step=9))
    if len(os.sched_getaffinity(0)) >= 2:
        assert np.array_equal(first, rge(_loss_np, theta, q=6, seed=3, step=8, workers=2))
        np.testing.assert_array_equal(cge(_loss_np, theta), cge(_loss_np, theta, workers=2))


@needs_torch
def test_torch_directions_are_reproducible_per_device_and_dtype() -> None:
    import torch

    theta = torch.zeros(3, 5)
    u = zo_direction(theta, 1, 2, 3)
    assert u.shape == (3, 5) and u.dtype == torch.float32
    assert torch.equal(u, zo_direction(theta, 1, 2, 3))
    assert not torch.equal(u, zo_direction(theta, 1, 2, 4))


# ---------------------------------------------------------------------------------------------
# Bad input: a clear ObertError naming the value.


@pytest.mark.parametrize("mu", [0.0, -1e-3, float("nan"), float("inf"), True, "1e-3"])
def test_bad_mu_is_named(mu: object) -> None:
    with pytest.raises(ObertError, match="mu must be"):
        rge(_loss_np, np.zeros(3), mu=mu)  # type: ignore[arg-type]
    with pytest.raises(ObertError, match="mu must be"):
        cge(_loss_np, np.zeros(3), mu=mu)  # type: ignore[arg-type]


@pytest.mark.parametrize("q", [0, -2, 1.5])
def test_bad_q_is_named(q: object) -> None:
    with pytest.raises(ObertError, match=f"q must be a positive integer, got {q!r}"):
        rge(_loss_np, np.zeros(3), q=q)  # type: ignore[arg-type]


def test_a_non_scalar_or_non_finite_loss_stops_and_names_the_point() -> None:
    with pytest.raises(ObertError, match=r"returned shape \(3,\) at the unperturbed theta"):
        rge(lambda x: x, np.zeros(3))
    with pytest.raises(ObertError, match=r"returned nan at direction 0 \(seed=5"):
        rge(lambda x: np.nan if x.any() else 0.0, np.zeros(3), seed=5)
    with pytest.raises(ObertError, match=r"returned inf at coordinate 2"):
        cge(lambda x: np.inf if x[2] else 0.0, np.zeros(3))
    with pytest.raises(ObertError, match="must return a number"):
        cge(lambda x: "loss", np.zeros(3))
    with pytest.raises(ObertError, match="2 losses, one per point"):
        rge(lambda xs: np.zeros(1), np.zeros(3), q=2, batch_size=2, scheme="central")
    with pytest.raises(ObertError, match="zo_fisher_rows row 1"):
        list(zo_fisher_rows([_loss_np, lambda x: np.nan], np.zeros(3)))


def test_bad_masks_and_settings_are_named() -> None:
    theta = np.zeros((2, 3))
    with pytest.raises(ObertError, match="keeps no coordinate"):
        cge(_loss_np, theta, np.zeros((2, 3), dtype=bool))
    with pytest.raises(ObertError, match="must be a boolean mask"):
        cge(_loss_np, theta, np.ones((2, 3)))
    with pytest.raises(ObertError, match=r"mask has shape \(3, 2\)"):
        cge(_loss_np, theta, np.ones((3, 2), dtype=bool))
    cores = len(os.sched_getaffinity(0))
    with pytest.raises(ObertError, match=f"workers={cores + 1} exceeds the {cores} CPU cores"):
        rge(_loss_np, theta, workers=cores + 1)
    with pytest.raises(ObertError, match="floating-point"):
        rge(_loss_np, np.zeros(3, dtype=np.int64))
    with pytest.raises(ObertError, match="unknown scheme 'backward'"):
        rge(_loss_np, theta, scheme="backward")
    with pytest.raises(ObertError, match=r"segments=.* only applies to distribution='sphere'"):
        rge(_loss_np, theta, segments=[6])
    with pytest.raises(ObertError, match="adding up to the 6 parameters"):
        rge(_loss_np, theta, distribution="sphere", segments=[2, 3])
    with pytest.raises(ObertError, match="v has 5 entries but theta has 6"):
        zo_hvp(_loss_np, theta, np.ones(5))
    with pytest.raises(ObertError, match="mask applies to estimator='cge' only"):
        zo_hvp(_loss_np, theta, np.ones(6), mask=np.ones(6, dtype=bool))
    with pytest.raises(ObertError, match="loss must be a callable"):
        rge(3, theta)  # type: ignore[arg-type]
    with pytest.raises(ObertError, match="seed must be an integer ≥ 0, got -1"):
        zo_direction(theta, -1, 0, 0)
    with pytest.raises(ObertError, match=r"sparsities\['a'\] must be in \[0, 1\)"):
        random_layer_masks({"a": theta}, {"a": 1.0})


@needs_torch
def test_parameters_that_require_grad_build_no_autograd_graph() -> None:
    import torch

    theta = torch.linspace(-1, 1, 6, dtype=torch.float64, requires_grad=True)
    seen: list[bool] = []

    def loss(x: Any) -> Any:
        seen.append(x.requires_grad)
        return (x**2).sum()

    for out in (
        rge(loss, theta, q=2, workers=1),
        cge(loss, theta),
        zo_hvp(loss, theta, torch.ones(6, dtype=torch.float64), estimator="cge"),
        zo_grasp_scores(loss, theta, q=2),
    ):
        assert not out.requires_grad and out.grad_fn is None
    assert not any(seen)
    torch.testing.assert_close(cge(loss, theta, scheme="central"), 2 * theta.detach())


@needs_torch
@pytest.mark.gpu
@pytest.mark.skipif(
    not HAS_TORCH or not __import__("torch").cuda.is_available(), reason="needs CUDA"
)
def test_cuda_estimates_match_the_cpu_ones() -> None:
    import torch

    h, b, theta_np = _quadratic(6, 7)
    v = torch.linspace(-1, 1, 6, dtype=torch.float64)

    def make(device: str) -> tuple[Any, Any]:
        ht, bt = torch.from_numpy(h).to(device), torch.from_numpy(b).to(device)
        return (lambda x: 0.5 * x @ ht @ x + bt @ x), torch.from_numpy(theta_np).to(device)

    loss_c, theta_c = make("cpu")
    loss_g, theta_g = make("cuda")
    torch.testing.assert_close(
        cge(loss_g, theta_g).cpu(), cge(loss_c, theta_c), rtol=1e-9, atol=1e-9
    )
    torch.testing.assert_close(
        zo_hvp(loss_g, theta_g, v.cuda(), estimator="cge").cpu(),
        torch.from_numpy(h) @ v,
        rtol=1e-6,
        atol=1e-6,
    )
    u = zo_direction(theta_g, 1, 2, 3)
    assert u.device.type == "cuda" and torch.equal(u, zo_direction(theta_g, 1, 2, 3))
    g = rge(loss_g, theta_g, q=3, seed=1)
    assert g.device.type == "cuda" and torch.equal(g, rge(loss_g, theta_g, q=3, seed=1))
