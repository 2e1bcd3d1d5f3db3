"""Quantization-aware training (QAT) that keeps pruning masks, exported to QDQ ONNX.

Uses torchao's PT2E flow (``torch.ao.quantization``'s PT2E API moved to torchao and is gone from
torch 2.13): ``torch.export`` -> ``prepare_qat_pt2e`` with the x86 quantizer (int8 symmetric
per-channel weights, uint8 asymmetric per-tensor activations, fake-quantized with moving-average
observers) -> fine-tune -> ``convert_pt2e`` -> ``torch.onnx.export`` to a QDQ graph.

Masks (Kurtic et al. 2022, Sec. 3: pruned weights stay pruned during fine-tuning): the zeros of
every pruned ``nn.Linear`` weight are recorded before training; gradients at those positions are
zeroed (so AdamW's moments stay zero) and the weights are re-masked after every optimizer step.
Symmetric weight quantization has zero point 0, so ``fake_quant(0) == 0`` exactly and the masks
survive fake quantization, conversion and export; :func:`qat_export` checks all three.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from obert_core.shared import atomic_output

from .._checks import check_finite_parameters, check_seq_len, config_max_positions
from .._choices import ENGINES, QAT_TASKS
from .._errors import (
    MissingDependencyError,
    ObertDeployError,
    UnsupportedTaskError,
    VerificationError,
)
from .._format import percent
from .._validate import check_fields, check_path
from ..export._checkpoint import load_checkpoint, require
from ..export._export import (
    _OutputsAsTuple,
    model_input_names,
    quiet_torch_export,
)
from ..export._onnx_compat import (
    DEEPSPARSE_IR_VERSION,
    DEEPSPARSE_OPSET,
    convert_for_deepsparse,
    fold_dequantize_transpose,
    opset_version,
)
from ..export._tasks import get_task
from ..size._sparsity import _zero_points

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

__all__ = [
    "QAT_TASKS",
    "QATConfig",
    "QATReport",
    "QATWeightRow",
    "TrainBatch",
    "pruning_masks",
    "qat_export",
]

_LOG = logging.getLogger(__name__)
#: One training batch: model inputs (name -> int64 array) and integer class labels.
TrainBatch = tuple[dict[str, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class QATConfig:
    """Options of :func:`qat_export`.

    Attributes:
        task: Task (QAT fine-tuning supports ``sequence-classification``).
        engine: Engine the ONNX file is for (``deepsparse``: static shapes, LayerNorm
            decomposed, IR 8).
        steps: Optimizer steps of QAT fine-tuning (batches are cycled).
        learning_rate: Peak AdamW learning rate (linear decay to 0).
        weight_decay: AdamW weight decay (masked weights stay 0 either way).
        export_batch_size: Batch size of the exported graph (static shapes).
        seq_len: Sequence length of training batches and of the exported graph.
        static_shapes: Fix the exported input shapes; ``None``: ``True`` for DeepSparse, else
            ``False`` (dynamic batch and sequence axes; the sequence axis up to the model's
            ``max_position_embeddings``).
        atol: Tolerance of the ONNX Runtime vs converted-PyTorch output check.
        seed: Seed for dropout and initialisation of new parameters.
    """

    task: str = "sequence-classification"
    engine: str = "onnxruntime"
    steps: int = 200
    learning_rate: float = 2e-5
    weight_decay: float = 0.0
    export_batch_size: int = 1
    seq_len: int = 128
    static_shapes: bool | None = None
    atol: float = 5e-2
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        get_task(self.task)
        if self.task not in QAT_TASKS:
            raise UnsupportedTaskError(
                f"QAT fine-tuning supports {', '.join(QAT_TASKS)}, not {self.task!r}; use "
                "post-training quantization (`obert-deploy quantize`) for this task"
            )
        if self.engine not in ENGINES:
            raise ObertDeployError(f"unknown engine {self.engine!r}; choose one of {ENGINES}")
        if self.steps < 0 or not (math.isfinite(self.learning_rate) and self.learning_rate >= 0):
            raise ObertDeployError(
                f"steps ({self.steps}) and learning_rate ({self.learning_rate}) must be finite "
                "and >= 0; pass e.g. --steps 200 --learning-rate 2e-5"
            )
        if not (math.isfinite(self.atol) and self.atol > 0):
            raise ObertDeployError(f"atol must be finite and > 0, got {self.atol}")
        if self.export_batch_size < 1 or self.seq_len < 2:
            raise ObertDeployError(
                f"export_batch_size ({self.export_batch_size}) must be >= 1 and seq_len "
                f"({self.seq_len}) >= 2"
            )

    @property
    def resolved_static_shapes(self) -> bool:
        """``static_shapes`` with the engine default applied."""
        return self.engine == "deepsparse" if self.static_shapes is None else self.static_shapes


@dataclass(frozen=True)
class QATWeightRow:
    """A pruned weight through QAT: mask sparsity, and the int8 initializer that holds it.

    Attributes:
        name: PyTorch parameter name.
        mask_sparsity: Fraction of entries pruned before QAT.
        zeros_after_training: Pruned entries still exactly 0 in the trained fp32 weight.
        zeros_after_fake_quant: Pruned entries exactly 0 after the weight fake-quantizer.
        onnx_initializer: int8 initializer whose zero-point entries cover the mask (or ``None``).
        onnx_sparsity: Fraction of zero-point entries in that initializer (QAT can add zeros).
    """

    name: str
    mask_sparsity: float
    zeros_after_training: bool
    zeros_after_fake_quant: bool
    onnx_initializer: str | None
    onnx_sparsity: float | None

    @property
    def kept(self) -> bool:
        """True when the mask survived training, fake quantization and export."""
        return (
            self.zeros_after_training
            and self.zeros_after_fake_quant
            and self.onnx_initializer is not None
        )


@dataclass
class QATReport:
    """What :func:`qat_export` did.

    Attributes:
        path: Written QDQ ONNX file.
        engine: Target engine.
        opset: Default-domain opset of the file.
        steps: Optimizer steps run.
        losses: Training loss per step.
        max_abs_diff: Largest |ONNX Runtime - converted PyTorch| output difference.
        weights: Per pruned weight mask checks.
        seconds: Wall time.
    """

    path: Path
    engine: str
    opset: int
    steps: int
    losses: list[float] = field(default_factory=list)
    max_abs_diff: float = 0.0
    weights: list[QATWeightRow] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def masks_kept(self) -> bool:
        """True when every pruned weight kept its zeros end to end."""
        return all(row.kept for row in self.weights)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        data = asdict(self)
        data["path"] = str(self.path)
        data["masks_kept"] = self.masks_kept
        return data

    def to_markdown(self) -> str:
        """Summary and per-weight table in markdown."""
        first = f"{self.losses[0]:.4f}" if self.losses else "-"
        last = f"{self.losses[-1]:.4f}" if self.losses else "-"
        lines = [
            f"QAT: {self.steps} steps (loss {first} -> {last}), wrote `{self.path}` (engine "
            f"{self.engine}, opset {self.opset}); max |ORT - PyTorch| {self.max_abs_diff:.2e}; "
            f"masks kept: {'yes' if self.masks_kept else 'NO'}.",
            "",
            "| weight | mask sparsity | zero after training | zero after fake-quant | "
            "ONNX int8 initializer | ONNX sparsity |",
            "|---|---:|:---:|:---:|---|---:|",
        ]
        for row in self.weights:
            onnx_sparsity = "-" if row.onnx_sparsity is None else percent(row.onnx_sparsity)
            lines.append(
                f"| {row.name} | {percent(row.mask_sparsity)} | "
                f"{'yes' if row.zeros_after_training else 'NO'} | "
                f"{'yes' if row.zeros_after_fake_quant else 'NO'} | "
                f"{row.onnx_initializer or '-'} | {onnx_sparsity} |"
            )
        return "\n".join(lines)


def pruning_masks(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Keep-masks (True = kept, ``weight != 0``) of every ``nn.Linear`` weight that has zeros.

    The same vocabulary as obert-core and obert-train: a mask is True where the weight stays.
    """
    import torch

    masks = {}
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            keep = module.weight.detach() != 0
            if not bool(keep.all()):
                masks[f"{module_name}.weight"] = keep.clone()
    return masks


def _import_pt2e() -> tuple[Any, Any, Any, Any]:
    try:
        import torchao.quantization.pt2e as pt2e
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
    except ImportError as exc:
        raise MissingDependencyError(
            "QAT needs torchao: pip install 'obert-deploy[qat]' (torchao==0.18.0, with torch "
            "pinned, e.g. `pip install torchao==0.18.0 torch==2.13.0`)"
        ) from exc
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config(is_qat=True))
    return pt2e, quantizer, prepare_qat_pt2e, convert_pt2e


def _cycle(batches: Sequence[TrainBatch]) -> Iterator[TrainBatch]:
    while True:
        yield from batches


def _to_torch(feeds: dict[str, np.ndarray], names: list[str]) -> tuple[torch.Tensor, ...]:
    import torch

    missing = [n for n in names if n not in feeds]
    if missing:
        raise ObertDeployError(f"training batch lacks model inputs {missing}")
    return tuple(torch.as_tensor(feeds[n], dtype=torch.long) for n in names)


def _onnx_mask_rows(
    model: onnx.ModelProto, masks: dict[str, np.ndarray]
) -> dict[str, tuple[str, float]]:
    """Assign each keep-mask to an int8 initializer whose zero entries cover its pruned ones."""
    from onnx import numpy_helper

    zero_points = _zero_points(model)
    candidates = []
    for init in model.graph.initializer:
        if len(init.dims) != 2 or init.data_type not in (
            onnx.TensorProto.INT8,
            onnx.TensorProto.UINT8,
        ):
            continue
        array = numpy_helper.to_array(init)
        zeros = array == zero_points.get(init.name, np.zeros((), array.dtype))
        candidates.append((init.name, zeros))
    found: dict[str, tuple[str, float]] = {}
    used: set[str] = set()
    for name, mask in masks.items():
        best: tuple[int, str, float] | None = None
        for init_name, zeros in candidates:
            if init_name in used:
                continue
            for orient in (zeros, zeros.T):
                if orient.shape == mask.shape and bool(np.all(orient[~mask])):
                    extra = int(orient.sum() - (~mask).sum())
                    if best is None or extra < best[0]:
                        best = (extra, init_name, float(orient.mean()))
        if best is not None:
            used.add(best[1])
            found[name] = (best[1], best[2])
    return found


def _check_labels(batches: Sequence[TrainBatch], num_labels: int, source: object) -> None:
    """Every training label is a class of the model (else cross-entropy fails with IndexError)."""
    import numpy as np

    for index, (_, labels) in enumerate(batches):
        values = np.asarray(labels).reshape(-1)
        bad = [int(v) for v in values if not 0 <= int(v) < num_labels]
        if bad:
            raise ObertDeployError(
                f"training batch {index}: label {bad[0]} is not a class of {source!s} "
                f"(num_labels={num_labels}, classes 0..{num_labels - 1}); fix the labels or "
                "use a checkpoint with a head of that many classes"
            )


def qat_export(
    model: str | os.PathLike[str] | PreTrainedModel,
    output: str | os.PathLike[str],
    train_batches: Sequence[TrainBatch],
    config: QATConfig | None = None,
) -> QATReport:
    """Quantization-aware fine-tune ``model`` keeping its pruning masks; write a QDQ ONNX file.

    Args:
        model: Checkpoint directory / Hub id, or a loaded model (it is not modified).
        output: Destination ``.onnx`` file (written atomically, only if every check passes).
        train_batches: ``(inputs, labels)`` batches, all of shape ``(batch, config.seq_len)``;
            cycled for ``config.steps`` steps.
        config: QAT options.

    Returns:
        A :class:`QATReport` with losses, parity and per-weight mask checks.

    Raises:
        VerificationError: A mask did not survive, the loss became NaN/inf, or ONNX Runtime
            disagrees with PyTorch.
        CheckpointError: The model has NaN/inf weights.
        ShapeMismatchError: ``config.seq_len`` exceeds the model's position embeddings.
        ObertDeployError: A training label is not one of the model's ``num_labels`` classes.
    """
    check_path(output, "output", "qat_export")
    import copy

    config = config or QATConfig()
    require("qat", "torch", "transformers", "onnxscript")
    import torch

    start = time.perf_counter()
    if not train_batches:
        raise ObertDeployError("QAT needs at least one training batch (--train-file)")
    if isinstance(model, (str, os.PathLike)):
        loaded = load_checkpoint(model, config.task)
        hf_model, source = loaded.model, loaded.source
    else:
        hf_model = copy.deepcopy(model)
        hf_model.set_attn_implementation("eager")
        source = type(model).__name__
    check_finite_parameters(hf_model, source)
    check_seq_len(config.seq_len, config_max_positions(hf_model.config), repr(source))
    _check_labels(train_batches, int(hf_model.config.num_labels or 2), source)
    pt2e, quantizer, prepare_qat_pt2e, convert_pt2e = _import_pt2e()
    torch.manual_seed(config.seed)
    masks = pruning_masks(hf_model)
    input_names = model_input_names(hf_model)
    spec = get_task(config.task)
    wrapper = _OutputsAsTuple.wrap(hf_model, input_names, spec.output_names)
    example = _to_torch(train_batches[0][0], input_names)
    if example[0].shape[1] != config.seq_len:
        raise ObertDeployError(
            f"training batches have sequence length {example[0].shape[1]}, config.seq_len is "
            f"{config.seq_len}; tokenize with the same length"
        )
    # The training graph already carries the axes the ONNX file will have dynamic: the converted
    # graph is re-exported from it, and a length baked in here could not be made dynamic later.
    batch_dim = torch.export.Dim("batch", min=1, max=4096)
    axes: dict[int, Any] = {0: batch_dim}
    if not config.resolved_static_shapes:
        max_len = int(getattr(hf_model.config, "max_position_embeddings", 0) or 4096)
        if config.seq_len > max_len:
            raise ObertDeployError(
                f"seq_len {config.seq_len} exceeds the model's max_position_embeddings "
                f"{max_len}; pass --max-seq-length {max_len} or less"
            )
        axes[1] = torch.export.Dim("sequence", min=2, max=max_len)
    with quiet_torch_export():
        exported = torch.export.export(
            wrapper, example, dynamic_shapes={n: dict(axes) for n in input_names}
        )
        prepared = prepare_qat_pt2e(exported.module(), quantizer)
    params = dict(prepared.named_parameters())
    graph_masks = {}
    for name, mask in masks.items():
        param = params.get(f"model.{name}")
        if param is None:
            raise VerificationError(f"pruned weight {name} not found in the QAT graph")
        graph_masks[name] = (param, mask)
        param.register_hook(lambda grad, keep=mask: grad * keep)

    optimizer = torch.optim.AdamW(
        prepared.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    total = max(config.steps, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / total)
    pt2e.move_exported_model_to_train(prepared)
    losses: list[float] = []
    from tqdm.auto import tqdm

    batches = _cycle(train_batches)
    for step in tqdm(range(config.steps), desc="QAT", disable=None):
        feeds, labels = next(batches)
        logits = prepared(*_to_torch(feeds, input_names))[0]
        loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(labels, dtype=torch.long))
        if not bool(torch.isfinite(loss)):
            raise VerificationError(
                f"QAT loss is {float(loss)} at step {step + 1} of {config.steps}; training "
                f"diverged (learning rate {config.learning_rate}): lower --learning-rate; the file "
                "was not written"
            )
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            for param, mask in graph_masks.values():
                param.masked_fill_(~mask, 0.0)
        losses.append(float(loss.detach()))
    pt2e.move_exported_model_to_eval(prepared)

    # Mask checks in PyTorch: trained weight and its fake-quantized value.
    fake_quant_of = {}
    for node in prepared.graph.nodes:
        if node.op == "call_module" and node.args and getattr(node.args[0], "op", "") == "get_attr":
            fake_quant_of[str(node.args[0].target)] = prepared.get_submodule(str(node.target))
    checks: dict[str, tuple[bool, bool]] = {}
    with torch.no_grad():
        for name, (param, mask) in graph_masks.items():
            trained_zero = bool(torch.all(param[~mask] == 0))
            fq = fake_quant_of.get(f"model.{name}")
            fq_zero = fq is not None and bool(torch.all(fq(param.detach())[~mask] == 0))
            checks[name] = (trained_zero, fq_zero)
    converted = convert_pt2e(prepared)
    # A dynamic batch axis cannot be traced from batch 1 (torch.export specialises 0/1 sizes).
    export_batch = config.export_batch_size
    if not config.resolved_static_shapes:
        export_batch = max(2, export_batch)
    export_shape = (export_batch, config.seq_len)
    check_feeds = {
        name: np.resize(train_batches[0][0][name], export_shape).astype(np.int64)
        for name in input_names
    }
    check_args = _to_torch(check_feeds, input_names)
    with torch.no_grad():
        expected = converted(*check_args)[0].numpy()
        dynamic = None
        if not config.resolved_static_shapes:
            dynamic = {n: dict(axes) for n in input_names}
        with quiet_torch_export():
            program = torch.onnx.export(
                torch.export.export(converted, check_args, dynamic_shapes=dynamic),
                check_args,
                input_names=input_names,
                output_names=list(spec.output_names),
                opset_version=18,
                dynamo=True,
                verbose=False,
            )
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise VerificationError("torch.onnx.export returned no program")
    proto = program.model_proto
    del proto.graph.value_info[:]
    for node in proto.graph.node:
        del node.metadata_props[:]
    fold_dequantize_transpose(proto)
    if config.engine == "deepsparse":
        proto = convert_for_deepsparse(
            proto, opset=DEEPSPARSE_OPSET, ir_version=DEEPSPARSE_IR_VERSION
        )
    proto.producer_name = "obert-deploy"
    onnx_rows = _onnx_mask_rows(proto, {k: v.numpy() for k, v in masks.items()})
    rows = []
    for name, mask in masks.items():
        init_name, onnx_sparsity = onnx_rows.get(name, (None, None))
        rows.append(
            QATWeightRow(
                name=name,
                mask_sparsity=1.0 - float(mask.float().mean()),
                zeros_after_training=checks[name][0],
                zeros_after_fake_quant=checks[name][1],
                onnx_initializer=init_name,
                onnx_sparsity=onnx_sparsity,
            )
        )
    lost = [row.name for row in rows if not row.kept]
    if lost:
        raise VerificationError(
            f"pruning masks were not kept through QAT for {len(lost)} weights ({lost[:3]}); "
            "the file was not written"
        )
    import onnxruntime as ort

    out = Path(output)
    with atomic_output(out) as tmp:
        onnx.save(proto, str(tmp))
        try:
            session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise VerificationError(
                f"ONNX Runtime cannot load the QDQ graph exported by QAT ({type(exc).__name__}: "
                f"{exc}); the file was not written. Check that onnxruntime is current "
                "(`pip install -U onnxruntime`) or export for the other --engine"
            ) from exc
        parity = [(check_feeds, expected)]
        if not config.resolved_static_shapes:
            # Also check a second shape, different on both dynamic axes.
            other_shape = (export_batch + 1, max(2, config.seq_len // 2))
            other = {
                name: np.resize(train_batches[0][0][name], other_shape).astype(np.int64)
                for name in input_names
            }
            with torch.no_grad():
                other_expected = converted(*_to_torch(other, input_names))[0].numpy()
            parity.append((other, other_expected))
        diff = 0.0
        for feeds_np, want in parity:
            got = session.run(None, feeds_np)[0]
            diff = max(diff, float(np.max(np.abs(got - want))))
            if diff > config.atol:
                raise VerificationError(
                    f"QDQ ONNX output differs from the converted PyTorch model by {diff:.3g} "
                    f"(> atol {config.atol}) for inputs of shape "
                    f"{list(feeds_np[input_names[0]].shape)}; the file was not written"
                )
    return QATReport(
        path=out,
        engine=config.engine,
        opset=opset_version(proto),
        steps=config.steps,
        losses=losses,
        max_abs_diff=diff,
        weights=rows,
        seconds=time.perf_counter() - start,
    )
