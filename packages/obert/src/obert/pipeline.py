"""``obert quickstart``: the whole pipeline, stage by stage, each cached by its inputs.

::

    dense ─┬─ obert      (gradual oBERT + KD) ───────────┐
           ├─ gmp        (gradual GMP + KD) ─────────────┼─ export-* ─ int8-* ─ eval-*
           └─ structured (neurons + heads, KD; shrunk/) ─┘
      ─ bench ─ deepsparse (if its environment exists) ─ size ─ report

The structured model (on by default, ``--no-structured``) is the one ONNX Runtime runs faster on
any CPU: its export removes the zero neurons and heads from the graph.

:func:`run_quickstart` checks every input first (:func:`obert.preflight.prepare`), plans the
stages with their keys, checks the free disk space for the stages that will run, then runs
them through :class:`obert.cache.StageCache` (finished stages with unchanged inputs are reused)
and writes the report (:mod:`obert.report`).
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from obert.cache import StageCache, StageRecord, stage_key
from obert.config import QuickstartConfig
from obert.deploy import check_deepsparse_cli
from obert.preflight import Prepared, check_disk_space, prepare
from obert_core.shared import (
    OutputOverlapError,
    check_output_not_input,
    cpu_info,
    load_average,
)

__all__ = ["QuickstartResult", "StageSpec", "plan_stages", "run_quickstart"]

STAGES_DIR = "stages"


@dataclass
class StageSpec:
    """One planned stage.

    Attributes:
        name: Stage name (its folder).
        title: What it does (the log line).
        inputs: What its key is computed from.
        work: Writes the stage's files into the folder it gets; returns its outputs.
        disk_bytes: Estimated bytes it writes.
        resumable: A training stage: after Ctrl-C (or a kill) the next run with the same
            inputs continues it from its last checkpoint (:meth:`StageCache.run`).
    """

    name: str
    title: str
    inputs: dict[str, Any]
    work: Callable[[Path], Mapping[str, Any]]
    disk_bytes: int = 0
    resumable: bool = False

    @property
    def key(self) -> str:
        """The stage key (:func:`obert.cache.stage_key`)."""
        return stage_key(self.name, self.inputs)


@dataclass
class QuickstartResult:
    """What a quickstart run produced.

    Attributes:
        output_dir: The output folder.
        report_md: ``report.md``.
        report_json: ``report.json``.
        report: The report's content.
        stages: The stage records, in order.
        seconds: Wall time of the run.
    """

    output_dir: Path
    report_md: Path
    report_json: Path
    report: dict[str, Any]
    stages: list[StageRecord] = field(default_factory=list)
    seconds: float = 0.0


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in ("obert", "obert-core", "obert-train", "obert-deploy", "torch", "transformers"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


_TRAIN_DISK = 8
"""A training stage's disk use in model sizes: two checkpoints (weights and the two Adam
moments each) while it runs, and the final model."""


def _run_options(config: QuickstartConfig) -> Any:
    from obert_train import RunOptions

    return RunOptions(
        batch_size=config.batch_size,
        seed=config.seed,
        # A checkpoint per epoch (the newest two kept): an interrupted training stage
        # continues from its last one on the next run; train_stage removes them at the end.
        save_checkpoints=True,
        logging_steps=10,
        eval_batch_size=config.eval_batch_size,
        progress=config.progress,
    )


def plan_stages(
    config: QuickstartConfig,
    prepared: Prepared,
    records: dict[str, StageRecord],
    log: Callable[[str], None] = print,
) -> list[StageSpec]:
    """The stages of this run, in order; ``work`` reads upstream results from ``records``.

    Args:
        config: The options.
        prepared: The checked inputs.
        records: Filled with each stage's record as the run goes (read by later stages).
        log: Progress lines.
    """
    from obert.deploy import (
        BenchPlan,
        bench_stage,
        deepsparse_stage,
        export_stage,
        onnx_eval_stage,
        quantize_stage,
        size_stage,
    )
    from obert.training import (
        PERCENT_SCALE_BEFORE_ISSUE_18,
        shrink_stage,
        train_stage,
        zero_fraction,
    )

    versions = _versions()
    task = prepared.task
    options = _run_options(config)
    common = {
        "batch_size": config.batch_size,
        "seed": config.seed,
        "eval_batch_size": config.eval_batch_size,
        "versions": versions,
    }
    if task.name in PERCENT_SCALE_BEFORE_ISSUE_18:
        # Stages of earlier versions recorded these metrics in percent: never reuse them.
        common["metric_scale"] = "fraction"
    fp32_bytes = 4 * prepared.param_count
    seq_len = config.seq_len
    specs: list[StageSpec] = []

    def dense_work(folder: Path) -> Mapping[str, Any]:
        from obert_train import load_model

        student = prepared.student
        prepared.student = None  # trained in place: a later use must load afresh
        if student is None:
            student = load_model(task, prepared.model_source, config.seed, warn=False)
        out = train_stage(
            folder,
            recipe=prepared.dense_recipe,
            student=student,
            task=task,
            tokenizer=prepared.tokenizer,
            model_name=prepared.model_source,
            options=options,
            log=log,
        )
        out["sparsity"] = zero_fraction(student, prepared.targets)
        return out

    dense = StageSpec(
        "dense",
        f"dense fine-tuning of {prepared.model_source}",
        {
            "model": prepared.model_fingerprint,
            "data": prepared.data_fingerprint,
            "recipe": prepared.dense_recipe.fingerprint(),
            **common,
        },
        dense_work,
        _TRAIN_DISK * fp32_bytes,
        resumable=True,
    )
    specs.append(dense)

    def pruning_work(recipe: Any) -> Callable[[Path], Mapping[str, Any]]:
        def work(folder: Path) -> Mapping[str, Any]:
            from obert_train import load_model

            checkpoint = str(records["dense"].path("model"))
            student = load_model(task, checkpoint, config.seed, warn=False)
            teacher = load_model(task, checkpoint, config.seed, warn=False)
            return train_stage(
                folder,
                recipe=recipe,
                student=student,
                task=task,
                tokenizer=prepared.tokenizer,
                model_name=checkpoint,
                options=options,
                teacher=teacher if recipe.distillation is not None else None,
                curve=True,
                log=log,
            )

        return work

    trained = [(prepared.pruned_label, prepared.pruning_recipe)]
    if prepared.baseline_recipe is not None and prepared.baseline_label is not None:
        trained.append((prepared.baseline_label, prepared.baseline_recipe))
    for label, recipe in trained:
        tags = ", ".join(sorted({f"!{m.tag}" for m in recipe.pruning}))
        specs.append(
            StageSpec(
                label,
                f"gradual pruning ({tags}) of the dense model with distillation from it",
                {"dense": dense.key, "recipe": recipe.fingerprint(), **common},
                pruning_work(recipe),
                _TRAIN_DISK * fp32_bytes,
                resumable=True,
            )
        )
    structured = prepared.structured_recipe
    if structured is not None:
        train_structured = pruning_work(structured)

        def structured_work(folder: Path) -> Mapping[str, Any]:
            out = dict(train_structured(folder))
            out.update(
                shrink_stage(
                    folder,
                    task=task,
                    deploy_task=prepared.deploy_task,
                    tokenizer=prepared.tokenizer,
                    seed=config.seed,
                )
            )
            return out

        specs.append(
            StageSpec(
                prepared.structured_label,
                "gradual structured pruning (FFN neurons, heads) of the dense model with "
                "distillation from it, then a physically smaller checkpoint",
                {"dense": dense.key, "recipe": structured.fingerprint(), **common},
                structured_work,
                (_TRAIN_DISK + 1) * fp32_bytes,
                resumable=True,
            )
        )
        trained.append((prepared.structured_label, structured))
    models = ["dense", *(label for label, _ in trained)]
    keys = {spec.name: spec.key for spec in specs}

    def export_work(model: str) -> Callable[[Path], Mapping[str, Any]]:
        def work(folder: Path) -> Mapping[str, Any]:
            return export_stage(
                folder,
                records[model].path("model"),
                task=prepared.deploy_task,
                seq_len=seq_len,
                seed=config.seed,
            )

        return work

    def int8_work(model: str) -> Callable[[Path], Mapping[str, Any]]:
        def work(folder: Path) -> Mapping[str, Any]:
            return quantize_stage(folder, records[f"export-{model}"].path("onnx"))

        return work

    onnx_keys: dict[str, str] = {}
    for model in models:
        export = StageSpec(
            f"export-{model}",
            f"ONNX export of {model} (parity and sparsity checks)",
            {
                "checkpoint": keys[model],
                "task": prepared.deploy_task,
                "seq_len": seq_len,
                "seed": config.seed,
                "versions": versions,
            },
            export_work(model),
            fp32_bytes,
        )
        int8 = StageSpec(
            f"int8-{model}",
            f"dynamic int8 quantization of {model} (ONNX Runtime)",
            {"onnx": export.key, "versions": versions},
            int8_work(model),
            fp32_bytes // 3,
        )
        specs += [export, int8]
        onnx_keys[model] = export.key
        onnx_keys[f"{model}-int8"] = int8.key

    def onnx_files() -> dict[str, Path]:
        files: dict[str, Path] = {}
        for model in models:
            files[model] = records[f"export-{model}"].path("onnx")
            files[f"{model}-int8"] = records[f"int8-{model}"].path("onnx")
        return files

    dev_file = prepared.dev_file
    if config.onnx_eval and dev_file is not None:
        for model in models:

            def eval_work(folder: Path, model: str = model) -> Mapping[str, Any]:
                files = onnx_files()
                return onnx_eval_stage(
                    folder,
                    records[model].path("model"),
                    {model: files[model], f"{model}-int8": files[f"{model}-int8"]},
                    task=prepared.deploy_task,
                    dev_file=dev_file,
                    tokenizer=records[model].path("model"),
                    seq_len=prepared.dev_tokens,
                    max_samples=config.data.max_eval_samples,
                    dev_tsv=prepared.dev_tsv,
                    threads=config.threads,
                    doc_stride=config.data.doc_stride,
                    max_query_length=config.data.max_query_length,
                )

            specs.append(
                StageSpec(
                    f"eval-{model}",
                    f"dev accuracy of the {model} ONNX files next to PyTorch",
                    {
                        "checkpoint": keys[model],
                        "onnx": [onnx_keys[model], onnx_keys[f"{model}-int8"]],
                        "dev": fingerprint_dev(dev_file, prepared.dev_tsv),
                        "max_samples": config.data.max_eval_samples,
                        "seq_len": prepared.dev_tokens,
                        "versions": versions,
                    },
                    eval_work,
                )
            )
    plan = BenchPlan(
        batch_sizes=tuple(config.bench_batch_sizes),
        seq_len=seq_len,
        threads=config.threads,
        iterations=config.bench_iterations,
    )
    machine = _machine_key()

    def bench_work(folder: Path) -> Mapping[str, Any]:
        return {"results": bench_stage(onnx_files(), plan, progress=config.progress)}

    specs.append(
        StageSpec(
            "bench",
            "latency on ONNX Runtime at batch sizes " + ", ".join(str(b) for b in plan.batch_sizes),
            {"models": onnx_keys, "plan": asdict(plan), "machine": machine, "versions": versions},
            bench_work,
        )
    )
    cli = _deepsparse_cli(config)
    if cli is not None:
        # The baseline has the same sparsity as the pruned model, hence the same kernels.
        sparse_models = ["dense", prepared.pruned_label]

        def deepsparse_work(folder: Path) -> Mapping[str, Any]:
            checkpoints = {m: records[m].path("model") for m in sparse_models}
            results = deepsparse_stage(
                folder,
                checkpoints,
                plan,
                cli=cli,
                task=prepared.deploy_task,
                progress=config.progress,
                log=log,
            )
            return {"results": results, "cli": str(cli)}

        specs.append(
            StageSpec(
                "deepsparse",
                f"latency on DeepSparse (static-shape exports, {cli})",
                {
                    "checkpoints": {m: keys[m] for m in sparse_models},
                    "plan": asdict(plan),
                    "cli": str(cli),
                    "machine": machine,
                    "versions": versions,
                },
                deepsparse_work,
                fp32_bytes * len(sparse_models) * len(plan.batch_sizes),
            )
        )

    def size_work(folder: Path) -> Mapping[str, Any]:
        files = onnx_files()
        return {"sizes": size_stage(files, reference=files["dense"])}

    specs.append(
        StageSpec(
            "size",
            "size on disk, gzip and sparse (bitmask) form",
            {"models": onnx_keys, "versions": versions},
            size_work,
        )
    )
    return specs


def fingerprint_dev(path: Path, normalised: str | None = None) -> str:
    """Fingerprint of the dev data the ONNX accuracy is measured on.

    Args:
        path: The dev file.
        normalised: The dev file as the eval stage reads it (:func:`obert.deploy.glue_dev_tsv`:
            it depends on the columns and the label ids too), if there is one.
    """
    import hashlib

    from obert.cache import fingerprint_path

    data = None if normalised is None else normalised.encode("utf-8")
    if data is not None and data != path.read_bytes():  # an SST-2 file is its own normal form
        return "tsv:" + hashlib.sha256(data).hexdigest()
    return fingerprint_path(path)


def _machine_key() -> dict[str, Any]:

    cpu = cpu_info()
    return {"cpu": cpu.brand, "cores": cpu.available_cores, "isa": cpu.isa}


def _deepsparse_cli(config: QuickstartConfig) -> Path | None:
    cli = config.deepsparse_cli
    if cli is None:
        return None
    path = Path(cli).expanduser().absolute()
    return path if path.is_file() and os.access(path, os.X_OK) else None


def check_output_folder(config: QuickstartConfig) -> None:
    """The output-folder policy (``docs/train.md``), before any work.

    Raises:
        PipelineInputError: If ``--output-dir`` is, contains or lies inside an input (model,
            data, recipe), or holds a ``report.md`` / ``report.json`` / plot the quickstart did
            not write (it never overwrites a user's file).
    """
    from obert.errors import PipelineInputError
    from obert.report import foreign_report_files

    out = Path(config.output_dir)
    data = config.data
    inputs = {
        "model's folder (--model)": config.model,
        "data (--data-dir)": data.data_dir,
        "training data (--train-file)": data.train_file,
        "dev data (--dev-file)": data.dev_file,
        "recipe (--recipe)": config.recipe,
        "dense recipe (--dense-recipe)": config.dense_recipe,
        "structured recipe (--structured-recipe)": config.structured_recipe,
    }
    try:
        check_output_not_input(out, {k: v for k, v in inputs.items() if isinstance(v, str | Path)})
    except OutputOverlapError as exc:
        raise PipelineInputError(str(exc)) from None
    foreign = foreign_report_files(out) if out.is_dir() else []
    if foreign:
        raise PipelineInputError(
            f"--output-dir {str(out)!r} holds {', '.join(foreign)}, which obert quickstart did "
            "not write; it never overwrites them: move them, or choose another --output-dir"
        )


def run_quickstart(
    config: QuickstartConfig, *, log: Callable[[str], None] = print
) -> QuickstartResult:
    """Run the pipeline (module docstring) and write ``report.md``, ``report.json`` and plots.

    Args:
        config: The options.
        log: Progress lines.

    Returns:
        Where the report is, and its content.

    Raises:
        ObertPipelineError: For bad input, too little disk space or an ``output_dir`` another
            run is using (before any stage), or a stage that failed.
        ObertTrainError: obert-train's input checks (model, tokenizer, data, recipe).
        ObertDeployError: obert-deploy's checks (export parity, lost zeros).
    """
    import torch

    from obert.report import write_report

    start = time.perf_counter()
    load_at_start = load_average()
    if config.threads:
        torch.set_num_threads(config.threads)
    check_output_folder(config)
    log("checking the model, data and recipes ...")
    prepared = prepare(config, log)
    for note in prepared.notes:
        log(f"note: {note}")
    records: dict[str, StageRecord] = {}
    specs = plan_stages(config, prepared, records, log)
    out = Path(config.output_dir)
    cache = StageCache(out / STAGES_DIR, enabled=config.use_cache, log=log)
    todo = [spec for spec in specs if cache.will_run(spec.name, spec.inputs)]
    needed = int(1.2 * sum(spec.disk_bytes for spec in todo)) + 50_000_000
    check_disk_space(out, needed, log)
    cli = _deepsparse_cli(config)
    if cli is not None:
        check_deepsparse_cli(cli)  # a broken environment fails now, not at the last stages
    if config.deepsparse_cli is not None and cli is None:
        prepared.notes.append(
            f"DeepSparse skipped: {config.deepsparse_cli} not found (create its environment "
            "with packages/obert-deploy/scripts/test_deepsparse.sh)"
        )
        log(f"note: {prepared.notes[-1]}")
    with cache.lock():  # a second run on this --output-dir is refused until this one ends
        log(
            f"{len(specs)} stages, {len(todo)} to run, {len(specs) - len(todo)} reused from "
            f"{out / STAGES_DIR}"
        )
        training = {
            "dense",
            prepared.pruned_label,
            prepared.baseline_label,
            prepared.structured_label,
        }
        failed: dict[str, Any] | None = None
        error: BaseException | None = None
        for index, spec in enumerate(specs, 1):
            log(f"[{index}/{len(specs)}] {spec.name}: {spec.title}")
            try:
                records[spec.name] = cache.run(
                    spec.name, spec.inputs, spec.work, resumable=spec.resumable
                )
            except Exception as exc:
                if spec.name in training:  # nothing to report without the trained models
                    raise
                not_run = [later.name for later in specs[index:]]
                failed = {"stage": spec.name, "error": str(exc), "not_run": not_run}
                error = exc
                break
        seconds = time.perf_counter() - start
        report_md, report_json, report = write_report(
            out,
            config,
            prepared,
            [records[s.name] for s in specs if s.name in records],
            seconds=seconds,
            load_at_start=load_at_start,
            failed=failed,
        )
        if error is not None:  # the report of what finished is written; then the error
            stage = failed["stage"] if failed else "?"
            log(f"stage {stage} failed; the report of what finished: {report_md}")
            raise error
    return QuickstartResult(
        output_dir=out,
        report_md=report_md,
        report_json=report_json,
        report=report,
        stages=[records[s.name] for s in specs],
        seconds=seconds,
    )
