"""The errors of obert-train: one base class, one subclass per kind of bad input or failure.

Every error the package raises on purpose derives from :class:`ObertTrainError`, so a caller
(or the CLI) can catch them all with one ``except``.  Each subclass also derives from the builtin
exception a caller would expect (``ValueError`` for bad values, ``TypeError`` for arguments that
cannot go together, ``MemoryError`` for a plan that cannot fit, ``ImportError`` for a missing
extra), so existing ``except ValueError`` code keeps working.

Two kinds of exceptions still leave the package without this base: pydantic's
``ValidationError`` from constructing a settings model directly (``ObertSettings(damp=-1)``;
:func:`obert_train.create_method` and :func:`obert_train.load_recipe` turn it into a
:class:`RecipeError`), and errors of the libraries underneath (torch, transformers, obert-core's
:class:`~obert_core.ObertError`) that no check of obert-train anticipates.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
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


class ArgumentError(ObertTrainError, TypeError):
    """A function got arguments that cannot go together or have the wrong type.

    A mistake in the calling code (both ``settings`` and keyword settings, a settings model of
    another method), not in data or options: the message says which call to make instead.
    """


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
    """An optional dependency is not installed; the message names the pip command.

    An ``ImportError`` as in every package of the project, so ``except ImportError`` works.
    """


class ResumeError(ObertTrainError, ValueError):
    """A run cannot be resumed (no checkpoint, or one of another recipe or model)."""


class TrainingError(ObertTrainError, RuntimeError):
    """Training cannot go on (a non-finite loss, a teacher that does not fit the student)."""
