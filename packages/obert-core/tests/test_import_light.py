import subprocess
import sys


def test_import_obert_core_loads_numpy_only() -> None:
    code = (
        "import sys, obert_core\n"
        "heavy = [m for m in ('torch', 'numba', 'scipy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert 'numpy' in sys.modules\n"
        "print(obert_core.__version__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()


def test_public_api_is_explicit_and_sorted() -> None:
    import obert_core

    assert list(obert_core.__all__) == sorted(obert_core.__all__)
    for name in obert_core.__all__:
        assert hasattr(obert_core, name), name
