#!/usr/bin/env bash
# Create (or refresh) .venv-sparseml: SparseML 1.8.0 in its own Python 3.11 environment, the
# comparison harness of experiments/sparseml_sst2.py (issue 23). SparseML is not a dependency of
# any oBERT package and never enters .venv: it needs Python < 3.12, numpy < 2, onnx < 1.15,
# protobuf <= 3.20.3 and pydantic < 2.8, and its sparsezoo dependency resolves, unpinned, to an
# end-of-life release that refuses to build (hence sparsezoo==1.8.1, the last wheel). torch is
# the main environment's 2.13.0 CPU build (SparseML 1.8 sets no upper bound); transformers < 4.41
# is what SparseML 1.8's transformers extra allows (4.40.2). sparseml imports pkg_resources, so
# setuptools stays below 81 (and at least 77.0.3, torch 2.13's floor). obert-core (NumPy only)
# gives the runner the atomic write and the CPU report.
#
# Usage (from anywhere): scripts/sparseml_env.sh
# Environment: OBERT_SPARSEML_VENV (default <repo>/.venv-sparseml), PYTHON311 (default python3.11).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OBERT_SPARSEML_VENV:-$ROOT/.venv-sparseml}"
PY311="${PYTHON311:-python3.11}"

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY311" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    echo "error: SparseML 1.8.0 needs Python 3.11; set PYTHON311 to a Python 3.11 interpreter" >&2
    exit 2
  fi
  "$PY311" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --disable-pip-version-check -q \
  "sparseml==1.8.0" "sparsezoo==1.8.1" "torch==2.13.0" "transformers==4.40.2" \
  "setuptools>=77.0.3,<81" -e "$ROOT/packages/obert-core" \
  2> >(grep -v "^WARNING: Location 'file:" >&2)
"$VENV/bin/python" -W ignore -c \
  'import sparseml, torch, transformers; print("sparseml", sparseml.__version__, "torch", torch.__version__, "transformers", transformers.__version__)'
