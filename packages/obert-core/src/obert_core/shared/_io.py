"""Atomic file output: write beside the target, then ``os.replace``.

A reader sees the old file or the whole new one, never a part; a failed write leaves neither a
half-written target nor a temporary file behind.  The one implementation obert-train,
obert-deploy and the ``obert`` application use.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from obert_core._errors import ObertError

from ._disk import is_disk_full, no_space_error

__all__ = [
    "NothingWrittenError",
    "OutputIsFolderError",
    "atomic_output",
    "atomic_outputs",
    "atomic_write_bytes",
    "atomic_write_text",
]


class OutputIsFolderError(ObertError, IsADirectoryError):
    """An output file's path is an existing folder.

    An :class:`~obert_core.ObertError` and also the ``IsADirectoryError`` (an ``OSError``) it
    always was, so ``except OSError`` callers and the command lines' one ``error:`` line still
    see it.
    """


class NothingWrittenError(ObertError, FileNotFoundError):
    """The block of :func:`atomic_output` wrote nothing to its temporary path.

    An :class:`~obert_core.ObertError` and also the ``FileNotFoundError`` (an ``OSError``) it
    always was.
    """


def _make_parents(directory: Path) -> list[Path]:
    """Create ``directory`` and missing ancestors; return the created ones, deepest first."""
    created: list[Path] = []
    current = directory
    while not current.exists():
        created.append(current)
        if current.parent == current:
            break
        current = current.parent
    directory.mkdir(parents=True, exist_ok=True)
    return created


def _remove_empty(directories: list[Path]) -> None:
    for directory in directories:
        with contextlib.suppress(OSError):
            directory.rmdir()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds.

    The temporary name keeps the target's suffix (tools such as ONNX Runtime's quantizer look at
    it) and does not exist yet, so whatever writes it creates it with the mode a plain ``open``
    gives (``0o666`` minus the umask).  If the ``with`` block raises, or writes nothing, the
    temporary file is removed and ``path`` is untouched (its folder keeps its modification
    time too).

    Args:
        path: Final destination. Its parent folder is created if missing (and removed again, if
            it was created here and is still empty, when the block fails).

    Yields:
        A path in the same folder (so ``os.replace`` is atomic) that does not exist yet.

    Raises:
        OutputIsFolderError: If ``path`` is an existing folder (an ``IsADirectoryError``).
        NothingWrittenError: If the block wrote nothing to the temporary path (a
            ``FileNotFoundError``).
        OSError: ``no space left on device in FOLDER`` (``ENOSPC``) when the block failed on a
            full disk (:func:`obert_core.shared.disk_full_errors`).
    """
    target = Path(path)
    if target.is_dir():
        raise OutputIsFolderError(f"output {str(target)!r} is a directory; pass a file path")
    times = target.parent.stat() if target.parent.is_dir() else None
    created = _make_parents(target.parent)
    succeeded = False
    try:
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}"
        )
        os.close(fd)
        tmp = Path(tmp_name)
        tmp.unlink()
        try:
            try:
                yield tmp
            except Exception as exc:  # a full disk, however the writer says it, names the folder
                if is_disk_full(exc) and "no space left on device in" not in str(exc):
                    raise no_space_error(target.parent) from exc
                raise
            if not tmp.exists():
                raise NothingWrittenError(f"nothing was written to the temporary file {tmp}")
            tmp.replace(target)
            succeeded = True
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    finally:
        if not succeeded:
            _remove_empty(created)
            if times is not None:  # a failed write leaves the folder exactly as it was
                with contextlib.suppress(OSError):
                    os.utime(target.parent, ns=(times.st_atime_ns, times.st_mtime_ns))


@contextlib.contextmanager
def atomic_outputs(*paths: str | os.PathLike[str] | None) -> Iterator[list[Path | None]]:
    """Stage several outputs at once: each appears only if the whole block succeeds.

    Args:
        *paths: Destinations; ``None`` entries (an output that was not requested) stay ``None``.

    Yields:
        One temporary path (or ``None``) per entry of ``paths``, in order. When the block
        raises, none of the destinations is touched.
    """
    with contextlib.ExitStack() as stack:
        yield [None if p is None else stack.enter_context(atomic_output(p)) for p in paths]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename).

    Args:
        path: Destination file; its folder is created if needed.
        data: The content.

    Returns:
        The path.
    """
    with atomic_output(path) as tmp, tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`atomic_write_bytes`).

    Args:
        path: Destination file; its folder is created if needed.
        text: The content.

    Returns:
        The path.
    """
    return atomic_write_bytes(path, text.encode("utf-8"))
