"""Load a Hugging Face checkpoint (local directory or Hub id) for one task, with clear errors."""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import CheckpointError, MissingDependencyError, brief
from .._validate import check_path, check_type
from ._tasks import get_task

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "EXPORT_INSTALL_HINT",
    "LoadedCheckpoint",
    "load_checkpoint",
    "load_tokenizer",
    "require",
]

#: How to install what ``export``, ``evaluate``, static ``quantize`` and ``qat`` need.
EXPORT_INSTALL_HINT = "pip install 'obert-deploy[export]' torch==2.13.0"

_LOG = logging.getLogger(__name__)
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model")


@dataclass
class LoadedCheckpoint:
    """A model loaded for one task, plus what the loader had to initialise from scratch.

    Attributes:
        model: The model in eval mode.
        task: Task name it was loaded for.
        source: The directory or Hub id it came from.
        missing_keys: Parameters absent from the checkpoint and newly initialised (for example
            the classifier head of a pretrained-only model). Non-empty means task outputs are
            not meaningful, although latency and size are.
    """

    model: PreTrainedModel
    task: str
    source: str
    missing_keys: tuple[str, ...]


def require(feature: str, *modules: str) -> None:
    """Import ``modules`` (default: torch and transformers) or explain how to install them.

    The base install of obert-deploy is torch-free; this turns the bare ``ModuleNotFoundError``
    of a missing optional dependency into an actionable error.

    Args:
        feature: What needs the modules, for the message (e.g. ``"export"``).
        *modules: Top-level module names; default ``("torch", "transformers")``.

    Raises:
        MissingDependencyError: A module cannot be imported; the message names it and gives
            the install command.
    """
    for module in modules or ("torch", "transformers"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingDependencyError(
                f"{feature} needs {module!r}, which is not installed in this Python environment "
                f"({exc}); install it with `{EXPORT_INSTALL_HINT}`"
            ) from exc


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~", os.sep))


def _check_local_dir(path: Path) -> None:
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint {str(path)!r} is a file, not a directory; pass the directory that "
            "save_pretrained() wrote (it holds config.json and the weights)"
        )
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"checkpoint directory {str(path)!r} has no config.json; pass the directory that "
            "save_pretrained() wrote"
        )
    if not any((path / name).is_file() for name in _WEIGHT_FILES):
        raise CheckpointError(
            f"checkpoint directory {str(path)!r} has no weights (looked for "
            f"{', '.join(_WEIGHT_FILES)}); save the model with model.save_pretrained()"
        )


def _resolve_source(checkpoint: str | os.PathLike[str]) -> str:
    path = Path(checkpoint).expanduser()
    if path.exists():
        _check_local_dir(path)
        return str(path)
    name = os.fspath(checkpoint)
    if _looks_like_hub_id(name) and not Path(name.split("/")[0]).expanduser().is_dir():
        return name
    raise CheckpointError(
        f"checkpoint {name!r} does not exist; pass a directory written by save_pretrained() "
        "or a Hugging Face Hub id such as 'org/model'"
    )


def load_checkpoint(
    checkpoint: str | os.PathLike[str],
    task: str,
    *,
    attn_implementation: str = "eager",
) -> LoadedCheckpoint:
    """Load ``checkpoint`` with the ``transformers`` auto class of ``task``, in eval mode.

    Args:
        checkpoint: Local directory written by ``save_pretrained`` or a Hub id (downloaded by
            ``transformers`` when the network allows it).
        task: One of :data:`obert_deploy.TASKS`.
        attn_implementation: Attention kernel. ``"eager"`` (default) gives a plain
            MatMul/Softmax ONNX graph, which every engine handles; transformers 5 defaults to
            SDPA, which the TorchScript exporter cannot export below opset 14.

    Returns:
        The loaded model with the list of newly initialised parameters.

    Raises:
        UnsupportedTaskError: Unknown ``task``.
        CheckpointError: Missing, incomplete or unreadable checkpoint.
        MissingDependencyError: PyTorch or Transformers is not installed.
    """
    check_path(checkpoint, "checkpoint", "load_checkpoint")
    check_type(task, "task", "load_checkpoint", "str")
    spec = get_task(task)
    source = _resolve_source(checkpoint)
    require("loading a checkpoint")
    import transformers

    from ._pruned_heads import from_pretrained_with_pruned_heads

    auto_class: Any = getattr(transformers, spec.auto_class)
    try:
        # Like from_pretrained, and also for heads config.pruned_heads says are absent.
        model, info = from_pretrained_with_pruned_heads(
            auto_class, source, attn_implementation=attn_implementation
        )
    except CheckpointError:
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, SafetensorError, ...
        raise CheckpointError(
            f"could not load checkpoint {source!r} for task {task!r} "
            f"({brief(exc)}); check that the directory is complete and was "
            "written by save_pretrained(), and that the task matches the model"
        ) from exc
    missing = tuple(sorted(info.get("missing_keys", ())))
    if missing:
        _LOG.warning(
            "checkpoint %s has no weights for %s (newly initialised): outputs of this task are "
            "random, latency and size are still meaningful",
            source,
            ", ".join(missing),
        )
    model.eval()
    return LoadedCheckpoint(model=model, task=task, source=source, missing_keys=missing)


def load_tokenizer(checkpoint: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """Load the tokenizer saved next to a checkpoint.

    Args:
        checkpoint: Checkpoint directory (or Hub id) whose tokenizer files to load.

    Returns:
        The ``transformers`` tokenizer (fast when available).

    Raises:
        CheckpointError: No tokenizer files, or they cannot be read.
        MissingDependencyError: Transformers is not installed.
    """
    path = Path(checkpoint).expanduser()
    if path.is_file():
        raise CheckpointError(
            f"tokenizer {str(path)!r} is a file, not a directory; pass the directory that "
            "tokenizer.save_pretrained() wrote (usually the checkpoint directory)"
        )
    # A tokenizer-only directory is fine: no config.json or weights needed here.
    source = str(path) if path.is_dir() else _resolve_source(checkpoint)
    if path.is_dir() and not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise CheckpointError(
            f"directory {source!r} has no tokenizer files ({', '.join(_TOKENIZER_FILES)}); save "
            "it with tokenizer.save_pretrained() into that directory or pass --tokenizer DIR"
        )
    require("loading a tokenizer", "transformers")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise CheckpointError(
            f"could not load the tokenizer of {source!r} ({brief(exc)}); re-save it with "
            "tokenizer.save_pretrained()"
        ) from exc


def load_image_processor(checkpoint: str | os.PathLike[str]) -> Any:
    """Load the image processor saved next to an image-classification checkpoint.

    Args:
        checkpoint: Directory holding ``preprocessor_config.json`` (what
            ``image_processor.save_pretrained()`` writes; usually the checkpoint directory).

    Returns:
        The ``transformers`` image processor (``ViTImageProcessor`` for ViT/DeiT).

    Raises:
        CheckpointError: No ``preprocessor_config.json``, or it cannot be read.
        MissingDependencyError: Transformers is not installed.
    """
    path = Path(checkpoint).expanduser()
    if not (path / "preprocessor_config.json").is_file():
        raise CheckpointError(
            f"{str(path)!r} has no preprocessor_config.json; save the model's image processor "
            "there with image_processor.save_pretrained() or pass its folder with --tokenizer"
        )
    require("loading an image processor", "transformers")
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(str(path))
    except Exception as exc:
        raise CheckpointError(
            f"could not load the image processor of {str(path)!r} ({brief(exc)}); re-save it "
            "with image_processor.save_pretrained()"
        ) from exc
