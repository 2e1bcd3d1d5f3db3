"""ZO empirical Fisher rows: gradient estimates from forward passes, for the OBS machinery.

oBERT's Fisher (docs/math.md §2) needs per-sample (or per-mini-batch) gradients ``g_t``. Where no
autograd exists — an ONNX graph evaluated by ONNX Runtime, a black-box service — each row is a
zeroth-order estimate instead (docs/math.md §9, arXiv 2310.02025):

    row_t = ĝ_t = RGE(l_t; seed, step + t)   or   CGE(l_t; mask)                     (Z-5)

and the rows feed :func:`~obert_core.block_fisher_inverse`, :class:`~obert_core.BlockFisherBuilder`
(one row per :meth:`~obert_core.BlockFisherBuilder.add`) or :class:`~obert_core.MFACInverse`
unchanged, so :func:`~obert_core.obs_saliency` and :func:`~obert_core.obs_update` run on a model
without gradients. CGE rows are the gradients to O(μ); RGE rows are unbiased but noisy: for
Gaussian directions ``E[ĝĝᵀ] = ggᵀ + (‖g‖² I + ggᵀ)/q``, so the Fisher's diagonal is inflated
by ``‖g‖²/q`` (a larger ``q`` or a larger dampening absorbs it). Each row draws its own
directions (key ``(seed, step + t, i)``): shared directions would confine every row to one
``q``-dimensional subspace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from .._errors import ObertError
from .._validate import check_choice
from ._oracle import Oracle, check_theta, result_like
from .estimators import _CGE, _RGE, ESTIMATORS

__all__ = ["zo_fisher_rows"]


def zo_fisher_rows(
    losses: Iterable[Callable[[Any], Any]],
    theta: Any,
    *,
    estimator: str = "rge",
    mu: float = 5e-3,
    q: int = 1,
    seed: int = 0,
    step: int = 0,
    mask: Any = None,
    scheme: str = "forward",
    distribution: str = "gaussian",
    segments: Sequence[int] | None = None,
    batch_size: int | None = None,
    workers: int = 1,
) -> Iterator[Any]:
    """Yield one flat ZO gradient estimate (Z-5) per loss: the rows of an empirical Fisher.

    Stack them for :func:`~obert_core.block_fisher_inverse` / :class:`~obert_core.MFACInverse`
    (``np.stack(list(rows))``), or stream them into a :class:`~obert_core.BlockFisherBuilder`.

    Args:
        losses: one loss callable per sample or mini-batch (each as in
            :func:`~obert_core.zo.rge`, e.g. the loss of sample ``t`` through ONNX Runtime).
        theta: the parameters (any shape; rows are flattened row-major).
        estimator: ``"rge"`` or ``"cge"``.
        mu: ``μ`` > 0.
        q: RGE directions per row.
        seed: the seed; row ``t`` draws the directions ``(seed, step + t, i)``.
        step: the first row's step.
        mask: CGE only: coordinates to estimate (0 elsewhere: masked gradients, as oBERT's).
        scheme: ``"forward"`` or ``"central"``.
        distribution: RGE: ``"gaussian"`` or ``"sphere"``.
        segments: RGE sphere only: per-tensor sizes.
        batch_size: points per loss call (``None``: one).
        workers: threads evaluating the losses.

    Yields:
        ``(d,)`` rows: float64 for NumPy, ``theta``'s dtype for torch.

    Raises:
        ObertError: bad settings (checked before the first row), a loss answer that is not a
            finite scalar (the row and the direction or coordinate are named).
    """
    check_theta(theta)
    kind = check_choice(estimator, "estimator", ESTIMATORS)
    if kind == "rge":
        if mask is not None:
            raise ObertError(
                "mask applies to estimator='cge' only; RGE rows perturb every coordinate."
            )
        rge_est = _RGE(theta, mu, q, seed, step, scheme, distribution, segments)
    else:
        cge_est = _CGE(theta, mask, mu, scheme)
    flat = theta.reshape(-1)
    return _rows(
        losses, theta, flat, kind, rge_est if kind == "rge" else cge_est, batch_size, workers
    )


def _rows(
    losses: Iterable[Callable[[Any], Any]],
    theta: Any,
    flat: Any,
    kind: str,
    est: Any,
    batch_size: int | None,
    workers: int,
) -> Iterator[Any]:
    for t, loss in enumerate(losses):
        oracle = Oracle(
            loss, theta, batch_size=batch_size, workers=workers, estimator=f"zo_fisher_rows row {t}"
        )
        if kind == "rge":
            g = est.estimate(oracle, oracle.theta, step=est.step + t)
        else:
            g = est.estimate(oracle, oracle.theta)
        yield result_like(flat, g)
