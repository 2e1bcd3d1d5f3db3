"""The ``obert-train`` command line (typer): ``run``, ``oneshot``, ``recipe show``, ``methods``."""

from obert_train.cli.app import app, main

__all__ = ["app", "main"]
