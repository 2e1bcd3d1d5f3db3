"""The documentation site builds with ``mkdocs build --strict`` and documents every public name.

Needs the doc tools (``pip install -c constraints.txt -r docs/requirements.txt``); skipped
without them. The build reads the three packages' sources (mkdocstrings, static analysis), so
it does not import torch or an engine.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = {
    "obert_core": REPO / "packages/obert-core/src/obert_core",
    "obert_train": REPO / "packages/obert-train/src/obert_train",
    "obert_deploy": REPO / "packages/obert-deploy/src/obert_deploy",
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (REPO / "mkdocs.yml").is_file(), reason="no mkdocs.yml"),
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("mkdocs", "mkdocstrings", "material")),
        reason="doc tools not installed (pip install -r docs/requirements.txt)",
    ),
]


def _literal(path: Path, name: str) -> object:
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == name:
            return ast.literal_eval(node.value)  # type: ignore[attr-defined]
    raise AssertionError(f"{name} not found in {path}")


def _public(package: str, sub: str = "") -> list[str]:
    init = (
        SRC[package].joinpath(*sub.split("."), "__init__.py")
        if sub
        else SRC[package] / "__init__.py"
    )
    names = _literal(init, "__all__")
    assert isinstance(names, list)
    return [n for n in names if n != "__version__"]


def _expected_anchors() -> dict[str, set[str]]:
    """Public name -> the anchors any one of which documents it."""
    exports = _literal(SRC["obert_train"] / "__init__.py", "_EXPORTS")
    assert isinstance(exports, dict)
    out: dict[str, set[str]] = {}
    for name in _public("obert_core"):
        out[f"obert_core.{name}"] = {f"obert_core.{name}", f"obert_core.structured.{name}"}
    for name in _public("obert_core", "structured"):
        out[f"obert_core.structured.{name}"] = {f"obert_core.structured.{name}"}
    for name in _public("obert_core", "blocks"):
        out[f"obert_core.blocks.{name}"] = {f"obert_core.blocks.{name}"}
    for name in _public("obert_core", "zo"):
        out[f"obert_core.zo.{name}"] = {f"obert_core.zo.{name}"}
    for name in _public("obert_core", "shared"):
        out[f"obert_core.shared.{name}"] = {f"obert_core.shared.{name}"}
    for name in _public("obert_train"):
        out[f"obert_train.{name}"] = {f"{exports[name]}.{name}"}
    for name in _public("obert_train", "recipe"):
        out[f"obert_train.recipe.{name}"] = {f"obert_train.recipe.{name}"}
    for name in _public("obert_deploy"):
        out[f"obert_deploy.{name}"] = {f"obert_deploy.{name}"}
    return out


def test_mkdocs_build_strict_documents_every_public_name(tmp_path: Path) -> None:
    site = tmp_path / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(REPO / "mkdocs.yml"),
            "-d",
            str(site),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "WARNING" not in log, log[-4000:]
    anchors: set[str] = set()
    for page in site.rglob("*.html"):
        anchors |= set(re.findall(r'id="([\w.]+)"', page.read_text(encoding="utf-8")))
    missing = [name for name, ids in _expected_anchors().items() if not ids & anchors]
    assert not missing, f"public names without a section in the API reference: {missing}"
