"""The output-folder policy of ``run``, ``oneshot``, ``drop-layers`` and ``save_checkpoint``.

Written down in ``docs/train.md`` ("Output folders"): a tool removes only files it wrote
itself (its known file names); an output folder that is, contains or lies inside an input is
refused before any work; a refused invocation leaves the folder exactly as it was (every check
comes first, the folder is created only after); while a tool writes, it holds the folder's lock
(:func:`obert_core.shared.folder_lock`, the one lock ``obert quickstart`` holds too).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from obert_core.shared import (
    FolderInUseError,
    OutputOverlapError,
    check_output_not_input,
    folder_lock,
)
from obert_train.errors import OutputDirError
from obert_train.tasks.options import DataOptions

__all__ = ["check_not_input", "data_inputs", "locked_output"]


def data_inputs(data: DataOptions | None) -> dict[str, Path | None]:
    """The local paths the data options name, keyed by their flag."""
    if data is None:
        return {}
    return {
        "data (--data-dir)": data.data_dir,
        "training data (--train-file)": data.train_file,
        "dev data (--dev-file)": data.dev_file,
    }


def check_not_input(
    out: str | os.PathLike[str],
    inputs: Mapping[str, str | os.PathLike[str] | None],
    option: str = "--output-dir",
) -> None:
    """Refuse an output folder that is, contains or lies inside an input (read only).

    Raises:
        OutputDirError: Naming the folder, the input and what to do.
    """
    try:
        check_output_not_input(out, inputs, option=option)
    except OutputOverlapError as exc:
        raise OutputDirError(str(exc)) from None


@contextlib.contextmanager
def locked_output(
    out: str | os.PathLike[str], tool: str, option: str = "--output-dir"
) -> Iterator[Path]:
    """Create ``out`` and hold its lock for the block (call after every check passed).

    Raises:
        OutputDirError: If another process holds the lock (naming its PID where known).
    """
    held = contextlib.ExitStack()
    try:
        folder = held.enter_context(folder_lock(out, option=option, tool=tool))
    except FolderInUseError as exc:
        raise OutputDirError(str(exc)) from None
    with held:
        yield folder
