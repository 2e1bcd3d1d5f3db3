"""``import obert_deploy`` and the torch-free tools do not import torch or transformers."""

from __future__ import annotations

import subprocess
import sys


def test_import_is_light() -> None:
    code = (
        "import sys, obert_deploy\n"
        "obert_deploy.BenchConfig, obert_deploy.size_report, obert_deploy.cpu_info\n"
        "heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'deepsparse') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


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
        for flag in ("--json", "--overwrite") if command != "qat" else ("--lr", "--overwrite"):
            assert flag in out, (command, flag)
