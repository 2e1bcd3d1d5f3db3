"""Pruning methods and their shared lifecycle: masks, registry, one-shot driver, methods."""
