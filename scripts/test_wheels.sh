#!/usr/bin/env bash
# Build each package's wheel and sdist, check them, and test each wheel installed ALONE.
#
#   1. `python -m build` for every packages/*/pyproject.toml into dist/<package>/ (the wheel is
#      built from the sdist, so an incomplete sdist fails here), `twine check --strict`, and
#      scripts/check_dists.py (license file, URLs, classifiers, versions vs CHANGELOG, no junk).
#   2. For each TARGET: a fresh virtual environment gets that wheel plus its declared dependencies
#      from the package registry (always `-c constraints.txt`: torch==2.13.0, CPU build), the
#      package's tests are copied to a scratch folder and run there with pytest against the
#      installed wheel; a conftest written beside them fails the run if any obert module was
#      imported from anywhere but the environment's site-packages.
#
# Usage: scripts/test_wheels.sh [--build-only] [--tag TAG] [TARGET...] [-- PYTEST_ARGS...]
#   TARGET   core        obert-core alone with NumPy only (numba and torch must be absent:
#                        the backend tests skip)
#            core-numba  obert-core[numba]       core-torch  obert-core[torch]
#            train       obert-train with the locally built obert-core wheel (not on the registry
#                        before its first release), fast tests only (-m "not slow")
#            deploy      obert-deploy[all] with the locally built obert-core wheel (its one obert
#                        dependency, NumPy only) and without obert-train installed
#            obert       the meta package with the three local wheels (when packages/obert exists)
#            default: core train deploy, and obert when present (those whose wheels are built)
#   --tag T  release check for tag T (obert-core-v0.1.0, obert-train-v0.2.0, ...): builds only
#            that package (and obert-core for obert-train and obert-deploy, the meta package's
#            dependencies for obert), requires tag == version and a dated CHANGELOG section, tests its target
#   --build-only  build and check only
# Environment: PYTHON (interpreter for the environments, default python3), DIST (default dist),
#   OBERT_WHEELS_WORK (scratch folder, kept; default a new temporary one, removed as it goes),
#   OBERT_DATA_DIR (real data for the tests that use it; default ../shared/data when present),
#   OBERT_WHEEL_PACKAGES (the package folders to build, e.g. "obert-core obert-train"; default all),
#   OBERT_TEST_WORKERS (pytest-xdist workers of the test runs, default 2; 1 for one process).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PYTHON="${PYTHON:-python3}"
DIST="${DIST:-dist}"
case "$DIST" in /*) ;; *) DIST="$ROOT/$DIST" ;; esac

build_only=0
tag=""
targets=()
pytest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-only) build_only=1 ;;
    --tag) tag="${2:?--tag needs a value such as obert-core-v0.1.0}"; shift ;;
    --tag=*) tag="${1#--tag=}" ;;
    --) shift; pytest_args=("$@"); break ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    core|core-numba|core-torch|train|deploy|obert) targets+=("$1") ;;
    *) echo "test_wheels: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

all_packages=(obert-core obert-train obert-deploy)
[ -f packages/obert/pyproject.toml ] && all_packages+=(obert)

if [ -n "$tag" ]; then
  tagged="${tag%-v*}"
  case "$tagged" in
    obert-core) packages=(obert-core); default_targets=(core) ;;
    obert-train) packages=(obert-core obert-train); default_targets=(train) ;;
    obert-deploy) packages=(obert-core obert-deploy); default_targets=(deploy) ;;
    obert) packages=("${all_packages[@]}"); default_targets=(obert) ;;
    *) echo "test_wheels: tag '$tag' is not <package>-v<version> for a package here" >&2; exit 2 ;;
  esac
  if [ ! -f "packages/$tagged/pyproject.toml" ]; then
    echo "test_wheels: tag '$tag' names packages/$tagged, which has no pyproject.toml" >&2
    exit 2
  fi
else
  if [ -n "${OBERT_WHEEL_PACKAGES:-}" ]; then
    read -r -a packages <<<"$OBERT_WHEEL_PACKAGES"
  else
    packages=("${all_packages[@]}")
  fi
  default_targets=()
  built=" ${packages[*]} "
  [[ "$built" == *" obert-core "* ]] && default_targets+=(core)
  [[ "$built" == *" obert-core "* && "$built" == *" obert-train "* ]] && default_targets+=(train)
  [[ "$built" == *" obert-core "* && "$built" == *" obert-deploy "* ]] && default_targets+=(deploy)
  [[ "$built" == *" obert "* ]] && default_targets+=(obert)
fi
[ ${#targets[@]} -eq 0 ] && targets=("${default_targets[@]}")

keep=0
if [ -n "${OBERT_WHEELS_WORK:-}" ]; then
  WORK="$OBERT_WHEELS_WORK"
  keep=1
  mkdir -p "$WORK"
else
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/obert-wheels.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
unset PYTHONPATH
seconds() { echo $(( $(date +%s) - $1 )); }

# One pip (the build environment's, upgraded once) installs into every environment through
# `pip --python`: the test environments are made without pip, which saves an ensurepip and a pip
# upgrade (~20 s) per environment.
PIP_HOST="$WORK/venv-build/bin/python"

# `--no-compile`: pip's byte-compilation of every installed module took 65 of the deploy
# environment's 93 s; Python compiles what a test run imports, once (PYTHONDONTWRITEBYTECODE is
# unset for the test runs below so that the .pyc files are written).
pip_install() {  # pip_install VENV ARGS...: constrained, quiet (this machine's index notes dropped)
  local venv="$1"
  shift
  "$PIP_HOST" -m pip --python "$venv/bin/python" install -q --no-compile \
    -c "$ROOT/constraints.txt" "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2)
}

new_venv() {  # new_venv DIR: a fresh environment without pip (pip_install fills it)
  rm -rf "$1"
  "$PYTHON" -m venv --without-pip "$1"
}

# ---- 1. build and check -------------------------------------------------------------------------
t0=$(date +%s)
rm -rf "$WORK/venv-build"
"$PYTHON" -m venv "$WORK/venv-build"
"$PIP_HOST" -m pip install -q -c "$ROOT/constraints.txt" --upgrade pip \
  2> >(grep -v "^WARNING: Location 'file:" >&2)
pip_install "$WORK/venv-build" build twine
for package in "${packages[@]}"; do
  rm -rf "${DIST:?}/$package"
  "$WORK/venv-build/bin/python" -m build --outdir "$DIST/$package" "packages/$package" \
    >"$WORK/build-$package.log" 2>&1 || { cat "$WORK/build-$package.log" >&2; exit 1; }
done
files=()
for package in "${packages[@]}"; do files+=("$DIST/$package"/*); done
"$WORK/venv-build/bin/twine" check --strict "${files[@]}"
check_args=()
[ -n "$tag" ] && check_args=(--tag "$tag")
dirs=()
for package in "${packages[@]}"; do dirs+=("packages/$package"); done
"$WORK/venv-build/bin/python" scripts/check_dists.py "$DIST" "${dirs[@]}" "${check_args[@]}"
echo "test_wheels: built and checked ${packages[*]} in $(seconds "$t0") s (dists in $DIST)"
[ "$build_only" -eq 1 ] && exit 0

# ---- 2. each wheel alone ------------------------------------------------------------------------
wheel() {  # wheel PACKAGE: path of its built wheel
  local found=("$DIST/$1"/*.whl)
  if [ ! -f "${found[0]}" ]; then
    echo "test_wheels: no wheel for $1 in $DIST/$1 (was it built?)" >&2
    exit 1
  fi
  echo "${found[0]}"
}

if [ -z "${OBERT_DATA_DIR:-}" ] && [ -d "$ROOT/../shared/data" ]; then
  OBERT_DATA_DIR="$(cd "$ROOT/../shared/data" && pwd)"
  export OBERT_DATA_DIR
fi
user_threads="${OMP_NUM_THREADS:-}"  # a set value also holds for each pytest-xdist worker
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # idle OpenMP threads sleep, not spin

# What the scratch test folder's conftest checks: every obert module comes from site-packages.
read -r -d '' GUARD <<'EOF' || true
"""Written by scripts/test_wheels.sh: the tests must run against the installed wheel."""

import sys
import sysconfig
from pathlib import Path

import pytest

SITE = Path(sysconfig.get_paths()["purelib"]).resolve()
OURS = {"obert", "obert_core", "obert_train", "obert_deploy"}


def _foreign() -> list[str]:
    found = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name.split(".")[0] in OURS and file and SITE not in Path(file).resolve().parents:
            found.append(f"{name} from {file}")
    return found


def _shown(foreign: list[str]) -> str:
    more = f" (+{len(foreign) - 3} more)" if len(foreign) > 3 else ""
    return f"test_wheels: imported outside {SITE}: " + "; ".join(foreign[:3]) + more


@pytest.fixture(scope="session", autouse=True)
def _installed_modules_only():
    """Fails the run (in each pytest-xdist worker too) if a test imported an obert module from
    outside site-packages. The session hook below checks the same once more: it also covers a run
    in which no test started this fixture, and without pytest-xdist sets the exit status; a
    worker's exit status does not reach the pytest-xdist controller, hence this fixture."""
    yield
    foreign = _foreign()
    if foreign:
        pytest.fail(_shown(foreign), pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    foreign = _foreign()
    if foreign:
        print("\n" + _shown(foreign), file=sys.stderr)
        session.exitstatus = 1
EOF

for target in "${targets[@]}"; do
  t0=$(date +%s)
  extra_pytest=()
  case "$target" in
    core) package=obert-core; module=obert_core
      specs=("$(wheel obert-core)[test]"); absent=(numba torch obert_train obert_deploy) ;;
    core-numba) package=obert-core; module=obert_core
      specs=("$(wheel obert-core)[numba,test]"); absent=(torch obert_train obert_deploy) ;;
    core-torch) package=obert-core; module=obert_core
      specs=("$(wheel obert-core)[torch,test]"); absent=(numba obert_train obert_deploy) ;;
    train) package=obert-train; module=obert_train
      specs=("$(wheel obert-train)[test]" "$(wheel obert-core)[torch]"); absent=(obert_deploy)
      extra_pytest=(-m "not slow") ;;
    deploy) package=obert-deploy; module=obert_deploy
      specs=("$(wheel obert-deploy)[all,test]" "$(wheel obert-core)")
      absent=(obert_train) ;;
    obert) package=obert; module=obert
      if [ ! -f packages/obert/pyproject.toml ]; then
        echo "test_wheels: packages/obert does not exist; no 'obert' target" >&2
        exit 2
      fi
      specs=("$(wheel obert)[test]" "$(wheel obert-core)" "$(wheel obert-train)" "$(wheel obert-deploy)")
      absent=(); extra_pytest=(-m "not slow") ;;
  esac
  venv="$WORK/venv-$target"
  new_venv "$venv"
  pip_install "$venv" "${specs[@]}" "pytest>=8" "pytest-xdist>=3.5"
  installed=$(seconds "$t0")

  run="$WORK/run-$target"
  rm -rf "$run"
  mkdir -p "$run"
  if [ -d "packages/$package/tests" ]; then
    cp -r "packages/$package/tests" "$run/tests"
    find "$run/tests" -name __pycache__ -prune -exec rm -rf {} +
  fi
  # The repository's pytest configuration (markers, strict mode, warnings as errors, importlib).
  cp pyproject.toml "$run/pyproject.toml"
  printf '%s\n' "$GUARD" >"$run/conftest.py"

  (
    cd "$run"
    "$venv/bin/python" - "$module" "${absent[@]}" <<'EOF'
import importlib
import importlib.util
import sys
import sysconfig
from pathlib import Path

module, absent = sys.argv[1], sys.argv[2:]
site = Path(sysconfig.get_paths()["purelib"]).resolve()
where = Path(importlib.import_module(module).__file__).resolve()
assert site in where.parents, f"{module} imported from {where}, not from {site}"
present = [name for name in absent if importlib.util.find_spec(name) is not None]
assert not present, f"must not be installed in this environment: {present}"
print(f"test_wheels: {module} from {where.parent}; absent: {', '.join(absent) or '-'}")
EOF
    if [ -d tests ]; then
      # OBERT_TEST_WORKERS pytest-xdist workers (2 by default), each with OMP_NUM_THREADS threads
      # if it was set, else 1, as scripts/test.sh; 1 worker: one process, 2 threads by default
      workers="${OBERT_TEST_WORKERS:-2}"
      parallel=()
      threads="$OMP_NUM_THREADS"
      if [ "$workers" -gt 1 ]; then
        parallel=(-n "$workers" --dist loadgroup)
        threads="${user_threads:-1}"
      fi
      env -u PYTHONDONTWRITEBYTECODE OMP_NUM_THREADS="$threads" "$venv/bin/python" -m pytest tests \
        -p no:cacheprovider ${parallel[@]+"${parallel[@]}"} "${extra_pytest[@]}" "${pytest_args[@]}"
    else
      echo "test_wheels: packages/$package has no tests folder; import check only"
    fi
  )
  echo "test_wheels: $target passed (install $installed s, total $(seconds "$t0") s)"
  [ "$keep" -eq 1 ] || rm -rf "$venv" "$run"  # a torch environment is ~2 GB
done
