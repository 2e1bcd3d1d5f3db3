"""Default datasets of ``evaluate`` and ``qat``: in a given directory or ``$OBERT_DATA_DIR``.

The library knows no repository layout: the data directory is an explicit argument, else the
environment variable :data:`DATA_DIR_ENV`, else an error saying to pass one of them.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._errors import ObertDeployError

__all__ = ["DATA_DIR_ENV", "data_dir", "default_dataset"]

#: Environment variable naming the directory that holds ``SST-2/`` and ``SQuAD/``.
DATA_DIR_ENV = "OBERT_DATA_DIR"


def data_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Directory of the shared datasets: ``path`` when given, else ``$OBERT_DATA_DIR``.

    Args:
        path: The directory holding ``SST-2/`` and ``SQuAD/``; ``None`` reads
            :data:`DATA_DIR_ENV`.

    Returns:
        The directory (not checked for existence; :func:`default_dataset` checks the file).

    Raises:
        ObertDeployError: ``path`` is ``None`` and ``$OBERT_DATA_DIR`` is not set.
    """
    if path is not None:
        return Path(path)
    env = os.environ.get(DATA_DIR_ENV)
    if not env:
        raise ObertDeployError(
            f"no data directory given and {DATA_DIR_ENV} is not set; pass the directory that "
            f"holds SST-2/ and SQuAD/, or set {DATA_DIR_ENV}=/path/to/data"
        )
    return Path(env)


def default_dataset(
    task: str, split: str = "dev", *, root: str | os.PathLike[str] | None = None
) -> Path:
    """Default data file of ``task``: SST-2 (sequence classification) or SQuAD v1.1.

    Args:
        task: ``sequence-classification`` or ``question-answering``.
        split: ``dev`` or ``train``.
        root: The data directory; ``None`` reads ``$OBERT_DATA_DIR`` (see :func:`data_dir`).

    Returns:
        ``<root>/SST-2/<split>.tsv`` or ``<root>/SQuAD/<split>-v1.1.json``.

    Raises:
        ObertDeployError: The task has no default dataset, no data directory is given or set,
            or the file is absent.
    """
    files = {
        "sequence-classification": Path("SST-2") / f"{split}.tsv",
        "question-answering": Path("SQuAD") / f"{split}-v1.1.json",
    }
    if task not in files:
        raise ObertDeployError(
            f"task {task!r} has no default dataset; pass a data file explicitly (--data)"
        )
    try:
        directory = data_dir(root)
    except ObertDeployError:
        raise ObertDeployError(
            f"no data file given for task {task!r} and {DATA_DIR_ENV} is not set; pass a data "
            f"file explicitly (--data), or set {DATA_DIR_ENV} to the directory that holds "
            f"{files[task]}"
        ) from None
    if not (directory / files[task]).is_file():
        raise ObertDeployError(
            f"default dataset {files[task]} for task {task!r} not found (data dir: {directory}); "
            f"set {DATA_DIR_ENV} or pass a data file explicitly (--data)"
        )
    return directory / files[task]
