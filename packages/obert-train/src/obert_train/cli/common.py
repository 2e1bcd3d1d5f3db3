"""Helpers shared by the commands: error reporting, torchrun, model loading, ``--set`` parsing."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
import yaml
from pydantic import ValidationError

from obert_train.errors import ModelError, ObertTrainError
from obert_train.tasks.names import TASK_NAMES

if TYPE_CHECKING:
    from obert_train.fisher.distributed import DistContext

__all__ = [
    "USER_ERRORS",
    "TaskName",
    "check_model_source",
    "fail",
    "init_distributed",
    "load_model",
    "load_tokenizer",
    "parse_sets",
    "parse_split_articles",
    "task_from_options",
]

TaskName = Enum(  # type: ignore[misc]
    "TaskName", {n.replace("-", "_"): n for n in TASK_NAMES}, type=str
)
"""Tasks with loaders (from :data:`obert_train.tasks.names.TASK_NAMES`)."""

# Data options shared by `run` and `oneshot` (one definition, one help text).
DataDirOpt = Annotated[Path | None, typer.Option(help="Folder with the task files.")]
DatasetOpt = Annotated[
    str | None, typer.Option(help="Hub dataset 'path[:config]' (needs internet).")
]
TrainFileOpt = Annotated[Path | None, typer.Option(help="Explicit training file.")]
DevFileOpt = Annotated[Path | None, typer.Option(help="Explicit dev file.")]
MaxSeqOpt = Annotated[
    int | None, typer.Option(help="Token limit (default 128; SQuAD 384), at most the model's.")
]
MaxTrainOpt = Annotated[int | None, typer.Option(help="Seeded random training subset.")]
MaxEvalOpt = Annotated[int | None, typer.Option(help="Seeded random dev subset.")]
TextColumnOpt = Annotated[
    list[str] | None,
    typer.Option("--text-column", help="GLUE TSV text column (give 1 or 2; default: by name)."),
]
LabelColumnOpt = Annotated[
    str | None, typer.Option(help="GLUE TSV label column (default 'label').")
]
DocStrideOpt = Annotated[
    int | None, typer.Option(min=1, help="SQuAD: overlap of long-context windows (128).")
]
MaxQueryOpt = Annotated[int | None, typer.Option(min=1, help="SQuAD: question tokens kept (64).")]
SplitArticlesOpt = Annotated[
    str | None,
    typer.Option(
        metavar="TRAIN:EVAL",
        help="SQuAD: split ONE file by article, e.g. 40:8: train on TRAIN articles, "
        "evaluate on the next EVAL, after a shuffle by --split-seed.",
    ),
]
SplitSeedOpt = Annotated[
    int | None, typer.Option(help="SQuAD: seed of the --split-articles shuffle (0).")
]
ThreadsOpt = Annotated[int | None, typer.Option(min=1, help="torch CPU threads.")]
ProgressOpt = Annotated[bool, typer.Option(help="Show progress bars.")]

_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "spm.model",
    "sentencepiece.model",
    "tiktoken.model",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")

USER_ERRORS = (ObertTrainError, ValidationError, ValueError, OSError)
"""Errors shown as one ``error: ...`` line (exit code 2) instead of a traceback."""


def fail(exc: BaseException) -> typer.Exit:
    """Print ``error: <message>`` in red on stderr; the caller raises the returned Exit(2)."""
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def init_distributed() -> DistContext:
    """Join the torchrun process group when launched by torchrun (gloo: the model stays on CPU)."""
    import torch

    from obert_train.fisher.distributed import DistContext

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="gloo")
    return DistContext.current()


def check_model_source(name_or_path: str, option: str = "--model") -> None:
    """A local model folder must hold a config and a tokenizer; anything else must be a hub id.

    Raises:
        ModelError: Naming the option, the value and what is missing.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{option} {name_or_path!r} is a folder without config.json; point it at a "
                "saved Hugging Face model (save_pretrained output)"
            )
        if not any((path / name).is_file() for name in _TOKENIZER_FILES):
            raise ModelError(
                f"{option} {name_or_path!r} has no usable tokenizer (none of "
                f"{', '.join(_TOKENIZER_FILES[:3])}, ...); save the tokenizer into the folder "
                "(tokenizer.save_pretrained) or copy it from the model you started from"
            )
        return
    if path.exists():
        raise ModelError(f"{option} {name_or_path!r} is a file; give the model's folder")
    looks_like_path = (
        name_or_path.startswith((".", "/", "~"))
        or name_or_path.count("/") > 1
        or (name_or_path.count("/") == 1 and path.parent.is_dir())  # 'runs/typo': not a hub id
    )
    if looks_like_path:
        raise ModelError(
            f"{option} {name_or_path!r}: no such model folder; give a folder with config.json "
            "and weights, or a hub id such as 'bert-base-uncased'"
        )
    if not _HUB_ID.match(name_or_path):
        raise ModelError(
            f"{option} {name_or_path!r} is neither a model folder nor a valid hub id (ids look "
            "like 'bert-base-uncased' or 'org/name'); check the path"
        )


def _load_error(exc: BaseException, name: str, option: str) -> ModelError | None:
    """A one-line error for the ways ``from_pretrained`` fails on a bad folder or id."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "safetensor" in type(exc).__name__.lower() or "header" in text.lower():
        return ModelError(
            f"{option} {name!r}: model.safetensors cannot be read ({text}); the file is corrupt "
            "or truncated: save or download the model again"
        )
    if "no file named" in text:
        return ModelError(
            f"{option} {name!r} has no model weights (model.safetensors or pytorch_model.bin); "
            "save the model with save_pretrained"
        )
    if isinstance(exc, OSError | ValueError):
        return ModelError(f"{option} {name!r} cannot be loaded: {text}")
    return None


def load_tokenizer(name_or_path: str, option: str = "--model") -> Any:
    """The model's tokenizer; a folder or id without one is a one-line error.

    Raises:
        ModelError: If the tokenizer cannot be loaded.
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except Exception as exc:
        error = _load_error(exc, name_or_path, option)
        if error is None:
            raise
        raise ModelError(
            f"{option} {name_or_path!r}: no usable tokenizer ({str(error).split(': ', 1)[-1]})"
        ) from None


def load_model(
    the_task: Any, name_or_path: str, seed: int, *, warn: bool, option: str = "--model"
) -> Any:
    """Load the task model with torch seeded, so a newly initialised head is the same each time.

    With ``warn``, names the weights that were not in the checkpoint (newly initialised).

    Raises:
        ModelError: If the head does not fit the task, or the weights cannot be read.
    """
    import torch

    torch.manual_seed(seed)
    try:
        loaded = cast(Any, the_task.load_model(name_or_path, output_loading_info=True))
    except ObertTrainError:
        raise
    except Exception as exc:
        if "mismatched" in str(exc):
            labels = getattr(the_task, "num_labels", None)
            need = f" ({labels} labels)" if labels is not None else ""
            raise ModelError(
                f"the head of {name_or_path} does not fit task {the_task.name!r}{need}: its "
                "weights have other shapes; start from a model without that head (a base "
                "checkpoint) or one fine-tuned on the same labels"
            ) from None
        error = _load_error(exc, name_or_path, option)
        if error is None:
            raise
        raise error from None
    model, info = loaded if isinstance(loaded, tuple) else (loaded, {})
    missing = sorted(info.get("missing_keys", []))
    if missing and warn:
        shown = ", ".join(missing[:6]) + (
            f", ... ({len(missing)} in all)" if len(missing) > 6 else ""
        )
        typer.secho(
            f"warning: {name_or_path} has no weights for {shown}; they are newly initialised "
            f"(seeded with --seed {seed}), so the task head is untrained unless the recipe "
            "trains it",
            fg=typer.colors.YELLOW,
            err=True,
        )
    return model


def parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    """``["final_sparsity=0.9", "damp=1e-6"]`` -> ``{"final_sparsity": 0.9, "damp": 1e-6}``.

    Values are read as YAML scalars (numbers, booleans, lists).

    Raises:
        ValueError: If an item has no ``=``.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set final_sparsity=0.9")
        parsed = yaml.safe_load(value) if value.strip() else ""
        if isinstance(parsed, str):
            with contextlib.suppress(ValueError):
                parsed = float(parsed)
        out[key.strip()] = parsed
    return out


def parse_split_articles(value: str) -> tuple[int, int]:
    """``"40:8"`` -> ``(40, 8)``: article counts of ``--split-articles``.

    Raises:
        DataError: Naming the value if it is not two whole numbers joined by ':'.
    """
    from obert_train.errors import DataError

    parts = value.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise DataError(
            f"--split-articles {value!r}: expected TRAIN:EVAL, two whole numbers of articles "
            "such as 40:8"
        )
    return int(parts[0]), int(parts[1])


def task_from_options(
    task: str,
    tokenizer: Any,
    *,
    seed: int,
    need_dev: bool,
    data_dir: Path | None,
    dataset: str | None,
    train_file: Path | None,
    dev_file: Path | None,
    max_seq_length: int | None,
    max_train_samples: int | None,
    max_eval_samples: int | None,
    text_column: list[str] | None,
    label_column: str | None,
    doc_stride: int | None,
    max_query_length: int | None,
    split_articles: str | None = None,
    split_seed: int | None = None,
) -> Any:
    """:func:`~obert_train.load_task` from the shared data options of ``run`` and ``oneshot``.

    Raises:
        DataError: If a SQuAD option is given for another task, or the data are bad.
    """
    from obert_train.errors import DataError
    from obert_train.tasks.load import load_task

    if split_seed is not None and split_articles is None:
        raise DataError(f"--split-seed {split_seed} applies only together with --split-articles")
    counts = parse_split_articles(split_articles) if split_articles is not None else None

    squad = {"doc_stride": doc_stride, "max_query_length": max_query_length}
    extra = {k: v for k, v in squad.items() if v is not None}
    if extra and task != "squad":
        flags = ", ".join("--" + k.replace("_", "-") for k in extra)
        raise DataError(f"{flags} apply to --task squad, not to --task {task}")
    return load_task(
        task,
        tokenizer,
        data_dir=data_dir,
        dataset=dataset,
        train_file=train_file,
        dev_file=dev_file,
        max_seq_length=max_seq_length,
        max_train_samples=max_train_samples,
        max_eval_samples=max_eval_samples,
        need_dev=need_dev,
        seed=seed,
        text_columns=text_column or None,
        label_column=label_column,
        split_articles=counts,
        split_seed=split_seed or 0,
        **extra,
    )
