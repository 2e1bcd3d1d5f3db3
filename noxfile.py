"""Developer sessions: `nox -l` lists them, `nox -s NAME` runs one.

Every session installs with constraints.txt (torch==2.13.0, CPU build) so no CUDA wheels are pulled.
Each package is tested in an environment holding only it and its declared dependencies.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests_core", "tests_train", "tests_deploy"]
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"
CONSTRAINTS = ("-c", "constraints.txt")
TEST_TOOLS = ("pytest>=8", "hypothesis>=6.100", "pytest-benchmark>=4")


def _install(session: nox.Session, *args: str) -> None:
    session.install(*CONSTRAINTS, *args)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint + format check over the whole repository."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


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
    _install(session, *TEST_TOOLS, "-e", "packages/obert-deploy[all,test]")
    session.run(
        "python", "-c", "import importlib.util as u; assert u.find_spec('obert_train') is None"
    )
    session.run("pytest", "packages/obert-deploy/tests", *session.posargs)


@nox.session(python=False)
def deepsparse(session: nox.Session) -> None:
    """DeepSparse engine tests in their own Python 3.11 env (.venv-deepsparse; needs .venv)."""
    session.run("bash", "packages/obert-deploy/scripts/test_deepsparse.sh", *session.posargs)


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
