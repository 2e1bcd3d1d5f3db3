"""Atomic file output: write to a temporary file in the target directory, then ``os.replace``.

A crash or a failed check never leaves a half-written file at the requested path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_output", "atomic_outputs", "atomic_write_bytes", "atomic_write_text"]


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

    The temporary file keeps the target's suffix (tools such as ONNX Runtime's quantizer look at
    it). If the ``with`` block raises, the temporary file is removed and ``path`` is untouched.

    Args:
        path: Final destination. Its parent directory is created if missing (and removed again,
            if it was created here and is still empty, when the block fails).

    Yields:
        A path in the same directory (so ``os.replace`` is atomic) that does not exist yet.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"output {str(target)!r} is a directory; pass a file path")
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
            yield tmp
            if not tmp.exists():
                raise FileNotFoundError(f"nothing was written to the temporary file {tmp}")
            tmp.replace(target)
            succeeded = True
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    finally:
        if not succeeded:
            _remove_empty(created)


@contextlib.contextmanager
def atomic_outputs(*paths: str | os.PathLike[str] | None) -> Iterator[list[Path | None]]:
    """Stage several outputs at once: all of them appear only if the whole block succeeds.

    Args:
        *paths: Destinations; ``None`` entries (an output that was not requested) stay ``None``.

    Yields:
        One temporary path (or ``None``) per entry of ``paths``, in order. When the block
        raises, none of the destinations is touched.
    """
    with contextlib.ExitStack() as stack:
        yield [None if p is None else stack.enter_context(atomic_output(p)) for p in paths]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))
