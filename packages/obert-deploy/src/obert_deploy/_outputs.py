"""Output files checked before any work: a path a command will write, refused up front.

The writes themselves are atomic (:func:`obert_core.shared.atomic_output`), so a crash or a
failed check never leaves a half-written file at the requested path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ._errors import ObertDeployError

__all__ = ["OutputSpec", "check_outputs"]

#: ``(option name, path or None, required suffix or None)`` of one requested output file.
OutputSpec = tuple[str, str | os.PathLike[str] | None, str | None]


def _existing_ancestor(path: Path) -> Path:
    current = path.parent
    while not current.exists() and current.parent != current:
        current = current.parent
    return current


def _probe_writable(directory: Path, flag: str, raw: str) -> None:
    """Create and remove a temporary file in ``directory`` (the only way to be sure).

    The folder's modification time is put back afterwards: a refused invocation leaves its
    output folder exactly as it was (``docs/train.md``, "Output folders").
    """
    if not directory.is_dir():
        raise ObertDeployError(
            f"{flag} {raw!r}: {str(directory)!r} is a file, not a directory; pass a path in a "
            "directory"
        )
    times = directory.stat()
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".obert-deploy-probe-")
    except OSError as exc:
        raise ObertDeployError(
            f"{flag} {raw!r}: cannot write in {str(directory)!r} ({exc.strerror or exc}); pass a "
            "path in a writable directory"
        ) from None
    os.close(fd)
    Path(name).unlink()
    with contextlib.suppress(OSError):  # a folder the user does not own keeps the new time
        os.utime(directory, ns=(times.st_atime_ns, times.st_mtime_ns))


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
