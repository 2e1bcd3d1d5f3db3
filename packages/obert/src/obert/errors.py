"""The errors of ``obert``: one base class, one subclass per kind of failure.

Bad input that the libraries already recognise keeps their error class (obert-train's
:class:`~obert_train.ObertTrainError` subclasses for a model without a usable tokenizer, data
without labels, a recipe whose ``params`` match no tensor; obert-deploy's
:class:`~obert_deploy.ObertDeployError` for export problems); what only the pipeline knows is an
:class:`ObertPipelineError`. The command line prints every one of them as one ``error: ...``
line (exit code 2).
"""

from __future__ import annotations

__all__ = [
    "DiskSpaceError",
    "ObertPipelineError",
    "PipelineInputError",
    "StageError",
]


class ObertPipelineError(Exception):
    """Base class of every error ``obert`` raises on purpose."""


class PipelineInputError(ObertPipelineError, ValueError):
    """An option or input the pipeline cannot use (the message names it and the remedy)."""


class DiskSpaceError(ObertPipelineError, OSError):
    """The output folder's file system has too little free space for the stages that will run."""


class StageError(ObertPipelineError, RuntimeError):
    """A stage failed after it started (its partial output was removed; the message says why)."""
