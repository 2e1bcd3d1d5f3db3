"""Accuracy of exported ONNX models on a task's dev set, next to the PyTorch checkpoint.

* ``sequence-classification``: accuracy on a GLUE-style TSV (default: SST-2 dev), plus the
  fraction of examples where the ONNX model predicts the same class as PyTorch and the largest
  logit difference.
* ``question-answering``: SQuAD v1.1 exact match and F1 (official normalisation: lower case, no
  punctuation/articles/extra spaces), long contexts split into overlapping windows.
* ``image-classification``: accuracy on dev images (an ``.npz`` or class folders, read by
  :func:`~obert_deploy.evaluation.read_images`), ``pixel_values`` from the checkpoint's image
  processor; agreement with PyTorch and the largest logit difference as for text.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from obert_core import ObertError
from obert_core.shared import (
    SQUAD_MAX_QUERY_LENGTH,
    format_metric,
    squad_predictions,
    squad_scores,
    squad_windows,
)

from .._checks import (
    check_finite_initializers,
    check_finite_outputs,
    check_finite_parameters,
    check_seq_len,
    check_token_ids,
    config_max_positions,
    onnx_max_positions,
)
from .._choices import EVAL_TASKS
from .._errors import (
    EngineNotInstalledError,
    MissingDependencyError,
    ObertDeployError,
    OnnxModelError,
    UnsupportedTaskError,
    brief,
)
from .._format import percent
from .._validate import check_at_least, check_path, check_paths, check_type
from ..bench._engines import create_runner, engine_available
from ..bench._inputs import has_token_inputs, load_onnx, onnx_inputs
from ..export._checkpoint import load_checkpoint, load_image_processor, load_tokenizer, require
from ..export._export import image_input_shape, is_image_model, model_input_names
from ..export._tasks import get_task
from ._datasets import default_dataset
from ._images import ImageDataset, image_label_ids, image_pixels, read_images
from ._readers import read_glue_tsv, read_squad
from ._tokenize import iter_batches, tokenize

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["EVAL_TASKS", "EvalReport", "EvalResult", "evaluate"]

_Predict = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


@dataclass
class EvalResult:
    """Metrics of one model on the dev set.

    Attributes:
        model: ``"pytorch"`` or the ONNX file path.
        engine: ``"pytorch"`` or the inference engine.
        metrics: ``accuracy`` (classification) or ``exact_match``/``f1`` (QA), as fractions in
            ``[0, 1]`` (like Hugging Face ``evaluate``; :meth:`EvalReport.to_markdown` prints
            them as percentages).
        agreement: Fraction of examples with the same prediction as PyTorch (``None`` for
            PyTorch itself).
        max_abs_diff: Largest output difference from PyTorch over the dev set.
        seconds: Wall time of the pass.
    """

    model: str
    engine: str
    metrics: dict[str, float]
    agreement: float | None = None
    max_abs_diff: float | None = None
    seconds: float = 0.0


@dataclass
class EvalReport:
    """Evaluation of a checkpoint and its ONNX exports on one dataset.

    Attributes:
        task: Evaluated task.
        data: Dev file the examples came from.
        num_examples: Examples evaluated (SQuAD: questions, not context windows).
        seq_len: Tokens per example (0 for images).
        results: PyTorch first, then one entry per ONNX model.
    """

    task: str
    data: str
    num_examples: int
    seq_len: int
    results: list[EvalResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return asdict(self)

    def to_markdown(self) -> str:
        """Render a markdown table, one row per model (metrics in percent, e.g. ``48.44 %``)."""
        names = list(self.results[0].metrics) if self.results else []
        header = " | ".join(names)
        seq = f", seq {self.seq_len}" if self.seq_len else ""
        lines = [
            f"Task {self.task}, {self.num_examples} examples from `{self.data}`{seq}.",
            "",
            f"| model | engine | {header} | agreement with PyTorch | max abs diff |",
            "|---|---|" + "---:|" * (len(names) + 2),
        ]
        for r in self.results:
            values = " | ".join(format_metric(n, r.metrics[n]) for n in names)
            agree = "-" if r.agreement is None else percent(r.agreement)
            diff = "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.3g}"
            lines.append(f"| {Path(r.model).name} | {r.engine} | {values} | {agree} | {diff} |")
        return "\n".join(lines)


def _torch_predict(model: PreTrainedModel, outputs: tuple[str, ...]) -> _Predict:
    import torch

    def predict(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            result = model(**{k: torch.as_tensor(v) for k, v in feeds.items()}, return_dict=True)
        return [result[name].float().numpy() for name in outputs]

    return predict


def _run_all(
    predict: _Predict, feeds: dict[str, np.ndarray], batch_size: int, pad: bool, label: str
) -> list[np.ndarray]:
    chunks: list[list[np.ndarray]] = []
    total = len(next(iter(feeds.values())))
    for batch, real in tqdm(
        iter_batches(feeds, batch_size, pad_last=pad),
        total=-(-total // batch_size),
        desc=label,
        leave=False,
        disable=None,
    ):
        chunks.append([out[:real] for out in predict(batch)])
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def _onnx_predictor(
    path: str, engine: str, seq_len: int, batch_size: int, threads: int | None
) -> tuple[_Predict, int, bool]:
    from obert_core.shared import available_cores

    proto = load_onnx(path)
    check_finite_initializers(proto, path)
    inputs = onnx_inputs(proto)
    if has_token_inputs(inputs):  # images have no sequence axis
        check_seq_len(seq_len, onnx_max_positions(proto), f"ONNX model {path!r}")
    del proto
    static_batch = inputs[0].shape[0] if inputs and isinstance(inputs[0].shape[0], int) else None
    run_batch = static_batch or batch_size
    runner = create_runner(
        engine, path, batch_size=run_batch, seq_len=seq_len, threads=threads or available_cores()
    )
    names = [spec.name for spec in inputs]

    def predict(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return runner.run({name: feeds[name] for name in names})

    # DeepSparse and OpenVINO compile even a dynamic-shape model for one fixed batch size, so
    # the last partial batch must be padded there too.
    return predict, run_batch, static_batch is not None or engine in ("deepsparse", "openvino")


def _check_onnx_io(
    path: str, feeds: dict[str, np.ndarray], task: str, num_labels: int | None
) -> None:
    """Refuse an ONNX model whose inputs, outputs or classes do not fit this evaluation.

    Raises:
        OnnxModelError: It needs an input the tokenizer does not give, it was exported for
            another task, or it has another number of classes than the checkpoint.
    """
    proto = load_onnx(path, load_weights=False)
    missing = [i.name for i in onnx_inputs(proto) if i.name not in feeds]
    if missing:
        raise OnnxModelError(
            f"ONNX model {path!r} needs inputs {missing}, which the checkpoint's model and "
            f"tokenizer do not give (they give {sorted(feeds)}); evaluate it with the checkpoint "
            "it was exported from"
        )
    outputs = [o.name for o in proto.graph.output]
    wanted = list(get_task(task).output_names)
    if outputs[: len(wanted)] != wanted:
        raise OnnxModelError(
            f"ONNX model {path!r} has outputs {outputs}, but task {task} needs {wanted}; pass the "
            "--task it was exported for (or export it with `obert-deploy export --task`)"
        )
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    classes = dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else 0
    classifier = task in ("sequence-classification", "image-classification")
    if num_labels and classifier and classes and classes != num_labels:
        raise OnnxModelError(
            f"ONNX model {path!r} predicts {classes} classes, the checkpoint {num_labels}; it was "
            "exported from another checkpoint: evaluate it with that one (or re-export)"
        )


def _check_labels(labels: np.ndarray, num_labels: int, data: Path, checkpoint: str) -> None:
    """Refuse labels outside the model's classes (a dev file of another task)."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_labels))
    if bad.size:
        first = int(bad[0])
        raise ObertDeployError(
            f"{str(data)!r}: label {int(labels[first])} of example {first + 1} is not one of the "
            f"{num_labels} classes (0..{num_labels - 1}) of {checkpoint!r}; pass the dev file of "
            "the task the checkpoint was fine-tuned on"
        )


def _check_environment(engine: str) -> None:
    """Fail early when this environment cannot run ``evaluate`` with ``engine``."""
    if engine == "deepsparse" and not engine_available("deepsparse"):
        raise EngineNotInstalledError(
            "evaluate --engine deepsparse needs PyTorch + Transformers (reference pass and "
            "tokenizer) and deepsparse in one Python environment, but deepsparse is not "
            f"importable in {sys.executable}. The main environment cannot hold deepsparse "
            "(it pins onnx<1.15, numpy<2, Python < 3.12): evaluate the same ONNX file with "
            "--engine onnxruntime here, or see docs/deploy.md (Evaluate) for a combined "
            "environment"
        )
    try:
        require("evaluate")
    except MissingDependencyError as exc:
        if engine != "deepsparse":
            raise
        raise MissingDependencyError(
            f"{exc}. In the DeepSparse environment install only torch and transformers (not the "
            "[export] extra, which needs onnx>=1.16); see docs/deploy.md (Evaluate)"
        ) from exc


def _classification_metrics(
    outputs: list[np.ndarray], labels: np.ndarray, reference: list[np.ndarray] | None
) -> tuple[dict[str, float], float | None, float | None]:
    logits = outputs[0]
    predictions = logits.argmax(-1)
    metrics = {"accuracy": float(np.mean(predictions == labels))}
    if reference is None:
        return metrics, None, None
    ref = reference[0]
    return (
        metrics,
        float(np.mean(predictions == ref.argmax(-1))),
        float(np.max(np.abs(logits - ref))),
    )


def _squad_features(
    tokenizer: Any,
    examples: Sequence[Any],
    seq_len: int,
    stride: int | None,
    names: list[str],
    max_query_length: int | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, list[Any], list[list[int | None]]]:
    """Padded SQuAD windows by the one rule of :func:`obert_core.shared.squad_windows`."""
    try:
        encoded = squad_windows(
            tokenizer,
            [e.question for e in examples],
            [e.context for e in examples],
            max_seq_length=seq_len,
            doc_stride=stride,
            max_query_length=max_query_length or SQUAD_MAX_QUERY_LENGTH,
            pad=True,
        )
    except ObertError as exc:  # the window has no room, or the overlap does not fit
        raise ObertDeployError(str(exc)) from None
    except Exception as exc:  # the tokenizer refuses (e.g. not a fast tokenizer)
        raise ObertDeployError(
            f"cannot split the SQuAD questions and contexts into windows of {seq_len} tokens "
            f"({brief(exc)}); raise --max-seq-length (384 is usual for SQuAD)"
        ) from exc
    feeds = {}
    for name in names:
        if name in encoded:
            feeds[name] = np.asarray(encoded[name], dtype=np.int64)
        else:
            feeds[name] = np.zeros((len(encoded["input_ids"]), seq_len), dtype=np.int64)
    sample_map = np.asarray(encoded["overflow_to_sample_mapping"])
    offsets = encoded["offset_mapping"]
    context_ids = [encoded.sequence_ids(i) for i in range(len(encoded["input_ids"]))]
    return feeds, sample_map, offsets, context_ids


def _squad_predictions(
    outputs: list[np.ndarray],
    examples: Sequence[Any],
    sample_map: np.ndarray,
    offsets: list[Any],
    sequence_ids: list[list[int | None]],
) -> list[str]:
    """Answer texts by the one SQuAD post-processing (:func:`obert_core.shared.squad_predictions`).

    Context tokens are those of sequence 1; question, special and padding tokens are never
    part of an answer, so the padded windows give the answers obert-train's unpadded ones do.
    """
    start_logits, end_logits = outputs
    windows = (
        (
            int(sample_map[f]),
            start_logits[f],
            end_logits[f],
            [
                (int(o[0]), int(o[1])) if s == 1 else None
                for o, s in zip(offsets[f], sequence_ids[f], strict=True)
            ],
        )
        for f in range(len(sample_map))
    )
    return squad_predictions(windows, [e.context for e in examples])


def evaluate(
    checkpoint: str | os.PathLike[str],
    models: Sequence[str | os.PathLike[str]],
    *,
    task: str = "sequence-classification",
    data: str | os.PathLike[str] | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    text_columns: Sequence[str] | None = None,
    label_column: str = "label",
    seq_len: int = 128,
    batch_size: int = 32,
    max_samples: int | None = None,
    engine: str = "onnxruntime",
    threads: int | None = None,
    doc_stride: int | None = None,
    max_query_length: int | None = None,
) -> EvalReport:
    """Evaluate the PyTorch checkpoint and each ONNX model on the same tokenised dev set.

    Static-shape ONNX models are fed their fixed batch size (the last batch padded); their
    sequence length must equal ``seq_len``. Every ONNX model is loaded, shape-checked and
    compiled before the (slow) PyTorch pass, so a bad model fails at once.

    ``engine="deepsparse"`` needs PyTorch, Transformers and deepsparse in one environment.

    Args:
        checkpoint: Fine-tuned checkpoint directory (the models were exported from it).
        models: ONNX files (fp32, PTQ int8, QAT ...).
        task: ``sequence-classification``, ``question-answering`` or ``image-classification``.
        data: Dev file (GLUE TSV or SQuAD JSON); default: SST-2 / SQuAD v1.1 dev from the shared
            data directory. Images (no default): an ``.npz`` file or a folder with ``dev.npz``,
            ``dev/<class>/`` or ``<class>/`` (:func:`~obert_deploy.evaluation.read_images`).
        tokenizer: Directory of the tokenizer (the image processor for images); default:
            ``checkpoint``.
        text_columns: TSV text columns (auto-detected by default).
        label_column: TSV label column.
        seq_len: Tokens per example (not used for images).
        batch_size: Batch size for PyTorch and for dynamic-shape ONNX models.
        max_samples: Evaluate only the first examples.
        engine: Engine of the ONNX models.
        threads: Engine threads (default: all available cores).
        doc_stride: Overlap of SQuAD context windows (``None``: 128, or half the context room
            of shorter windows; the rule of :func:`obert_core.shared.squad_windows`, which
            obert-train's evaluation follows too).
        max_query_length: SQuAD questions are cut to this many tokens (``None``: 64).

    Returns:
        An :class:`EvalReport` whose first result is PyTorch.

    Raises:
        UnsupportedTaskError: ``task`` has no metric here.
        EngineNotInstalledError: ``engine`` is not importable.
        MissingDependencyError: PyTorch or Transformers is not installed.
        OnnxModelError: A model is missing, corrupt, has NaN/inf weights or cannot be compiled
            by ``engine``.
        CheckpointError: The checkpoint is missing, unreadable or has NaN/inf weights.
        ShapeMismatchError: A static-shape model does not take ``seq_len`` tokens, or
            ``seq_len`` exceeds the model's position embeddings.
        VerificationError: A model's outputs are NaN or inf.
    """
    check_path(checkpoint, "checkpoint", "evaluate")
    check_paths(models, "models", "evaluate")
    check_type(task, "task", "evaluate", "str")
    check_path(data, "data", "evaluate", optional=True)
    check_path(tokenizer, "tokenizer", "evaluate", optional=True)
    for name, number in (("seq_len", seq_len), ("batch_size", batch_size)):
        check_type(number, name, "evaluate", "int")
    for name, optional in (("doc_stride", doc_stride), ("max_query_length", max_query_length)):
        if optional is not None:
            check_type(optional, name, "evaluate", "int")
    check_at_least(max_samples, "max_samples", "evaluate", 1)
    check_at_least(threads, "threads", "evaluate", 1)
    check_at_least(doc_stride, "doc_stride", "evaluate", 1)
    if task not in EVAL_TASKS:
        get_task(task)
        raise UnsupportedTaskError(f"evaluate supports {', '.join(EVAL_TASKS)}, not {task!r}")
    if batch_size < 1 or seq_len < 2:
        raise ObertDeployError(
            f"batch_size ({batch_size}) must be >= 1 and seq_len ({seq_len}) >= 2; pass "
            "--batch-size 1 or more and --max-seq-length 2 or more"
        )
    _check_environment(engine)
    predictors = [
        _onnx_predictor(os.fspath(path), engine, seq_len, batch_size, threads) for path in models
    ]
    data_path = Path(data) if data is not None else default_dataset(task)
    labels: np.ndarray | None = None
    images: ImageDataset | None = None
    if task == "image-classification":
        images = read_images(data_path, max_samples=max_samples)
        num_examples = len(images)
    elif task == "sequence-classification":
        dataset = read_glue_tsv(
            data_path, text_columns=text_columns, label_column=label_column, max_samples=max_samples
        )
        if not dataset.texts:
            raise ObertDeployError(f"no examples in {str(data_path)!r}; pass a non-empty --data")
        labels = np.asarray(dataset.labels)
        num_examples = len(dataset)
    else:
        examples = read_squad(data_path, max_samples=max_samples)
        if not examples:
            raise ObertDeployError(f"no examples in {str(data_path)!r}; pass a non-empty --data")
        num_examples = len(examples)
    loaded = load_checkpoint(checkpoint, task)
    check_finite_parameters(loaded.model, loaded.source)
    tokenizer_source = os.fspath(tokenizer if tokenizer is not None else checkpoint)
    spec = get_task(task)
    if images is not None:
        if not is_image_model(loaded.model):
            raise UnsupportedTaskError(
                f"{loaded.source!r} is not an image model (its input is "
                f"{getattr(loaded.model, 'main_input_name', '?')!r}); pass an image classifier "
                "checkpoint, or another --task"
            )
        labels = image_label_ids(images.classes, loaded.model.config, images.source)
        processor = load_image_processor(tokenizer_source)
        feeds = {
            "pixel_values": image_pixels(
                processor, images.images, image_input_shape(loaded.model.config), tokenizer_source
            )
        }
    else:
        check_seq_len(seq_len, config_max_positions(loaded.model.config), f"{loaded.source!r}")
        if labels is not None:
            _check_labels(
                labels, int(loaded.model.config.num_labels or 0), data_path, loaded.source
            )
        tok = load_tokenizer(tokenizer_source)
        names = model_input_names(loaded.model)
        if task == "sequence-classification":
            feeds = tokenize(tok, dataset.texts, seq_len, names)
        else:
            feeds, sample_map, offsets, seq_ids = _squad_features(
                tok, examples, seq_len, doc_stride, names, max_query_length
            )
        check_token_ids(feeds, int(loaded.model.config.vocab_size or 0), tokenizer_source)
    num_labels = int(loaded.model.config.num_labels or 0)
    for path in models:
        _check_onnx_io(os.fspath(path), feeds, task, num_labels)

    def score(
        outputs: list[np.ndarray], reference: list[np.ndarray] | None
    ) -> tuple[dict[str, float], float | None, float | None]:
        if labels is not None:
            return _classification_metrics(outputs, labels, reference)
        texts = _squad_predictions(outputs, examples, sample_map, offsets, seq_ids)
        pairs = [squad_scores(t, e.answers) for t, e in zip(texts, examples, strict=True)]
        metrics = {
            "exact_match": float(np.mean([p[0] for p in pairs])),
            "f1": float(np.mean([p[1] for p in pairs])),
        }
        if reference is None:
            return metrics, None, None
        ref_texts = _squad_predictions(reference, examples, sample_map, offsets, seq_ids)
        agreement = float(np.mean([a == b for a, b in zip(texts, ref_texts, strict=True)]))
        diff = max(float(np.max(np.abs(o - r))) for o, r in zip(outputs, reference, strict=True))
        return metrics, agreement, diff

    report = EvalReport(
        task=task,
        data=images.source if images is not None else str(data_path),
        num_examples=num_examples,
        seq_len=0 if images is not None else seq_len,
    )
    start = time.perf_counter()
    torch_out = _run_all(
        _torch_predict(loaded.model, spec.output_names), feeds, batch_size, False, "pytorch"
    )
    check_finite_outputs(
        torch_out,
        spec.output_names,
        f"PyTorch ({loaded.source!r})",
        "the checkpoint's weights are finite but its activations overflow: check the model",
    )
    metrics, _, _ = score(torch_out, None)
    report.results.append(
        EvalResult("pytorch", "pytorch", metrics, seconds=time.perf_counter() - start)
    )
    for model_path, (predict, run_batch, pad) in zip(models, predictors, strict=True):
        start = time.perf_counter()
        outputs = _run_all(predict, feeds, run_batch, pad, Path(model_path).name)
        check_finite_outputs(
            outputs,
            spec.output_names,
            f"ONNX model {os.fspath(model_path)!r} ({engine})",
            "PyTorch's outputs are finite, so the file is broken: re-export it with "
            "`obert-deploy export` (or re-quantize it)",
        )
        metrics, agreement, diff = score(outputs, torch_out)
        report.results.append(
            EvalResult(
                os.fspath(model_path),
                engine,
                metrics,
                agreement=agreement,
                max_abs_diff=diff,
                seconds=time.perf_counter() - start,
            )
        )
    return report
