"""Developer sessions: `nox -l` lists them, `nox -s NAME` runs one (`-- ARGS` go to the tool).

Every session installs with constraints.txt (torch==2.13.0, CPU build) so no CUDA wheels are pulled.
Each package is tested in an environment holding only it and its declared dependencies. The GitHub
workflows (.github/workflows/) run these same sessions.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"

PYTHON = "3.11"
CONSTRAINTS = ("-c", "constraints.txt")
TEST_TOOLS = ("pytest>=8", "hypothesis>=6.100", "pytest-benchmark>=4")
# Release tags are <package>-v<version>, e.g. obert-core-v0.1.0 (docs/release.md).
RELEASE_PREFIXES = ("obert-core-v", "obert-train-v", "obert-deploy-v", "obert-v")
# The `obert` application package (the quickstart main job), on top of the three libraries.
META = Path("packages/obert/pyproject.toml")

nox.options.sessions = [
    "lint",
    "typecheck",
    "tests_core",
    "tests_train",
    "tests_deploy",
    "tests_repo",
]
if META.is_file():
    nox.options.sessions.append("tests_obert")


def _install(session: nox.Session, *args: str) -> None:
    session.install(*CONSTRAINTS, *args)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint + format check over the whole repository, and the import rules."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # The import rules (dependency direction, public surface only): docs/architecture.md.
    session.run("python", "scripts/check_imports.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Mypy --strict, one run per package so a missing dependency in a package shows up."""
    _install(session, "mypy>=1.10", "types-PyYAML", "torch==2.13.0")
    _install(session, "-e", "packages/obert-core[numba,torch]")
    session.run("mypy", "packages/obert-core/src")
    _install(session, "-e", "packages/obert-train")
    session.run("mypy", "packages/obert-train/src")
    _install(session, "-e", "packages/obert-deploy[all]")
    session.run("mypy", "packages/obert-deploy/src")
    if META.is_file():
        _install(session, "-e", "packages/obert")
        session.run("mypy", "packages/obert/src")
    # The experiment scripts (the libraries' public names only; every package is installed now).
    session.run("mypy", "experiments")


@nox.session(python=PYTHON)
@nox.parametrize("extra", ["", "numba", "torch"])
def tests_core(session: nox.Session, extra: str) -> None:
    """obert-core alone (NumPy only), and with each optional backend."""
    spec = f"packages/obert-core[{extra}]" if extra else "packages/obert-core"
    _install(session, *TEST_TOOLS, "-e", spec)
    session.run("pytest", "packages/obert-core/tests", *session.posargs)


@nox.session(python=PYTHON)
def tests_train(session: nox.Session) -> None:
    """obert-train with obert-core[torch] (includes the 2-process gloo test)."""
    _install(
        session, *TEST_TOOLS, "-e", "packages/obert-core[torch]", "-e", "packages/obert-train[test]"
    )
    session.run("pytest", "packages/obert-train/tests", *session.posargs)


@nox.session(python=PYTHON)
def tests_deploy(session: nox.Session) -> None:
    """obert-deploy alone: obert-train must NOT be installed here."""
    _install(
        session, *TEST_TOOLS, "-e", "packages/obert-core", "-e", "packages/obert-deploy[all,test]"
    )
    session.run(
        "python", "-c", "import importlib.util as u; assert u.find_spec('obert_train') is None"
    )
    session.run("pytest", "packages/obert-deploy/tests", *session.posargs)


@nox.session(python=PYTHON)
def tests_obert(session: nox.Session) -> None:
    """The `obert` application (quickstart) on the three packages; its end-to-end run is slow."""
    if not META.is_file():
        session.error("packages/obert does not exist")
    _install(
        session,
        *TEST_TOOLS,
        "-e",
        "packages/obert-core[torch]",
        "-e",
        "packages/obert-train",
        "-e",
        "packages/obert-deploy[export]",
        "-e",
        "packages/obert[minilm,test]",
    )
    session.run("pytest", "packages/obert/tests", *session.posargs)


@nox.session(python=PYTHON)
def tests_repo(session: nox.Session) -> None:
    """The repository-wide tests (tests/): docs commands and site, import rules, experiments.

    Every package is installed (the docs name all command lines), with the doc tools; the
    experiments' ``--help`` smoke test runs here.
    """
    packages = ["packages/obert-core[torch]", "packages/obert-train", "packages/obert-deploy[all]"]
    if META.is_file():
        packages.append("packages/obert")
    editable = [arg for package in packages for arg in ("-e", package)]
    _install(session, *TEST_TOOLS, "-r", "docs/requirements.txt", *editable)
    session.run("pytest", "tests", *session.posargs)


@nox.session(python=False)
def deepsparse(session: nox.Session) -> None:
    """DeepSparse engine tests in their own Python 3.11 env (.venv-deepsparse; needs .venv)."""
    session.run("bash", "packages/obert-deploy/scripts/test_deepsparse.sh", *session.posargs)


@nox.session(python=False)
def sparseml(session: nox.Session) -> None:
    """SparseML 1.8 comparison harness tests (.venv-sparseml, created here; needs .venv)."""
    session.run("bash", "scripts/sparseml_env.sh")
    session.run(
        ".venv/bin/python", "-m", "pytest", "tests/test_sparseml_harness.py", *session.posargs
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Time the benchmarks (pytest-benchmark, writes .benchmarks/); slow, needs a quiet machine."""
    _install(session, *TEST_TOOLS, "psutil", "-e", "packages/obert-core[numba,torch]")
    session.run(
        "pytest",
        "benchmarks/bench_fisher.py",
        "--benchmark-only",
        "--benchmark-autosave",
        "-p",
        "no:cacheprovider",
        *session.posargs,
    )


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The core demo (OBS vs magnitude on a quadratic), as run by scripts/main.sh."""
    _install(session, "matplotlib", "-e", "packages/obert-core[numba]")
    session.run("python", "scripts/core_demo.py", *session.posargs)


@nox.session(python=False)
def wheels(session: nox.Session) -> None:
    """Build every wheel + sdist, twine check, test each wheel installed alone in a fresh venv.

    Runs scripts/test_wheels.sh (targets core, core-numba, core-torch, train, deploy, obert; default
    core train deploy obert), e.g. `nox -s wheels -- core deploy`; `-- --build-only` only builds.
    """
    session.run("bash", "scripts/test_wheels.sh", *session.posargs)


@nox.session(python=False)
def release(session: nox.Session) -> None:
    """Release check for one tag: `nox -s release -- obert-core-v0.1.0`.

    Builds that package, checks tag == version, a dated CHANGELOG section and twine, and tests its
    wheel installed alone; publishing is done only by the release workflow (trusted publishing).
    """
    if len(session.posargs) != 1 or not session.posargs[0].startswith(RELEASE_PREFIXES):
        session.error("give one release tag, e.g. nox -s release -- obert-core-v0.1.0")
    session.run("bash", "scripts/test_wheels.sh", "--tag", session.posargs[0])


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site with `mkdocs build --strict` (into build/site).

    Installs docs/requirements.txt and the packages editable (mkdocstrings reads their docstrings).
    """
    if not Path("mkdocs.yml").is_file() or not Path("docs/requirements.txt").is_file():
        session.error("mkdocs.yml and docs/requirements.txt are needed for the docs build")
    packages = ["packages/obert-core", "packages/obert-train", "packages/obert-deploy"]
    if META.is_file():
        packages.append("packages/obert")
    editable = [arg for package in packages for arg in ("-e", package)]
    _install(session, "-r", "docs/requirements.txt", *editable)
    session.run("mkdocs", "build", "--strict", "--site-dir", "build/site", *session.posargs)
