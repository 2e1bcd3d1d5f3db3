from __future__ import annotations

import numpy as np
import pytest
from core_helpers import HAS_TORCH

import obert_core as oc

G = np.random.default_rng(0).standard_normal((4, 20))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"block_size": 0}, "block_size must be a positive integer, got 0"),
        ({"block_size": 30}, "block_size=30 is larger than the number of weights"),
        ({"damp": 0.0}, "damp must be finite and > 0"),
        ({"damp": float("nan")}, "damp must be finite and > 0"),
        ({"method": "woodbury"}, "unknown method 'woodbury'"),
        ({"backend": "jax"}, "unknown backend 'jax'"),
        ({"num_grads": 2}, "received 4 gradients but num_grads=2"),
    ],
)
def test_fisher_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"block_size": 5, "damp": 1e-3, **kwargs}
    with pytest.raises(oc.ObertError, match=match):
        oc.block_fisher_inverse(G, **args)


def test_fisher_bad_gradients() -> None:
    with pytest.raises(oc.ObertError, match="shape"):
        oc.block_fisher_inverse(G[0], 5, 1e-3)
    bad = G.copy()
    bad[1, 3] = np.inf
    with pytest.raises(oc.ObertError, match="NaN or inf"):
        oc.block_fisher_inverse(bad, 5, 1e-3)
    b = oc.BlockFisherBuilder(20, 5, 1e-3, 4)
    with pytest.raises(oc.ObertError, match=r"shape \(k, 20\)"):
        b.add(np.ones((2, 21)))
    with pytest.raises(oc.ObertError, match="no gradients"):
        b.finalize()


def test_obs_bad_arguments() -> None:
    finv = oc.block_fisher_inverse(G, 5, 1e-3)
    w = np.ones(20)
    with pytest.raises(oc.ObertError, match="group_size=3 does not divide the Fisher block size 5"):
        oc.obs_saliency(w, finv, group_size=3)
    with pytest.raises(oc.ObertError, match="ceil"):
        oc.obs_saliency(np.ones(30), finv)
    with pytest.raises(oc.ObertError, match="NaN or inf"):
        oc.obs_saliency(np.full(20, np.nan), finv)
    with pytest.raises(oc.ObertError, match="prune must be a boolean"):
        oc.obs_update(w, finv, np.ones(20))
    with pytest.raises(oc.ObertError, match="unknown mode 'exact'"):
        oc.obs_update(w, finv, np.ones(20, bool), mode="exact")
    with pytest.raises(oc.ObertError, match=r"numpy\.ndarray or torch\.Tensor"):
        oc.obs_saliency([1.0] * 20, finv)


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_mixed_numpy_and_torch_is_rejected() -> None:
    import torch

    finv = oc.block_fisher_inverse(G, 5, 1e-3)
    with pytest.raises(oc.ObertError, match="mixed NumPy and torch inputs"):
        oc.obs_saliency(torch.ones(20, dtype=torch.float64), finv)


def test_missing_optional_backend_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    for mod in [m for m in sys.modules if m.startswith("obert_core.backends._")]:
        parent, _, child = mod.rpartition(".")
        monkeypatch.delitem(sys.modules, mod)
        # the re-import below rebinds the package attribute too: put the original back after
        # the test, or later monkeypatches of "obert_core.backends._x.f" miss the live module
        if hasattr(sys.modules[parent], child):
            monkeypatch.setattr(sys.modules[parent], child, getattr(sys.modules[parent], child))
    monkeypatch.setitem(sys.modules, "numba", None)  # makes `import numba` raise ImportError
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(oc.BackendUnavailableError, match=r"pip install 'obert-core\[numba\]'"):
        oc.block_fisher_inverse(G, 5, 1e-3, backend="numba")
    with pytest.raises(oc.BackendUnavailableError, match=r"pip install 'obert-core\[torch\]'"):
        oc.block_fisher_inverse(G, 5, 1e-3, backend="torch")


def test_finite_check_has_no_false_positive_on_overflowing_sum() -> None:
    big = np.full((2, 10), 3e38, dtype=np.float32)  # finite, but the sum overflows float32
    b = oc.BlockFisherBuilder(10, 5, 1e-3, 2, backend="numpy")
    b.add(big)  # must not raise
    with pytest.raises(oc.ObertError, match="NaN or inf"):
        oc.BlockFisherBuilder(10, 5, 1e-3, 2).add(np.full((2, 10), np.nan))
