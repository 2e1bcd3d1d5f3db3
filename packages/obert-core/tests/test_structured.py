"""Structured atoms (FFN neurons, heads): output-space saliency, OBS correction, selection.

Every property is checked against a brute-force float64 NumPy oracle: loss differences of a real
quadratic model, explicit loops over tokens, ``numpy.linalg.lstsq`` re-fits, exhaustive search.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from core_helpers import HAS_TORCH
from hypothesis import given, settings
from hypothesis import strategies as st

import obert_core as oc

needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs torch")


# ----------------------------------------------------------------------------- brute-force oracles
def _cols(q: int, g: int) -> np.ndarray:
    return np.arange(q * g, (q + 1) * g)


def _brute_unfactorised(w, a, gr, g, tw=None):
    """½ Σ_t w_t (g_tᵀ Δy_t)² / Σ_t w_t with Δy_t = W_q a_{t,q}, token by token."""
    tw = np.ones(a.shape[0]) if tw is None else tw
    out = []
    for q in range(w.shape[1] // g):
        c = _cols(q, g)
        tot = sum(tw[t] * (gr[t] @ (w[:, c] @ a[t, c])) ** 2 for t in range(a.shape[0]))
        out.append(0.5 * tot / tw.sum())
    return np.array(out)


def _brute_factorised(w, a, gr, g, tw=None):
    """½ tr(A_qq W_qᵀ G W_q) with A = E[a aᵀ], G = E[g gᵀ] (weighted)."""
    tw = np.ones(a.shape[0]) if tw is None else tw
    amat = (a * tw[:, None]).T @ a / tw.sum()
    gmat = (gr * tw[:, None]).T @ gr / tw.sum()
    out = []
    for q in range(w.shape[1] // g):
        c = _cols(q, g)
        out.append(0.5 * np.trace(amat[np.ix_(c, c)] @ w[:, c].T @ gmat @ w[:, c]))
    return np.array(out)


def _augmented(a, damp, bias):
    """Rows whose Gram is the damped H (of [a; 1] with a bias): tokens/√N, then √(λ·mean)·I."""
    x = np.concatenate([a, np.ones((a.shape[0], 1))], 1) if bias else a
    h = x.T @ x / a.shape[0]
    lam = damp * np.diag(h)[: a.shape[1]].mean()
    return np.concatenate([x / np.sqrt(a.shape[0]), np.sqrt(lam) * np.eye(x.shape[1])]), h


def _lstsq_refit(w_aug, x, removed_cols):
    """argmin ‖x (W − W')ᵀ‖² over W' with W'[:, removed] = 0, by numpy.linalg.lstsq; and its error."""
    keep = np.setdiff1d(np.arange(w_aug.shape[1]), removed_cols)
    y = x @ w_aug.T
    coef = np.linalg.lstsq(x[:, keep], y, rcond=None)[0]
    new = np.zeros_like(w_aug)
    new[:, keep] = coef.T
    return new, float(((x @ (w_aug - new).T) ** 2).sum())


def _problem(seed, d, n, g, t, bias=False):
    rng = np.random.default_rng(seed)
    m = n * g
    w = rng.standard_normal((d, m))
    a = rng.standard_normal((t, m)) * rng.uniform(0.2, 2.0, m) + rng.standard_normal(m) * 0.5
    b = rng.standard_normal(d) if bias else None
    return rng, w, a, b


# ------------------------------------------------------------------- (a) quadratic model at optimum
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    g=st.integers(1, 3),
    n=st.integers(1, 4),
    d=st.integers(1, 5),
    t=st.integers(2, 10),
)
def test_removing_one_group_at_an_optimum_costs_its_unfactorised_saliency(
    seed: int, g: int, n: int, d: int, t: int
) -> None:
    """ℓ_t(y) = ½(u_tᵀy − c_t)², every token twice with residual +1 and −1: the W-gradient is 0
    (an optimum) and each token's Hessian u_t u_tᵀ equals its empirical Fisher g_t g_tᵀ, so removing
    group q raises the mean loss by exactly ½ E[(g_tᵀ Δy_t)²]."""
    rng, w, a, _ = _problem(seed, d, n, g, t)
    u = rng.standard_normal((t, d))
    a2, u2 = np.concatenate([a, a]), np.concatenate([u, u])
    r = np.concatenate([np.ones(t), -np.ones(t)])
    c = (u2 * (a2 @ w.T)).sum(1) - r

    def loss(wn: np.ndarray) -> float:
        return float(0.5 * np.mean(((u2 * (a2 @ wn.T)).sum(1) - c) ** 2))

    grads = r[:, None] * u2  # ∂ℓ_t/∂y_t = (u_tᵀy_t − c_t) u_t
    np.testing.assert_allclose(grads.T @ a2, 0, atol=1e-10)  # at the optimum in W
    s = oc.output_saliency(w, a2, grads, group_size=g, kind="unfactorised")
    np.testing.assert_allclose(s, _brute_unfactorised(w, a2, grads, g), rtol=1e-10, atol=1e-12)
    for q in range(n):
        wq = w.copy()
        wq[:, _cols(q, g)] = 0
        np.testing.assert_allclose(loss(wq) - loss(w), s[q], rtol=1e-9, atol=1e-12)


@needs_torch
def test_autograd_gradients_of_the_summed_loss_give_the_loss_increase() -> None:
    """As a caller gets them: a backward hook on y with the *summed* per-token loss yields g_t."""
    import torch

    rng, w, a, _ = _problem(3, 4, 6, 1, 7)
    u = rng.standard_normal((7, 4))
    a2, u2 = np.concatenate([a, a]), np.concatenate([u, u])
    r = np.concatenate([np.ones(7), -np.ones(7)])
    c = torch.from_numpy((u2 * (a2 @ w.T)).sum(1) - r)
    tw, ta, tu = (torch.from_numpy(x) for x in (w, a2, u2))
    y = (ta @ tw.T).requires_grad_(True)
    (0.5 * (((tu * y).sum(1) - c) ** 2).sum()).backward()
    stats = oc.StructuredStats(tw)
    stats.add(ta, y.grad)
    s = stats.saliency("unfactorised")
    assert isinstance(s, torch.Tensor) and s.dtype == torch.float64
    for k in range(6):
        wk = tw.clone()
        wk[:, k] = 0
        inc = 0.5 * (((tu * (ta @ wk.T)).sum(1) - c) ** 2).mean() - 0.5
        assert abs(float(inc) - float(s[k])) < 1e-10


# ------------------------------------------------------------- (b) factorised = unfactorised cases
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), g=st.integers(1, 3), n=st.integers(1, 4), t=st.integers(1, 12))
def test_factorised_equals_unfactorised_when_a_a_transpose_is_constant_over_tokens(
    seed: int, g: int, n: int, t: int
) -> None:
    rng, w, _, _ = _problem(seed, 3, n, g, t)
    v = rng.standard_normal((n, g))  # a_{t,q} = ±v_q: a_q a_qᵀ = v_q v_qᵀ for every token
    a = (rng.choice([-1.0, 1.0], (t, n))[:, :, None] * v[None]).reshape(t, n * g)
    gr = rng.standard_normal((t, 3))
    fac = oc.output_saliency(w, a, gr, group_size=g)
    unf = oc.output_saliency(w, a, gr, group_size=g, kind="unfactorised")
    np.testing.assert_allclose(fac, unf, rtol=1e-10, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), g=st.integers(1, 3), n1=st.integers(1, 5), n2=st.integers(1, 5))
def test_factorised_equals_unfactorised_when_a_and_g_are_independent(
    seed: int, g: int, n1: int, n2: int
) -> None:
    """Every pair (a_i, g_j) of two sets once: the empirical distribution is exactly a product."""
    rng, w, a1, _ = _problem(seed, 4, 3, g, n1)
    g1 = rng.standard_normal((n2, 4))
    a = np.repeat(a1, n2, axis=0)
    gr = np.tile(g1, (n1, 1))
    tw = np.repeat(rng.uniform(0.5, 2, n1), n2)  # weights depending on a only keep independence
    fac = oc.output_saliency(w, a, gr, group_size=g, token_weight=tw)
    unf = oc.output_saliency(w, a, gr, group_size=g, kind="unfactorised", token_weight=tw)
    np.testing.assert_allclose(fac, unf, rtol=1e-9, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), g=st.integers(1, 3), n=st.integers(1, 4), t=st.integers(1, 9))
def test_saliencies_equal_the_token_by_token_formulas(seed: int, g: int, n: int, t: int) -> None:
    rng, w, a, _ = _problem(seed, 3, n, g, t)
    gr = rng.standard_normal((t, 3)) * 1e-2
    tw = rng.uniform(0, 2, t)
    tw[0] = 1.0
    for kind, oracle in (("factorised", _brute_factorised), ("unfactorised", _brute_unfactorised)):
        out = oc.output_saliency(w, a, gr, group_size=g, kind=kind, token_weight=tw)
        assert out.shape == (n,) and out.dtype == np.float64 and (out >= 0).all()
        np.testing.assert_allclose(out, oracle(w, a, gr, g, tw), rtol=1e-9, atol=1e-15)
    # HEAPr's published score for atoms is 2 × ours: E[a_k²] · w_kᵀ G w_k
    if g == 1:
        heapr = (
            (a**2 * tw[:, None]).sum(0)
            / tw.sum()
            * np.einsum("dk,de,ek->k", w, (gr * tw[:, None]).T @ gr / tw.sum(), w)
        )
        np.testing.assert_allclose(2 * oc.output_saliency(w, a, gr, token_weight=tw), heapr)


# --------------------------------------------------------------------- (c) correction = lstsq
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    g=st.integers(1, 3),
    n=st.integers(1, 5),
    d=st.integers(1, 4),
    damp=st.sampled_from([0.0, 1e-3, 0.01, 0.5]),
    bias=st.booleans(),
    data=st.data(),
)
def test_correction_is_the_least_squares_optimum(
    seed: int, g: int, n: int, d: int, damp: float, bias: bool, data: st.DataObject
) -> None:
    _, w, a, b = _problem(seed, d, n, g, 3 * n * g + 4, bias)
    remove = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
    stats = oc.StructuredStats(w, group_size=g)
    stats.add(a)
    h = stats.input_hessian(bias=bias)
    x, h_ref = _augmented(a, damp, bias)
    np.testing.assert_allclose(h, h_ref, rtol=1e-12, atol=1e-12)
    res = oc.obs_group_correction(w, h, remove, group_size=g, damp=damp, bias=b)
    w_aug = np.concatenate([w, b[:, None]], 1) if bias else w
    cols = (
        np.concatenate([_cols(q, g) for q in remove]).astype(int) if remove else np.array([], int)
    )
    ref, err = _lstsq_refit(w_aug, x, cols)
    np.testing.assert_allclose(res.weight, ref[:, : n * g], atol=1e-8 * (1 + np.abs(ref).max()))
    assert (res.weight[:, cols] == 0).all()
    assert res.removed.tolist() == sorted(remove) and res.costs is None
    if bias:
        np.testing.assert_allclose(res.bias, ref[:, -1], atol=1e-8 * (1 + np.abs(ref).max()))
    else:
        assert res.bias is None
    np.testing.assert_allclose(res.error, err, rtol=1e-7, atol=1e-10)
    # re-fitting never costs more than only zeroing the columns
    zeroed = w_aug.copy()
    zeroed[:, cols] = 0
    assert res.error <= float(((x @ (w_aug - zeroed).T) ** 2).sum()) + 1e-9
    if damp == 0.0 and not bias:  # then E is the plain mean squared output change
        direct = np.mean(((a @ (w - res.weight).T) ** 2).sum(1))
        np.testing.assert_allclose(res.error, direct, rtol=1e-7, atol=1e-10)


# ------------------------------------------------------------- (d) greedy OBS = brute-force search
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    g=st.integers(1, 3),
    n=st.integers(2, 5),
    d=st.integers(1, 4),
    bias=st.booleans(),
)
def test_greedy_group_obs_equals_brute_force_search(
    seed: int, g: int, n: int, d: int, bias: bool
) -> None:
    damp = 0.01
    _, w, a, b = _problem(seed, d, n, g, 2 * n * g + 3, bias)
    stats = oc.StructuredStats(w, group_size=g, output_fisher=False)
    stats.add(a)
    h = stats.input_hessian(bias=bias)
    x, _ = _augmented(a, damp, bias)
    w_aug = np.concatenate([w, b[:, None]], 1) if bias else w
    single = np.array([_lstsq_refit(w_aug, x, _cols(q, g))[1] for q in range(n)])
    sal = oc.obs_group_saliency(w, h, group_size=g, damp=damp, bias=b)
    np.testing.assert_allclose(sal, single, rtol=1e-7, atol=1e-10)
    one = oc.obs_group_prune(w, h, 1, group_size=g, damp=damp, bias=b)
    assert one.removed.tolist() == [int(np.argmin(single))]
    np.testing.assert_allclose(one.error, single.min(), rtol=1e-7, atol=1e-10)
    # k greedy steps: at each step the brute-force best next group given the ones already removed
    k = n - 1
    res = oc.obs_group_prune(w, h, k, group_size=g, damp=damp, bias=b)
    gone: list[int] = []
    prev = 0.0
    for step in range(k):
        errs = {
            q: _lstsq_refit(w_aug, x, np.concatenate([_cols(p, g) for p in [*gone, q]]))[1]
            for q in range(n)
            if q not in gone
        }
        best = min(errs.values())
        assert errs[int(res.removed[step])] <= best * (1 + 1e-7) + 1e-10
        np.testing.assert_allclose(res.costs[step], errs[int(res.removed[step])] - prev, atol=1e-8)
        gone.append(int(res.removed[step]))
        prev = errs[gone[-1]]
    np.testing.assert_allclose(res.error, prev, rtol=1e-7, atol=1e-10)
    # the greedy weights are the one-solve correction of the set it chose
    same = oc.obs_group_correction(w, h, res.removed, group_size=g, damp=damp, bias=b)
    np.testing.assert_allclose(res.weight, same.weight, atol=1e-8)
    np.testing.assert_allclose(res.error, same.error, rtol=1e-8, atol=1e-12)
    removed_cols = np.concatenate([_cols(q, g) for q in res.removed])
    assert (res.weight[:, removed_cols] == 0).all()


@pytest.mark.parametrize(("n", "g", "k"), [(20, 1, 17), (12, 2, 11)])
def test_greedy_over_many_steps_equals_brute_force_greedy(n: int, g: int, k: int) -> None:
    """Enough steps that removed groups are dropped from the working arrays (every n/4 steps)."""
    _, w, a, b = _problem(9, 3, n, g, 3 * n * g, True)
    x, h = _augmented(a, 0.01, True)
    w_aug = np.concatenate([w, b[:, None]], 1)
    res = oc.obs_group_prune(w, h, k, group_size=g, bias=b)
    gone: list[int] = []
    for step in range(k):
        errs = [
            (_lstsq_refit(w_aug, x, np.concatenate([_cols(p, g) for p in [*gone, q]]))[1], q)
            for q in range(n)
            if q not in gone
        ]
        gone.append(min(errs)[1])
        assert int(res.removed[step]) == gone[-1]
    ref, err = _lstsq_refit(w_aug, x, np.concatenate([_cols(p, g) for p in gone]))
    np.testing.assert_allclose(res.weight, ref[:, :-1], atol=1e-8)
    np.testing.assert_allclose(res.bias, ref[:, -1], atol=1e-8)
    np.testing.assert_allclose(res.error, err, rtol=1e-8)


def test_greedy_takes_already_zero_columns_first_and_keeps_them_zero() -> None:
    _, w, a, _ = _problem(5, 4, 6, 2, 30)
    w[:, _cols(4, 2)] = 0
    h = a.T @ a / 30
    res = oc.obs_group_prune(w, h, 3, group_size=2)
    assert res.removed[0] == 4 and res.costs[0] == 0
    assert oc.obs_group_prune(w, h, 0, group_size=2).weight.tolist() == w.tolist()


# --------------------------------------------------------------------- (f) streaming = one shot
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    g=st.integers(1, 2),
    cuts=st.lists(st.integers(0, 12), max_size=4),
    mask_kind=st.sampled_from(["none", "bool", "float"]),
)
def test_streaming_batches_equal_one_shot(
    seed: int, g: int, cuts: list[int], mask_kind: str
) -> None:
    rng, w, a, _ = _problem(seed, 3, 3, g, 12)
    gr = rng.standard_normal((12, 3))
    tw = {
        "none": None,
        "bool": np.arange(12) % 3 != 1,
        "float": rng.uniform(0, 1, 12),
    }[mask_kind]
    bounds = [0, *sorted(cuts), 12]
    for full in (True, False):
        s = oc.StructuredStats(w, group_size=g, input_hessian=full)
        for lo, hi in itertools.pairwise(bounds):
            s.add(a[lo:hi], gr[lo:hi], token_weight=None if tw is None else tw[lo:hi])
        twf = np.ones(12) if tw is None else tw.astype(float)
        assert s.num_tokens == pytest.approx(twf.sum()) == s.num_grad_tokens
        for kind in ("factorised", "unfactorised"):
            one = oc.output_saliency(w, a, gr, group_size=g, kind=kind, token_weight=tw)
            np.testing.assert_allclose(s.saliency(kind), one, rtol=1e-11, atol=1e-15)
        np.testing.assert_allclose(s.output_fisher(), (gr * twf[:, None]).T @ gr / twf.sum())
        if full:
            np.testing.assert_allclose(s.input_hessian(), (a * twf[:, None]).T @ a / twf.sum())


def test_masked_tokens_are_dropped_and_leading_dimensions_flattened() -> None:
    rng, w, a, _ = _problem(1, 3, 4, 1, 24)
    gr = rng.standard_normal((24, 3))
    mask = rng.random(24) < 0.6
    for kind in ("factorised", "unfactorised"):
        masked = oc.output_saliency(
            w, a.reshape(4, 6, 4), gr.reshape(4, 6, 3), kind=kind, token_weight=mask.reshape(4, 6)
        )
        np.testing.assert_allclose(masked, oc.output_saliency(w, a[mask], gr[mask], kind=kind))
    # forward-only batches count for E[a aᵀ] only; the gradient statistics keep their own N
    s = oc.StructuredStats(w)
    s.add(a[:10], gr[:10])
    s.add(a[10:])
    assert (s.num_tokens, s.num_grad_tokens) == (24, 10)
    np.testing.assert_allclose(s.input_hessian(), a.T @ a / 24)
    np.testing.assert_allclose(s.output_fisher(), gr[:10].T @ gr[:10] / 10)
    np.testing.assert_allclose(
        s.saliency("unfactorised"), oc.output_saliency(w, a[:10], gr[:10], kind="unfactorised")
    )
    hb = s.input_hessian(bias=True)
    np.testing.assert_allclose(hb[:4, 4], a.mean(0))
    assert hb[4, 4] == 1.0
    # the weight is copied: later in-place changes do not leak into the statistics
    before = s.saliency()
    w[:] = 0
    np.testing.assert_allclose(s.saliency(), before)


# ------------------------------------------------------------------------ (e) torch = NumPy
@needs_torch
@pytest.mark.parametrize("g", [1, 2])
def test_torch_matches_numpy(g: int) -> None:
    import torch

    rng, w, a, b = _problem(7, 5, 6, g, 40, True)
    gr = rng.standard_normal((40, 5))
    tw = rng.random(40) < 0.8
    s_np = oc.StructuredStats(w, group_size=g)
    s_np.add(a, gr, token_weight=tw)
    h = s_np.input_hessian(bias=True)
    ref = {
        "fac": s_np.saliency(),
        "unf": s_np.saliency("unfactorised"),
        "sal": oc.obs_group_saliency(w, h, group_size=g, bias=b),
        "cor": oc.obs_group_correction(w, h, [1, 4], group_size=g, bias=b),
        "pru": oc.obs_group_prune(w, h, 3, group_size=g, bias=b),
    }
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        t = {k: torch.from_numpy(v).to(dtype) for k, v in {"w": w, "a": a, "g": gr, "b": b}.items()}
        s_t = oc.StructuredStats(t["w"], group_size=g)
        s_t.add(t["a"], t["g"], token_weight=torch.from_numpy(tw))
        ht = s_t.input_hessian(bias=True)
        assert ht.dtype == torch.float64
        np.testing.assert_allclose(ht.numpy(), h, rtol=tol, atol=tol)
        np.testing.assert_allclose(s_t.saliency().numpy(), ref["fac"], rtol=tol)
        np.testing.assert_allclose(s_t.saliency("unfactorised").numpy(), ref["unf"], rtol=tol)
        sal = oc.obs_group_saliency(t["w"], ht, group_size=g, bias=t["b"])
        np.testing.assert_allclose(sal.numpy(), ref["sal"], rtol=tol)
        cor = oc.obs_group_correction(t["w"], ht, torch.tensor([1, 4]), group_size=g, bias=t["b"])
        pru = oc.obs_group_prune(t["w"], ht, 3, group_size=g, bias=t["b"])
        for got, want in ((cor, ref["cor"]), (pru, ref["pru"])):
            assert got.weight.dtype == dtype and got.bias.dtype == dtype
            np.testing.assert_allclose(got.weight.numpy(), want.weight, rtol=tol, atol=tol)
            np.testing.assert_allclose(got.bias.numpy(), want.bias, rtol=tol, atol=tol)
            assert got.removed.tolist() == want.removed.tolist()
            assert got.error == pytest.approx(want.error, rel=tol)
    keep = oc.select_atoms({"x": torch.from_numpy(ref["fac"])}, 0.5, multiple=1)["x"]
    assert isinstance(keep, torch.Tensor) and keep.dtype == torch.bool and int(keep.sum()) == 3


@needs_torch
def test_torch_greedy_with_compaction_matches_numpy() -> None:
    import torch

    _, w, a, _ = _problem(4, 6, 24, 1, 80)
    h = a.T @ a / 80
    ref = oc.obs_group_prune(w, h, 21)
    got = oc.obs_group_prune(torch.from_numpy(w), torch.from_numpy(h), 21)
    assert got.removed.tolist() == ref.removed.tolist()
    np.testing.assert_allclose(got.weight.numpy(), ref.weight, atol=1e-10)
    np.testing.assert_allclose(got.costs, ref.costs, rtol=1e-9)


# ----------------------------------------------------------------------------------- selection
@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    frac=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**16),
    ties=st.booleans(),
)
def test_select_without_rounding_is_the_plain_global_ranking(
    sizes: list[int], frac: float, seed: int, ties: bool
) -> None:
    rng = np.random.default_rng(seed)
    scores = {
        f"l{i}": rng.integers(0, 3, n).astype(float) if ties else rng.standard_normal(n)
        for i, n in enumerate(sizes)
    }
    keep = oc.select_atoms(scores, frac, multiple=1)
    # brute force: sort all atoms by (score, layer, index), remove the first round(frac·N)
    atoms = sorted(
        (float(s), i, j) for i, sc in enumerate(scores.values()) for j, s in enumerate(sc)
    )
    gone = {(i, j) for _, i, j in atoms[: round(frac * sum(sizes))]}
    for i, name in enumerate(scores):
        assert [not k for k in keep[name]] == [(i, j) in gone for j in range(sizes[i])]
    # the same per mask as select_mask (the unstructured global selection)
    masks = oc.select_mask(scores, frac)
    assert all((masks[n] == keep[n]).all() for n in scores)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    mult=st.sampled_from([1, 2, 4, 16]),
    min_keep=st.integers(0, 10),
    frac=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**16),
)
def test_select_rounds_sizes_keeps_a_minimum_and_is_nested(
    sizes: list[int], mult: int, min_keep: int, frac: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    sizes = [k * mult for k in sizes]  # layer sizes that are multiples
    scores = {f"l{i}": rng.standard_normal(n) for i, n in enumerate(sizes)}
    min_keep = min(min_keep, min(sizes))
    floor = -(-min_keep // mult) * mult
    target = round(frac * sum(sizes))
    most = sum(n - floor for n in sizes)
    if target > most:
        with pytest.raises(oc.ObertError, match=f"cannot remove {target}"):
            oc.select_atoms(scores, frac, min_keep=min_keep, multiple=mult)
        return
    keep = oc.select_atoms(scores, frac, min_keep=min_keep, multiple=mult)
    kept = {n: int(k.sum()) for n, k in keep.items()}
    for name, k in kept.items():
        assert k % mult == 0 and k >= min_keep
        if k:  # a layer keeps its best atoms
            assert scores[name][keep[name]].min() >= scores[name][~keep[name]].max(initial=-np.inf)
    removed = sum(sizes) - sum(kept.values())
    assert abs(removed - target) <= mult / 2
    # more removal never brings an atom back; layer scope: each layer at its nearest allowed size
    more = oc.select_atoms(scores, min(frac + 0.2, 0.99), min_keep=0, multiple=mult)
    less = oc.select_atoms(scores, frac / 2, min_keep=0, multiple=mult)
    assert all((more[n] <= less[n]).all() for n in scores)
    lay = oc.select_atoms(scores, frac, scope="layer", multiple=mult, min_keep=0)
    for name, n in zip(scores, sizes, strict=True):
        t = n - round(frac * n)
        assert abs(int(lay[name].sum()) - t) <= mult / 2 and int(lay[name].sum()) % mult == 0


def test_select_layer_counts_current_masks_and_odd_layer_sizes() -> None:
    rng = np.random.default_rng(0)
    scores = {"ffn0": rng.standard_normal(40), "heads0": rng.standard_normal(12)}
    out = oc.select_atoms(scores, num_remove={"ffn0": 20, "heads0": 3}, multiple=16)
    # 40 − 20 = 20 → nearest multiple of 16 is 16; 12 heads: 9 → 0 or 12 allowed, nearest 12
    assert int(out["ffn0"].sum()) == 16 and int(out["heads0"].sum()) == 12
    prev = np.ones(40, bool)
    prev[[0, 1, 2]] = False
    scores["ffn0"][[0, 1, 2]] = 100.0  # high scores, but removed earlier: they stay removed
    out = oc.select_atoms({"ffn0": scores["ffn0"]}, 0.5, multiple=4, current_masks={"ffn0": prev})
    assert not out["ffn0"][[0, 1, 2]].any() and int(out["ffn0"].sum()) == 20
    out = oc.select_atoms(scores, num_remove=30, multiple=1, min_keep={"heads0": 10})
    assert int(out["heads0"].sum()) >= 10 and sum(int(m.sum()) for m in out.values()) == 22


# ----------------------------------------------------------------------------------- bad input
W = np.random.default_rng(0).standard_normal((3, 8))
A = np.random.default_rng(1).standard_normal((10, 8))
GR = np.random.default_rng(2).standard_normal((10, 3))
H = A.T @ A / 10


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: oc.StructuredStats(W, group_size=3),
            "group_size=3 does not divide the layer width 8",
        ),
        (lambda: oc.StructuredStats(W[0]), r"2-D matrix .* got shape \(8,\)"),
        (lambda: oc.StructuredStats(W).add(A[:, :7]), r"inputs must have shape \(\.\.\., 8\)"),
        (lambda: oc.StructuredStats(W).add(A, GR[:, :2]), r"grads must have shape \(\.\.\., 3\)"),
        (lambda: oc.StructuredStats(W).add(A, GR[:9]), "leading shape of inputs"),
        (lambda: oc.StructuredStats(W).add(A, token_weight=np.ones(9)), "token_weight must have"),
        (
            lambda: oc.StructuredStats(W).add(A, token_weight=-np.ones(10)),
            "token_weight must be ≥ 0",
        ),
        (lambda: oc.StructuredStats(W).add(A * np.nan), "NaN or inf"),
        (lambda: oc.StructuredStats(W).add(A, GR * np.inf), "NaN or inf"),
        (lambda: oc.StructuredStats(W * np.inf), "NaN or inf"),
        (lambda: oc.StructuredStats(W).add(A.tolist()), r"numpy\.ndarray or torch\.Tensor"),
        (lambda: oc.StructuredStats(W).input_hessian(), "num_tokens=0"),
        (lambda: oc.StructuredStats(W).saliency("factorised"), "num_grad_tokens=0"),
        (lambda: _masked_out().input_hessian(), "num_tokens=0"),
        (lambda: _inputs_only().saliency("unfactorised"), "num_grad_tokens=0"),
        (lambda: _inputs_only().saliency("heapr"), "unknown kind 'heapr'"),
        (lambda: oc.StructuredStats(W, input_hessian=False).input_hessian(), "input_hessian=True"),
        (lambda: oc.StructuredStats(W, output_fisher=False).output_fisher(), "output_fisher=True"),
        (
            lambda: oc.obs_group_prune(W, H, 5, group_size=2),
            "num_remove=5 is more than the 4 groups",
        ),
        (lambda: oc.obs_group_prune(W, H, -1), "num_remove must be an integer ≥ 0, got -1"),
        (lambda: oc.obs_group_correction(W, H, [8]), "group index 8, outside 0 … 7"),
        (lambda: oc.obs_group_correction(W, H, [1, 1]), "more than once"),
        (
            lambda: oc.obs_group_correction(W, H, list(range(9))),
            "lists 9 groups but the layer has only 8",
        ),
        (lambda: oc.obs_group_correction(W, H, np.ones(8, bool)), "np.flatnonzero"),
        (lambda: oc.obs_group_correction(W, H[:7, :7], [0]), r"hessian must have shape \(8, 8\)"),
        (lambda: oc.obs_group_correction(W, H, [0], bias=np.ones(3)), r"shape \(9, 9\)"),
        (lambda: oc.obs_group_correction(W, H, [0], damp=-0.1), "damp must be finite and ≥ 0"),
        (lambda: oc.obs_group_saliency(W, H * np.nan), "hessian contains NaN"),
        (lambda: oc.obs_group_saliency(W, H * 0), "zero .* mean diagonal"),
        (
            lambda: oc.obs_group_saliency(W, H[:, :1] @ H[:1, :], damp=0.0),
            "not positive definite with damp=0.0",
        ),
        (lambda: oc.obs_group_saliency(W, H, group_size=3), "group_size=3 does not divide"),
        (lambda: oc.select_atoms({}, 0.5), "scores is empty"),
        (lambda: oc.select_atoms({"a": np.ones(8)}), "exactly one of fraction"),
        (lambda: oc.select_atoms({"a": np.ones(8)}, 1.0), "fraction must be in"),
        (
            lambda: oc.select_atoms({"a": np.ones(8)}, num_remove=9),
            "num_remove=9 is more than the 8",
        ),
        (
            lambda: oc.select_atoms({"a": np.ones(8)}, num_remove={"a": 9}),
            "num_remove=9 for layer 'a'",
        ),
        (lambda: oc.select_atoms({"a": np.ones(8)}, num_remove={"b": 1}), "no scores: \\['b'\\]"),
        (
            lambda: oc.select_atoms({"a": np.ones(8)}, 0.5, min_keep=9),
            "min_keep=9 is above the size",
        ),
        (
            lambda: oc.select_atoms({"a": np.ones(8)}, 0.9, min_keep=4, multiple=1),
            "cannot remove 7",
        ),
        (
            lambda: oc.select_atoms({"a": np.ones(8)}, 0.9, min_keep=4, scope="layer"),
            "below min_keep=4",
        ),
        (
            lambda: oc.select_atoms({"a": np.ones(8)}, 0.5, multiple=0),
            "multiple must be a positive",
        ),
        (lambda: oc.select_atoms({"a": np.ones((2, 4))}, 0.5), "1-D array"),
        (lambda: oc.select_atoms({"a": np.full(8, np.nan)}, 0.5), "NaN or inf"),
        (lambda: oc.select_atoms({"a": np.ones(8)}, 0.5, scope="tensor"), "unknown scope"),
        (
            lambda: oc.select_atoms(
                {"a": np.ones(8)}, 0.25, multiple=1, current_masks={"a": np.arange(8) > 3}
            ),
            "never regrow",
        ),
    ],
)
def test_bad_input_names_the_value(call, match: str) -> None:
    with pytest.raises(oc.ObertError, match=match):
        call()


def _masked_out() -> oc.StructuredStats:
    s = oc.StructuredStats(W)
    s.add(A, GR, token_weight=np.zeros(10, bool))  # e.g. an expert no token was routed to
    return s


def _inputs_only() -> oc.StructuredStats:
    s = oc.StructuredStats(W)
    s.add(A)
    return s


@needs_torch
def test_mixed_frameworks_are_refused() -> None:
    import torch

    s = oc.StructuredStats(torch.from_numpy(W))
    with pytest.raises(oc.ObertError, match="numpy but the weight was torch"):
        s.add(A)
    with pytest.raises(oc.ObertError, match="mixed NumPy and torch"):
        oc.obs_group_correction(torch.from_numpy(W), H, [0])
    with pytest.raises(oc.ObertError, match="not positive definite"):
        oc.obs_group_prune(torch.from_numpy(W), torch.from_numpy(H[:, :1] @ H[:1, :]), 1, damp=0.0)
