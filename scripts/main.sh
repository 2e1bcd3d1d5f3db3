#!/usr/bin/env bash
# The main job of the README on a fresh machine: install, then run the demo.
# (Today: the obert-core demo; the gradual-pruning job replaces it when obert-train's training lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" HF_HUB_OFFLINE=1 MPLBACKEND=Agg
.venv/bin/python scripts/core_demo.py "$@"
