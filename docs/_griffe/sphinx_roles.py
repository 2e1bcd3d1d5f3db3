"""Griffe extension of the API reference: Sphinx roles in docstrings become cross-references.

The packages' docstrings refer to other objects the Sphinx way
(``:func:`~obert_core.obs_saliency```). mkdocstrings renders docstrings as Markdown, where such
a role would show literally. This extension (``mkdocs.yml``:
``plugins.mkdocstrings.handlers.python.options.extensions``) rewrites each role into an
optional autorefs reference: a link when the target is documented on the site, plain code
otherwise (no warning either way, so ``mkdocs build --strict`` stays clean).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const):`(?P<tilde>~)?(?P<target>[^`<>]+)`"
)
_PACKAGES = ("obert_core", "obert_train", "obert_deploy", "obert")


def _identifier(obj: griffe.Object | griffe.Alias, target: str) -> str:
    """The full path a role's target most likely names, seen from ``obj``."""
    name = target.strip().removesuffix("()")
    if name.startswith("."):
        return f"{obj.module.path}.{name.lstrip('.')}"
    if name.split(".")[0] in _PACKAGES:
        return name
    head, _, tail = name.partition(".")
    try:
        resolved = obj.resolve(head)
    except griffe.NameResolutionError:
        return f"{obj.module.path}.{name}"
    return f"{resolved}.{tail}" if tail else resolved


def _reference(obj: griffe.Object | griffe.Alias, match: re.Match[str]) -> str:
    target = match["target"].strip()
    shown = target.lstrip(".")
    if match["tilde"]:
        shown = shown.rsplit(".", 1)[-1]
    identifier = html.escape(_identifier(obj, target), quote=True)
    code = f"<code>{html.escape(shown)}</code>"
    return f'<autoref identifier="{identifier}" optional>{code}</autoref>'


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    """``obj`` and every object defined under it (aliases, i.e. re-exports, are skipped)."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias and isinstance(member, griffe.Object):
            yield from _objects(member)


def rewrite(obj: griffe.Object) -> None:
    """Rewrite the roles of ``obj``'s own docstring (idempotent: a rewritten one has none)."""
    if obj.docstring is not None and ":`" in obj.docstring.value:
        obj.docstring.value = _ROLE.sub(lambda m: _reference(obj, m), obj.docstring.value)


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` in every docstring into an optional cross-reference."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite every docstring of a loaded package, the package's own included.

        (``on_object`` is not called for a top-level package, whose docstring is shown on its
        API page.)
        """
        for obj in _objects(pkg):
            rewrite(obj)

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the docstring of ``obj`` once the object tree is complete."""
        rewrite(obj)
