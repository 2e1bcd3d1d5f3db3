"""Zeroth-order (forward-only) gradients, Hessian products and Fisher rows (DeepZero).

DeepZero (Chen et al., ICLR 2024, arXiv 2310.02025) makes zeroth-order training practical by
estimating only a sparse set of coordinates chosen by a pruning criterion. This subpackage holds
the math, as pure functions of a loss callable and the parameters (NumPy float64 reference and
torch; equations in docs/math.md §9):

* :func:`rge`, :func:`cge`, :func:`zo_hvp` — randomised and (masked) coordinate-wise gradient
  estimates and the ZO Hessian-vector product;
* :func:`zo_direction` — the seeded directions, regenerated from ``(seed, step, index)`` (as
  MeZO does) so that nothing is stored and every estimate is reproducible bit for bit;
* :func:`zo_grasp_scores`, :func:`zo_grasp_ratios`, :func:`random_layer_masks` — ZO-GraSP
  pruning at initialisation and DeepZero's per-layer random sparse masks;
* :func:`zo_fisher_rows` — ZO gradient estimates as the rows of oBERT's empirical Fisher, so
  OBS saliencies and updates run on a model without autograd (e.g. ONNX Runtime);
* :func:`tensor_curvatures`, :func:`secant_curvatures`, :func:`shrunk_tensor_saliency`,
  :func:`calibrate_shrinkage` — black-box OBS from per-tensor curvatures (ZO Fisher traces, or
  secants along each tensor's pruning step) shrunk toward the model's mean curvature, the
  shrinkage chosen by the loss of the pruned model on calibration data.

The loss callable takes parameters of ``theta``'s framework, shape, dtype and device and returns
a scalar; with ``batch_size=k`` it takes ``(j, *theta.shape)`` stacked points (``j ≤ k``) and
returns ``(j,)`` losses. A non-scalar or non-finite answer stops the estimate with an
:class:`~obert_core.ObertError` naming the point.
"""

from __future__ import annotations

from .directions import zo_direction
from .estimators import cge, rge, zo_hvp
from .fisher import zo_fisher_rows
from .grasp import random_layer_masks, zo_grasp_ratios, zo_grasp_scores
from .shrinkage import (
    ShrinkageChoice,
    calibrate_shrinkage,
    secant_curvatures,
    shrunk_tensor_saliency,
    tensor_curvatures,
)

__all__ = [
    "ShrinkageChoice",
    "calibrate_shrinkage",
    "cge",
    "random_layer_masks",
    "rge",
    "secant_curvatures",
    "shrunk_tensor_saliency",
    "tensor_curvatures",
    "zo_direction",
    "zo_fisher_rows",
    "zo_grasp_ratios",
    "zo_grasp_scores",
    "zo_hvp",
]
