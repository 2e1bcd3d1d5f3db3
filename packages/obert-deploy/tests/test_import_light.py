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
