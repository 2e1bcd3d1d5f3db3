"""Atomic file output: write to a temporary file in the target directory, then ``os.replace``.

A crash or a failed check never leaves a half-written file at the requested path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ._errors import ObertDeployError

__all__ = [
    "OutputSpec",
    "atomic_output",
    "atomic_outputs",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_outputs",
]

#: ``(option name, path or None, required suffix or None)`` of one requested output file.
OutputSpec = tuple[str, str | os.PathLike[str] | None, str | None]


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


def _existing_ancestor(path: Path) -> Path:
    current = path.parent
    while not current.exists() and current.parent != current:
        current = current.parent
    return current


def _probe_writable(directory: Path, flag: str, raw: str) -> None:
    """Create and remove a temporary file in ``directory`` (the only way to be sure)."""
    if not directory.is_dir():
        raise ObertDeployError(
            f"{flag} {raw!r}: {str(directory)!r} is a file, not a directory; pass a path in a "
            "directory"
        )
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".obert-deploy-probe-")
    except OSError as exc:
        raise ObertDeployError(
            f"{flag} {raw!r}: cannot write in {str(directory)!r} ({exc.strerror or exc}); pass a "
            "path in a writable directory"
        ) from None
    os.close(fd)
    Path(name).unlink()


def _check_one(
    flag: str, path: Path, suffix: str | None, inputs: Sequence[Path], overwrite: bool
) -> None:
    raw = os.fspath(path)
    if path.is_dir():
        example = path / ("model" + (suffix or ".json"))
        raise ObertDeployError(
            f"{flag} {raw!r} is a directory; pass a file path such as {str(example)!r}"
        )
    if suffix is not None and path.suffix.lower() != suffix:
        raise ObertDeployError(
            f"{flag} {raw!r} does not end in {suffix}; pass e.g. "
            f"{str(path.with_suffix(suffix) if path.suffix else Path(raw + suffix))!r}"
        )
    if suffix is None and not path.suffix:
        raise ObertDeployError(
            f"{flag} {raw!r} has no file extension (a directory?); pass a file path such as "
            f"{str(path / 'report.json')!r}"
        )
    resolved = path.resolve()
    if any(resolved == source.resolve() for source in inputs):
        raise ObertDeployError(f"{flag} {raw!r} is also an input; pass another file")
    if path.exists() and not overwrite:
        raise ObertDeployError(
            f"{flag} {raw!r} already exists; pass --overwrite to replace it, or another path"
        )
    _probe_writable(_existing_ancestor(path), flag, raw)


def check_outputs(
    outputs: Sequence[OutputSpec],
    *,
    inputs: Sequence[str | os.PathLike[str]] = (),
    overwrite: bool = False,
) -> None:
    """Check requested output files before any work, so that a run never fails at its end.

    Each path must be a file path (not an existing directory) with the required suffix (or any
    extension when ``None``), differ from every input and every other output, sit in a writable
    directory, and not exist unless ``overwrite`` (nothing the tool did not write is replaced
    silently). Nothing is created.

    Args:
        outputs: ``(option name, path, suffix)`` per output; ``None`` paths are skipped.
        inputs: Files the command reads.
        overwrite: Allow replacing existing files.

    Raises:
        ObertDeployError: The first bad output; the message names the option and the value.
    """
    sources = [Path(p) for p in inputs]
    seen: dict[Path, str] = {}
    for flag, value, suffix in outputs:
        if value is None:
            continue
        path = Path(value)
        _check_one(flag, path, suffix, sources, overwrite)
        resolved = path.resolve()
        if resolved in seen:
            raise ObertDeployError(
                f"{flag} and {seen[resolved]} are the same file {os.fspath(path)!r}; pass "
                "different paths"
            )
        seen[resolved] = flag
