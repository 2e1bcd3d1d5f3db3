"""The import rules of docs/architecture.md, as `nox -s lint` enforces them.

Both layers are exercised: ``scripts/check_imports.py`` (dependency direction read from the
pyproject files, public surface only) and ruff's banned-API tables (TID251).  Each rule is shown
to pass on the tree and to fail on a file that breaks it.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_imports", ROOT / "scripts/check_imports.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_imports"] = module
    spec.loader.exec_module(module)
    return module


check_imports = _checker()


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """A tree whose packages are the real ones (linked), with room for an offending file."""
    (tmp_path / "packages").symlink_to(ROOT / "packages")
    (tmp_path / "experiments").mkdir()
    return tmp_path


def test_the_tree_follows_the_rules() -> None:
    violations = check_imports.check(ROOT)
    assert not violations, "\n".join(map(str, violations))


def test_dependencies_come_from_the_pyprojects() -> None:
    allowed = check_imports.allowed_dependencies(ROOT)
    assert allowed["obert_core"] == frozenset()
    assert "obert_train" not in allowed["obert_deploy"]
    assert allowed["obert"] >= {"obert_core", "obert_train", "obert_deploy"}


def test_a_deep_import_from_an_experiment_fails(fake_root: Path) -> None:
    bad = fake_root / "experiments" / "bad.py"
    bad.write_text(
        "from obert_train.cli.common import data_options\n"
        "from obert_train import not_a_public_name\n"
        "from obert_deploy import export_onnx\n"  # public: fine
    )
    violations = [str(v) for v in check_imports.check(fake_root, [bad])]
    assert len(violations) == 2, violations
    assert "obert_train.cli.common is internal to obert_train" in violations[0]
    assert "'not_a_public_name' is not in obert_train.__all__" in violations[1]
    assert check_imports.main([str(fake_root), "--paths", str(bad)]) == 1


def test_deploy_never_imports_train(tmp_path: Path) -> None:
    # A copy of obert-deploy's pyproject and one source file that imports obert-train.
    for folder in check_imports.PACKAGES:
        target = tmp_path / "packages" / folder
        target.mkdir(parents=True)
        shutil.copy(ROOT / "packages" / folder / "pyproject.toml", target / "pyproject.toml")
    source = tmp_path / "packages/obert-deploy/src/obert_deploy/bad.py"
    source.parent.mkdir(parents=True)
    source.write_text("def f() -> None:\n    import obert_train\n")
    violations = [str(v) for v in check_imports.check(tmp_path, [source])]
    assert len(violations) == 1 and "obert_deploy may not import obert_train" in violations[0]


@pytest.mark.skipif(
    shutil.which("ruff") is None and not (ROOT / ".venv/bin/ruff").exists(),
    reason="ruff is not installed",
)
@pytest.mark.parametrize(
    ("where", "code", "banned"),
    [
        (
            "packages/obert/src/obert/bad.py",
            "from obert_train.cli.common import x\n",
            "obert_train.cli",
        ),
        (
            "experiments/bad.py",
            "from obert_train.tasks.data import read_glue_tsv\n",
            "obert_train.tasks",
        ),
        ("packages/obert-deploy/src/obert_deploy/bad.py", "import obert_train\n", "obert_train"),
        (
            "packages/obert-core/src/obert_core/bad.py",
            "from obert_deploy import cpu_info\n",
            "obert_deploy",
        ),
    ],
)
def test_ruff_bans_the_import(where: str, code: str, banned: str) -> None:
    ruff = shutil.which("ruff") or str(ROOT / ".venv/bin/ruff")
    result = subprocess.run(
        [ruff, "check", "--select", "TID251", "--stdin-filename", where, "-"],
        input=code,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"`{banned}` is banned" in result.stdout


def test_ruff_table_bans_every_internal_module() -> None:
    """The root table (what the app, experiments and benchmarks obey) lists each internal module
    at the top of a package, so the editor flags what check_imports refuses."""
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"][
        "flake8-tidy-imports"
    ]["banned-api"]
    for folder, package in check_imports.PACKAGES.items():
        src = ROOT / "packages" / folder / "src" / package
        public = check_imports.PUBLIC_MODULES[package]
        for child in sorted(src.iterdir()):
            name = child.stem if child.suffix == ".py" else child.name
            if child.name.startswith("__") or not (child.suffix == ".py" or child.is_dir()):
                continue
            if child.is_dir() and not (child / "__init__.py").is_file():
                continue
            module = f"{package}.{name}"
            if module in public or package == "obert":
                continue
            assert module in table, f"{module} is internal but not in the root banned-api table"
