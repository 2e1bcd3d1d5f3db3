"""One lock on an output folder, for every tool that writes one (``docs/architecture.md``).

``obert-train run | oneshot | drop-layers`` and ``obert quickstart`` hold an exclusive
``flock`` on their output folder while they write into it, so a second run into the same
folder is refused at once, naming the process that holds it, instead of mixing or replacing the
first run's files.  The lock is on the folder itself (no lock file is written into the user's
folder) and ends with the block, or with the process if it is killed: a crashed run never
leaves a stale lock.  The holder's PID is read from ``/proc/locks`` where the system has it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from obert_core._errors import ObertError

__all__ = ["FolderInUseError", "folder_lock", "folder_lock_holder"]


class FolderInUseError(ObertError, OSError):
    """Another process (or another lock in this one) holds the folder's lock.

    An :class:`~obert_core.ObertError` and also an ``OSError`` (the folder cannot be used now),
    so the command lines print it as one ``error:`` line.
    """


def folder_lock_holder(path: str | os.PathLike[str]) -> int | None:
    """The PID of the process holding a ``flock`` on ``path``, if the system says (Linux).

    Args:
        path: The locked folder.

    Returns:
        The PID, or None if unknown (no ``/proc/locks``, or no lock is held).
    """
    try:
        st = Path(path).stat()
        text = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in text.splitlines():
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 32540 fe:00:2197310 0 EOF" (blocked waiters have "->")
        if len(parts) >= 6 and parts[1] == "FLOCK" and "->" not in parts and parts[5] == wanted:
            with contextlib.suppress(ValueError):
                return int(parts[4])
    return None


@contextlib.contextmanager
def folder_lock(
    path: str | os.PathLike[str], *, option: str = "--output-dir", tool: str = "run"
) -> Iterator[Path]:
    """Hold an exclusive lock on folder ``path`` (created if missing) for the block.

    Call it only after every check of the invocation passed: it creates the folder (and
    removes it again at the end if it made it and nothing was written into it).

    Args:
        path: The output folder.
        option: The option that named it, for the message.
        tool: What the holder is, for the message (e.g. ``"obert-train run"``).

    Yields:
        The folder.

    Raises:
        FolderInUseError: If another process (or another lock in this one) holds it; the
            message names the holder's PID where the system tells it.
    """
    folder = Path(path)
    created: list[Path] = []  # folders made here, deepest first: removed again if left empty
    current = folder.absolute()
    while not current.exists() and current.parent != current:
        created.append(current)
        current = current.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    acquired = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            acquired = True
        except BlockingIOError:
            pid = folder_lock_holder(folder)
            holder = "another process" if pid is None else f"PID {pid}"
            if pid == os.getpid():
                holder = f"this process (PID {pid})"
            raise FolderInUseError(
                f"{option} {str(folder)!r} is in use by {holder} (another {tool} writing "
                "there); wait for it to finish, or choose another folder"
            ) from None
        yield folder
    finally:
        # A run that wrote nothing leaves no empty folder behind; a refused one removes
        # nothing (the holder may have created the folder and not written into it yet).
        for made in created if acquired else []:
            with contextlib.suppress(OSError):
                made.rmdir()
        os.close(fd)  # after the removal: no other process can take the lock in between
