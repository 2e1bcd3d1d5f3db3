"""The ``obert-deploy`` command line (typer): export, quantize, qat, evaluate, bench, size.

``app.py`` holds the app and its one-line-error command group, ``common.py`` the option choices
(generated from the library's constants), option types and checks the commands share, and one
module per command.
"""

from .app import app, main
from .common import (
    CalibrationMethod,
    Engine,
    EvalTask,
    Method,
    QATTask,
    QuantFormat,
    Scenario,
    Task,
)

__all__ = [
    "CalibrationMethod",
    "Engine",
    "EvalTask",
    "Method",
    "QATTask",
    "QuantFormat",
    "Scenario",
    "Task",
    "app",
    "main",
]
