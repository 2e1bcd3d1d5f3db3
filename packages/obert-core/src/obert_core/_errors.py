"""Exceptions raised by obert-core.

Every error names the offending value and says what to do about it.
"""

from __future__ import annotations

__all__ = ["BackendUnavailableError", "ObertError"]


class ObertError(ValueError):
    """Invalid input to an obert-core function (bad shape, value, option or combination)."""


class BackendUnavailableError(ImportError):
    """A requested backend needs an optional dependency that is not installed.

    The message carries the ``pip install`` command that fixes it.
    """
