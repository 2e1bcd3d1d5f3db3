"""Exceptions raised by obert-core: one root, :class:`ObertError`.

Every error names the offending value and says what to do about it.  ``except ObertError``
catches everything obert-core raises on purpose.

``ObertError`` is a ``ValueError``: almost every obert-core error is a bad argument (shape,
value, option or combination), so ``except ValueError`` code keeps working.  The one other kind,
a backend whose optional dependency is missing, is :class:`BackendUnavailableError`: an
``ObertError`` *and* an ``ImportError`` (the rule of all four packages for a missing optional
dependency), so ``except ImportError`` catches it too.
"""

from __future__ import annotations

__all__ = ["BackendUnavailableError", "ObertError"]


class ObertError(ValueError):
    """Invalid input to an obert-core function (bad shape, value, option or combination).

    The root of every error obert-core raises on purpose (see the module docstring).
    """


class BackendUnavailableError(ObertError, ImportError):
    """A requested backend needs an optional dependency that is not installed.

    The message carries the ``pip install`` command that fixes it.  Also an ``ImportError``,
    like every missing-dependency error of the project.
    """
