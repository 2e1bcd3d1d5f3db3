"""Helpers shared by the commands: error reporting, torchrun, model loading, ``--set`` parsing."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
import typer
import yaml
from pydantic import ValidationError

from obert_train.errors import ObertTrainError
from obert_train.fisher.distributed import DistContext

__all__ = [
    "USER_ERRORS",
    "check_model_source",
    "fail",
    "init_distributed",
    "load_model",
    "parse_sets",
]

USER_ERRORS = (ObertTrainError, ValidationError, ValueError, OSError)
"""Errors shown as one ``error: ...`` line (exit code 2) instead of a traceback."""


def fail(exc: BaseException) -> typer.Exit:
    """Print ``error: <message>`` in red on stderr; the caller raises the returned Exit(2)."""
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def init_distributed() -> DistContext:
    """Join the torchrun process group when launched by torchrun (gloo: the model stays on CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="gloo")
    return DistContext.current()


def check_model_source(name_or_path: str, option: str = "--model") -> None:
    """A value that looks like a path must be an existing folder (else: hub id, checked online).

    Raises:
        ObertTrainError: Naming the option and the missing folder.
    """
    looks_like_path = name_or_path.startswith((".", "/", "~")) or os.sep in name_or_path.strip("/")
    path = Path(name_or_path).expanduser()
    if looks_like_path and not path.exists() and name_or_path.count("/") != 1:
        raise ObertTrainError(
            f"{option} {name_or_path!r}: no such model folder; give a folder with config.json "
            "and weights, or a hub id such as 'bert-base-uncased'"
        )
    if path.is_dir() and not (path / "config.json").is_file():
        raise ObertTrainError(
            f"{option} {name_or_path!r} is a folder without config.json; point it at a saved "
            "Hugging Face model (save_pretrained output)"
        )


def load_model(the_task: Any, name_or_path: str, seed: int, *, warn: bool) -> Any:
    """Load the task model with torch seeded, so a newly initialised head is the same each time.

    With ``warn``, names the weights that were not in the checkpoint (newly initialised).
    """
    torch.manual_seed(seed)
    try:
        loaded = cast(Any, the_task.load_model(name_or_path, output_loading_info=True))
    except RuntimeError as exc:
        if "mismatched" not in str(exc):
            raise
        labels = getattr(the_task, "num_labels", None)
        need = f" ({labels} labels)" if labels is not None else ""
        raise ObertTrainError(
            f"the head of {name_or_path} does not fit task {the_task.name!r}{need}: its weights "
            "have other shapes; start from a model without that head (a base checkpoint) or one "
            "fine-tuned on the same labels"
        ) from None
    model, info = loaded if isinstance(loaded, tuple) else (loaded, {})
    missing = sorted(info.get("missing_keys", []))
    if missing and warn:
        shown = ", ".join(missing[:6]) + (
            f", ... ({len(missing)} in all)" if len(missing) > 6 else ""
        )
        typer.secho(
            f"warning: {name_or_path} has no weights for {shown}; they are newly initialised "
            f"(seeded with --seed {seed}), so the task head is untrained unless the recipe "
            "trains it",
            fg=typer.colors.YELLOW,
            err=True,
        )
    return model


def parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    """``["final_sparsity=0.9", "damp=1e-6"]`` -> ``{"final_sparsity": 0.9, "damp": 1e-6}``.

    Values are read as YAML scalars (numbers, booleans, lists).

    Raises:
        ValueError: If an item has no ``=``.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set final_sparsity=0.9")
        parsed = yaml.safe_load(value) if value.strip() else ""
        if isinstance(parsed, str):
            with contextlib.suppress(ValueError):
                parsed = float(parsed)
        out[key.strip()] = parsed
    return out
