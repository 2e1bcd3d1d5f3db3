"""Exceptions raised by obert-deploy.

Every error names the offending value and says how to fix it. All of them derive from the one
root :class:`ObertDeployError`, so callers can catch one type; the library raises no bare
``ValueError`` or ``TypeError`` for a user's mistake. The root is a :class:`ValueError` (code
written as ``except ValueError`` keeps working), and the missing-dependency errors
(:class:`MissingDependencyError`, :class:`EngineNotInstalledError`) are also
:class:`ImportError` subclasses, as in obert-core and obert-train.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "CheckpointError",
    "EngineNotInstalledError",
    "MissingDependencyError",
    "ObertDeployError",
    "OnnxModelError",
    "ShapeMismatchError",
    "UnsupportedTaskError",
    "VerificationError",
    "brief",
]

_BRIEF_LIMIT = 300


class ObertDeployError(ValueError):
    """Base class of all obert-deploy errors (bad input, a failed check, a missing dependency)."""


class ArgumentError(ObertDeployError, TypeError):
    """A public function or config got an argument of the wrong type (``seq_len="128"``).

    Also a ``TypeError``: a mistake in the calling code; the message names the function or
    config, the argument and the value.
    """


class CheckpointError(ObertDeployError):
    """A Hugging Face checkpoint directory is missing, incomplete or unreadable."""


class OnnxModelError(ObertDeployError):
    """An ONNX file is missing, corrupt, or not usable by the requested engine."""


class UnsupportedTaskError(ObertDeployError):
    """The requested task name is not one obert-deploy knows how to export or evaluate."""


class MissingDependencyError(ObertDeployError, ImportError):
    """An optional dependency (PyTorch, Transformers, onnxscript, torchao) is not installed."""


class EngineNotInstalledError(MissingDependencyError):
    """The requested inference engine is not importable in this Python environment."""


class ShapeMismatchError(ObertDeployError):
    """The requested batch size / sequence length does not fit the model's static input shape."""


class VerificationError(ObertDeployError):
    """An exported model failed its post-export check (output parity or sparsity survival)."""


def brief(exc: BaseException, limit: int = _BRIEF_LIMIT) -> str:
    """``"Type: message"`` of a foreign exception on one line, cut to ``limit`` characters.

    Third-party errors (transformers, protobuf, ONNX Runtime) can span many lines or quote whole
    files; our messages embed them as a short cause inside one line.
    """
    text = " ".join(str(exc).split()) or "no message"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}"
