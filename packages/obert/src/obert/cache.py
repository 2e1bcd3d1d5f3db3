"""Stages cached by their inputs, with atomic outputs.

Each stage of the pipeline writes into its own folder ``OUT/stages/<name>/``. The folder is
built under a hidden temporary name and renamed into place only after the stage finished, with
a ``stage.json`` that records the **key**: the SHA-256 of the canonical JSON of everything the
stage depends on (its options, the fingerprints of the model and data files, the recipe text,
the keys of the stages it reads, the package versions). A later run computes the key again and
reuses the folder when it matches; a changed input gives another key, and the stage (and every
stage downstream of it, whose key contains this one) runs again. An interrupted stage leaves
only its temporary folder, which the next run removes. A run holds an exclusive lock on the
stages folder (:meth:`StageCache.lock`), so a second run on the same folder is refused instead
of removing the first one's temporary folders.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obert.errors import PipelineInputError, StageError
from obert_core.shared import FolderInUseError, folder_lock, folder_lock_holder

__all__ = [
    "STAGE_FILE",
    "StageCache",
    "StageRecord",
    "canonical_json",
    "fingerprint_files",
    "fingerprint_path",
    "stage_key",
]

STAGE_FILE = "stage.json"
"""Written last into a finished stage folder: its key, inputs, outputs and timing."""
_FORMAT = 1
"""Version of the key's content (bumped when a stage's meaning changes)."""
_CHUNK = 1 << 20


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def stage_key(name: str, inputs: Mapping[str, Any]) -> str:
    """The key of stage ``name`` with these inputs (hex SHA-256)."""
    text = canonical_json({"format": _FORMAT, "stage": name, "inputs": dict(inputs)})
    return hashlib.sha256(text.encode()).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint_files(files: Iterable[Path]) -> str:
    """SHA-256 over the names, sizes and contents of ``files`` (in the given order)."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\0{file.stat().st_size}\0{_file_digest(file)}\n".encode())
    return digest.hexdigest()


def fingerprint_path(path: str | os.PathLike[str]) -> str:
    """Fingerprint of a file, or of every file under a folder (relative names included).

    A name that is not a local path (a hub id such as ``bert-base-uncased``) is its own
    fingerprint.
    """
    source = Path(path)
    if source.is_file():
        return fingerprint_files([source])
    if not source.is_dir():
        return f"name:{os.fspath(path)}"
    digest = hashlib.sha256()
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = file.relative_to(source).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        digest.update(f"{rel}\0{file.stat().st_size}\0{_file_digest(file)}\n".encode())
    return digest.hexdigest()


@dataclass
class StageRecord:
    """A finished stage.

    Attributes:
        name: Stage name (its folder under ``OUT/stages``).
        key: The key it was computed for.
        folder: Where its outputs are.
        outputs: What the stage returned (JSON; file names relative to :attr:`folder`).
        seconds: Wall time when it ran (the original run's time when reused).
        cached: True when this run reused it.
    """

    name: str
    key: str
    folder: Path
    outputs: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    cached: bool = False

    def path(self, name: str) -> Path:
        """The file ``outputs[name]`` (a name relative to the stage folder) as a path."""
        return self.folder / str(self.outputs[name])


class StageCache:
    """Runs stages into ``root/<name>/``, reusing a finished stage whose key matches.

    Args:
        root: Folder of the stage folders (``OUT/stages``).
        enabled: False runs every stage again (``--force``), still atomically.
        log: Receives one line per stage (reused or run).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        enabled: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self._log = log or (lambda _line: None)

    def folder(self, name: str) -> Path:
        """The folder of stage ``name``."""
        return self.root / name

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive ``flock`` on the stages folder (created if missing) for a run.

        The lock is on the folder itself (no lock file) and ends with the block, or with the
        process if it is killed, so a crashed run never leaves a stale lock.

        Raises:
            PipelineInputError: If another run (another process, or another lock in this one)
                holds it.
        """
        self.root.mkdir(parents=True, exist_ok=True)  # kept after the run (the cache lives there)
        held = contextlib.ExitStack()
        try:
            held.enter_context(folder_lock(self.root, tool="obert quickstart run"))
        except FolderInUseError as exc:
            pid = folder_lock_holder(self.root)
            holder = "" if pid is None else f" (PID {pid})"
            raise PipelineInputError(
                f"--output-dir {str(self.root.parent)!r} is in use: another obert "
                f"quickstart run{holder} holds the lock on {str(self.root)!r}; wait for it to "
                "finish, or choose another --output-dir"
            ) from exc
        with held:
            yield

    def lookup(self, name: str, key: str) -> StageRecord | None:
        """The finished stage ``name`` if its recorded key is ``key``, else None."""
        file = self.folder(name) / STAGE_FILE
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("key") != key:
            return None
        return StageRecord(
            name=name,
            key=key,
            folder=self.folder(name),
            outputs=dict(data.get("outputs", {})),
            seconds=float(data.get("seconds", 0.0)),
            cached=True,
        )

    def will_run(self, name: str, inputs: Mapping[str, Any]) -> bool:
        """Whether :meth:`run` would run the stage (no reusable result)."""
        return not self.enabled or self.lookup(name, stage_key(name, inputs)) is None

    def run(
        self,
        name: str,
        inputs: Mapping[str, Any],
        work: Callable[[Path], Mapping[str, Any]],
        *,
        resumable: bool = False,
    ) -> StageRecord:
        """Reuse stage ``name`` if finished with these inputs, else run ``work`` atomically.

        Args:
            name: Stage name.
            inputs: Everything the stage depends on (JSON-serialisable).
            work: Writes the stage's files into the folder it is given and returns its
                outputs (file names relative to that folder).
            resumable: The stage can continue from what an interrupted run of it left
                (a training stage's checkpoints): its temporary folder is named by the key
                and kept after Ctrl-C (or a kill), so the next run with the same inputs gives
                ``work`` that folder again instead of an empty one.

        Returns:
            The stage record.

        Raises:
            StageError: If the finished folder cannot be moved into place.
        """
        key = stage_key(name, inputs)
        if self.enabled:
            found = self.lookup(name, key)
            if found is not None:
                self._log(f"[{name}] reused (inputs unchanged, key {key[:12]})")
                return found
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.root / f".{name}.partial-{key[:16]}"
        for stale in self.root.glob(f".{name}.*"):  # an earlier run killed mid-stage
            if not (resumable and stale == partial):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = partial if resumable else self.root / f".{name}.tmp-{os.getpid()}"
        if resumable and tmp.is_dir():
            self._log(f"[{name}] continuing the interrupted run of this stage ({tmp.name})")
        tmp.mkdir(exist_ok=resumable)
        start = time.perf_counter()
        try:
            outputs = dict(work(tmp))
            seconds = time.perf_counter() - start
            record = {
                "key": key,
                "stage": name,
                "inputs": dict(inputs),
                "outputs": outputs,
                "seconds": seconds,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (tmp / STAGE_FILE).write_text(
                json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8"
            )
        except KeyboardInterrupt:
            if not resumable:  # a resumable stage keeps its checkpoints for the next run
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._commit(tmp, self.folder(name))
        return StageRecord(name, key, self.folder(name), outputs, seconds, cached=False)

    def _commit(self, tmp: Path, final: Path) -> None:
        old = self.root / f".{final.name}.old-{os.getpid()}"
        try:
            if final.exists():
                final.rename(old)
            tmp.rename(final)
        except OSError as exc:
            raise StageError(
                f"stage {final.name}: cannot move its finished output {str(tmp)!r} into "
                f"{str(final)!r} ({exc.strerror}); the result is in the first folder"
            ) from None
        shutil.rmtree(old, ignore_errors=True)
