from __future__ import annotations

import os

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
