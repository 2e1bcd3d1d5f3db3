"""Helpers shared by the commands: error reporting, torchrun, ``--set`` parsing, shared options.

The data flags are in :mod:`obert_train.cli.data_options`, model loading in
:mod:`obert_train.cli.models`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from obert_core import ObertError
from obert_train._validate import check_str_sequence
from obert_train.errors import ObertTrainError, OptionError
from obert_train.tasks.names import TASK_NAMES

if TYPE_CHECKING:
    from obert_train.fisher.distributed import DistContext

__all__ = [
    "USER_ERRORS",
    "ProgressOpt",
    "TaskName",
    "ThreadsOpt",
    "fail",
    "init_distributed",
    "parse_sets",
]

TaskName = Enum(  # type: ignore[misc]
    "TaskName", {n.replace("-", "_"): n for n in TASK_NAMES}, type=str
)
"""Tasks with loaders (from :data:`obert_train.tasks.names.TASK_NAMES`)."""

ThreadsOpt = Annotated[int | None, typer.Option(min=1, help="torch CPU threads.")]
ProgressOpt = Annotated[bool, typer.Option(help="Show progress bars.")]

USER_ERRORS = (ObertTrainError, ObertError, OSError)
"""Errors shown as one ``error: ...`` line (exit code 2) instead of a traceback.

The package's errors (:class:`~obert_train.ObertTrainError`), obert-core's
(:class:`~obert_core.ObertError`) and ``OSError``: a file or folder the user named cannot be read
or written (the system's message names the path).  Any other exception is a bug and keeps its
traceback.
"""


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


def parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as recipe overrides (``{"final_sparsity": 0.9, ...}``).

    ``["final_sparsity=0.9", "damp=1e-6"]`` -> ``{"final_sparsity": 0.9, "damp": 1e-6}``.
    Values are read as the recipe reader reads a value (numbers, booleans, lists; YAML 1.2
    numbers, so ``mask_type=2:4`` is the text ``"2:4"``, never YAML 1.1's base-60 int 124, and
    ``1e-6`` a float); the result is what :func:`obert_train.load_recipe` takes as
    ``overrides`` (which reads a text field's override as text).

    Args:
        items: ``KEY=VALUE`` strings (None: no override).

    Returns:
        Key -> value.

    Raises:
        OptionError: If an item has no ``=``.
        RecipeError: If a value is not valid YAML (``damp=[1e-7``).
    """
    from obert_train.recipe._yaml import parse_value  # here: --help stays fast

    check_str_sequence(items, "items", "parse_sets")
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"--set {item!r}: expected KEY=VALUE, e.g. --set final_sparsity=0.9")
        out[key.strip()] = parse_value(value, f"--set {item!r}") if value.strip() else ""
    return out
