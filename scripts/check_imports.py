"""The import rules of the repository (an import-linter style check; run by `nox -s lint` and CI).

Two rules, read from the code and the packaging metadata rather than restated here:

1. **Direction.** A package imports another one only if its ``pyproject.toml`` depends on it
   (``[project].dependencies`` or an optional extra): obert-core imports none of the others,
   obert-train and obert-deploy import obert-core only (so obert-deploy never imports
   obert-train), the ``obert`` application imports the three.  The package's tests obey the same
   rule (obert-deploy's tests run where obert-train is not installed).
2. **Public surface only.** Across packages, and from ``experiments/``, ``benchmarks/`` and
   ``scripts/``, an import names a package's top level or one of its public subpackages
   (:data:`PUBLIC_MODULES`), and ``from M import name`` takes only a name in ``M.__all__`` (or a
   public subpackage of ``M``).  Every other module, with or without a leading underscore, is
   internal.  A package's own code and tests, and the repository-wide tests in ``tests/``, may
   import internals (white-box tests).

Usage: ``python scripts/check_imports.py [ROOT] [--paths FILE_OR_DIR ...]``; exit status 1 and one
line per violation (``path:line: message``) when a rule is broken, 0 otherwise.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import tomllib

#: Folder under ``packages/`` -> import name.
PACKAGES: dict[str, str] = {
    "obert-core": "obert_core",
    "obert-train": "obert_train",
    "obert-deploy": "obert_deploy",
    "obert": "obert",
}

#: The modules of each package another package may import (their ``__all__`` is the contract).
PUBLIC_MODULES: dict[str, frozenset[str]] = {
    "obert_core": frozenset(
        {
            "obert_core",
            "obert_core.shared",
            "obert_core.structured",
            "obert_core.blocks",
            "obert_core.backends",
            "obert_core.zo",
        }
    ),
    "obert_train": frozenset({"obert_train", "obert_train.checks", "obert_train.recipe"}),
    "obert_deploy": frozenset(
        {
            "obert_deploy",
            "obert_deploy.export",
            "obert_deploy.quantize",
            "obert_deploy.bench",
            "obert_deploy.evaluation",
            "obert_deploy.size",
        }
    ),
    "obert": frozenset({"obert"}),
}

#: Folders whose files must use public names only (besides the packages' own sources).
CONSUMER_DIRS = ("experiments", "benchmarks", "scripts")
#: Folders and files checked at all.
SCANNED = ("packages", "experiments", "benchmarks", "scripts", "tests", "docs", "noxfile.py")
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class Violation:
    """One broken rule.

    Attributes:
        path: The importing file.
        line: Line of the import.
        message: What is wrong and what to do.
    """

    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def allowed_dependencies(root: Path) -> dict[str, frozenset[str]]:
    """Import name -> the obert packages it may import, from each ``pyproject.toml``."""
    names = {folder.replace("_", "-"): module for folder, module in PACKAGES.items()}
    allowed: dict[str, frozenset[str]] = {}
    for folder, module in PACKAGES.items():
        project = tomllib.loads((root / "packages" / folder / "pyproject.toml").read_text())[
            "project"
        ]
        requirements = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            requirements.extend(extra)
        found = set()
        for requirement in requirements:
            match = _REQUIREMENT.match(requirement)
            dist = match.group(1).lower().replace("_", "-") if match else ""
            if dist in names and names[dist] != module:
                found.add(names[dist])
        allowed[module] = frozenset(found)
    return allowed


def _module_file(root: Path, module: str) -> Path | None:
    """The source file of an obert module (``__init__.py`` for a package), if it exists."""
    top = module.split(".")[0]
    folder = next(f for f, m in PACKAGES.items() if m == top)
    base = root / "packages" / folder / "src" / Path(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def public_names(root: Path, module: str) -> frozenset[str] | None:
    """The literal ``__all__`` of a module's source, or ``None`` when it has none."""
    path = _module_file(root, module)
    if path is None:
        return None
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        value = getattr(node, "value", None)
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and value:
            return frozenset(ast.literal_eval(value))
    return None


def owner(root: Path, path: Path) -> str | None:
    """The package a file belongs to (its sources or tests), or ``None`` outside packages."""
    parts = path.relative_to(root).parts
    if len(parts) > 1 and parts[0] == "packages":
        return PACKAGES.get(parts[1])
    return None


def _consumer(root: Path, path: Path) -> bool:
    """Whether the file may use public names only."""
    parts = path.relative_to(root).parts
    if parts[0] in CONSUMER_DIRS:
        return True
    return len(parts) > 2 and parts[0] == "packages" and parts[2] == "src"


def _imports(tree: ast.AST) -> Iterator[tuple[int, str, list[str] | None]]:
    """``(line, module, imported names or None for a plain import)`` of absolute imports."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, [alias.name for alias in node.names]


def check_file(root: Path, path: Path, allowed: dict[str, frozenset[str]]) -> Iterator[Violation]:
    """The violations of one Python file."""
    me = owner(root, path)
    consumer = _consumer(root, path)
    shown = path.relative_to(root)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for line, module, names in _imports(tree):
        top = module.split(".")[0]
        if top not in PUBLIC_MODULES or top == me:
            continue
        if me is not None and top not in allowed[me]:
            yield Violation(
                shown,
                line,
                f"{me} may not import {top} ({module}): its pyproject.toml does not depend on "
                f"it; move what both need to obert_core.shared",
            )
            continue
        if not consumer:
            continue
        public = PUBLIC_MODULES[top]
        if module not in public:
            yield Violation(
                shown,
                line,
                f"{module} is internal to {top}; import from one of {sorted(public)} (names in "
                f"its __all__), or make the name public there",
            )
            continue
        exported = public_names(root, module) or frozenset()
        for name in names or []:
            if name != "*" and name not in exported and f"{module}.{name}" not in public:
                yield Violation(
                    shown,
                    line,
                    f"{name!r} is not in {module}.__all__; use a public name, or export it "
                    f"from {module}",
                )


def python_files(root: Path, paths: Iterable[Path]) -> Iterator[Path]:
    """Every ``.py`` file under ``paths`` (virtual environments and build folders skipped)."""
    for base in paths:
        if base.is_file() and base.suffix == ".py":
            yield base
        elif base.is_dir():
            for path in sorted(base.rglob("*.py")):
                rel = path.relative_to(root).parts
                if not any(p.startswith((".venv", ".nox", "build", "site")) for p in rel):
                    yield path


def check(root: Path, paths: Iterable[Path] | None = None) -> list[Violation]:
    """All violations under ``paths`` (default: the whole repository) of the tree at ``root``."""
    root = root.resolve()
    allowed = allowed_dependencies(root)
    chosen = [root / p for p in SCANNED] if paths is None else [p.resolve() for p in paths]
    return [v for path in python_files(root, chosen) for v in check_file(root, path, allowed)]


def main(argv: list[str] | None = None) -> int:
    """Check the tree and print each violation; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path(__file__).parents[1])
    parser.add_argument("--paths", nargs="+", type=Path, help="check only these files/folders")
    args = parser.parse_args(argv)
    violations = check(args.root, args.paths)
    for violation in violations:
        print(violation)
    if violations:
        print(f"check_imports: {len(violations)} import(s) break the rules in docs/architecture.md")
        return 1
    print("check_imports: imports follow the rules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
