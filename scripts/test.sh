#!/usr/bin/env bash
# The test command of the README: install everything, then run every package's tests and the
# benchmark suite (benchmarks only checked for correctness, not timed: --benchmark-disable).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
.venv/bin/python -m pytest packages/obert-core/tests packages/obert-train/tests \
  packages/obert-deploy/tests benchmarks --benchmark-disable -p no:cacheprovider "$@"
