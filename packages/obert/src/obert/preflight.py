"""Everything checked before the first long stage, and the inputs the stages share.

Bad input stops here with one error naming the value and the remedy, in seconds: obert-train's own
checks and error classes (a model folder without config or tokenizer files, a tokenizer that maps
the data to ``[UNK]``, data files that are missing or have no label column, a recipe whose
``params`` match no tensor of the model or whose pruning steps do not fit the data, NaN weights,
sequences longer than the model takes) plus what only the pipeline knows: training data with a
single class, a recipe without pruning, a structured recipe (``--structured-recipe``) with no
structured pruning modifier or another method's, or one whose steps the model cannot take, a
distilling recipe whose ``distill_output_keys`` the model does not output
(:func:`check_distill_keys`), a GLUE dev file the ONNX accuracy cannot read the way training did
(:func:`obert.deploy.glue_dev_tsv`), and too little free disk space for the outputs of the stages
that will run (:func:`check_disk_space`). The recipes are loaded and checked first, before the data
are read and tokenised.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from obert.cache import fingerprint_path
from obert.config import DEPLOY_TASKS, QuickstartConfig
from obert.defaults import STRUCTURED_LABEL, default_model, shipped_data_dir
from obert.errors import DiskSpaceError, PipelineInputError
from obert.recipes import baseline_recipe, load_stage_recipe

__all__ = [
    "Prepared",
    "check_disk_space",
    "check_distill_keys",
    "check_recipe_fits",
    "data_fingerprint",
    "method_label",
    "prepare",
]


@dataclass
class Prepared:
    """The checked inputs of a quickstart run.

    Attributes:
        model_source: The model folder or hub id the dense stage starts from.
        tokenizer: Its tokenizer.
        task: The obert-train task (tokenised training and dev data, metric).
        data_description: Where the data came from (for the report).
        data_fingerprint: Hash of the tokenised data and of the local data files.
        model_fingerprint: Hash of the model folder (or the hub id).
        dense_recipe: The dense fine-tuning recipe.
        pruning_recipe: The gradual pruning recipe.
        structured_recipe: The structured stage's recipe (FFN neurons and heads), or None when
            the stage is off.
        structured_label: The structured stage's name (``structured``; ``structured-stage``
            when ``--recipe``'s method, hence its stage, is called ``structured``: that stage
            keeps its name and cache key).
        baseline_recipe: The same-budget comparison recipe, or None.
        pruned_label: Short name of the pruning method (``obert``).
        baseline_label: Short name of the baseline (``gmp``), or None.
        param_count: Parameters of the model with its task head.
        targets: Names of the pruned tensors.
        pruned_weights: Number of weights in them.
        deploy_task: obert-deploy task of the exports.
        dev_file: Local dev file (ONNX accuracy needs one), or None.
        dev_tsv: For classification: the dev file as the ONNX accuracy reads it (text columns
            ``sentence`` or ``sentence1``/``sentence2``, integer ``label`` = the training
            label's id; :func:`obert.deploy.glue_dev_tsv`), or None.
        dev_tokens: Tokens of the longest dev example (at most the task's limit): the ONNX
            accuracy pads to it, which changes no result and saves the padding's compute; for
            SQuAD the training's window length (the same windows as obert-train's evaluation).
        student: The model loaded for the checks (reused by the dense stage when it runs).
        notes: Remarks for the log and the report.
    """

    model_source: str
    tokenizer: Any
    task: Any
    data_description: str
    data_fingerprint: str
    model_fingerprint: str
    dense_recipe: Any
    pruning_recipe: Any
    baseline_recipe: Any | None
    pruned_label: str
    baseline_label: str | None
    param_count: int
    targets: list[str]
    pruned_weights: int
    deploy_task: str
    dev_file: Path | None
    dev_tokens: int
    dev_tsv: str | None = None
    student: Any = None
    notes: list[str] = field(default_factory=list)
    structured_recipe: Any | None = None
    structured_label: str = STRUCTURED_LABEL


_LABELS = {"magnitude": "gmp"}


def method_label(recipe: Any) -> str:
    """Short name of a pruning recipe's method (``obert``, ``gmp``, ``movement``)."""
    methods = [m.method_name for m in recipe.pruning if m.scheduled]
    name = methods[0] if methods else "pruned"
    return _LABELS.get(name, name)


def data_fingerprint(task: Any, files: list[Path]) -> str:
    """Hash of the tokenised training and dev features and of the data files they came from."""
    digest = hashlib.sha256()
    for split in ("train_features", "dev_features"):
        for feature in getattr(task, split, None) or []:
            digest.update(json.dumps(feature, sort_keys=True, default=str).encode())
        digest.update(f"|{split}|".encode())
    for file in files:
        digest.update(fingerprint_path(file).encode())
    answers = getattr(task, "dev_examples", None)  # SQuAD keeps the answers beside the features
    if answers:
        digest.update(json.dumps(answers, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def check_recipe_fits(
    recipe: Any, model: Any, steps_per_epoch: int, role: str, *, option: str | None = None
) -> list[str]:
    """The recipe's tensors exist and its pruning steps fit the run (obert-train's checks).

    Every scheduled step's target is checked too (``PruningMethod.check_sparsity``: structured
    pruning with ``allocation: uniform`` that would empty the layers), as the training stage
    would at its start.

    Args:
        recipe: The recipe.
        model: The model with the task's head.
        steps_per_epoch: Optimizer steps per epoch.
        role: The recipe's role (``dense``, ``pruning``, ...) in messages.
        option: The option that gave the recipe (``--structured-recipe``): obert-train's
            errors are then raised as a :class:`PipelineInputError` that names it.

    Returns:
        The names of the tensors it prunes.

    Raises:
        RecipeError: If ``params`` match no tensor, two steps share an optimizer step, a step
            lands at or after the end of the run, or a method refuses the tensors.
        TargetError: If a step's target does not fit the model.
        PipelineInputError: If the recipe runs no optimizer step; with ``option``, for any of
            the above.
    """
    from obert_train import ObertTrainError, resolve_target_params

    names = [n for n, _ in model.named_parameters()]
    try:
        selected = recipe.check_targets(names)
        methods, targets = [], []
        for modifier in recipe.pruning:
            method = modifier.create_method()
            params = resolve_target_params(model, method.settings.targets)
            method.check(params)
            method.check_model(model, params)
            methods.append(method)
            targets.append(params)
        for event in recipe.pruning_events(steps_per_epoch):
            methods[event.modifier].check_sparsity(model, targets[event.modifier], event.sparsity)
    except ObertTrainError as exc:
        if option is None:
            raise
        raise PipelineInputError(
            f"{option} {recipe.where} does not fit --model ({type(exc).__name__}: {exc}); fix "
            "the recipe, or turn the stage off"
            + (" with --no-structured" if option == "--structured-recipe" else "")
        ) from exc
    if recipe.total_steps(steps_per_epoch) < 1:
        raise PipelineInputError(f"{role} recipe {recipe.where} runs no optimizer step")
    chosen = {n for group in selected for n in group}
    return [n for n in names if n in chosen]


def check_distill_keys(recipes: Mapping[str, Any], model: Any, task: Any, model_name: str) -> None:
    """Every distilling recipe's ``distill_output_keys`` are outputs of ``model`` on ``task``.

    The student and the teacher of the pruning stages have the model's head, so one forward
    pass on two collated training features shows which outputs distillation can compare.

    Args:
        recipes: Role (``pruning``, ``baseline``, ``structured``: named by its option,
            ``--structured-recipe``) -> recipe; recipes without a ``!DistillationModifier``
            are skipped.
        model: The model with the task's head.
        task: The obert-train task (its training features).
        model_name: ``--model`` as given (for the message).

    Raises:
        PipelineInputError: Naming the recipe, the missing keys, the outputs the model has and
            the ``--set`` that fixes it.
    """
    from obert_train import distillable_outputs

    distilling = {role: r for role, r in recipes.items() if r.distillation is not None}
    if not distilling:
        return
    usable = list(distillable_outputs(model, task.collate(task.train_features[:2])))
    for role, recipe in distilling.items():
        keys = list(recipe.distillation.distill_output_keys)
        missing = [k for k in keys if k not in usable]
        if missing:
            structured = role == STRUCTURED_LABEL
            how = (  # --set changes the pruning recipe (and the baseline derived from it)
                f"distill_output_keys: [{', '.join(usable)}] in the recipe"
                if structured
                else f"--set distill_output_keys=[{','.join(usable)}]"
            )
            fix = (
                f"set the keys to outputs it has, e.g. {how}"
                if usable
                else "it has no output to distill: use a recipe without a !DistillationModifier"
            ) + (" (or turn the stage off with --no-structured)" if structured else "")
            name = "--structured-recipe" if structured else f"{role} recipe"
            raise PipelineInputError(
                f"{name} {recipe.where}: distill_output_keys {keys} include {missing}, "
                f"which --model {model_name!r} does not output for task {task.name!r} (its "
                f"outputs: {usable}); {fix}"
            )


def _data_files(config: QuickstartConfig, data_dir: Path | None) -> list[Path]:
    files = [f for f in (config.data.train_file, config.data.dev_file) if f is not None]
    if data_dir is not None and data_dir.is_dir():
        files += sorted(p for p in data_dir.iterdir() if p.is_file())
    return files


def _dev_file(config: QuickstartConfig, data_dir: Path | None) -> Path | None:
    data = config.data
    if data.dev_file is not None:
        return data.dev_file
    if data.split_articles is not None or data_dir is None:
        return None
    names = {
        "sst2": ("dev.tsv",),
        "glue-tsv": ("dev.tsv", "dev_matched.tsv", "validation.tsv"),
        "squad": ("dev-v1.1.json", "dev.json"),
    }[config.task]
    return next((data_dir / n for n in names if (data_dir / n).is_file()), None)


def prepare(config: QuickstartConfig, log: Callable[[str], None] = print) -> Prepared:
    """Resolve and check the model, data and recipes (see the module docstring).

    Raises:
        ObertTrainError: obert-train's checks (ModelError, DataError, RecipeError, ...).
        PipelineInputError: For input only the pipeline refuses.
    """
    from obert.deploy import glue_dev_tsv
    from obert_train import (
        check_finite_weights,
        check_model_fits_task,
        check_model_source,
        check_output_dir,
        check_tokens_known,
        load_model,
        load_task,
        load_tokenizer,
    )

    check_output_dir(config.output_dir)
    data = config.data
    # The recipes first: a recipe error is found in a second, before the data are tokenised.
    dense = load_stage_recipe(config.dense_recipe, dense=True, task=config.task)
    pruning = load_stage_recipe(
        config.recipe, dense=False, overrides=config.overrides, task=config.task
    )
    baseline = baseline_recipe(pruning, config.baseline) if config.baseline else None
    pruned_label = method_label(pruning)
    baseline_label = method_label(baseline) if baseline is not None else None
    if baseline_label == pruned_label:
        baseline_label = f"{baseline_label}-baseline"
    structured = (
        load_stage_recipe(config.structured_recipe, dense=False, task=config.task, structured=True)
        if config.structured
        else None
    )
    # --recipe's stage (named after its method) keeps the name and cache key it had before the
    # structured stage existed; the structured stage takes another name if it must.
    structured_label = STRUCTURED_LABEL
    if STRUCTURED_LABEL in (pruned_label, baseline_label):
        structured_label = f"{STRUCTURED_LABEL}-stage"
    source = str(config.model) if config.model is not None else str(default_model())
    check_model_source(source)
    tokenizer = load_tokenizer(source)
    data_dir = shipped_data_dir() if config.uses_shipped_data else data.data_dir
    options = replace(data, data_dir=data_dir, max_seq_length=config.seq_len)
    task: Any = load_task(config.task, tokenizer, options, seed=config.seed, need_dev=True)
    check_tokens_known(task, f"the tokenizer of --model {source!r}")
    labels = getattr(task, "labels", None)
    if labels is not None:  # the labels the training rows use (the task may allow more)
        used = sorted({int(f["labels"]) for f in task.train_features if "labels" in f})
        labels = [labels[i] for i in used] if used else labels
    if labels is not None and len(labels) < 2:
        raise PipelineInputError(
            f"the training data have a single label ({labels[0]!r}) in "
            f"{len(task.train_features)} examples; a classifier needs at least two classes: "
            "check --label-column and the data"
        )
    if config.uses_shipped_data:
        description = f"synthetic sentiment data shipped with obert ({shipped_data_dir()})"
    elif data.dataset is not None:
        description = f"hub dataset {data.dataset!r}"
    else:
        description = ", ".join(str(p) for p in (data_dir, data.train_file, data.dev_file) if p)
    student = load_model(task, source, config.seed, warn=True)
    check_finite_weights(student, f"--model {source!r}")
    check_model_fits_task(student, task, f"--model {source!r}")
    spe = math.ceil(len(task.train_features) / config.batch_size)
    check_recipe_fits(dense, student, spe, "dense")
    targets = check_recipe_fits(pruning, student, spe, "pruning")
    if baseline is not None:
        check_recipe_fits(baseline, student, spe, "baseline")
    if structured is not None:
        check_recipe_fits(structured, student, spe, "structured", option="--structured-recipe")
    distilling = {"pruning": pruning, **({"baseline": baseline} if baseline is not None else {})}
    if structured is not None:
        distilling["structured"] = structured
    check_distill_keys(distilling, student, task, source)
    chosen = set(targets)
    files = _data_files(config, data_dir)
    notes: list[str] = []
    dev_file = _dev_file(config, data_dir)
    dev_tsv = None
    if config.onnx_eval and dev_file is not None and labels is not None:
        # The ONNX accuracy reads the dev file with training's columns and label ids.
        dev_tsv = glue_dev_tsv(
            dev_file,
            text_columns=data.text_columns,
            label_column=data.label_column,
            label_to_id=task.label_to_id,
        )
    if config.onnx_eval and dev_file is None:
        notes.append("ONNX accuracy skipped: it needs a local dev file (--data-dir or --dev-file)")
    elif config.onnx_eval and data.max_eval_samples is not None:
        notes.append(
            f"with --max-eval-samples the ONNX accuracy uses the first {data.max_eval_samples} "
            "dev examples (obert-deploy evaluate), the PyTorch dev accuracy of the training "
            "stages a seeded random subset of that size"
        )
    return Prepared(
        model_source=source,
        tokenizer=tokenizer,
        task=task,
        data_description=description,
        data_fingerprint=data_fingerprint(task, files),
        model_fingerprint=fingerprint_path(source),
        dense_recipe=dense,
        pruning_recipe=pruning,
        baseline_recipe=baseline,
        pruned_label=pruned_label,
        baseline_label=baseline_label,
        param_count=sum(p.numel() for p in student.parameters()),
        targets=targets,
        pruned_weights=sum(p.numel() for n, p in student.named_parameters() if n in chosen),
        deploy_task=DEPLOY_TASKS[config.task],
        dev_file=dev_file,
        # SQuAD is evaluated in the training's windows (the same windows give the same F1 in
        # both evaluations); a classification dev set is padded only to its longest example.
        dev_tokens=config.seq_len
        if DEPLOY_TASKS[config.task] == "question-answering"
        else min(
            config.seq_len,
            max((len(f["input_ids"]) for f in getattr(task, "dev_features", [])), default=8),
        ),
        dev_tsv=dev_tsv,
        student=student,
        notes=notes,
        structured_recipe=structured,
        structured_label=structured_label,
    )


def check_disk_space(folder: Path, needed: int, log: Callable[[str], None] = print) -> int:
    """Refuse to start when ``folder``'s file system has less than ``needed`` bytes free.

    Returns:
        The free bytes.

    Raises:
        DiskSpaceError: Naming the folder, the estimate and what is free.
    """
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise DiskSpaceError(
            f"--output-dir {str(folder)!r}: the stages to run need about {needed / 1e9:.2f} GB "
            f"(checkpoints and ONNX files, estimated from the model size) but only "
            f"{free / 1e9:.2f} GB are free on {str(existing)!r}; free space or choose another "
            "--output-dir"
        )
    log(f"disk: about {needed / 1e6:.0f} MB needed, {free / 1e9:.1f} GB free")
    return free
