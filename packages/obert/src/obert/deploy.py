"""The deployment stages, all through obert-deploy: export, int8, accuracy, latency, size.

* :func:`export_stage`: ONNX export for ONNX Runtime (dynamic batch and sequence axes) with
  obert-deploy's checks: ONNX Runtime must reproduce PyTorch (parity at two shapes) and every
  pruned weight must keep its zeros in the ONNX initializers (a failed check is an error and
  leaves no file).
* :func:`quantize_stage`: dynamic int8 for ONNX Runtime (symmetric weights, so pruned weights
  stay exactly 0; checked).
* :func:`onnx_eval_stage`: dev metric of the ONNX files next to PyTorch (local dev files only);
  a GLUE dev file is read as training read it (:func:`glue_dev_tsv`: its text and label columns,
  each label as the id training gave it), since obert-deploy wants integer labels ``0..k-1``.
* :func:`bench_stage`: latency on ONNX Runtime; on DeepSparse through its own environment's
  ``obert-deploy`` (a subprocess) on static-shape exports, when that environment exists.
* :func:`size_stage`: size on disk, gzip and the sparse (bitmask) form.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

__all__ = [
    "SIZE_GZIP_LEVEL",
    "BenchPlan",
    "bench_stage",
    "check_deepsparse_cli",
    "deepsparse_stage",
    "export_stage",
    "glue_dev_tsv",
    "onnx_eval_stage",
    "quantize_stage",
    "size_stage",
]

ONNX_FILE = "model.onnx"
INT8_FILE = "model-int8.onnx"
DEV_FILE = "dev.tsv"
"""The normalised GLUE dev file inside an eval stage's folder (:func:`glue_dev_tsv`)."""


def export_stage(
    folder: Path, checkpoint: Path, *, task: str, seq_len: int, seed: int = 0
) -> dict[str, Any]:
    """Export ``checkpoint`` to ``folder/model.onnx`` for ONNX Runtime, with the checks.

    Returns:
        File name, output differences, the sparsity of the pruned weights in ONNX, seconds.

    Raises:
        VerificationError: If ONNX Runtime does not reproduce PyTorch or zeros were lost.
    """
    from obert_deploy import ExportConfig, export_onnx

    report = export_onnx(
        checkpoint, folder / ONNX_FILE, ExportConfig(task=task, seq_len=seq_len, seed=seed)
    )
    pruned = report.pruned_weights
    numel = sum(_numel(row.shape) for row in pruned)
    zeros = sum((row.onnx_sparsity or 0.0) * _numel(row.shape) for row in pruned)
    (folder / "export.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return {
        "onnx": ONNX_FILE,
        "max_abs_diff": report.max_abs_diff,
        "pruned_weights": len(pruned),
        "zeros_kept": all(row.same_zeros for row in pruned),
        "onnx_sparsity": zeros / numel if numel else 0.0,
        "opset": report.opset,
        "input_shapes": report.input_shapes,
        "seconds": report.seconds,
    }


def _numel(shape: Sequence[int]) -> int:
    total = 1
    for dim in shape:
        total *= int(dim)
    return total


def quantize_stage(folder: Path, source: Path) -> dict[str, Any]:
    """Dynamic int8 of ``source`` into ``folder/model-int8.onnx`` (ONNX Runtime).

    Raises:
        StageError: If a quantized weight lost zeros of its fp32 source.
    """
    from obert.errors import StageError
    from obert_deploy import DynamicInt8Config, quantize_onnx

    report = quantize_onnx(source, folder / INT8_FILE, DynamicInt8Config())
    if not report.sparsity_kept:
        raise StageError(f"int8 quantization of {source} lost zeros of pruned weights")
    return {
        "onnx": INT8_FILE,
        "input_bytes": report.input_bytes,
        "output_bytes": report.output_bytes,
        "weights_quantized": len(report.sparsity_after),
        "zeros_kept": report.sparsity_kept,
        "seconds": report.seconds,
    }


def glue_dev_tsv(
    dev_file: Path,
    *,
    text_columns: Sequence[str] | None,
    label_column: str | None,
    label_to_id: Mapping[str, int],
) -> str:
    """``dev_file`` read as obert-train reads it, as a TSV obert-deploy reads the same way.

    The text columns and the label column are resolved by obert-train's reader (the same
    options as training); the output has the columns ``sentence`` (or ``sentence1`` and
    ``sentence2``) and ``label``, each label the id training gave it (``label_to_id``), so
    string labels, a label column of another name and integer labels other than ``0..k-1``
    score as in training.

    Args:
        dev_file: The GLUE-style dev TSV.
        text_columns: ``--text-column`` (None: obert-train's automatic choice).
        label_column: ``--label-column`` (None: obert-train's automatic choice).
        label_to_id: The training task's label -> id.

    Returns:
        The TSV text (header, one example per line, LF line ends).

    Raises:
        DataError: If obert-train cannot read the file with these columns.
        PipelineInputError: If a dev label is not one of the training labels.
    """
    from obert.errors import PipelineInputError
    from obert_train import read_glue_tsv

    examples = read_glue_tsv(
        dev_file,
        text_columns=list(text_columns) if text_columns else None,
        label_column=label_column,
    )
    pair = examples[0].text_b is not None
    lines = ["sentence1\tsentence2\tlabel" if pair else "sentence\tlabel"]
    for number, example in enumerate(examples, 1):
        if example.label not in label_to_id:
            raise PipelineInputError(
                f"dev file {str(dev_file)!r}: example {number} has label {example.label!r}, "
                f"which is not among the training labels {sorted(label_to_id)}; the ONNX "
                "accuracy needs the dev file of the training data's task (or --no-onnx-eval)"
            )
        texts = [example.text_a, example.text_b or ""] if pair else [example.text_a]
        lines.append("\t".join([*texts, str(label_to_id[example.label])]))
    return "\n".join(lines) + "\n"


def onnx_eval_stage(
    folder: Path,
    checkpoint: Path,
    models: Mapping[str, Path],
    *,
    task: str,
    dev_file: Path,
    tokenizer: Path,
    seq_len: int,
    max_samples: int | None,
    dev_tsv: str | None = None,
    threads: int | None = None,
    doc_stride: int | None = None,
    max_query_length: int | None = None,
) -> dict[str, Any]:
    """The dev metric of PyTorch and of each ONNX file in ``models`` (label -> file).

    Args:
        folder: The stage folder (the normalised dev TSV is written there).
        checkpoint: The PyTorch checkpoint the ONNX files were exported from.
        models: Label -> ONNX file.
        task: obert-deploy task.
        dev_file: The dev file (SQuAD JSON is read as it is).
        tokenizer: The tokenizer folder.
        seq_len: Tokens per example.
        max_samples: Only the first examples.
        dev_tsv: For classification: the dev data as :func:`glue_dev_tsv` made them (written to
            ``folder/dev.tsv`` and read instead of ``dev_file``).
        threads: Engine threads.
        doc_stride: SQuAD window overlap.
        max_query_length: SQuAD questions are cut to this many tokens.

    Returns:
        ``{"examples": n, "pytorch": metrics, "models": {label: {metrics, agreement}},
        "dev_file": name}`` (``dev_file``: the normalised TSV in ``folder``, if written).
    """
    from obert_core.shared import atomic_write_bytes
    from obert_deploy import evaluate

    data, written = dev_file, None
    if dev_tsv is not None:
        data = folder / DEV_FILE
        atomic_write_bytes(data, dev_tsv.encode("utf-8"))
        written = DEV_FILE
    report = evaluate(
        checkpoint,
        list(models.values()),
        task=task,
        data=data,
        tokenizer=tokenizer,
        label_column="label",
        seq_len=seq_len,
        max_samples=max_samples,
        threads=threads,
        doc_stride=doc_stride,
        max_query_length=max_query_length,
    )
    torch_result, *onnx_results = report.results
    return {
        **({"dev_file": written} if written is not None else {}),
        "examples": report.num_examples,
        "pytorch": torch_result.metrics,
        "models": {
            label: {
                "metrics": result.metrics,
                "agreement": result.agreement,
                "max_abs_diff": result.max_abs_diff,
            }
            for label, result in zip(models, onnx_results, strict=True)
        },
    }


@dataclass(frozen=True)
class BenchPlan:
    """How latency is measured.

    Attributes:
        batch_sizes: Batch sizes to time (one request at a time).
        seq_len: Tokens per sequence.
        threads: Engine threads (None: all available cores).
        iterations: Timed requests at batch size 1 (larger batches: scaled down, at least 10).
        warmup: Untimed requests before timing.
    """

    batch_sizes: tuple[int, ...] = (1, 16)
    seq_len: int = 64
    threads: int | None = None
    iterations: int = 100
    warmup: int = 5

    def iterations_for(self, batch: int) -> int:
        """Timed requests at ``batch``: about the same number of sequences as at batch 1 / 4."""
        return max(10, self.iterations // max(1, batch // 4)) if batch > 1 else self.iterations


def bench_stage(
    models: Mapping[str, Path],
    plan: BenchPlan,
    *,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """ONNX Runtime latency of every model (label -> file) at every batch size.

    Returns:
        One :class:`obert_deploy.BenchResult` dict per (model, batch size).
    """
    from obert_deploy import BenchConfig, benchmark

    jobs = [(label, path, batch) for batch in plan.batch_sizes for label, path in models.items()]
    results: list[dict[str, Any]] = []
    for label, path, batch in tqdm(jobs, desc="latency (onnxruntime)", disable=not progress):
        config = BenchConfig(
            engine="onnxruntime",
            batch_size=batch,
            seq_len=plan.seq_len,
            threads=plan.threads,
            iterations=plan.iterations_for(batch),
            warmup=plan.warmup,
        )
        results.append(benchmark(path, config, name=label).to_dict())
    return results


def deepsparse_stage(
    folder: Path,
    checkpoints: Mapping[str, Path],
    plan: BenchPlan,
    *,
    cli: Path,
    task: str,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """DeepSparse latency of static-shape fp32 exports, through ``cli`` (its own environment).

    DeepSparse's sparse kernels need every input shape fixed, so each checkpoint is exported
    once per batch size (``--engine deepsparse``: static shapes, LayerNorm decomposed, GELU
    reordered) here, and ``cli bench`` times the file in DeepSparse's environment. These
    exports skip obert-deploy's checks: the same weights passed them in the export stage, and
    ONNX Runtime, which runs the checks, is not the engine these files are for.

    Returns:
        One benchmark result dict per (model, batch size).

    Raises:
        StageError: If the DeepSparse command fails (its last output line is shown).
    """
    from obert.errors import StageError
    from obert_deploy import ExportConfig, export_onnx, read_results_json

    emit = log or print
    results: list[dict[str, Any]] = []
    jobs = [(label, ckpt, b) for b in plan.batch_sizes for label, ckpt in checkpoints.items()]
    for label, checkpoint, batch in tqdm(jobs, desc="latency (deepsparse)", disable=not progress):
        onnx_file = folder / f"{label}-b{batch}.onnx"
        config = ExportConfig(
            task=task, engine="deepsparse", batch_size=batch, seq_len=plan.seq_len, verify=False
        )
        export_onnx(checkpoint, onnx_file, config)
        out = folder / f"{label}-b{batch}.json"
        command = [
            str(cli), "bench", str(onnx_file), "--engine", "deepsparse",
            "--batch-size", str(batch), "--seq-len", str(plan.seq_len),
            "--iterations", str(plan.iterations_for(batch)), "--warmup", str(plan.warmup),
            "--json", str(out),
        ]  # fmt: skip
        if plan.threads:
            command += ["--threads", str(plan.threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
            raise StageError(f"DeepSparse benchmark of {label} (batch {batch}) failed: {lines[-1]}")
        (result,) = read_results_json(out)
        result.name = label
        results.append(result.to_dict())
        emit(f"  deepsparse {label} batch {batch}: p50 {result.latency_ms['p50']:.2f} ms")
    return results


def check_deepsparse_cli(cli: Path, *, timeout: float = 120.0) -> None:
    """Check the DeepSparse environment once in preflight: a broken one fails here.

    Its interpreter (``python`` beside ``cli``) must import ``deepsparse`` and ``obert_deploy``
    (``cli bench --help`` alone imports no engine); without an interpreter beside it, ``cli bench
    --help`` must run.

    Without this check a broken executable failed at the DeepSparse stage, after every other
    stage (issue 18, failing late).

    Args:
        cli: ``obert-deploy`` of the DeepSparse environment (an existing executable file).
        timeout: Seconds the command may take.

    Raises:
        PipelineInputError: Naming the executable, its exit status and last output line, and
            how to fix or skip it.
    """
    from obert.errors import PipelineInputError

    skip = (
        "fix that environment (packages/obert-deploy/scripts/test_deepsparse.sh), or give "
        "--deepsparse a path that does not exist to skip DeepSparse"
    )
    python = Path(cli).parent / "python"  # the environment's interpreter: it must load the engine
    command = (
        [str(python), "-c", "import deepsparse, obert_deploy"]
        if python.is_file()
        else [str(cli), "bench", "--help"]
    )
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PipelineInputError(
            f"--deepsparse {str(cli)!r} cannot be run ({exc}); {skip}"
        ) from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
        raise PipelineInputError(
            f"--deepsparse {str(cli)!r} does not run: `{' '.join(command)}` exited with "
            f"{done.returncode}: {lines[-1]}; {skip}"
        )


SIZE_GZIP_LEVEL = 6
"""gzip level of the size stage: within 1.5 % of ``-9`` on these files, 4x faster on sparse ones."""


def size_stage(models: Mapping[str, Path], reference: Path) -> dict[str, dict[str, Any]]:
    """Size report of every model (label -> file) against the dense fp32 ``reference``."""
    from obert_deploy import size_report

    return {
        label: size_report(path, reference=reference, gzip_level=SIZE_GZIP_LEVEL).to_dict()
        for label, path in models.items()
    }
