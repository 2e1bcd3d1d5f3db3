"""Docstring cross-references: every Sphinx role in every package becomes a link on the site.

The convention (docs/architecture.md): docstrings refer to other objects as
``:func:`obert_core.obs_update``` / ``:class:`~obert_train.ObertTrainer```; the griffe extension
``docs/_griffe/sphinx_roles.py`` turns each into an autorefs reference.  A role the extension
misses, or one that is malformed (a space after the colon, a missing backtick), would show
literally on the site; this test loads each package as the site does and finds none.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

griffe = pytest.importorskip("griffe")

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "obert_core": "packages/obert-core/src",
    "obert_train": "packages/obert-train/src",
    "obert_deploy": "packages/obert-deploy/src",
    "obert": "packages/obert/src",
}
# A role as Sphinx writes it, or a near miss that the site would print as text.
_LEFTOVER = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const):\s*`?")


def _extension() -> object:
    spec = importlib.util.spec_from_file_location(
        "sphinx_roles", ROOT / "docs/_griffe/sphinx_roles.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sphinx_roles"] = module
    spec.loader.exec_module(module)
    return module.SphinxRoles()


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_role_is_left_as_text(package: str) -> None:
    extensions = griffe.load_extensions(_extension())
    loaded = griffe.load(
        package,
        search_paths=[str(ROOT / p) for p in PACKAGES.values()],
        extensions=extensions,
        resolve_aliases=False,
    )
    left: list[str] = []

    def visit(obj: griffe.Object) -> None:
        if obj.docstring is not None:
            for match in _LEFTOVER.finditer(obj.docstring.value):
                start = max(match.start() - 30, 0)
                left.append(f"{obj.path}: ...{obj.docstring.value[start : match.end() + 30]!r}")
        for member in obj.members.values():
            if not member.is_alias:
                visit(member)

    visit(loaded)
    assert not left, "\n".join(left)


def test_roles_become_optional_autorefs() -> None:
    extension = _extension()
    module = griffe.Module("demo")
    module.docstring = griffe.Docstring("See :func:`~obert_core.obs_update` and :class:`Foo`.")
    extension.on_package(pkg=module)  # type: ignore[attr-defined]
    text = module.docstring.value
    assert (
        '<autoref identifier="obert_core.obs_update" optional><code>obs_update</code></autoref>'
        in text
    )
    assert 'identifier="demo.Foo"' in text
