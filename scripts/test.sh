#!/usr/bin/env bash
# The test command of the README: install everything, then run every package's tests, the
# repository-wide tests (tests/: docs commands and site, import rules, the experiments' --help)
# and the benchmark suite (benchmarks only checked for correctness, not timed: --benchmark-disable).
# Slow tests run too (`-m "not slow"` among the arguments leaves them out).
# The DeepSparse engine tests run first, in their own Python 3.11 environment (.venv-deepsparse:
# deepsparse==1.8.0 needs onnx<1.15 and numpy<2, which the main environment must not get);
# set OBERT_SKIP_DEEPSPARSE=1 to leave them out.
# The main tests run in OBERT_TEST_WORKERS pytest-xdist processes (default 2; 1 = one process,
# no xdist), each with OMP_NUM_THREADS=1 unless set. OMP_WAIT_POLICY=PASSIVE (unless set): idle
# OpenMP threads sleep instead of spinning, which on a 2-core machine otherwise steals the CPU
# from the other worker and from the processes tests start (torchrun ranks, CLIs, engines).
set -euo pipefail
cd "$(dirname "$0")/.."
# The environment is installed without .pyc files (bootstrap.sh): let the first import write them,
# or every test process compiles torch's modules again.
unset PYTHONDONTWRITEBYTECODE
deepsparse=0
[ "${OBERT_SKIP_DEEPSPARSE:-0}" = "1" ] || deepsparse=1
if [ "$deepsparse" -eq 1 ]; then  # its environment is made beside the main one (2 cores)
  bash packages/obert-deploy/scripts/test_deepsparse.sh --setup-only &
  deepsparse_setup=$!
fi
bash scripts/bootstrap.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
workers="${OBERT_TEST_WORKERS:-2}"
if [ "$deepsparse" -eq 1 ]; then
  wait "$deepsparse_setup" || { echo "test.sh: the DeepSparse environment could not be made" >&2; exit 1; }
  OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" \
    bash packages/obert-deploy/scripts/test_deepsparse.sh --no-setup -p no:cacheprovider "$@"
fi
parallel=()
threads="${OMP_NUM_THREADS:-2}"
if [ "$workers" -gt 1 ]; then
  parallel=(-n "$workers" --dist loadgroup)
  threads="${OMP_NUM_THREADS:-1}"
fi
# The application's tests first: they hold the longest ones (the MiniLM end-to-end run, about 4
# minutes), which then start at once instead of running alone in one worker at the end.
OMP_NUM_THREADS="$threads" .venv/bin/python -m pytest packages/obert/tests \
  packages/obert-train/tests packages/obert-deploy/tests packages/obert-core/tests tests benchmarks \
  --benchmark-disable -p no:cacheprovider ${parallel[@]+"${parallel[@]}"} "$@"
