"""The errors of obert-train: one base class, one subclass per kind of bad input or failure.

Every error the package raises on purpose derives from :class:`ObertTrainError`, so a caller
(or the CLI) can catch them all with one ``except``.  Each subclass also derives from the builtin
exception a caller would expect (``ValueError`` for bad values, ``MemoryError`` for a plan that
cannot fit, ``ImportError`` for a missing extra), so existing ``except ValueError`` code keeps
working.
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "MemoryPlanError",
    "MissingDependencyError",
    "ModelError",
    "ObertTrainError",
    "OptionError",
    "OutputDirError",
    "RecipeError",
    "ResumeError",
    "TargetError",
    "TrainingError",
]


class ObertTrainError(Exception):
    """Base class of every error obert-train raises on purpose."""


class DataError(ObertTrainError, ValueError):
    """A data file is missing, malformed or does not fit the task."""


class ModelError(ObertTrainError, ValueError):
    """A model cannot be used: unreadable, without tokenizer, non-finite, too short for the data."""


class OptionError(ObertTrainError, ValueError):
    """An option (a CLI flag or its Python argument) has a value outside its range."""


class OutputDirError(ObertTrainError, OSError):
    """The output folder cannot take the results (not a folder, not writable, not empty)."""


class TargetError(ObertTrainError, ValueError):
    """The target patterns do not select a usable set of parameters."""


class RecipeError(ObertTrainError, ValueError):
    """A recipe or a method setting is invalid; the message names the file, modifier and value."""


class MemoryPlanError(ObertTrainError, MemoryError):
    """The Fisher work of one tensor cannot fit in the memory budget."""


class MissingDependencyError(ObertTrainError, ImportError):
    """An optional dependency is not installed; the message names the pip command."""


class ResumeError(ObertTrainError, ValueError):
    """A run cannot be resumed (no checkpoint, or one of another recipe or model)."""


class TrainingError(ObertTrainError, RuntimeError):
    """Training cannot go on (a non-finite loss, a teacher that does not fit the student)."""
