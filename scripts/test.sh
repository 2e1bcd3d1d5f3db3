#!/usr/bin/env bash
# The test command of the README: install everything, then run every package's tests and the
# benchmark suite (benchmarks only checked for correctness, not timed: --benchmark-disable).
# The DeepSparse engine tests run first, in their own Python 3.11 environment (.venv-deepsparse:
# deepsparse==1.8.0 needs onnx<1.15 and numpy<2, which the main environment must not get);
# set OBERT_SKIP_DEEPSPARSE=1 to leave them out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
if [ "${OBERT_SKIP_DEEPSPARSE:-0}" != "1" ]; then
  bash packages/obert-deploy/scripts/test_deepsparse.sh -p no:cacheprovider "$@"
fi
.venv/bin/python -m pytest packages/obert-core/tests packages/obert-train/tests \
  packages/obert-deploy/tests packages/obert/tests benchmarks --benchmark-disable -p no:cacheprovider "$@"
