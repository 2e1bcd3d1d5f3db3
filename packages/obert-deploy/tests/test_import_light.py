"""``import obert_deploy`` and the torch-free tools do not import torch or transformers."""

from __future__ import annotations

import subprocess
import sys

import pytest

SUBPACKAGES = ("export", "quantize", "bench", "evaluation", "size")


def test_import_is_light() -> None:
    code = (
        "import sys, obert_deploy\n"
        "obert_deploy.BenchConfig, obert_deploy.size_report, obert_deploy.cpu_info\n"
        "heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'deepsparse') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("package", [*SUBPACKAGES, "cli"])
def test_subpackages_import_light(package: str) -> None:
    """``import obert_deploy.<topic>`` and every name of its ``__all__``: no torch, no engine."""
    code = (
        "import importlib, sys\n"
        f"package = importlib.import_module('obert_deploy.{package}')\n"
        "[getattr(package, name) for name in package.__all__]\n"
        "heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'deepsparse') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_subpackages_public_api_is_complete() -> None:
    """Each topic's ``__all__`` resolves; the top level re-exports from the topics only."""
    import importlib

    import obert_deploy

    for package in SUBPACKAGES:
        module = importlib.import_module(f"obert_deploy.{package}")
        assert module.__doc__, package
        for name in module.__all__:
            assert getattr(module, name) is not None, (package, name)
        assert not [n for n in dir(module) if n.startswith("_") and n != "__version__"], package
    for name in obert_deploy.__all__:
        if name != "__version__":
            assert obert_deploy._EXPORTS[name].lstrip(".") in (*SUBPACKAGES, "_errors"), name
    # The helpers left out of the top-level __all__ still import from the top level (old code
    # keeps working) and from their topic.
    for name, package in obert_deploy._HELPERS.items():
        assert name not in obert_deploy.__all__
        topic = importlib.import_module(f"obert_deploy{package}")
        assert getattr(obert_deploy, name) is getattr(topic, name), name
        assert name in topic.__all__, name


def test_public_api_is_complete() -> None:
    import obert_deploy

    for name in obert_deploy.__all__:
        assert getattr(obert_deploy, name) is not None, name
    assert "_export" not in dir(obert_deploy)
    assert set(obert_deploy.__all__) == set(obert_deploy._EXPORTS) | {"__version__"}


def test_help_is_fast_and_readable_at_80_columns() -> None:
    """Regression: ``--help`` imported torch/transformers and cut option names at 80 columns."""
    import os

    code = (
        "import sys\n"
        "from obert_deploy.cli import main\n"
        "sys.argv = ['obert-deploy', sys.argv[1], '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'onnxruntime') if m in sys.modules]\n"
        "print('HEAVY:' + ','.join(heavy))\n"
    )
    env = {**os.environ, "COLUMNS": "80"}
    for command in ("export", "quantize", "qat", "evaluate", "bench", "size"):
        out = subprocess.run(
            [sys.executable, "-c", code, command], capture_output=True, text=True, env=env
        ).stdout
        assert out.rstrip().endswith("HEAVY:"), (command, out[-200:])
        lines = out.splitlines()[:-1]
        assert max(len(line) for line in lines) <= 80, command
        assert "…" not in out and "--help" in out
        for flag in (
            ("--json", "--overwrite") if command != "qat" else ("--learning-rate", "--overwrite")
        ):
            assert flag in out, (command, flag)
