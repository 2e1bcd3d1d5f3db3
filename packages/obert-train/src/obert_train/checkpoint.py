"""Sparse checkpoints: standard Hugging Face folders written atomically, plus a sparsity report.

A pruned checkpoint is a plain ``save_pretrained`` folder (safetensors; pruned weights are stored
as zeros) that ``from_pretrained`` loads without this package, plus ``recipe.yaml`` (the settings
that produced it) and ``sparsity.json`` (per-tensor and global sparsity of the target tensors).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from obert_core.shared import atomic_write_text, disk_full_errors, is_disk_full, no_space_error
from obert_train._validate import check_path, check_str_sequence
from obert_train.errors import OutputDirError
from obert_train.pruning.targets import resolve_target_params

__all__ = [
    "atomic_directory",
    "atomic_write_text",
    "check_output_dir",
    "json_text",
    "save_checkpoint",
    "save_into",
    "sparsity_report",
]


def _umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def json_text(value: Any, *, indent: int | None = 2) -> str:
    """Valid JSON (RFC 8259) for ``value``: NaN and infinities become ``null``.

    Python's ``json.dumps`` writes bare ``NaN``, which JSON readers reject; a log of a loss that
    went non-finite must still be readable.
    """
    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def check_output_dir(path: str | os.PathLike[str], option: str = "--output-dir") -> Path:
    """Check, without writing anything, that ``path`` is or can become a writable folder.

    Run before any long stage, so a bad folder fails in a second, not after the work.

    Returns:
        The path.

    Raises:
        OutputDirError: If ``path`` is a file, lies under a file, or the folder (or its nearest
            existing parent) is not writable.
    """
    check_path(path, "path", "check_output_dir")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"{option} {str(out)!r} exists and is not a folder; give a folder")
    existing = out.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputDirError(
            f"{option} {str(out)!r} cannot be created: {str(existing)!r} is a file"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(
            f"{option} {str(out)!r} is not writable ({str(existing)!r} does not allow writing); "
            "choose another folder"
        )
    return out


@contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling folder that replaces ``path`` only if the block succeeds.

    On success an existing ``path`` is moved aside, the new folder renamed into place and the
    old one deleted; on failure the temporary folder is removed and ``path`` is untouched.  The
    folder gets the mode a plain ``mkdir`` would give (``0o777`` minus the umask), not
    ``mkdtemp``'s private ``0o700``.

    Args:
        path: Destination folder; its parent is created if needed.

    Yields:
        The temporary folder to fill.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.chmod(0o777 & ~_umask())
    old = None
    try:
        if target.exists():
            old = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
            )
            target.replace(old / "previous")
        tmp.replace(target)
    except OSError as exc:
        if old is not None and (old / "previous").exists() and not target.exists():
            with contextlib.suppress(OSError):  # put the earlier folder back
                (old / "previous").replace(target)
                shutil.rmtree(old, ignore_errors=True)
        raise OutputDirError(
            f"could not move the finished result into {str(target)!r} ({exc.strerror or exc}); "
            f"it is complete in {str(tmp)!r}: move that folder there by hand"
        ) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def sparsity_report(
    model: torch.nn.Module, patterns: Sequence[str] | None = None
) -> dict[str, Any]:
    """Per-tensor and global sparsity (fraction of exact zeros) of the target tensors.

    Args:
        model: The model.
        patterns: Target patterns (default: BERT encoder Linear weights).

    Returns:
        ``{"global": {"numel", "zeros", "sparsity"}, "tensors": {name: {...}}}``.
    """
    check_str_sequence(patterns, "patterns", "sparsity_report")
    params = resolve_target_params(model, patterns)
    tensors: dict[str, dict[str, float | int]] = {}
    total = zeros = 0
    for name, param in params.items():
        n, z = param.numel(), int((param.detach() == 0).sum())
        tensors[name] = {"numel": n, "zeros": z, "sparsity": z / n}
        total, zeros = total + n, zeros + z
    return {
        "global": {"numel": total, "zeros": zeros, "sparsity": zeros / total},
        "tensors": tensors,
    }


def _recipe_text(recipe: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(recipe), sort_keys=False)


_STALE_PATTERNS = (
    "structure.json",
    "drop_layers.json",
    "shrink.json",
    "recipe.yaml",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*-of-*.safetensors",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
)
"""Files of an earlier :func:`save_checkpoint` that a new save into the same folder may not
write again (another method's report, another sharding); removed then, so the folder never
mixes two checkpoints: an earlier single ``model.safetensors`` beside new shards would be the
file ``from_pretrained`` loads (the old weights), and an earlier ``recipe.yaml`` would describe a
model the folder no longer holds.  Only in a folder that holds this function's ``sparsity.json``."""


def save_checkpoint(
    model: Any,
    output_dir: str | os.PathLike[str],
    *,
    tokenizer: Any = None,
    recipe: Mapping[str, Any] | None = None,
    patterns: Sequence[str] | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Save ``model`` as a standard HF checkpoint folder, atomically.

    The output-folder policy (``docs/train.md``, "Output folders"): a new folder is built
    beside its place and renamed into it as a whole; into an existing folder the checkpoint's
    files are moved one by one (:func:`save_into`), replacing files of the same name.  In a
    folder that holds an earlier save's ``sparsity.json``, that save's files the new one does
    not write again (``structure.json``, ``drop_layers.json``, ``recipe.yaml``,
    ``model.safetensors``, weight shards ``model-*-of-*.safetensors`` with their index,
    ``pytorch_model*.bin`` with its index: ``_STALE_PATTERNS``) are deleted; every other file
    and sub-folder there (notes, a lock, ``checkpoint-*``) is left as it was.  An existing
    regular file is refused, never replaced.

    Args:
        model: A ``transformers`` ``PreTrainedModel``.
        output_dir: Destination folder (created if missing; other contents are kept, except
            an earlier save's stale files, above).
        tokenizer: Saved next to the weights if given.
        recipe: Settings that produced the model, written to ``recipe.yaml``.
        patterns: Target patterns for ``sparsity.json``.
        extra_files: ``{file name: text}`` written into the folder as well.

    Returns:
        The sparsity report written to ``sparsity.json``.

    Raises:
        OutputDirError: If ``output_dir`` is an existing file (or lies under one), or is not
            writable.
    """
    check_path(output_dir, "output_dir", "save_checkpoint")
    check_str_sequence(patterns, "patterns", "save_checkpoint")
    target = check_output_dir(output_dir, "save_checkpoint: output_dir")
    if target.is_dir():  # an existing folder stays (its other files, its lock, its mode)
        recipe_file = {} if recipe is None else {"recipe.yaml": _recipe_text(recipe)}
        earlier = (target / "sparsity.json").is_file()  # a checkpoint this function wrote
        before = [p.name for p in target.iterdir() if p.is_file()]
        written: list[str] = []
        report = save_into(
            model,
            target,
            tokenizer=tokenizer,
            patterns=patterns,
            extra_files={**recipe_file, **(extra_files or {})},
            written=written,
        )
        stale = [
            name
            for name in before
            if earlier
            and name not in written
            and any(fnmatch.fnmatch(name, pattern) for pattern in _STALE_PATTERNS)
        ]
        for name in stale:
            (target / name).unlink(missing_ok=True)
        return report
    report = sparsity_report(model, patterns)
    with atomic_directory(output_dir) as tmp, disk_full_errors(target):
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if recipe is not None:
            (tmp / "recipe.yaml").write_text(_recipe_text(recipe), encoding="utf-8")
        (tmp / "sparsity.json").write_text(json_text(report) + "\n", encoding="utf-8")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return report


def save_into(
    model: Any,
    output_dir: str | os.PathLike[str],
    *,
    tokenizer: Any = None,
    patterns: Sequence[str] | None = None,
    extra_files: Mapping[str, str] | None = None,
    written: list[str] | None = None,
) -> dict[str, Any]:
    """Save ``model`` as a standard HF checkpoint into an existing run folder, file by file.

    The folder is not replaced (it holds the run's ``checkpoint-*`` folders and logs, or a
    user's files next to a checkpoint): everything is written into a hidden temporary folder
    inside it first, then each file is moved into place with ``os.replace`` (atomic per file);
    ``sparsity.json`` and ``extra_files`` move last.

    Args:
        model: A ``transformers`` ``PreTrainedModel``.
        output_dir: The run folder (created if needed).
        tokenizer: Saved next to the weights if given.
        patterns: Target patterns for ``sparsity.json``.
        extra_files: ``{file name: text}`` written as well.
        written: If given, receives the name of every file moved into the folder.

    Returns:
        The sparsity report written to ``sparsity.json``.
    """
    target = Path(output_dir)
    target.mkdir(parents=True, exist_ok=True)
    report = sparsity_report(model, patterns)
    tmp = Path(tempfile.mkdtemp(prefix=".final.", suffix=".tmp", dir=target))
    try:
        with disk_full_errors(target):
            model.save_pretrained(tmp, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            last = {"sparsity.json": json_text(report) + "\n", **(extra_files or {})}
            for name, text in last.items():
                (tmp / name).write_text(text, encoding="utf-8")
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise OutputDirError(
                f"{no_space_error(target).strerror}, then run again with --resume"
            ) from None
        raise OutputDirError(
            f"writing the final model into {str(target)!r} failed ({exc.strerror or exc}); "
            "free space or choose another --output-dir, then run again with --resume"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    mode = 0o666 & ~_umask()
    order = sorted(p for p in tmp.iterdir() if p.name not in last)
    order += [tmp / name for name in last]
    try:
        for path in order:
            if path.is_dir():
                dest = target / path.name
                if dest.exists():
                    shutil.rmtree(dest)
                path.replace(dest)
                continue
            path.chmod(mode)
            path.replace(target / path.name)
            if written is not None:
                written.append(path.name)
    except OSError as exc:
        raise OutputDirError(
            f"could not move the final model into {str(target)!r} ({exc.strerror or exc}); the "
            f"files not yet moved are complete in {str(tmp)!r}: move them there by hand"
        ) from None
    shutil.rmtree(tmp, ignore_errors=True)
    return report
