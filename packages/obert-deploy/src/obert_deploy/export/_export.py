"""Export a Hugging Face model to ONNX with ``torch.onnx.export(dynamo=True)`` and verify it.

Choices (measured on torch 2.13 / transformers 5.23, see docs/deploy.md):

* The dynamo exporter (``dynamo=True``, the default since torch 2.9) is used. The TorchScript
  exporter (``dynamo=False``) still works at opset >= 14 but is deprecated and warns on every
  call; with transformers 5's SDPA attention it fails at opset 13.
* The model is loaded with ``attn_implementation="eager"``: a plain MatMul/Softmax attention
  graph without the ``IsNaN`` guard of the SDPA decomposition.
* The graph is always produced at opset 18 (the lowest the dynamo exporter implements; a lower
  ``--opset`` is reached with ``onnx.version_converter``). For DeepSparse, ``LayerNormalization``
  is decomposed and the IR version lowered to 8 (see :mod:`obert_deploy._onnx_compat`).
* Static input shapes by default for DeepSparse (it only exploits weight sparsity when every
  shape is known at compile time), dynamic batch/sequence axes by default for ONNX Runtime
  (no speed difference there, and one file serves every shape).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import onnx

from obert_core.shared import atomic_output

from .._checks import (
    check_finite_outputs,
    check_finite_parameters,
    check_seq_len,
    config_max_positions,
)
from .._choices import ENGINES
from .._errors import CheckpointError, ObertDeployError, VerificationError
from .._validate import check_fields, check_path
from ..size._sparsity import SparsityRow, linear_weights, match_sparsity, sparsity_table_markdown
from ._checkpoint import load_checkpoint, require
from ._onnx_compat import (
    DEEPSPARSE_IR_VERSION,
    DEEPSPARSE_OPSET,
    MIN_OPSET,
    convert_for_deepsparse,
    set_opset,
)
from ._shrink import ShrinkReport, check_width_multiple, shrink_model
from ._tasks import get_task

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

__all__ = [
    "PIXEL_VALUES",
    "ExportConfig",
    "ExportReport",
    "export_onnx",
    "image_input_shape",
    "is_image_model",
    "model_input_names",
    "quiet_torch_export",
    "sample_inputs",
]

_LOG = logging.getLogger(__name__)
_EXPORT_OPSET = 18
_MAX_OPSET = 21
#: onnx 1.14 (pinned by DeepSparse 1.8) reads at most opset 19 with IR 8; 18 is the newest
#: opset the exporter emits natively and the one tested with DeepSparse.
_MAX_DEEPSPARSE_OPSET = 18
#: Ranges of the dynamic batch and sequence axes (the sample batch + 1 is checked too).
_MAX_DYNAMIC_BATCH = 1024
_MAX_DYNAMIC_SEQ = 4096


@dataclass(frozen=True)
class ExportConfig:
    """Options of :func:`export_onnx`.

    Attributes:
        task: Task whose head and outputs are exported (see :data:`obert_deploy.TASKS`).
        engine: Engine the file is for; picks the defaults of ``static_shapes`` and ``opset``.
        batch_size: Batch size of the sample inputs (the fixed batch size with static shapes).
        seq_len: Sequence length of the sample inputs (fixed with static shapes).
        static_shapes: Fix every input dimension. ``None`` means the engine default: ``True`` for
            DeepSparse (required for its sparse kernels), ``False`` for ONNX Runtime.
        opset: Default-domain opset. ``None`` means 18 (both engines); 14..21 for ONNX Runtime,
            14..18 for DeepSparse (its onnx 1.14 cannot read newer files at IR 8).
        attn_implementation: Attention implementation used when loading a checkpoint.
        verify: Compare ONNX Runtime outputs with PyTorch and check weight sparsity survives.
        atol: Absolute tolerance of the output comparison.
        rtol: Relative tolerance of the output comparison.
        seed: Seed of the random sample inputs.
        shrink: Physically remove structurally pruned parts before exporting (FFN neurons
            whose down-projection column is all zero, heads whose output-projection block is
            all zero; :func:`obert_deploy.shrink_model`). The parity check compares the ONNX
            file with the model as loaded, before shrinking. ``False`` keeps every shape.
        width_multiple: With ``shrink``, each FFN's kept width is rounded up to a multiple of
            this (all-zero neurons kept as zero columns; outputs unchanged): 16 by default,
            since dense kernels gain nothing from odd widths; 1 removes every all-zero neuron.
    """

    task: str = "sequence-classification"
    engine: str = "onnxruntime"
    batch_size: int = 1
    seq_len: int = 128
    static_shapes: bool | None = None
    opset: int | None = None
    attn_implementation: str = "eager"
    verify: bool = True
    atol: float = 1e-4
    rtol: float = 1e-3
    seed: int = 0
    shrink: bool = True
    width_multiple: int = 16

    def __post_init__(self) -> None:
        check_fields(self)
        check_width_multiple(self.width_multiple, "ExportConfig")
        get_task(self.task)
        if self.engine not in ENGINES:
            raise ObertDeployError(
                f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}"
            )
        if self.batch_size < 1 or self.seq_len < 2:
            raise ObertDeployError(
                f"batch_size ({self.batch_size}) must be >= 1 and seq_len ({self.seq_len}) >= 2"
            )
        if self.opset is not None and not MIN_OPSET <= self.opset <= _MAX_OPSET:
            raise ObertDeployError(
                f"opset {self.opset} is not supported; use {MIN_OPSET}..{_MAX_OPSET} "
                "(transformers 5 attention needs >= 14)"
            )
        if (
            self.engine == "deepsparse"
            and self.opset is not None
            and self.opset > _MAX_DEEPSPARSE_OPSET
        ):
            raise ObertDeployError(
                f"opset {self.opset} is too new for --engine deepsparse: DeepSparse 1.8 (onnx "
                f"1.14, IR 8) reads at most opset {_MAX_DEEPSPARSE_OPSET} here; use --opset "
                f"{MIN_OPSET}..{_MAX_DEEPSPARSE_OPSET} or leave --opset out (default "
                f"{DEEPSPARSE_OPSET})"
            )
        if not (math.isfinite(self.atol) and math.isfinite(self.rtol)) or (
            self.atol <= 0 or self.rtol < 0
        ):
            raise ObertDeployError(
                f"tolerances must be finite, atol > 0 and rtol >= 0, got atol={self.atol}, "
                f"rtol={self.rtol}; pass e.g. --atol 1e-4 --rtol 1e-3"
            )
        if not self.resolved_static_shapes and (
            self.batch_size >= _MAX_DYNAMIC_BATCH or self.seq_len > _MAX_DYNAMIC_SEQ
        ):
            raise ObertDeployError(
                f"with dynamic shapes the sample batch must be < {_MAX_DYNAMIC_BATCH} and the "
                f"sequence <= {_MAX_DYNAMIC_SEQ}, got --batch-size {self.batch_size} "
                f"--max-seq-length {self.seq_len}; the exported file serves every shape up to "
                "those limits, so pass a smaller --batch-size/--max-seq-length (or --static-shapes)"
            )

    @property
    def resolved_static_shapes(self) -> bool:
        """``static_shapes`` with the engine default applied."""
        if self.static_shapes is None:
            return self.engine == "deepsparse"
        return self.static_shapes

    @property
    def resolved_opset(self) -> int:
        """``opset`` with the engine default applied."""
        if self.opset is None:
            return DEEPSPARSE_OPSET if self.engine == "deepsparse" else _EXPORT_OPSET
        return self.opset


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and what it checked.

    Attributes:
        path: The written ONNX file.
        task: Exported task.
        engine: Target engine.
        opset: Default-domain opset of the file.
        ir_version: ONNX IR version of the file.
        input_shapes: Input name -> shape (``"batch"``/``"sequence"`` for dynamic axes).
        output_names: Graph output names.
        max_abs_diff: Output name -> largest |ONNX Runtime - PyTorch| over the checked inputs.
        sparsity: One row per ``nn.Linear`` weight of the exported (shrunk) model: the sparsity
            of what remains after structured zeros were removed.
        missing_keys: Parameters that were newly initialised when loading the checkpoint.
        seconds: Wall time of export plus verification.
        shrink: What shrinking removed (``None`` with ``shrink=False``).
    """

    path: Path
    task: str
    engine: str
    opset: int
    ir_version: int
    input_shapes: dict[str, list[int | str]]
    output_names: list[str]
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    sparsity: list[SparsityRow] = field(default_factory=list)
    missing_keys: tuple[str, ...] = ()
    seconds: float = 0.0
    shrink: ShrinkReport | None = None

    @property
    def pruned_weights(self) -> list[SparsityRow]:
        """Rows of the weights that have zeros in PyTorch."""
        return [row for row in self.sparsity if row.pruned]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "path": str(self.path),
            "task": self.task,
            "engine": self.engine,
            "opset": self.opset,
            "ir_version": self.ir_version,
            "input_shapes": self.input_shapes,
            "output_names": self.output_names,
            "max_abs_diff": self.max_abs_diff,
            "sparsity": [row.to_dict() for row in self.sparsity],
            "missing_keys": list(self.missing_keys),
            "seconds": self.seconds,
            "shrink": None if self.shrink is None else self.shrink.to_dict(),
        }

    def to_markdown(self) -> str:
        """Render a short summary and the per-weight sparsity table."""
        diffs = ", ".join(f"{k}: {v:.2e}" for k, v in self.max_abs_diff.items()) or "not checked"
        pruned = self.pruned_weights
        lines = [
            f"Exported `{self.path}` (task {self.task}, engine {self.engine}, opset {self.opset}, "
            f"IR {self.ir_version}, inputs {self.input_shapes}).",
            f"Max |ONNX Runtime - PyTorch|: {diffs}.",
            f"Pruned Linear weights: {len(pruned)} of {len(self.sparsity)}; zeros kept in ONNX: "
            f"{sum(row.same_zeros for row in pruned)} of {len(pruned)}.",
        ]
        if self.shrink is None:
            lines.append("Structured zeros: kept at their shapes (--no-shrink).")
        else:
            lines.append(self.shrink.to_markdown())
        lines += ["", sparsity_table_markdown(self.sparsity)]
        return "\n".join(lines)


class _OutputsAsTuple:
    """Build a ``torch.nn.Module`` returning the task's outputs as a tuple (named graph outputs)."""

    @staticmethod
    def wrap(model: PreTrainedModel, input_names: list[str], outputs: tuple[str, ...]) -> Any:
        import torch

        if input_names == [PIXEL_VALUES]:

            class ImageWrapper(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.model = model

                def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
                    result = self.model(pixel_values=pixel_values, return_dict=True)
                    return tuple(result[key] for key in outputs)

            return ImageWrapper().eval()

        class Wrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(
                self,
                input_ids: torch.Tensor,
                attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None,
            ) -> tuple[torch.Tensor, ...]:
                feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
                if token_type_ids is not None:
                    feeds["token_type_ids"] = token_type_ids
                if set(feeds) != set(input_names):
                    raise ObertDeployError(
                        f"the export wrapper expected inputs {input_names}, got {sorted(feeds)}; "
                        "this is a bug in obert-deploy: please report it"
                    )
                result = self.model(**feeds, return_dict=True)
                return tuple(result[key] for key in outputs)

        return Wrapper().eval()


#: The input of image models (ViT, DeiT, ...): ``(batch, channels, height, width)`` floats.
PIXEL_VALUES = "pixel_values"


def is_image_model(model: PreTrainedModel) -> bool:
    """True for a model whose main input is ``pixel_values`` (an HF image classifier)."""
    return getattr(model, "main_input_name", "input_ids") == PIXEL_VALUES


def image_input_shape(config: Any) -> tuple[int, int, int]:
    """``(channels, height, width)`` of an image model's input, from its config.

    Args:
        config: The model config (``num_channels`` and ``image_size``, an int or a pair).

    Raises:
        CheckpointError: The config has no ``image_size``, or a size that is not positive.
    """
    size = getattr(config, "image_size", None)
    channels = int(getattr(config, "num_channels", 3) or 3)
    height, width = (size, size) if isinstance(size, int) else tuple(size or (0, 0))[:2]
    if not (isinstance(height, int) and isinstance(width, int)) or height < 1 or width < 1:
        raise CheckpointError(
            f"the image model's config has image_size {size!r}; it needs a positive int (or "
            "[height, width]) to build the exported input: set config.image_size"
        )
    return channels, height, width


def model_input_names(model: PreTrainedModel) -> list[str]:
    """Inputs the model's ``forward`` takes in the exported graph, in ONNX input order.

    Args:
        model: A loaded Hugging Face model.

    Returns:
        ``["pixel_values"]`` for an image model (:func:`is_image_model`); otherwise the token
        inputs ``input_ids``, ``attention_mask`` and, when the model has segment embeddings and
        its ``forward`` takes them, ``token_type_ids``.
    """
    if is_image_model(model):
        return [PIXEL_VALUES]
    params = inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"]
    type_vocab = getattr(model.config, "type_vocab_size", 0) or 0
    if "token_type_ids" in params and type_vocab > 0:
        names.append("token_type_ids")
    return names


def sample_inputs(
    model: PreTrainedModel, batch_size: int, seq_len: int, *, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random inputs for ``model``: token ids with some rows padded, or images.

    For token inputs, row ``i`` of the attention mask keeps the first
    ``seq_len - i * seq_len // (2 * batch)`` tokens, so padding is exercised whenever
    ``batch_size > 1``. An image model (:func:`is_image_model`) gets standard normal
    ``pixel_values`` of shape ``(batch_size, channels, height, width)`` from its config
    (``seq_len`` is not used).

    Args:
        model: The model the inputs are for (vocabulary size, segment embeddings, image size).
        batch_size: Rows.
        seq_len: Tokens per row.
        seed: Seed of the random token ids or pixels.

    Returns:
        Input name -> tensor (int64 ``(batch_size, seq_len)`` tokens, or float32 images), in
        ONNX input order.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    if is_image_model(model):
        shape = (batch_size, *image_input_shape(model.config))
        return {PIXEL_VALUES: torch.randn(shape, generator=generator)}
    vocab = int(getattr(model.config, "vocab_size", 100))
    ids = torch.randint(1, vocab, (batch_size, seq_len), generator=generator)
    mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    for row in range(batch_size):
        keep = seq_len - row * seq_len // (2 * batch_size)
        mask[row, keep:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in model_input_names(model):
        types = torch.zeros(batch_size, seq_len, dtype=torch.long)
        if int(getattr(model.config, "type_vocab_size", 1)) > 1:
            types[:, seq_len // 2 :] = 1
        feeds["token_type_ids"] = types
    return {name: feeds[name] for name in model_input_names(model)}


@contextlib.contextmanager
def quiet_torch_export() -> Iterator[None]:
    """Silence the exporter's progress prints and third-party deprecation noise.

    ``torch.onnx.export(dynamo=True)`` prints ``[torch.onnx] ...`` progress lines to stdout and
    torch 2.13's pytree code raises a ``FutureWarning`` about ``LeafSpec`` from ``copyreg``
    (not from our code; nothing to fix on our side).
    """
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\..*")
        # Emitted when several inputs share one Dim (batch/sequence): the shared name is kept.
        warnings.filterwarnings(
            "ignore", message=r"# The axis name: .* will not be used", category=UserWarning
        )
        yield


def _export_graph(
    wrapper: Any,
    args: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    static_shapes: bool,
) -> onnx.ModelProto:
    import torch

    dynamic_shapes = None
    if not static_shapes:
        batch = torch.export.Dim("batch", min=1, max=_MAX_DYNAMIC_BATCH)
        sequence = torch.export.Dim("sequence", min=2, max=_MAX_DYNAMIC_SEQ)
        dynamic_shapes = {
            name: {0: batch} if name == PIXEL_VALUES else {0: batch, 1: sequence}
            for name in input_names
        }
    with quiet_torch_export():
        program = torch.onnx.export(
            wrapper,
            args,
            input_names=input_names,
            output_names=output_names,
            opset_version=_EXPORT_OPSET,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise VerificationError("torch.onnx.export returned no program")
    proto: onnx.ModelProto = program.model_proto
    return proto


def _finalize_graph(proto: onnx.ModelProto, config: ExportConfig) -> onnx.ModelProto:
    # The exporter's intermediate value_info annotations carry symbolic-shape expressions that
    # onnx's strict shape inference (used by ONNX Runtime's quantizer) rejects; engines
    # re-infer shapes anyway, so drop them.
    del proto.graph.value_info[:]
    # Per-node metadata holds FX node dumps and Python stack traces with local file paths:
    # about 3x the weights of a tiny model, and nothing an engine reads.
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    opset = config.resolved_opset
    try:
        if config.engine == "deepsparse":
            return convert_for_deepsparse(proto, opset=opset, ir_version=DEEPSPARSE_IR_VERSION)
        return set_opset(proto, opset)
    except ValueError as exc:  # set_opset: no version adapter; the message has the remedy
        raise ObertDeployError(f"{exc} (task {config.task}, engine {config.engine})") from exc
    except (RuntimeError, onnx.checker.ValidationError) as exc:
        raise ObertDeployError(
            f"cannot convert the exported {config.task} graph to opset {opset} for engine "
            f"{config.engine} ({type(exc).__name__}: {exc}); leave --opset out (default "
            f"{_EXPORT_OPSET}) or pick another --opset"
        ) from exc


def _check_parity(
    path: Path,
    wrapper: Any,
    feeds: list[dict[str, torch.Tensor]],
    output_names: list[str],
    config: ExportConfig,
) -> dict[str, float]:
    import onnxruntime as ort
    import torch

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise VerificationError(
            f"ONNX Runtime cannot load the exported {config.task} graph at opset "
            f"{config.resolved_opset} ({type(exc).__name__}: {exc}); the file was not written. "
            "Re-export with another --opset (default 18), or skip the check with --no-verify "
            "if the target engine is not ONNX Runtime"
        ) from exc
    worst = dict.fromkeys(output_names, 0.0)
    for feed in feeds:
        with torch.no_grad():
            expected = [t.numpy() for t in wrapper(*feed.values())]
        check_finite_outputs(
            expected, output_names, "PyTorch", "the model overflows on random inputs: check it"
        )
        got = session.run(output_names, {k: v.numpy() for k, v in feed.items()})
        check_finite_outputs(
            got,
            output_names,
            "ONNX Runtime",
            "PyTorch's is finite: re-export with another --opset (the file was not written)",
        )
        shape = list(next(iter(feed.values())).shape)
        for name, want, have in zip(output_names, expected, got, strict=True):
            diff = float(np.max(np.abs(want - have))) if want.size else 0.0
            worst[name] = max(worst[name], diff)
            if not np.allclose(have, want, rtol=config.rtol, atol=config.atol):
                raise VerificationError(
                    f"ONNX Runtime output {name!r} differs from PyTorch by up to {diff:.3g} "
                    f"(atol={config.atol}, rtol={config.rtol}) for inputs of shape {shape}; "
                    f"the file was not written. Re-export with another --opset, or raise the "
                    "tolerance with --atol/--rtol if the difference is acceptable"
                )
    return worst


def export_onnx(
    model: str | os.PathLike[str] | PreTrainedModel,
    output: str | os.PathLike[str],
    config: ExportConfig | None = None,
) -> ExportReport:
    """Export ``model`` to ONNX at ``output`` and verify the file.

    Verification (``config.verify``): ONNX Runtime outputs must match PyTorch within
    ``atol + rtol * |PyTorch|`` on random inputs (with padding; with dynamic shapes also on a
    second shape, ``batch_size + 1`` by ``seq_len // 2``), and every pruned ``nn.Linear``
    weight must appear bit-exactly (as ``W`` or ``W^T``) among the ONNX initializers, so its
    zeros survive. A failed check raises
    and leaves nothing at ``output``.

    With ``config.shrink`` (the default), structurally pruned FFN neurons and attention heads
    are first removed from a copy of the model (:func:`obert_deploy.shrink_model`); the parity
    check then compares the smaller ONNX graph with the model as loaded, the sparsity check
    covers the weights that remain, and :attr:`ExportReport.shrink` says what was removed.

    Args:
        model: Checkpoint directory, Hub id, or an already loaded model (left in eval mode).
        output: Destination ``.onnx`` file; written atomically.
        config: Export options; defaults to :class:`ExportConfig()`.

    Returns:
        The :class:`ExportReport`, including the per-weight sparsity table.

    Raises:
        CheckpointError: The checkpoint cannot be loaded, or has NaN/inf weights (named).
        ShapeMismatchError: ``config.seq_len`` exceeds the model's position embeddings.
        VerificationError: Output mismatch, NaN/inf outputs, or lost sparsity.
        MissingDependencyError: PyTorch, Transformers or onnxscript is not installed.
    """
    check_path(output, "output", "export_onnx")
    config = config or ExportConfig()
    require("export", "torch", "transformers", "onnxscript")
    start = time.perf_counter()
    missing: tuple[str, ...] = ()
    if isinstance(model, (str, os.PathLike)):
        loaded = load_checkpoint(model, config.task, attn_implementation=config.attn_implementation)
        hf_model, missing = loaded.model, loaded.missing_keys
    else:
        hf_model = model
    cast("torch.nn.Module", hf_model).eval()
    source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
    check_finite_parameters(hf_model, source)
    check_seq_len(config.seq_len, config_max_positions(hf_model.config), repr(source))
    previous_attn = getattr(hf_model.config, "_attn_implementation", None)
    if previous_attn is not None and previous_attn != config.attn_implementation:
        hf_model.set_attn_implementation(config.attn_implementation)
    previous_experts = _exportable_experts(hf_model)
    try:
        return _export_loaded(hf_model, Path(output), config, missing, start)
    finally:
        if previous_attn is not None and previous_attn != config.attn_implementation:
            hf_model.set_attn_implementation(previous_attn)
        if previous_experts is not None:
            hf_model.set_experts_implementation(previous_experts)


#: Fused-experts forwards (transformers 5 MoE blocks) the ONNX exporter converts: ``batched_mm``
#: is plain batched matrix products; the default ``grouped_mm`` calls a custom op
#: (``transformers::grouped_mm_fallback`` on CPU) that has no ONNX conversion.
_EXPORTABLE_EXPERTS = ("batched_mm", "eager")


def _exportable_experts(model: Any) -> str | None:
    """Switch a MoE model's experts to an exportable forward; return the one to restore.

    Same outputs (the implementations compute the same products), so the parity check still
    compares with the model as loaded. None when the model has no fused experts or already
    uses an exportable forward.
    """
    current = getattr(getattr(model, "config", None), "_experts_implementation", None)
    can_set = getattr(model, "_can_set_experts_implementation", None)
    if current is None or current in _EXPORTABLE_EXPERTS or can_set is None or not can_set():
        return None
    model.set_experts_implementation(_EXPORTABLE_EXPERTS[0])
    return str(current)


def _export_loaded(
    hf_model: PreTrainedModel,
    out: Path,
    config: ExportConfig,
    missing: tuple[str, ...],
    start: float,
) -> ExportReport:
    import torch

    spec = get_task(config.task)
    input_names = model_input_names(hf_model)
    output_names = list(spec.output_names)
    # The parity check compares with the model as loaded (``reference``), before shrinking.
    reference = _OutputsAsTuple.wrap(hf_model, input_names, spec.output_names)
    shrink: ShrinkReport | None = None
    if config.shrink:
        multiple = config.width_multiple
        if shrink_model(hf_model, dry_run=True, width_multiple=multiple).changed:
            hf_model = copy.deepcopy(hf_model)  # never change the caller's model
        shrink = shrink_model(hf_model, width_multiple=multiple)
    wrapper = _OutputsAsTuple.wrap(hf_model, input_names, spec.output_names)
    static = config.resolved_static_shapes
    feed = sample_inputs(hf_model, config.batch_size, config.seq_len, seed=config.seed)
    try:
        with torch.no_grad():
            proto = _export_graph(wrapper, tuple(feed.values()), input_names, output_names, static)
    except Exception as exc:
        raise ObertDeployError(
            f"torch.onnx.export failed for task {config.task!r} ({type(exc).__name__}: {exc}); "
            "check that the checkpoint architecture supports this task"
        ) from exc
    proto = _finalize_graph(proto, config)
    proto.producer_name = "obert-deploy"
    rows = match_sparsity(linear_weights(hf_model), proto)
    with atomic_output(out) as tmp:
        onnx.save(proto, str(tmp))
        diffs: dict[str, float] = {}
        if config.verify:
            checks = [
                sample_inputs(hf_model, config.batch_size, config.seq_len, seed=config.seed + 1)
            ]
            if not static:
                # A second shape that differs from the traced one on both axes.
                checks.append(
                    sample_inputs(
                        hf_model,
                        config.batch_size + 1,
                        max(2, config.seq_len // 2),
                        seed=config.seed + 2,
                    )
                )
            diffs = _check_parity(tmp, reference, checks, output_names, config)
            lost = [row.name for row in rows if row.pruned and not row.same_zeros]
            if lost:
                raise VerificationError(
                    f"sparsity did not survive export for {len(lost)} pruned weights "
                    f"({', '.join(lost[:3])}{', ...' if len(lost) > 3 else ''}): no ONNX "
                    "initializer holds them unchanged; the file was not written"
                )
    shapes: dict[str, list[int | str]] = {
        name: [config.batch_size, config.seq_len] if static else ["batch", "sequence"]
        for name in input_names
    }
    if PIXEL_VALUES in shapes:
        image = list(image_input_shape(hf_model.config))
        shapes[PIXEL_VALUES] = [config.batch_size if static else "batch", *image]
    from ._onnx_compat import opset_version

    report = ExportReport(
        path=out,
        task=config.task,
        engine=config.engine,
        opset=opset_version(proto),
        ir_version=int(proto.ir_version),
        input_shapes=shapes,
        output_names=output_names,
        max_abs_diff=diffs,
        sparsity=rows,
        missing_keys=missing,
        seconds=time.perf_counter() - start,
        shrink=shrink,
    )
    _LOG.info("exported %s in %.1f s", out, report.seconds)
    return report
