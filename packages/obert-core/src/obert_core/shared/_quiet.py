"""Third-party noise that says nothing about a run, silenced once for every command line.

Loading a model prints lines that are not the user's business: transformers imports torchao
when it is installed (obert-deploy's QAT), which on a CPU-only machine logs "Failed to load
...so" per CUDA kernel library and "Detected no triton", and registers Enum constants torch
calls deprecated; the ONNX exporter logs each torchvision operator it skips when torchvision is
absent; transformers logs a load report (missing/unexpected keys) the commands check
themselves. ``obert-train``, ``obert-deploy`` and ``obert`` call :func:`quiet_third_party` at
their entry, so a user sees the command's own lines first. Errors still show.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

__all__ = ["NOISY_LOGGERS", "quiet_third_party"]

#: Loggers whose warnings are set to ERROR (importing the library is not needed for that).
NOISY_LOGGERS: tuple[str, ...] = (
    "torchao",
    "torch.utils._pytree",
    "torch.onnx._internal.exporter._registration",
    "torch.onnx._internal.exporter._core",
    "torch._export",
    "onnxscript",
    "transformers",
)

_NOISY_MODULES = r"(torch|torchao|transformers|onnxscript|onnx|huggingface_hub|pydantic)(\..*)?"


def quiet_third_party(*, verbose: bool = False) -> None:
    """Silence third-party warnings and load reports (nothing when ``verbose``).

    Sets :data:`NOISY_LOGGERS` to ``ERROR``, ignores ``DeprecationWarning``/``FutureWarning``
    (and torch's ``UserWarning``) raised from those libraries' modules, and makes transformers
    log errors only (``TRANSFORMERS_VERBOSITY=error`` unless the user set it). Pure Python:
    nothing is imported, so a command's ``--help`` stays fast.

    Args:
        verbose: The command's ``--verbose``: keep every message.
    """
    if verbose:
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=_NOISY_MODULES)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|torchao)(\..*)?")
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None:  # already imported: its level was read from the environment
        hf_logging.set_verbosity_error()
