"""An output folder must not be, contain or lie inside an input (``docs/train.md``, outputs).

The output-folder policy of every tool that writes a folder (``obert-train run | oneshot |
drop-layers``, ``obert quickstart``): writing, and even more ``--overwrite``, into a folder that
holds the model, the teacher, the data or the recipe would replace or mix them, so such an
invocation is refused before any work.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from obert_core._errors import ObertError

__all__ = ["OutputOverlapError", "check_output_not_input"]


class OutputOverlapError(ObertError):
    """The output folder is (or contains, or lies inside) one of the invocation's inputs.

    An :class:`~obert_core.ObertError`, hence a ``ValueError`` (a bad argument).
    """


def _resolved(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser().resolve()


def check_output_not_input(
    output: str | os.PathLike[str],
    inputs: Mapping[str, str | os.PathLike[str] | None],
    *,
    option: str = "--output-dir",
) -> None:
    """Refuse an output folder that is, contains or lies inside a local input.

    Inputs that are not local paths (a hub id such as ``bert-base-uncased``, None) are skipped;
    symbolic links are followed, so a link to the model folder is the model folder.

    Args:
        output: The output folder (need not exist).
        inputs: What each input is, with the option that named it (``"model's folder
            (--model)"``, ``"data (--data-dir)"``) → its path.
        option: The option that named the output folder, for the message.

    Raises:
        OutputOverlapError: Naming both options and paths, and what to do.
    """
    out = _resolved(output)
    for name, value in inputs.items():
        if value is None or str(value) == "":
            continue
        try:  # a hub id, or recipe YAML text, is no local path (or too long a name for one)
            source = Path(value).expanduser()
            if not source.exists():
                continue
            src = source.resolve()
        except (OSError, ValueError):
            continue
        if out == src:
            how = "is"
        elif src.is_relative_to(out):
            how = "contains"
        elif out.is_relative_to(src):
            how = "is inside"
        else:
            continue
        raise OutputOverlapError(
            f"{option} {str(output)!r} {how} the input {name} {str(value)!r}; writing there "
            "would replace or mix the input's files: choose a folder outside every input"
        )
