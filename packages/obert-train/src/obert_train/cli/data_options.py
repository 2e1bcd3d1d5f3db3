"""The data flags of the command lines, declared once: ``--data-dir`` ... ``--split-seed``.

``obert-train run``, ``obert-train oneshot`` and ``obert quickstart`` take the same 13 flags and
turn them into one :class:`~obert_train.DataOptions`: each command declares a parameter
``data: DataOptions`` and is decorated with :func:`with_data_options`, which puts the flags in
its place.
"""

from __future__ import annotations

import copy
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from obert_core.shared import split_columns
from obert_train.cli.common import USER_ERRORS, fail
from obert_train.errors import ArgumentError, DataError
from obert_train.tasks.options import DataOptions

__all__ = ["DATA_FLAGS", "data_options_from_flags", "parse_split_articles", "with_data_options"]

_R = TypeVar("_R")

DATA_FLAGS: dict[str, Any] = {
    "data_dir": Annotated[Path | None, typer.Option(help="Folder with the task files.")],
    "dataset": Annotated[
        str | None, typer.Option(help="Hub dataset 'path[:config]' (needs internet).")
    ],
    "train_file": Annotated[Path | None, typer.Option(help="Explicit training file.")],
    "dev_file": Annotated[Path | None, typer.Option(help="Explicit dev file.")],
    "max_seq_length": Annotated[
        int | None,
        typer.Option(help="Token limit (default 128; SQuAD 384), at most the model's."),
    ],
    "max_train_samples": Annotated[int | None, typer.Option(help="Seeded random training subset.")],
    "max_eval_samples": Annotated[int | None, typer.Option(help="The first N dev examples.")],
    "text_column": Annotated[
        list[str] | None,
        typer.Option(
            "--text-column",
            help="GLUE TSV text column(s): 1 or 2, comma-separated or repeated (default: by name).",
        ),
    ],
    "label_column": Annotated[
        str | None, typer.Option(help="GLUE TSV label column (default 'label').")
    ],
    "doc_stride": Annotated[
        int | None,
        typer.Option(
            min=1,
            help="SQuAD: overlap of long-context windows (default 128, or half the context "
            "room of shorter windows).",
        ),
    ],
    "max_query_length": Annotated[
        int | None, typer.Option(min=1, help="SQuAD: question tokens kept (64).")
    ],
    "split_articles": Annotated[
        str | None,
        typer.Option(
            metavar="TRAIN:EVAL",
            help="SQuAD: split ONE file by article, e.g. 40:8: train on TRAIN articles, "
            "evaluate on the next EVAL, after a shuffle by --split-seed.",
        ),
    ],
    "split_seed": Annotated[
        int | None, typer.Option(help="SQuAD: seed of the --split-articles shuffle (0).")
    ],
}
"""Parameter name -> its typer declaration (type and ``typer.Option``), in ``--help`` order."""


def parse_split_articles(value: str) -> tuple[int, int]:
    """``"40:8"`` -> ``(40, 8)``: article counts of ``--split-articles``.

    Raises:
        DataError: Naming the value if it is not two whole numbers joined by ':'.
    """
    parts = value.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise DataError(
            f"--split-articles {value!r}: expected TRAIN:EVAL, two whole numbers of articles "
            "such as 40:8"
        )
    return int(parts[0]), int(parts[1])


def data_options_from_flags(
    task: str,
    *,
    data_dir: Path | None = None,
    dataset: str | None = None,
    train_file: Path | None = None,
    dev_file: Path | None = None,
    max_seq_length: int | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    text_column: list[str] | None = None,
    label_column: str | None = None,
    doc_stride: int | None = None,
    max_query_length: int | None = None,
    split_articles: str | None = None,
    split_seed: int | None = None,
) -> DataOptions:
    """The :class:`~obert_train.DataOptions` of the data flags of a command run on ``task``.

    Checks what only the flags show (messages name the flags); the values themselves are
    checked when the task is loaded.

    Raises:
        DataError: For ``--split-seed`` without ``--split-articles``, a malformed
            ``--split-articles``, or a SQuAD flag given for another task.
    """
    if split_seed is not None and split_articles is None:
        raise DataError(f"--split-seed {split_seed} applies only together with --split-articles")
    counts = parse_split_articles(split_articles) if split_articles is not None else None
    squad = {"doc_stride": doc_stride, "max_query_length": max_query_length}
    extra = [name for name, value in squad.items() if value is not None]
    if extra and task != "squad":
        flags = ", ".join("--" + name.replace("_", "-") for name in extra)
        raise DataError(f"{flags} apply to --task squad, not to --task {task}")
    return DataOptions(
        data_dir=data_dir,
        dataset=dataset,
        train_file=train_file,
        dev_file=dev_file,
        max_seq_length=max_seq_length,
        max_train_samples=max_train_samples,
        max_eval_samples=max_eval_samples,
        text_columns=tuple(names) if (names := split_columns(text_column)) else None,
        label_column=label_column,
        doc_stride=doc_stride,
        max_query_length=max_query_length,
        split_articles=counts,
        split_seed=split_seed,
    )


def _declaration(name: str, help_text: str | None) -> Any:
    """The flag's ``Annotated[type, typer.Option]``, with another help text if given."""
    if help_text is None:
        return DATA_FLAGS[name]
    kind, option = typing.get_args(DATA_FLAGS[name])
    option = copy.copy(option)
    option.help = help_text
    return Annotated[kind, option]


def with_data_options(
    *, help_texts: Mapping[str, str] | None = None
) -> Callable[[Callable[..., _R]], Callable[..., _R]]:
    """Give a typer command the 13 data flags, collected into one :class:`~obert_train.DataOptions`.

    The command declares a parameter ``data: DataOptions`` (and a ``task`` parameter, a string
    or an enum of task names); its command line gets the data flags (:data:`DATA_FLAGS`:
    ``--data-dir`` ... ``--split-seed``) in that parameter's place, and the command is called
    with their :class:`~obert_train.DataOptions`
    (:func:`~obert_train.cli.data_options.data_options_from_flags`). A flag error is printed as
    one ``error:`` line (exit code 2) before the command runs.

    Example::

        @app.command("prune")
        @with_data_options()
        def prune(model: str, task: str, data: DataOptions) -> None:
            the_task = load_task(task, load_tokenizer(model), data)

    Args:
        help_texts: Parameter name (``"max_seq_length"``) -> this command's help text, for a
            flag whose default differs here; the others keep the shared text.

    Returns:
        The decorator.

    Raises:
        ArgumentError: If the command has no ``data`` parameter or ``help_texts`` names
            no data flag.
    """
    unknown = sorted(set(help_texts or {}) - set(DATA_FLAGS))
    if unknown:
        raise ArgumentError(f"help_texts: {unknown} are not data flags; use {list(DATA_FLAGS)}")

    def decorate(command: Callable[..., _R]) -> Callable[..., _R]:
        signature = inspect.signature(command, eval_str=True)
        params = list(signature.parameters.values())
        names = [p.name for p in params]
        if "data" not in names:
            raise ArgumentError(
                f"{command.__name__} has no parameter 'data' (data: DataOptions) where the data "
                "flags go; add it"
            )
        at = names.index("data")
        flags = [
            inspect.Parameter(
                name,
                params[at].kind,
                default=None,
                annotation=_declaration(name, (help_texts or {}).get(name)),
            )
            for name in DATA_FLAGS
        ]
        new = [*params[:at], *flags, *params[at + 1 :]]

        @functools.wraps(command)
        def with_flags(*args: Any, **kwargs: Any) -> _R:
            values = {name: kwargs.pop(name, None) for name in DATA_FLAGS}
            task = kwargs.get("task")
            try:
                data = data_options_from_flags(str(getattr(task, "value", task)), **values)
            except USER_ERRORS as exc:
                raise fail(exc) from exc
            return command(*args, data=data, **kwargs)

        # typer reads the parameters from the signature and the (evaluated) annotations.
        with_flags.__signature__ = signature.replace(parameters=new)  # type: ignore[attr-defined]
        with_flags.__annotations__ = {
            **{p.name: p.annotation for p in new},
            "return": signature.return_annotation,
        }
        return with_flags

    return decorate
