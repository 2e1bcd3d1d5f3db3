"""Loading the model and tokenizer a command names, with one-line errors for bad folders and ids."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import typer

from obert_train._validate import check_str
from obert_train.errors import ModelError, ObertTrainError

__all__ = ["check_model_source", "load_model", "load_tokenizer"]

_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "spm.model",
    "sentencepiece.model",
    "tiktoken.model",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def check_model_source(name_or_path: str, option: str = "--model", *, images: bool = False) -> None:
    """Check, before anything is loaded, that a model argument can name a model.

    A local model folder must hold a config and a tokenizer (an image model: its image
    processor's ``preprocessor_config.json``); anything else must look like a hub id (a
    path-like value that does not exist is a typo, not sent to the hub).

    Args:
        name_or_path: The model folder or hub id.
        option: How messages name the argument (``--model``, ``--teacher``).
        images: An image model (task ``image-classification``).

    Raises:
        ModelError: Naming the option, the value and what is missing.
    """
    check_str(name_or_path, "name_or_path", "check_model_source")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{option} {name_or_path!r} is a folder without config.json; point it at a "
                "saved Hugging Face model (save_pretrained output)"
            )
        if images:
            if not (path / "preprocessor_config.json").is_file():
                raise ModelError(
                    f"{option} {name_or_path!r} has no preprocessor_config.json (the image "
                    "processor); save it into the folder (image_processor.save_pretrained)"
                )
            return
        if not any((path / name).is_file() for name in _TOKENIZER_FILES):
            raise ModelError(
                f"{option} {name_or_path!r} has no usable tokenizer (none of "
                f"{', '.join(_TOKENIZER_FILES[:3])}, ...); save the tokenizer into the folder "
                "(tokenizer.save_pretrained) or copy it from the model you started from"
            )
        return
    if path.exists():
        raise ModelError(f"{option} {name_or_path!r} is a file; give the model's folder")
    looks_like_path = (
        name_or_path.startswith((".", "/", "~"))
        or name_or_path.count("/") > 1
        or (name_or_path.count("/") == 1 and path.parent.is_dir())  # 'runs/typo': not a hub id
    )
    if looks_like_path:
        raise ModelError(
            f"{option} {name_or_path!r}: no such model folder; give a folder with config.json "
            "and weights, or a hub id such as 'bert-base-uncased'"
        )
    if not _HUB_ID.match(name_or_path):
        raise ModelError(
            f"{option} {name_or_path!r} is neither a model folder nor a valid hub id (ids look "
            "like 'bert-base-uncased' or 'org/name'); check the path"
        )


def _load_error(exc: BaseException, name: str, option: str) -> ModelError | None:
    """A one-line error for the ways ``from_pretrained`` fails on a bad folder or id."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "safetensor" in type(exc).__name__.lower() or "header" in text.lower():
        return ModelError(
            f"{option} {name!r}: model.safetensors cannot be read ({text}); the file is corrupt "
            "or truncated: save or download the model again"
        )
    if "no file named" in text:
        return ModelError(
            f"{option} {name!r} has no model weights (model.safetensors or pytorch_model.bin); "
            "save the model with save_pretrained"
        )
    if isinstance(exc, OSError | ValueError):
        return ModelError(f"{option} {name!r} cannot be loaded: {text}")
    return None


def load_tokenizer(name_or_path: str, option: str = "--model") -> Any:
    """The tokenizer of a model folder or hub id (``AutoTokenizer.from_pretrained``).

    Args:
        name_or_path: The model folder or hub id.
        option: How messages name the argument.

    Returns:
        The tokenizer.

    Raises:
        ModelError: If the tokenizer cannot be loaded.
    """
    check_str(name_or_path, "name_or_path", "load_tokenizer")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except Exception as exc:
        error = _load_error(exc, name_or_path, option)
        if error is None:
            raise
        raise ModelError(
            f"{option} {name_or_path!r}: no usable tokenizer ({str(error).split(': ', 1)[-1]})"
        ) from None


def load_preprocessor(name_or_path: str, task: str, option: str = "--model") -> Any:
    """The tokenizer of a model, or its image processor for task ``image-classification``.

    Raises:
        ModelError: If it cannot be loaded.
    """
    if task != "image-classification":
        return load_tokenizer(name_or_path, option)
    check_str(name_or_path, "name_or_path", "load_preprocessor")
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(name_or_path)
    except Exception as exc:
        error = _load_error(exc, name_or_path, option)
        if error is None:
            raise
        raise ModelError(
            f"{option} {name_or_path!r}: no usable image processor "
            f"({str(error).split(': ', 1)[-1]})"
        ) from None


def load_model(
    the_task: Any, name_or_path: str, seed: int, *, warn: bool, option: str = "--model"
) -> Any:
    """Load the task's model with torch seeded, so a newly initialised head is the same each time.

    Args:
        the_task: The task (:class:`~obert_train.Task`): its ``load_model`` picks the head.
        name_or_path: The model folder or hub id.
        seed: Seed of torch before loading (the weights of a new head).
        warn: Print a warning on stderr naming the weights that were not in the checkpoint
            (newly initialised).
        option: How messages name the argument.

    Returns:
        The model.

    Raises:
        ModelError: If the head does not fit the task, or the weights cannot be read.
    """
    import torch

    torch.manual_seed(seed)
    try:
        loaded = cast(Any, the_task.load_model(name_or_path, output_loading_info=True))
    except ObertTrainError:
        raise
    except Exception as exc:
        if "mismatched" in str(exc):
            labels = getattr(the_task, "num_labels", None)
            need = f" ({labels} labels)" if labels is not None else ""
            raise ModelError(
                f"the head of {name_or_path} does not fit task {the_task.name!r}{need}: its "
                "weights have other shapes; start from a model without that head (a base "
                "checkpoint) or one fine-tuned on the same labels"
            ) from None
        error = _load_error(exc, name_or_path, option)
        if error is None:
            raise
        raise error from None
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
