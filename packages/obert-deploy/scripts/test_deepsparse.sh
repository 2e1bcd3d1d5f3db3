#!/usr/bin/env bash
# Run obert-deploy's DeepSparse tests (pytest -m deepsparse).
#
# DeepSparse 1.8.0 (end-of-life, evaluation licence) needs Python 3.11, onnx<1.15 and numpy<2,
# so it gets its own virtual environment (created here if missing). The tests run in the main
# environment (they export with torch there) and call the DeepSparse environment's interpreter
# through OBERT_DEEPSPARSE_PYTHON.
#
# Usage (from anywhere): packages/obert-deploy/scripts/test_deepsparse.sh [extra pytest args]
#        packages/obert-deploy/scripts/test_deepsparse.sh --setup-only   (make the environment)
#        packages/obert-deploy/scripts/test_deepsparse.sh --no-setup [extra pytest args]
#          (the tests only, in an environment made before: scripts/test.sh makes it beside the
#          main environment's bootstrap)
# Environment: OBERT_DEEPSPARSE_VENV (default <repo>/.venv-deepsparse),
#              OBERT_MAIN_PYTHON (default <repo>/.venv/bin/python), PYTHON311 (default python3.11).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
VENV="${OBERT_DEEPSPARSE_VENV:-$ROOT/.venv-deepsparse}"
MAIN_PY="${OBERT_MAIN_PYTHON:-$ROOT/.venv/bin/python}"
PY311="${PYTHON311:-python3.11}"

setup=1 tests=1
case "${1:-}" in
  --setup-only) tests=0; shift ;;
  --no-setup) setup=0; shift ;;
esac

if [ "$setup" -eq 1 ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PY311" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "error: DeepSparse 1.8.0 needs Python 3.11; set PYTHON311 to a Python 3.11 interpreter" >&2
      exit 2
    fi
    "$PY311" -m venv "$VENV"
  fi
  # The [deepsparse] extra pins deepsparse==1.8.0, onnx>=1.14,<1.15 and numpy<2; the base
  # dependencies of obert-deploy (onnxruntime, typer, tqdm, matplotlib, py-cpuinfo2) resolve with
  # them. torch/transformers are not installed there: export happens in the main environment.
  # obert-core (NumPy only) is obert-deploy's one obert dependency; installed from source beside it.
  # --no-compile: Python writes the .pyc files of what the tests import (scripts/test.sh unsets
  # PYTHONDONTWRITEBYTECODE); byte-compiling everything took a third of this install here.
  "$VENV/bin/pip" install --quiet --no-compile -e "$ROOT/packages/obert-core" \
    -e "$ROOT/packages/obert-deploy[deepsparse]"
fi
[ "$tests" -eq 1 ] || exit 0

cd "$ROOT"
OBERT_DEEPSPARSE_PYTHON="$VENV/bin/python" exec "$MAIN_PY" -m pytest \
  packages/obert-deploy/tests -m deepsparse "$@"
