"""Pruning methods and their shared lifecycle: masks, registry, one-shot driver, methods.

Importing the package imports the built-in methods, which register themselves with the
registry (:mod:`obert_train.pruning.registry`), so every import of a pruning module sees them.
"""

from obert_train.pruning import constant, lpvit, magnitude, movement, obert, structured

__all__ = ["constant", "lpvit", "magnitude", "movement", "obert", "structured"]
