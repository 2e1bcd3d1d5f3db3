"""Lazy (PEP 562) attributes of a package: a name's module is imported on first access.

``import obert_deploy`` and ``import obert_deploy.bench`` must not import torch or an inference
engine (the benchmark and size tools run in a torch-free environment such as the DeepSparse
one), so the packages name their modules here instead of importing them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` for the names of ``exports``.

    Args:
        package: The package's ``__name__``.
        exports: Attribute name -> module (relative to ``package``, e.g. ``"._bench"`` or
            ``".bench"``) that defines or re-exports it.

    Returns:
        ``(__getattr__, __dir__)``: the first imports the module of a name on first access and
        caches the value in the package; the second lists the package's ``__all__``.
    """

    def getattr_(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def dir_() -> list[str]:
        return sorted(getattr(sys.modules[package], "__all__", exports))

    return getattr_, dir_
