from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-scale",
        default=os.environ.get("OBERT_BENCH_SCALE", "smoke"),
        choices=["smoke", "full"],
        help="smoke: tiny sizes, correctness only (CI); full: the sizes of docs/benchmarks.md",
    )


@pytest.fixture(scope="session")
def bench_scale(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--bench-scale"))


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    """Give torch back the thread count a benchmark found (several set their own).

    The benchmarks share pytest processes with the packages' tests (the README's test command),
    and a thread count left at 2 changes the summation order of a later test that compares one
    in-process run with worker processes of one thread each, bit for bit.
    """
    torch = sys.modules.get("torch")
    if torch is None and importlib.util.find_spec("torch") is not None:
        import torch  # the count before a benchmark that imports torch itself
    before = torch.get_num_threads() if torch is not None else None
    yield
    if torch is not None and before is not None:
        torch.set_num_threads(before)
