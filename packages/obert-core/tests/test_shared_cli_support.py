"""``obert_core.shared``: a full disk as one OSError, and quiet command lines (issue 18)."""

from __future__ import annotations

import errno
import logging
import os
import warnings
from pathlib import Path

import pytest

from obert_core.shared import (
    NOISY_LOGGERS,
    disk_full_errors,
    is_disk_full,
    no_space_error,
    quiet_third_party,
)


class SafetensorError(Exception):
    """Stands in for safetensors' error class (not an OSError)."""


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 448 vs 342"),
        SafetensorError("Error while serializing: IoError(No space left on device)"),
    ],
)
def test_full_disk_is_recognised(exc: BaseException, tmp_path: os.PathLike[str]) -> None:
    assert is_disk_full(exc)
    with (
        pytest.raises(OSError, match="no space left on device in") as info,
        disk_full_errors(tmp_path),
    ):
        raise exc
    assert info.value.errno == errno.ENOSPC
    assert str(tmp_path) in str(info.value)


def test_a_chained_full_disk_is_recognised() -> None:
    outer = RuntimeError("saving failed")
    outer.__cause__ = OSError(errno.ENOSPC, "full")
    assert is_disk_full(outer)


@pytest.mark.parametrize(
    "exc", [OSError(errno.EACCES, "Permission denied"), RuntimeError("bad"), ValueError("x")]
)
def test_other_errors_pass_unchanged(exc: BaseException) -> None:
    assert not is_disk_full(exc)
    with pytest.raises(type(exc)) as info, disk_full_errors("d"):
        raise exc
    assert info.value is exc


def test_no_space_error_names_the_folder() -> None:
    error = no_space_error("/data/run")
    assert error.errno == errno.ENOSPC and "/data/run" in str(error)


def test_quiet_third_party_silences_the_noisy_loggers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    with warnings.catch_warnings():
        try:
            quiet_third_party()
            assert all(logging.getLogger(n).level == logging.ERROR for n in NOISY_LOGGERS)
            assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"
            assert any(f[0] == "ignore" and f[2] is DeprecationWarning for f in warnings.filters)
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def test_quiet_third_party_keeps_everything_when_verbose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    logging.getLogger("torchao").setLevel(logging.NOTSET)
    quiet_third_party(verbose=True)
    assert logging.getLogger("torchao").level == logging.NOTSET
    assert "TRANSFORMERS_VERBOSITY" not in os.environ


def test_canonical_args_rewrites_aliases_only() -> None:
    from obert_core.shared import TASK_ALIASES, canonical_args

    args = ["export", "ck", "--seq-len", "64", "--text-columns=a,b", "--task", "squad"]
    assert canonical_args(args, values={"--task": TASK_ALIASES}) == [
        *("export", "ck", "--max-seq-length", "64", "--text-column=a,b"),
        *("--task", "question-answering"),
    ]
    assert canonical_args(["--model", "--lr-model", "--", "--seq-len"]) == [
        *("--model", "--lr-model", "--", "--seq-len"),
    ]
    assert canonical_args(["run", "-o", "x"], {"-o": "--output-dir"}) == [
        "run",
        "--output-dir",
        "x",
    ]


def test_split_columns_splits_on_commas() -> None:
    """Regression: obert-train read ``--text-column a,b`` as one column named ``"a,b"``."""
    from obert_core.shared import split_columns

    assert split_columns("sentence1,sentence2") == ["sentence1", "sentence2"]
    assert split_columns(["sentence1, sentence2"]) == ["sentence1", "sentence2"]
    assert split_columns(["a", "b"]) == ["a", "b"]
    assert split_columns([" , "]) is None
    assert split_columns(None) is None
    assert split_columns([]) is None


def test_an_atomic_write_on_a_full_disk_names_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every atomic write (metrics.json, reports, ONNX files) says which folder is full."""
    from obert_core.shared import atomic_write_text

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / "out" / "metrics.json"
    with pytest.raises(OSError, match="no space left on device in") as info:
        atomic_write_text(target, "{}")
    assert info.value.errno == errno.ENOSPC and str(target.parent) in str(info.value)
    assert not target.parent.exists()  # the folder it made is gone, nothing half-written
