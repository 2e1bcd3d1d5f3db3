"""``ZOTrainer``: sparse zeroth-order (MeZO-style SPSA) fine-tuning in a ``transformers.Trainer``.

Each optimizer step estimates the gradient from two forward passes and updates the weights in
place, without autograd (MeZO, Malladi et al., NeurIPS 2023, arXiv 2305.17333; the sparse
variant restricts the perturbation to the kept weights, as DeepZero, arXiv 2310.02025, restricts
its coordinate estimates to a sparse mask; docs/math.md §9). For direction ``i`` of step ``t``:

    z = zo_direction(θ, seed, t, index) ⊙ m           (m: keep-mask, 1 for unmasked tensors)
    θ ← θ + μz;  l₊ = l(θ);  θ ← θ − 2μz;  l₋ = l(θ);  θ ← θ + μz
    ĝ = (l₊ − l₋) / 2μ;   θ ← θ − (η/q) ĝ z                                          (Z-6)

``z`` is regenerated from ``(seed, t, i·P + k)`` for the ``k``-th of ``P`` trained tensors
(:func:`obert_core.zo.zo_direction`) whenever it is needed, one tensor at a time, so the memory
is that of inference plus one tensor: no gradients, no optimizer moments, no stored directions.
Pruned weights (keep-mask False) get ``z = 0`` and stay exactly 0. The optimizer state is just
``(seed, step)``: the Trainer's checkpoint (weights, scheduler, data position) plus the step
number reproduce the run bit for bit on the same device, and ``zo_state.json`` in each
checkpoint refuses a resume with other ZO settings.

The masks come from an :class:`~obert_train.ObertPruningCallback` among the Trainer's
callbacks (its current masks, read at every step, so pruning during ZO training works), or from
``masks=`` (parameter name → keep-mask), or there are none (dense MeZO). Forwards run in eval
mode (no dropout: ``l₊`` and ``l₋`` must see the same function) under ``torch.no_grad``.

DeepZero's optimizer (``ZOSettings.momentum`` > 0, ``"cge"`` only): the CGE estimate ``ĝ``
(0 on the coordinates not estimated) drives SGD with heavy-ball momentum and coupled weight
decay, exactly ``torch.optim.SGD(momentum=β, weight_decay=λ)`` fed ``ĝ`` as the gradient (Z-7):
one buffer per moving tensor, saved in every checkpoint (``zo_momentum.safetensors``).

``max_grad_norm`` (the Trainer's) clips the CGE estimate's global norm as first-order clipping
does, and the Trainer logs its pre-clip norm as ``grad_norm``. SPSA logs ``|ĝ|·‖z‖`` (the norm
of the applied estimate ``ĝz``, mean over the step's directions) and does not clip: see
:class:`~obert_train.ZOSettings`.

DeepZero's sparse gradients (``ZOSettings.gradient_sparsity``, e.g. the ZO-GraSP ratios of
:func:`~obert_train.zo_grasp_sparsities`): every ``mask_period`` steps a fresh random mask per
named tensor, regenerated from ``(seed, step // mask_period)``, further restricts ``m`` to the
coordinates that move in that period; the weights stay dense.

DeepZero's forward parallelism (``ZOSettings.workers`` > 1, ``"cge"`` only): the coordinates of
a step are split across worker processes by cost (:mod:`obert_train.hf.zo_pool`); the pool is
started at the first step and stopped when ``train`` returns or fails.

With ``recipe=`` (what ``obert-train run`` passes for a recipe with a
``!ZerothOrderModifier``) the recipe's learning-rate functions are the scheduler and its
``!DistillationModifier`` makes the loss ObertTrainer's ``(1 − h)·task + h·KD``, the teacher's
outputs computed once per step.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from obert_core.shared import atomic_output
from obert_core.zo import random_layer_masks, zo_direction
from obert_train._validate import check_int, check_number
from obert_train.checkpoint import atomic_write_text
from obert_train.errors import ArgumentError, ModelError, OptionError, ResumeError, TrainingError
from obert_train.hf.callback import ObertPruningCallback
from obert_train.hf.feature_reuse import FeatureReuse, default_stages
from obert_train.hf.trainer import disk_full_named, prepare_teacher, recipe_scheduler
from obert_train.hf.zo_pool import (
    Job,
    KDLoss,
    WorkerPool,
    check_workers,
    evaluate_coordinates,
    loss_of_outputs,
    one_thread,
    split_by_cost,
    zo_objective,
)
from obert_train.recipe import Recipe

__all__ = ["ZO_MOMENTUM_FILE", "ZO_STATE_FILE", "ZOSettings", "ZOTrainer"]

logger = logging.getLogger("obert_train")

ESTIMATORS = ("spsa", "cge")

ZO_STATE_FILE = "zo_state.json"
"""The ZO settings inside each ``checkpoint-N`` folder (a resume must use the same)."""

ZO_MOMENTUM_FILE = "zo_momentum.safetensors"
"""The momentum buffers (parameter name → tensor) inside each ``checkpoint-N`` folder of a run
with ``ZOSettings.momentum`` > 0."""


@dataclass(frozen=True)
class ZOSettings:
    """Settings of the zeroth-order steps (Z-6).

    Attributes:
        mu: the perturbation scale ``μ`` > 0 (MeZO: 1e-3).
        num_directions: directions ``q`` per optimizer step, applied one after another (MeZO: 1).
        seed: the seed of the directions (integer ≥ 0); with the step it fixes every direction.
        gradient_sparsity: DeepZero's sparse gradients: parameter name → fraction of its
            coordinates *not* perturbed (in [0, 1)), e.g. the ZO-GraSP ratios of
            :func:`~obert_train.zo_grasp_sparsities`. Every ``mask_period`` steps a fresh random
            mask per tensor (:func:`obert_core.zo.random_layer_masks`, key ``(seed, step //
            mask_period)``) chooses the coordinates that move; the weights stay dense. Tensors
            not named (biases, ...) are perturbed in full. ``None``: every kept coordinate.
            The current period's masks are held (one byte per weight of the named tensors).
        mask_period: steps between two random masks (DeepZero: 5 epochs' worth of steps).
        estimator: ``"spsa"`` (Z-6, two forwards per direction) or ``"cge"`` (DeepZero's
            coordinate-wise estimate (Z-2) of every coordinate that moves, then one SGD step:
            one forward per coordinate, with feature reuse). With ``"cge"`` a tensor moves on
            its mask (keep-mask and random mask); a tensor with neither moves in full if it is
            1-D (biases, LayerNorm) and stays frozen otherwise.
        stages: ``"cge"`` only: module names in forward order for feature reuse
            (:class:`~obert_train.hf.feature_reuse.FeatureReuse`); ``None``: the BERT-like
            default (embeddings, layers, pooler, head); ``()``: no reuse.
        workers: ``"cge"`` only: processes evaluating the coordinates of a step (DeepZero's
            forward parallelism; the trainer's process and ``workers − 1`` forked ones, each
            with a copy of the model), at most the CPU cores this process may use. The
            estimate does not depend on it (bit for bit with one thread per process), so a
            resume may change it.
        momentum: ``"cge"`` only: DeepZero's SGD momentum ``β`` in [0, 1) (DeepZero: 0.9).
            ``β`` > 0 makes the step ``torch.optim.SGD(lr=η, momentum=β, weight_decay=λ)`` fed
            the CGE estimate as the gradient (docs/math.md (Z-7)): one buffer per moving tensor
            (the memory of the weights it moves), with the Trainer's ``weight_decay`` ``λ``
            coupled into it for matrices (``ĝ + λθ``, as SGD's); ``0`` keeps the plain step
            ``θ ← θ − η ĝ`` with the decay as a shrink ``θ ← (1 − ηλ)θ`` before the estimate.
            ``"spsa"`` refuses ``β`` > 0: a buffer per trained tensor would end MeZO's memory of
            inference, which is the reason to use SPSA.

    ``max_grad_norm`` (``TrainingArguments``): with ``"cge"`` the estimate's global norm is
    clipped to it before the step, as first-order clipping does, and its pre-clip norm is logged
    as ``grad_norm``. With ``"spsa"`` the logged ``grad_norm`` is ``|ĝ|·‖z‖``, the norm of the
    applied estimate ``ĝz`` (mean over the step's directions), and nothing is clipped: ``‖z‖ ≈
    √d`` for ``d`` perturbed weights, so a first-order threshold (the Trainer's default 1.0)
    would shrink every step by about ``1/(|ĝ|√d)`` and stop the training; MeZO does not clip
    either (the trainer logs a warning when ``max_grad_norm`` > 0).
    """

    mu: float = 1e-3
    num_directions: int = 1
    seed: int = 0
    gradient_sparsity: Mapping[str, float] | None = None
    mask_period: int = 1
    estimator: str = "spsa"
    stages: tuple[str, ...] | None = None
    workers: int = 1
    momentum: float = 0.0

    def __post_init__(self) -> None:
        where = "ZOSettings"
        mu = check_number(self.mu, "mu", where, "a positive number such as 1e-3")
        if not math.isfinite(mu) or mu <= 0:
            raise OptionError(
                f"{where}: mu must be finite and > 0 (MeZO uses 1e-3; float32 weights need "
                f"≳1e-4), got {self.mu!r}"
            )
        q = check_int(self.num_directions, "num_directions", where, minimum=1)
        seed = check_int(self.seed, "seed", where, minimum=0)
        period = check_int(self.mask_period, "mask_period", where, minimum=1)
        workers = check_workers(check_int(self.workers, "workers", where, minimum=1), where)
        object.__setattr__(self, "workers", int(workers))
        object.__setattr__(self, "mu", float(mu))
        object.__setattr__(self, "num_directions", int(q))
        object.__setattr__(self, "seed", int(seed))
        object.__setattr__(self, "mask_period", int(period))
        if self.estimator not in ESTIMATORS:
            raise OptionError(
                f"{where}: estimator must be one of {', '.join(map(repr, ESTIMATORS))}, got "
                f"{self.estimator!r}"
            )
        if workers > 1 and self.estimator != "cge":
            raise OptionError(
                f"{where}: workers={workers} splits the coordinates of estimator='cge' across "
                f"processes; estimator={self.estimator!r} runs its directions one after another: "
                "use workers=1 or estimator='cge'"
            )
        beta = check_number(self.momentum, "momentum", where, "a number in [0, 1) such as 0.9")
        if not math.isfinite(beta) or not 0.0 <= beta < 1.0:
            raise OptionError(
                f"{where}: momentum must be in [0, 1) (DeepZero uses 0.9; 0 for none), got "
                f"{self.momentum!r}"
            )
        object.__setattr__(self, "momentum", float(beta))
        if beta > 0 and self.estimator != "cge":
            raise OptionError(
                f"{where}: momentum={beta:g} needs estimator='cge'; estimator="
                f"{self.estimator!r} (MeZO's SPSA) keeps the memory of inference, which a "
                "momentum buffer per trained tensor would end: use momentum=0 or estimator='cge'"
            )
        if self.stages is not None:
            stages: object = self.stages
            if isinstance(stages, str) or not all(isinstance(s, str) for s in self.stages):
                raise ArgumentError(
                    f"{where}: stages must be a sequence of module names, got {stages!r}"
                )
            object.__setattr__(self, "stages", tuple(self.stages))
        if self.gradient_sparsity is not None:
            object.__setattr__(self, "gradient_sparsity", _check_sparsities(self.gradient_sparsity))


def _check_sparsities(given: object) -> dict[str, float]:
    if not isinstance(given, Mapping):
        raise ArgumentError(
            f"ZOSettings: gradient_sparsity must be a mapping of parameter name → fraction, got "
            f"{type(given).__name__}; e.g. {{'bert.encoder.layer.0.output.dense.weight': 0.9}}"
        )
    out: dict[str, float] = {}
    for name, value in given.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ArgumentError(
                f"ZOSettings: gradient_sparsity[{name!r}] must be a number, got {value!r}"
            )
        if not 0.0 <= float(value) < 1.0:
            raise OptionError(
                f"ZOSettings: gradient_sparsity[{name!r}] must be in [0, 1) (the fraction of "
                f"coordinates not perturbed), got {value!r}"
            )
        out[str(name)] = float(value)
    return out


class ZOTrainer(Trainer):
    """A ``Trainer`` whose steps are zeroth-order (Z-6): two forwards, no backward.

    Example::

        trainer = ZOTrainer(model=model, args=TrainingArguments(..., learning_rate=1e-5),
                            train_dataset=features, data_collator=collate,
                            zo=ZOSettings(mu=1e-3, seed=0),
                            masks={n: p != 0 for n, p in targets.items()})
        trainer.train()                       # or train(resume_from_checkpoint=True)

    Args:
        *args: Passed to ``transformers.Trainer``.
        zo: The ZO settings (default :class:`ZOSettings()`).
        masks: Parameter name (as in ``model.named_parameters()``) → boolean keep-mask (True =
            kept; any shape with the tensor's number of entries). Pruned weights are set to 0
            here and never move. Leave it out to take the masks of an
            :class:`~obert_train.ObertPruningCallback` in ``callbacks`` (or train densely).
        recipe: A recipe whose learning-rate functions become the scheduler and whose
            ``!DistillationModifier`` (with ``teacher``) makes the loss the KD mix of
            :class:`~obert_train.ObertTrainer`; its pruning runs in the
            :class:`~obert_train.ObertPruningCallback` passed in ``callbacks``.
        teacher: The distillation teacher (required when the recipe distils).
        **kwargs: Passed to ``transformers.Trainer``. The learning rate and its schedule are the
            Trainer's (the recipe's with ``recipe=``); ``weight_decay`` shrinks the matrices
            (not biases or LayerNorm weights) by ``1 − η·wd`` per step (with
            ``ZOSettings.momentum`` > 0 it is SGD's coupled decay, in the buffer: (Z-7));
            ``max_grad_norm`` clips the CGE estimate (see :class:`~obert_train.ZOSettings`).

    Raises:
        OptionError: ``gradient_accumulation_steps`` > 1 or several processes (one batch per ZO
            step, one process), bad :class:`~obert_train.ZOSettings`.
        ModelError: a mask naming no parameter of the model, or of the wrong size.
        ArgumentError: ``masks`` together with an ``ObertPruningCallback`` (one source of masks).
        TrainingError: the recipe distils but no teacher is given.
    """

    def __init__(
        self,
        *args: Any,
        zo: ZOSettings | None = None,
        masks: Mapping[str, torch.Tensor] | None = None,
        recipe: Recipe | None = None,
        teacher: torch.nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if recipe is not None and not isinstance(recipe, Recipe):
            raise ArgumentError(f"recipe must be a Recipe, got {type(recipe).__name__}")
        self.recipe = recipe
        kd = recipe.distillation if recipe is not None else None
        self.kd = (
            KDLoss(kd.hardness, kd.temperature, tuple(kd.distill_output_keys))
            if kd is not None
            else None
        )
        self.teacher = prepare_teacher(recipe, teacher, self.args.device)
        self._teacher_outputs: dict[str, torch.Tensor] | None = None
        self.pool: WorkerPool | None = None
        """The worker processes of ``workers`` > 1 (started at the first step)."""
        if zo is not None and not isinstance(zo, ZOSettings):
            raise ArgumentError(f"zo must be a ZOSettings, got {type(zo).__name__}")
        self.zo = zo if zo is not None else ZOSettings()
        if self.args.gradient_accumulation_steps != 1:
            raise OptionError(
                f"gradient_accumulation_steps={self.args.gradient_accumulation_steps}: a ZO step "
                "uses one batch; set it to 1 and raise per_device_train_batch_size instead"
            )
        if self.args.world_size > 1:
            raise OptionError(
                f"ZOTrainer runs in one process, got world_size={self.args.world_size}; launch "
                "it without torchrun / accelerate launch"
            )
        if masks is not None and self._pruning_callbacks():
            raise ArgumentError(
                "pass masks= or an ObertPruningCallback, not both: the callback's masks are the "
                "ones a ZO step follows"
            )
        for callback in self._pruning_callbacks():
            callback.managed = recipe is not None
        self._masks = self._check_masks(masks) if masks is not None else None
        self._check_sparsity_names()
        self._random_masks: tuple[int, dict[str, torch.Tensor]] | None = None
        self.reuse: FeatureReuse | None = None
        """The feature reuse of the ``"cge"`` estimator (None: every coordinate reruns all)."""
        self._stages: list[str] = []
        if self.zo.estimator == "cge":
            stages = self.zo.stages
            names = default_stages(self._model()) if stages is None else list(stages)
            self.reuse = FeatureReuse(self._model(), names) if names else None
            self._stages = names
        if self.zo.workers > 1:
            self._check_workers_can_run()
        self.zo_losses: list[float] = []
        """The mean ``(l₊ + l₋)/2`` of each step of this process (for tests and plots)."""
        self._momentum: dict[str, torch.Tensor] = {}
        """``"cge"`` with momentum: the SGD buffer of each moving tensor, by parameter name."""
        self._keep: dict[str, torch.Tensor] = {}
        """The keep-mask of each masked tensor at the current step, by parameter name."""
        self.zo_grad_norms: list[float] = []
        """The norm of each step's estimate, before clipping (what ``grad_norm`` logs): CGE's
        ``‖ĝ‖``, SPSA's ``|ĝ|·‖z‖`` (mean over directions)."""
        if self.zo.estimator == "spsa" and self.args.max_grad_norm > 0:
            logger.warning(
                "ZOTrainer: max_grad_norm=%g is not applied to SPSA steps (|ĝ|·‖z‖ ≈ |ĝ|√d "
                "would be cut to it at every step); grad_norm logs |ĝ|·‖z‖. Set "
                "max_grad_norm=0 to silence this.",
                self.args.max_grad_norm,
            )
        self.zo_queries: list[int] = []
        """The loss evaluations of each step, all processes: ``2q`` (SPSA) or, for CGE, one per
        coordinate (partial forwards with feature reuse) plus the one at ``θ``, and with feature
        reuse one more per worker whose share has a coordinate after the first stage (it records
        the stage outputs at ``θ``)."""

    def _check_workers_can_run(self) -> None:
        custom = type(self).compute_loss is not ZOTrainer.compute_loss
        if custom or self.label_smoother is not None or self.compute_loss_func is not None:
            raise OptionError(
                f"ZOSettings(workers={self.zo.workers}): the worker processes evaluate the "
                "model's own loss (outputs.loss) or the recipe's KD loss; a compute_loss "
                "override, compute_loss_func or label smoothing cannot run there: use workers=1"
            )

    # ------------------------------------------------------------------ loss and schedule
    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """The Trainer's loss, or with a distilling recipe ObertTrainer's KD mix.

        The teacher's outputs of the step's batch are computed once per ZO step.
        """
        if self.kd is None or self.teacher is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        teacher = self._teacher_outputs
        if teacher is None:
            teacher = self._teacher_of(inputs)
        if return_outputs:
            outputs = model(**inputs)
            return loss_of_outputs(outputs, inputs, self.kd, teacher), outputs
        return zo_objective(model, inputs, self.kd, teacher)

    def _teacher_of(self, inputs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        assert self.teacher is not None
        assert self.kd is not None
        with torch.no_grad():
            out = self.teacher(**{k: v for k, v in inputs.items() if k != "labels"})
        return {key: out[key] for key in self.kd.output_keys if key in out}

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> Any:
        """The recipe's LR functions with ``recipe=`` (the base LR is ``args.learning_rate``)."""
        scheduler = recipe_scheduler(self, self.recipe, optimizer)
        if scheduler is not None:
            return scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the sparsity of an :class:`~obert_train.ObertPruningCallback`'s masks."""
        for callback in self._pruning_callbacks():
            if callback.masks is not None:
                logs["sparsity"] = round(callback.sparsity(), 6)
                logs.update(callback.pending_log)
                callback.pending_log = {}
        super().log(logs, start_time)

    # ------------------------------------------------------------------ masks
    def _model(self) -> torch.nn.Module:
        if self.model is None:
            raise ArgumentError("ZOTrainer needs a model (model= or model_init=)")
        return self.model

    def _pruning_callbacks(self) -> list[ObertPruningCallback]:
        return [
            cb for cb in self.callback_handler.callbacks if isinstance(cb, ObertPruningCallback)
        ]

    def _check_masks(self, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        named = dict(self._model().named_parameters())
        out: dict[str, torch.Tensor] = {}
        for name, mask in masks.items():
            if name not in named:
                close = [n for n in named if name.split(".")[-1] in n][:3]
                raise ModelError(
                    f"masks names {name!r}, which is not a parameter of the model (e.g. {close}); "
                    "use the names of model.named_parameters()"
                )
            p = named[name]
            given: object = mask
            if not isinstance(given, torch.Tensor) or given.dtype != torch.bool:
                raise ModelError(
                    f"masks[{name!r}] must be a boolean tensor (True = kept), got "
                    f"{getattr(mask, 'dtype', type(mask).__name__)}; pass e.g. weight != 0"
                )
            if mask.numel() != p.numel():
                raise ModelError(
                    f"masks[{name!r}] has {mask.numel()} entries, the parameter {p.numel()}"
                )
            if not bool(mask.any()):
                raise ModelError(
                    f"masks[{name!r}] keeps no coordinate (all {mask.numel()} entries are "
                    "False): the tensor could never move; leave it out of masks= or freeze it "
                    "(requires_grad_(False))"
                )
            out[name] = mask.reshape(p.shape).to(p.device)
            with torch.no_grad():
                p.mul_(out[name].to(p.dtype))
        return out

    def _check_sparsity_names(self) -> None:
        if self.zo.gradient_sparsity is None:
            return
        named = dict(self._model().named_parameters())
        unknown = [n for n in self.zo.gradient_sparsity if n not in named]
        if unknown:
            raise ModelError(
                f"gradient_sparsity names {unknown[:3]}, not parameters of the model; use the "
                "names of model.named_parameters()"
            )

    def _period_masks(self, step: int) -> dict[str, torch.Tensor]:
        """The random masks of DeepZero's sparse gradients for ``step`` (cached per period)."""
        sparsities = self.zo.gradient_sparsity
        if sparsities is None:
            return {}
        period = step // self.zo.mask_period
        if self._random_masks is None or self._random_masks[0] != period:
            named = dict(self._model().named_parameters())
            like = {n: named[n].detach() for n in named if n in sparsities}
            masks = random_layer_masks(like, sparsities, seed=self.zo.seed, step=period)
            self._random_masks = (period, masks)
        return self._random_masks[1]

    def _zo_params(self, step: int) -> list[tuple[torch.nn.Parameter, torch.Tensor | None]]:
        """``(parameter, mask of the coordinates that move, or None)`` per trained tensor."""
        random = self._period_masks(step)
        by_id: dict[int, torch.Tensor] = {}
        for cb in self._pruning_callbacks():
            if cb.masks is not None:
                for name, cb_mask in cb.masks.items():
                    by_id[id(cb.masks.params[name])] = cb_mask
        out: list[tuple[torch.nn.Parameter, torch.Tensor | None]] = []
        self._keep = {}
        for name, p in self._model().named_parameters():
            if not p.requires_grad:
                continue
            keep = self._masks.get(name) if self._masks is not None else by_id.get(id(p))
            mask: torch.Tensor | None = None if keep is None else keep.view(p.shape)
            if mask is not None:
                self._keep[name] = mask
            if name in random:
                mask = random[name] if mask is None else mask & random[name]
            out.append((p, mask))
        return out

    def _check_something_moves(
        self, params: list[tuple[torch.nn.Parameter, torch.Tensor | None]], step: int
    ) -> None:
        cge = self.zo.estimator == "cge"
        for p, mask in params:
            if mask is not None and bool(mask.any()):
                return
            if mask is None and (not cge or p.dim() == 1):
                return
        raise TrainingError(
            f"ZO step {step}: no coordinate can move ({len(params)} trainable tensors, every "
            "mask keeps nothing"
            + (" and CGE leaves matrices without a mask frozen" if cge else "")
            + "); check the keep-masks, gradient_sparsity and which parameters require grad"
        )

    # ------------------------------------------------------------------ the step
    def _perturb(
        self,
        params: list[tuple[torch.nn.Parameter, torch.Tensor | None]],
        step: int,
        direction: int,
        scale: float,
        norm: bool = False,
    ) -> float:
        """``θ ← θ + scale · z`` with ``z`` regenerated tensor by tensor (masked).

        Returns ``‖z‖²`` (float64 sum) when ``norm``, else 0.
        """
        count = len(params)
        squares = 0.0
        for k, (p, mask) in enumerate(params):
            z = zo_direction(p.detach(), self.zo.seed, step, direction * count + k)
            if mask is not None:
                z.mul_(mask)  # bool: no float copy of the mask
            if norm:
                squares += float(z.double().square().sum())
            p.add_(z, alpha=scale)
        return squares

    def _zo_loss(
        self, model: torch.nn.Module, inputs: dict[str, Any], step: int, where: str
    ) -> float:
        loss = self.compute_loss(model, inputs)
        if isinstance(loss, tuple):
            loss = loss[0]
        if not isinstance(loss, torch.Tensor) or loss.numel() not in (1, max(1, self.args.n_gpu)):
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise TrainingError(
                f"the ZO loss at {where} of optimizer step {step} is not a scalar (got {shape}); "
                "a ZO step estimates the gradient of one number: reduce the loss to the batch "
                "mean in compute_loss"
            )
        value = float(loss.detach().double().mean())
        if not math.isfinite(value):
            raise TrainingError(
                f"non-finite ZO loss ({value}) at {where} of optimizer step {step} (epoch "
                f"{self.state.epoch or 0.0:.4f}); training stopped, the checkpoints saved so far "
                f"in {self.args.output_dir} are the last good states (lower mu or the learning "
                "rate, check the data and the model weights)"
            )
        return value

    def training_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """One ZO step (Z-6) on this batch; returns the mean of ``(l₊ + l₋)/2`` over directions."""
        del num_items_in_batch  # the loss of a ZO step is the batch mean
        model.eval()
        inputs = self._prepare_inputs(inputs)
        step = int(self.state.global_step)
        lr = float(self._get_learning_rate())
        mu, q = self.zo.mu, self.zo.num_directions
        params = self._zo_params(step)
        self._check_something_moves(params, step)
        total = 0.0
        self._teacher_outputs = None
        if self.kd is not None and self.teacher is not None:
            self._teacher_outputs = self._teacher_of(inputs)  # once per step: θ-independent
        with torch.no_grad():
            decay = lr * float(self.args.weight_decay)
            if decay and self.zo.momentum == 0.0:  # with momentum: coupled, in the buffer
                frozen = self.zo.estimator == "cge"  # CGE leaves unmasked matrices frozen
                for p, mask in params:
                    if p.dim() >= 2 and not (frozen and mask is None):
                        p.mul_(1.0 - decay)
            if self.zo.estimator == "cge":
                base = self._cge_step(model, inputs, params, step, lr)
                self.zo_losses.append(base)
                return torch.tensor(base, device=self.args.device)
            self.zo_queries.append(2 * q)
            norms = 0.0
            for i in range(q):
                z_squared = self._perturb(params, step, i, mu, norm=True)
                plus = self._zo_loss(model, inputs, step, "θ + μz")
                self._perturb(params, step, i, -2.0 * mu)
                minus = self._zo_loss(model, inputs, step, "θ − μz")
                self._perturb(params, step, i, mu)
                grad = (plus - minus) / (2.0 * mu)
                self._perturb(params, step, i, -lr * grad / q)
                total += 0.5 * (plus + minus)
                norms += abs(grad) * math.sqrt(z_squared)
        self.zo_grad_norms.append(norms / q)
        self.zo_losses.append(total / q)
        return torch.tensor(total / q, device=self.args.device)

    def _cge_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        params: list[tuple[torch.nn.Parameter, torch.Tensor | None]],
        step: int,
        lr: float,
    ) -> float:
        """(Z-2) on every coordinate that moves, all at the same θ, then ``θ ← θ − η ĝ``.

        A coordinate is perturbed to the representable ``fl(θ_j + μ)`` and restored by
        assignment (exactly); with feature reuse only the stages from the coordinate's on run.
        With ``workers`` > 1 the coordinates are split across processes by cost.
        """
        reuse = self.reuse
        names = {id(p): n for n, p in self._model().named_parameters()}
        jobs: list[Job] = []
        for p, mask in params:
            if mask is not None:
                idx = mask.reshape(-1).nonzero().squeeze(1).cpu()
            elif p.dim() == 1:
                idx = torch.arange(p.numel())
            else:
                continue
            if idx.numel():
                stage = reuse.stage_of(p) if reuse is not None else 0
                jobs.append(Job(names[id(p)], idx, stage))
        coordinates = sum(int(job.index.numel()) for job in jobs)
        if self.zo.workers > 1 and jobs:
            return self._cge_parallel(model, inputs, jobs, step, lr, coordinates, params)
        self.zo_queries.append(coordinates + 1)
        if reuse is not None:
            with reuse.recording():
                base = self._zo_loss(model, inputs, step, "θ")
        else:
            base = self._zo_loss(model, inputs, step, "θ")
        named = dict(self._model().named_parameters())

        def loss_of(where: str) -> float:
            return self._zo_loss(model, inputs, step, where)

        results = evaluate_coordinates(named, jobs, self.zo.mu, loss_of, reuse)
        self._apply_cge(named, jobs, [results], base, lr, params)
        return base

    def _cge_parallel(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        jobs: list[Job],
        step: int,
        lr: float,
        coordinates: int,
        params: list[tuple[torch.nn.Parameter, torch.Tensor | None]],
    ) -> float:
        """The coordinates split by cost over the trainer's process and the worker pool."""
        if self.pool is None:
            self.pool = WorkerPool(self._model(), self.zo.workers - 1, self._stages)
        reuse = self.reuse
        stages = len(self._stages)
        costs = [stages - job.stage if reuse is not None else 1 for job in jobs]
        shares = split_by_cost(jobs, costs, self.zo.workers)
        # a worker records θ when a coordinate of its share reruns from a later stage (_share)
        recorded = (
            sum(1 for share in shares[1:] if any(job.stage > 0 for job in share))
            if reuse is not None
            else 0
        )
        self.zo_queries.append(coordinates + 1 + recorded)
        named = dict(self._model().named_parameters())

        def loss_of(where: str) -> float:
            return self._zo_loss(model, inputs, step, where)

        objective = (self.kd, self._teacher_outputs)
        with one_thread():
            self.pool.submit(self._model(), inputs, objective, self.zo.mu, shares[1:])
            try:
                if reuse is not None:
                    with reuse.recording():
                        base = self._zo_loss(model, inputs, step, "θ")
                else:
                    base = self._zo_loss(model, inputs, step, "θ")
                own = evaluate_coordinates(named, shares[0], self.zo.mu, loss_of, reuse)
            except BaseException:
                self.close_workers()  # mid-step workers are stopped, not waited for
                raise
            theirs = self.pool.collect()
        ordered = [j for share in shares for j in share]
        self._apply_cge(named, ordered, [own, *theirs], base, lr, params)
        return base

    def _apply_cge(
        self,
        named: Mapping[str, torch.nn.Parameter],
        jobs: list[Job],
        results: list[list[tuple[torch.Tensor, torch.Tensor]]],
        base: float,
        lr: float,
        params: list[tuple[torch.nn.Parameter, torch.Tensor | None]],
    ) -> None:
        """The step from ``ĝ_j = (l_j − l(θ)) / h_j`` of every coordinate (all evaluated first).

        ``ĝ`` is clipped to the global norm ``max_grad_norm`` (the pre-clip norm is logged), then
        ``θ_j ← θ_j − η ĝ_j`` (momentum 0) or the SGD-momentum step of :meth:`_momentum_step`.
        """
        flat_results = [r for part in results for r in part]
        estimates = [
            (job, (losses - base) / steps)
            for job, (losses, steps) in zip(jobs, flat_results, strict=True)
        ]
        # one reduction over the estimates in job order: a job split across workers gives the
        # same vector, so the same norm (and clipping) bit for bit
        flat_estimate = torch.cat([g.reshape(-1) for _, g in estimates]) if estimates else None
        norm = 0.0 if flat_estimate is None else math.sqrt(float(flat_estimate.square().sum()))
        self.zo_grad_norms.append(norm)
        clip = float(self.args.max_grad_norm or 0.0)
        coef = min(1.0, clip / (norm + 1e-6)) if clip > 0 else 1.0  # clip_grad_norm_'s rule
        if coef < 1.0:
            estimates = [(job, g * coef) for job, g in estimates]
        if self.zo.momentum == 0.0:
            for job, grads in estimates:
                flat = named[job.name].data.view(-1)
                index = job.index.to(flat.device)
                flat[index] -= (lr * grads).to(flat.dtype).to(flat.device)
            return
        names = {id(p): n for n, p in named.items()}
        dense: dict[str, torch.Tensor] = {}
        for p, mask in params:
            if mask is not None or p.dim() == 1:  # what CGE moves (matrices need a mask)
                dense[names[id(p)]] = torch.zeros_like(p.data)
        for job, grads in estimates:
            flat = dense[job.name].view(-1)
            flat[job.index.to(flat.device)] = grads.to(flat.dtype).to(flat.device)
        self._momentum_step(dense, lr)

    def _momentum_step(self, grads: Mapping[str, torch.Tensor], lr: float) -> None:
        """(Z-7): ``torch.optim.SGD(lr, momentum=β, weight_decay=λ)`` with ``grads`` as gradients.

        ``d = ĝ + λθ`` (matrices; 1-D tensors get no decay, as the Trainer's groups), ``b ← d``
        at a tensor's first step and ``b ← βb + d`` after, ``θ ← θ − ηb``: the operations and
        their order are SGD's, so the result is bit for bit that of ``torch.optim.SGD``. A
        buffer is zeroed where the keep-mask is False, so a pruned weight stays 0.
        """
        beta, wd = self.zo.momentum, float(self.args.weight_decay)
        named = dict(self._model().named_parameters())
        for name, g in grads.items():
            p = named[name]
            d = g.add(p.data, alpha=wd) if wd and p.dim() >= 2 else g
            buf = self._momentum.get(name)
            if buf is None:
                buf = self._momentum[name] = torch.clone(d).detach()
            else:
                buf.mul_(beta).add_(d)
            keep = self._keep.get(name)
            if keep is not None:
                buf.mul_(keep)
            p.data.add_(buf, alpha=-lr)

    # ------------------------------------------------------------------ logging
    def _clip_grad_norm(self, model: torch.nn.Module) -> float:
        """The step's estimate norm (clipped in the step itself): no gradients to clip."""
        return self._get_grad_norm(model)

    def _get_grad_norm(self, model: torch.nn.Module, grad_norm: Any = None) -> float:
        """What the Trainer logs as ``grad_norm``: the last step's estimate norm, pre-clip."""
        del model, grad_norm
        return self.zo_grad_norms[-1] if self.zo_grad_norms else 0.0

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if not self.args.should_save:
            return
        folder = Path(self._get_output_dir(trial=trial))
        folder = folder / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.zo.momentum > 0:
            from safetensors.torch import save_file

            buffers = {n: b.detach().cpu().contiguous() for n, b in self._momentum.items()}
            with atomic_output(folder / ZO_MOMENTUM_FILE) as tmp:
                save_file(buffers, str(tmp))
        state = {**asdict(self.zo), "step": int(self.state.global_step)}
        atomic_write_text(folder / ZO_STATE_FILE, json.dumps(state, indent=2) + "\n")

    def train(
        self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        """``Trainer.train``; a resume is refused unless the checkpoint has the same ZO settings.

        Raises:
            ResumeError: the checkpoint has no ``zo_state.json`` (not written by a ZOTrainer) or
                other ZO settings than this trainer's, or (momentum > 0) no momentum buffers.
            OSError: ``no space left on device in DIR`` when the disk is full (a checkpoint
                begun and not completed is removed, as :class:`~obert_train.ObertTrainer` does).
        """
        if resume_from_checkpoint is not None and resume_from_checkpoint is not False:
            path = resume_from_checkpoint
            if path is True:
                path = get_last_checkpoint(self.args.output_dir or ".")  # type: ignore[no-untyped-call]
                if path is None:
                    raise ResumeError(
                        f"resume requested but {self.args.output_dir} has no checkpoint-N folder"
                    )
            self._check_resume(Path(os.fspath(path)))
            self._momentum = self._load_momentum(Path(os.fspath(path)))
        else:
            self._momentum = {}
        try:
            with disk_full_named(Path(self.args.output_dir or ".")):
                return super().train(resume_from_checkpoint, *args, **kwargs)
        finally:
            self.close_workers()

    def _load_momentum(self, folder: Path) -> dict[str, torch.Tensor]:
        """The momentum buffers of a checkpoint (none without momentum)."""
        if self.zo.momentum == 0.0:
            return {}
        file = folder / ZO_MOMENTUM_FILE
        if not file.is_file():
            raise ResumeError(
                f"{folder} has no {ZO_MOMENTUM_FILE}: its momentum buffers are missing, so the "
                "run cannot continue bit for bit; resume from a complete checkpoint"
            )
        from safetensors.torch import load_file

        named = dict(self._model().named_parameters())
        buffers = load_file(str(file))
        unknown = [n for n in buffers if n not in named or buffers[n].shape != named[n].shape]
        if unknown:
            raise ResumeError(
                f"{file} holds momentum buffers {unknown[:3]} that match no parameter of the "
                "model (name or shape); resume with the model the checkpoint was trained with"
            )
        return {n: b.to(named[n].device, named[n].dtype) for n, b in buffers.items()}

    def close_workers(self) -> None:
        """Stop the worker processes of ``workers`` > 1 (``train`` does, also when it fails)."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def _check_resume(self, folder: Path) -> None:
        file = folder / ZO_STATE_FILE
        if not file.is_file():
            raise ResumeError(
                f"{folder} has no {ZO_STATE_FILE}: it was not written by a ZOTrainer, so its "
                "directions cannot be continued; start a new run from its weights instead"
            )
        saved = json.loads(file.read_text(encoding="utf-8"))
        mine = json.loads(json.dumps(asdict(self.zo)))  # tuples as lists, as saved
        defaults = json.loads(json.dumps(asdict(ZOSettings())))
        saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}  # older files
        for key, value in mine.items():
            if key != "workers" and saved.get(key) != value:  # workers: the same estimate
                raise ResumeError(
                    f"{folder} was trained with {key}={saved.get(key)!r}, this trainer has "
                    f"{key}={value!r}; resume with the same ZO settings (ZOSettings("
                    f"{', '.join(f'{k}={saved.get(k)!r}' for k in asdict(self.zo))}))"
                )
