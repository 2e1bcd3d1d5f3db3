"""Build a :class:`~obert_train.Task` from a task name and local files or a hub dataset name."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from obert_core.shared import eval_subset, train_subset
from obert_train._validate import check_bool, check_int, check_path, check_str, check_str_sequence
from obert_train.errors import ArgumentError, DataError
from obert_train.tasks.base import ClassificationTask, Task
from obert_train.tasks.data import (
    read_glue_tsv,
    read_raw_text,
    read_squad_json,
    split_squad_articles,
)
from obert_train.tasks.hub import load_hub_split
from obert_train.tasks.images import (
    ImageClassificationTask,
    ImageExample,
    read_image_arrays,
    read_image_folder,
    split_examples,
)
from obert_train.tasks.mlm import MaskedLMTask
from obert_train.tasks.names import TASK_NAMES
from obert_train.tasks.options import DataOptions
from obert_train.tasks.squad import SquadTask

__all__ = ["TASK_NAMES", "load_task"]


# Files looked for in --data-dir, first match wins.
_TRAIN_FILES: dict[str, tuple[str, ...]] = {
    "sst2": ("train.tsv",),
    "glue-tsv": ("train.tsv",),
    "squad": ("train-v1.1.json", "train.json"),
    "mlm": ("wiki.train.raw", "train.txt", "train.raw"),
}
_DEV_FILES: dict[str, tuple[str, ...]] = {
    "sst2": ("dev.tsv",),
    "glue-tsv": ("dev.tsv", "dev_matched.tsv", "validation.tsv"),
    "squad": ("dev-v1.1.json", "dev.json"),
    "mlm": ("wiki.valid.raw", "valid.txt", "dev.txt", "valid.raw"),
}
_HUB_SPLITS = {"train": "train", "dev": "validation"}
_DEFAULT_SEQ = {"sst2": 128, "glue-tsv": 128, "squad": 384, "mlm": 128}


def _find(data_dir: Path, names: Sequence[str], split: str, task: str) -> Path:
    for name in names:
        if (data_dir / name).is_file():
            return data_dir / name
    raise DataError(
        f"no {split} file for task {task!r} in {str(data_dir)!r}: looked for {list(names)}; "
        f"pass --{split}-file explicitly"
    )


def _read(task: str, path: Path, columns: dict[str, Any]) -> list[Any]:
    if task in ("sst2", "glue-tsv"):
        return list(read_glue_tsv(path, **columns))
    if task == "squad":
        return list(read_squad_json(path))
    return list(read_raw_text(path))


def _subsample(records: list[Any], limit: int | None, seed: int) -> list[Any]:
    """The one training-subset rule (obert-deploy ``qat --max-train-samples`` uses it too)."""
    return train_subset(records, limit, seed)


def _check_limits(max_seq_length: int | None, samples: dict[str, int | None]) -> None:
    """Numeric options, checked before any file is read (names as in Python and the CLI)."""
    if max_seq_length is not None and max_seq_length < 8:
        raise DataError(
            f"max_seq_length (--max-seq-length) {max_seq_length}: must be at least 8 tokens"
        )
    for name, value in samples.items():
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            raise DataError(f"{name} ({flag}) {value}: must be at least 1 (or left out: all)")


def _check_types(task: object, options: object, need_dev: object, seed: object) -> None:
    """The argument types of :func:`load_task`, before any value is compared or read."""
    check_str(task, "task", "load_task")
    check_bool(need_dev, "need_dev", "load_task")
    check_int(seed, "seed", "load_task")
    if not isinstance(options, DataOptions):
        raise ArgumentError(
            f"load_task: options={options!r} must be a DataOptions (or None), got "
            f"{type(options).__name__}"
        )
    for name in ("data_dir", "train_file", "dev_file"):
        value = getattr(options, name)
        if value is not None:
            check_path(value, name, "load_task")
    for name in (
        "max_seq_length",
        "max_train_samples",
        "max_eval_samples",
        "doc_stride",
        "max_query_length",
        "split_seed",
    ):
        value = getattr(options, name)
        if value is not None:
            check_int(value, name, "load_task")
    for name in ("dataset", "label_column"):
        value = getattr(options, name)
        if value is not None:
            check_str(value, name, "load_task")
    check_str_sequence(options.text_columns, "text_columns", "load_task")


def _check_dataset_used(
    data_dir: object, dataset: str | None, train_file: object, dev_file: object, need_dev: bool
) -> None:
    """A hub ``dataset`` that no split would read is refused, not silently ignored.

    Local files win over the hub: ``data_dir`` serves both splits, an explicit file its own.

    Raises:
        ArgumentError: If ``dataset`` is given with ``data_dir``, or with a file for every
            split that is read.
    """
    if dataset is None:
        return
    if data_dir is not None:
        raise ArgumentError(
            f"dataset (--dataset) {dataset!r} and data_dir (--data-dir) {str(data_dir)!r} "
            "both name the task data, and the local folder would be used for every split: "
            "give one of them"
        )
    if train_file is not None and (dev_file is not None or not need_dev):
        raise ArgumentError(
            f"dataset (--dataset) {dataset!r} would not be read: --train-file"
            + (" and --dev-file give" if dev_file is not None else " gives")
            + " the data; drop --dataset, or drop the file(s) to use the hub dataset"
        )


def _split_source(
    data_dir: str | os.PathLike[str] | None,
    dataset: str | None,
    train_file: str | os.PathLike[str] | None,
    dev_file: str | os.PathLike[str] | None,
) -> Path:
    """The one SQuAD file that ``split_articles`` splits (an explicit file, or the only one)."""
    explicit = [Path(f) for f in (train_file, dev_file) if f is not None]
    if len(explicit) == 2:
        raise DataError(
            "split_articles (--split-articles) splits ONE SQuAD file into training and "
            f"evaluation articles; got both {str(explicit[0])!r} and {str(explicit[1])!r}: give "
            "only --train-file (or only --dev-file)"
        )
    if explicit:
        return explicit[0]
    if data_dir is not None:
        names = (*_TRAIN_FILES["squad"], *_DEV_FILES["squad"])
        present = [Path(data_dir) / n for n in names if (Path(data_dir) / n).is_file()]
        if len(present) == 1:
            return present[0]
        if not present:
            raise DataError(
                f"no SQuAD file in {str(data_dir)!r} to split by article: looked for "
                f"{list(names)}; pass --train-file explicitly"
            )
        raise DataError(
            f"{str(data_dir)!r} holds {', '.join(p.name for p in present)}; "
            "split_articles (--split-articles) splits ONE file: name it with --train-file"
        )
    if dataset is not None:
        raise DataError(
            f"split_articles (--split-articles) splits a local SQuAD file, not the hub dataset "
            f"{dataset!r} (which has its own train/validation splits); give --train-file"
        )
    raise DataError("split_articles (--split-articles) needs a SQuAD file: give --train-file")


def _article_counts(split_articles: Any, task: str) -> tuple[int, int]:
    """``(train, eval)`` article counts from a pair of whole numbers."""
    if isinstance(split_articles, str) or not isinstance(split_articles, Sequence):
        raise DataError(
            f"split_articles (--split-articles) {split_articles!r}: expected two article "
            "counts (TRAIN, EVAL), e.g. (40, 8) in Python or 40:8 on the command line"
        )
    shown = ":".join(str(v) for v in split_articles)
    if task != "squad":
        raise DataError(
            f"split_articles (--split-articles) {shown} splits SQuAD articles; it applies to "
            f"task 'squad', not to task {task!r}"
        )
    if len(split_articles) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in split_articles
    ):
        raise DataError(
            f"split_articles (--split-articles) {shown}: expected two whole article counts "
            "TRAIN:EVAL, e.g. 40:8"
        )
    if min(split_articles) < 1:
        raise DataError(
            f"split_articles (--split-articles) {shown}: both counts must be whole numbers of "
            "articles >= 1, e.g. 40:8"
        )
    return int(split_articles[0]), int(split_articles[1])


def load_task(
    task: str,
    tokenizer: PreTrainedTokenizerBase,
    options: DataOptions | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    dataset: str | None = None,
    train_file: str | os.PathLike[str] | None = None,
    dev_file: str | os.PathLike[str] | None = None,
    max_seq_length: int | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    need_dev: bool = True,
    seed: int = 0,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    split_articles: tuple[int, int] | None = None,
    split_seed: int = 0,
    **task_kwargs: Any,
) -> Task:
    """Load task data and tokenise it.

    Data come from ``train_file`` / ``dev_file``, else from the standard file names in
    ``data_dir`` (SST-2/GLUE: ``train.tsv``, ``dev.tsv``; SQuAD: ``train-v1.1.json``,
    ``dev-v1.1.json``; MLM: ``wiki.train.raw``/``train.txt``, ``wiki.valid.raw``/``valid.txt``),
    else from the hub dataset ``dataset`` (``"glue:sst2"``, ``"squad"``, ...).

    The data options are given either as one :class:`~obert_train.DataOptions` (``options``)
    or as the keywords below, not both.

    Args:
        task: One of :data:`TASK_NAMES`.
        tokenizer: The model's tokenizer.
        options: Every data option at once (the type the command lines build).
        data_dir: Folder with the task files.
        dataset: Hub dataset name, used when no local folder or file is given.
        train_file: Explicit training file.
        dev_file: Explicit dev file.
        max_seq_length: Token limit (default 128; SQuAD 384).
        max_train_samples: Use a seeded random subset of the training records.
        max_eval_samples: Use the first N dev records (the one subset rule of every
            evaluation, :func:`obert_core.shared.eval_subset`; obert-deploy's ``max_samples``).
        need_dev: If False, no dev data are needed (training or pruning without ``--eval``):
            a dev file is read only if given or present in ``data_dir``.
        seed: Seed of the subsets.
        text_columns: GLUE TSV: one or two text columns instead of the automatic choice.
        label_column: GLUE TSV: the label column instead of ``label``.
        split_articles: SQuAD: ``(N, M)`` splits ONE file (``train_file``, else ``dev_file``,
            else the only SQuAD file in ``data_dir``) by article: the articles are shuffled
            with ``split_seed`` and the questions of the first N train, those of the next M
            are the dev set; no article is on both sides
            (:func:`~obert_train.tasks.data.split_squad_articles`).
        split_seed: Seed of the article shuffle (default 0; independent of ``seed``, so
            runs with other seeds see the same split).
        **task_kwargs: Passed to the task class (e.g. ``doc_stride`` for SQuAD).

    Returns:
        A :class:`ClassificationTask`, :class:`SquadTask` or :class:`MaskedLMTask`.

    Raises:
        DataError: If the task is unknown or files are missing or malformed.
        ArgumentError: If ``options`` and data keywords are both given.
    """
    keywords = {
        "data_dir": data_dir,
        "dataset": dataset,
        "train_file": train_file,
        "dev_file": dev_file,
        "max_seq_length": max_seq_length,
        "max_train_samples": max_train_samples,
        "max_eval_samples": max_eval_samples,
        "text_columns": text_columns,
        "label_column": label_column,
        "split_articles": split_articles,
        "doc_stride": task_kwargs.pop("doc_stride", None),
        "max_query_length": task_kwargs.pop("max_query_length", None),
    }
    if options is None:
        # split_seed without split_articles is ignored here, as it always was.
        seed_of_split = (
            split_seed if split_articles is not None or task == "image-classification" else None
        )
        options = DataOptions(**keywords, split_seed=seed_of_split)
    else:
        given = [name for name, value in keywords.items() if value is not None]
        given += ["split_seed"] if split_seed else []
        if given:
            raise ArgumentError(
                f"load_task: the data options are given as options= and as keywords "
                f"({', '.join(given)}); give them in one place"
            )
    return _load(task, tokenizer, options, need_dev=need_dev, seed=seed, task_kwargs=task_kwargs)


def _load(
    task: str,
    tokenizer: PreTrainedTokenizerBase,
    options: DataOptions,
    *,
    need_dev: bool,
    seed: int,
    task_kwargs: dict[str, Any],
) -> Task:
    """:func:`load_task` with the data options in one place."""
    _check_types(task, options, need_dev, seed)
    if task not in TASK_NAMES:
        raise DataError(f"unknown task {task!r}; expected one of {list(TASK_NAMES)}")
    if task == "image-classification":
        return _load_images(tokenizer, options, need_dev=need_dev, seed=seed, kwargs=task_kwargs)
    data_dir, dataset = options.data_dir, options.dataset
    train_file, dev_file = options.train_file, options.dev_file
    text_columns, label_column = options.text_columns, options.label_column
    limits = {
        "max_train_samples": options.max_train_samples,
        "max_eval_samples": options.max_eval_samples,
    }
    _check_limits(options.max_seq_length, limits)
    if task not in ("sst2", "glue-tsv") and (text_columns is not None or label_column is not None):
        raise DataError(
            f"text_columns / label_column (--text-column / --label-column) apply to GLUE TSV "
            f"files, not to task {task!r}"
        )
    squad = options.squad_options
    if squad and task != "squad":
        fields = " / ".join(squad)
        flags = " / ".join("--" + field.replace("_", "-") for field in squad)
        raise DataError(f"{fields} ({flags}) apply to task 'squad', not to task {task!r}")
    if options.split_seed is not None and options.split_articles is None:
        raise DataError(
            f"split_seed (--split-seed) {options.split_seed} applies only together with "
            "split_articles (--split-articles)"
        )
    columns = {"text_columns": text_columns, "label_column": label_column}
    records: dict[str, list[Any]] = {}
    explicit = {"train": train_file, "dev": dev_file}
    splits: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("train", _TRAIN_FILES[task]),
        ("dev", _DEV_FILES[task]),
    )
    _check_dataset_used(data_dir, dataset, train_file, dev_file, need_dev)
    if options.split_articles is not None:
        counts = _article_counts(options.split_articles, task)
        source = _split_source(data_dir, dataset, train_file, dev_file)
        records["train"], records["dev"] = split_squad_articles(
            read_squad_json(source), *counts, seed=options.split_seed or 0, source=str(source)
        )
        splits = ()
    for split, names in splits:
        given = explicit[split]
        optional = split == "dev" and not need_dev
        if given is not None:
            records[split] = _read(task, Path(given), columns)
        elif data_dir is not None:
            present = [n for n in names if (Path(data_dir) / n).is_file()]
            if optional and not present:
                records[split] = []
            else:
                records[split] = _read(task, _find(Path(data_dir), names, split, task), columns)
        elif dataset is not None:
            records[split] = [] if optional else load_hub_split(task, dataset, _HUB_SPLITS[split])
        elif optional:
            records[split] = []
        else:
            raise DataError(
                f"task {task!r}: no {split} data; give --data-dir, --dataset or --{split}-file"
            )
    train = _subsample(records["train"], options.max_train_samples, seed)
    dev = eval_subset(records["dev"], options.max_eval_samples)  # the first N, as obert-deploy
    seq = options.max_seq_length or _DEFAULT_SEQ[task]
    if task in ("sst2", "glue-tsv"):
        return ClassificationTask(
            tokenizer, train, dev, max_seq_length=seq, name=task, **task_kwargs
        )
    if task == "squad":
        return SquadTask(tokenizer, train, dev, max_seq_length=seq, **squad, **task_kwargs)
    return MaskedLMTask(tokenizer, train, dev, max_seq_length=seq, seed=seed, **task_kwargs)


_IMAGE_DEV_FOLDERS = ("dev", "val", "validation")


def _read_images(path: Path) -> list[ImageExample]:
    """A class-per-subfolder folder, or an ``.npz`` file of arrays."""
    if path.is_dir():
        return read_image_folder(path)
    if path.suffix.lower() == ".npz":
        return read_image_arrays(path)
    raise DataError(
        f"{str(path)!r} is neither an image folder (<class>/<image>) nor a .npz file of arrays"
    )


def _load_images(
    processor: Any,
    options: DataOptions,
    *,
    need_dev: bool,
    seed: int,
    kwargs: dict[str, Any],
) -> Task:
    """Task ``image-classification`` (:mod:`obert_train.tasks.images`).

    ``--data-dir`` holds ``train/`` and ``dev/`` (or ``val/``) class folders, ``train.npz`` and
    ``dev.npz``, or the class folders themselves, split by ``dev_fraction`` (default 0.2) with
    ``split_seed`` (default 0); ``--train-file`` / ``--dev-file`` name a folder or an ``.npz``.
    """
    if processor is None:
        raise DataError(
            "task 'image-classification' needs the model's image processor in place of the "
            "tokenizer (transformers.AutoImageProcessor.from_pretrained(model_dir))"
        )
    text_only = {
        "dataset (--dataset)": options.dataset,
        "max_seq_length (--max-seq-length)": options.max_seq_length,
        "text_columns (--text-column)": options.text_columns,
        "label_column (--label-column)": options.label_column,
        "split_articles (--split-articles)": options.split_articles,
        **{f"{k} (--{k.replace('_', '-')})": v for k, v in options.squad_options.items()},
    }
    given = [name for name, value in text_only.items() if value is not None]
    if given:
        raise DataError(
            f"{', '.join(given)} do not apply to task 'image-classification' (local image "
            "folders or .npz arrays only)"
        )
    _check_limits(None, {
        "max_train_samples": options.max_train_samples,
        "max_eval_samples": options.max_eval_samples,
    })  # fmt: skip
    dev_fraction = kwargs.pop("dev_fraction", 0.2)
    data_dir = Path(options.data_dir) if options.data_dir is not None else None
    train: list[ImageExample] | None = None
    dev: list[ImageExample] | None = None
    if options.train_file is not None:
        train = _read_images(Path(options.train_file))
    if options.dev_file is not None:
        dev = _read_images(Path(options.dev_file))
    if data_dir is not None and (train is None or (dev is None and need_dev)):
        if not data_dir.is_dir():
            raise DataError(f"data_dir (--data-dir) {str(data_dir)!r} is not a folder")
        dev_dir = next((data_dir / n for n in _IMAGE_DEV_FOLDERS if (data_dir / n).is_dir()), None)
        if (data_dir / "train").is_dir():
            train = train if train is not None else read_image_folder(data_dir / "train")
            if dev is None and dev_dir is not None:
                dev = read_image_folder(dev_dir)
        elif (data_dir / "train.npz").is_file():
            train = train if train is not None else read_image_arrays(data_dir / "train.npz")
            if dev is None and (data_dir / "dev.npz").is_file():
                dev = read_image_arrays(data_dir / "dev.npz")
        elif train is None:
            train, dev = split_examples(
                read_image_folder(data_dir), dev_fraction, options.split_seed or 0
            )
    if train is None:
        raise DataError(
            "task 'image-classification': no training images; give --data-dir (train/ and dev/ "
            "class folders, train.npz, or one folder of class folders) or --train-file"
        )
    if dev is None:
        if need_dev:
            raise DataError(
                "task 'image-classification': no dev images; add dev/ class folders (or "
                "dev.npz) to --data-dir, or give --dev-file"
            )
        dev = []
    train = _subsample(train, options.max_train_samples, seed)
    dev = eval_subset(dev, options.max_eval_samples)
    return ImageClassificationTask(processor, train, dev, **kwargs)
