"""A full disk, however a writer reports it, as one ``OSError`` naming the folder.

Python's own writes raise ``OSError(ENOSPC)``, but ``torch.save`` reports a full disk as a
``RuntimeError`` (``PytorchStreamWriter failed writing file ...: unexpected pos ...``) and
safetensors as a ``SafetensorError`` ("No space left on device"). :func:`disk_full_errors`
turns each into ``OSError(ENOSPC, "no space left on device in DIR; ...")``, which the command
lines print as one ``error:`` line (``docs/architecture.md``, the errors rule).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

__all__ = ["disk_full_errors", "is_disk_full", "no_space_error"]

#: What a writer that does not raise ``OSError(ENOSPC)`` says when the disk is full.
_FULL_DISK_TEXTS = ("no space left on device", "unexpected pos", "disk quota exceeded")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) reports a full disk or quota."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(current).lower()
        if any(part in text for part in _FULL_DISK_TEXTS):
            return True
        current = current.__cause__ or current.__context__
    return False


def no_space_error(directory: str | os.PathLike[str]) -> OSError:
    """``OSError(ENOSPC)`` whose message names ``directory`` and what to do."""
    return OSError(
        errno.ENOSPC,
        f"no space left on device in {os.fspath(directory)}; nothing half-written was kept. "
        "Free some space there (or choose another output folder) and run again",
    )


@contextlib.contextmanager
def disk_full_errors(directory: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise a full-disk error of the block as :func:`no_space_error` of ``directory``.

    Any other exception passes through unchanged.  The caller removes what the block left
    half-written (the atomic writers of this package already do).
    """
    try:
        yield
    except Exception as exc:
        if is_disk_full(exc):
            raise no_space_error(directory) from exc
        raise
