#!/usr/bin/env bash
# The Python package's CI: pip-installs it (root pyproject.toml, scikit-build-core
# over the same CMake build) into a venv under build/, then runs pytest over
# python/tests. GPU tests skip (and say why) without a GPU or torch.
#
#   scripts/test_python.sh            # PYTHON=python3.X picks the interpreter
#
# The venv (build/venv-python) sees the interpreter's own packages
# (--system-site-packages), so torch is tested when the machine has it. The
# package's CMake build lives in build/pip/ and is incremental across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh  # cmake, ninja, g++, fmt, nlohmann-json, the CUDA toolkit
PY=${PYTHON:-python3}
VENV=build/venv-python
t0=$SECONDS

apt_install() {  # Debian's python3 splits venv (ensurepip) and headers into packages
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "test_python: installing $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv --system-site-packages "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    apt_install "python$version-venv"
    "$PY" -m venv --system-site-packages "$VENV"
  fi
fi
has_headers='import os, sys, sysconfig
sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
"$VENV/bin/python" -c "$has_headers" || apt_install "python$version-dev"

"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  "scikit-build-core>=0.10" "nanobind>=2.0" numpy pytest
# torch and transformers for canopy.transformers' host-side tests
# (python/tests/test_transformers.py: continuous batching on the CPU), the
# versions of the GPU machine, into their own folder (build/py-transformers,
# on PYTHONPATH for pytest) while the package builds: 60-150 s and 5 GB,
# mostly download and unpacking. CANOPY_TEST_TRANSFORMERS=0 leaves them out;
# without them (or without network) those tests skip, visibly.
DEPS_DIR=build/py-transformers
deps_pid=""
if [ "${CANOPY_TEST_TRANSFORMERS:-1}" != 0 ] && [ ! -f "$DEPS_DIR/.done" ]; then
  rm -rf "$DEPS_DIR"
  (t1=$SECONDS
   # --no-compile: no .pyc for torch's thousands of modules (CPU the build needs).
   if "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-compile \
     --target "$DEPS_DIR" \
     "torch==2.11.0" "transformers==5.17.0" psutil >build/py-transformers.log 2>&1; then
     touch "$DEPS_DIR/.done"
     echo "test_python: torch and transformers installed in $((SECONDS - t1)) s (beside the build)"
   else
     echo "test_python: could not install torch and transformers (build/py-transformers.log):" \
       "test_transformers.py will skip"
   fi) &
  deps_pid=$!
fi
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
export PATH="$cuda_home/bin:$PATH" CUDAToolkit_ROOT="$cuda_home"
if command -v ccache >/dev/null; then export CMAKE_CXX_COMPILER_LAUNCHER=ccache; fi
# No build isolation: the build uses the venv's nanobind, so build/pip stays valid.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation \
  --no-deps --force-reinstall .
echo "test_python: package built and installed in $((SECONDS - t0)) s"
[ -z "$deps_pid" ] || wait "$deps_pid"
if [ -f "$DEPS_DIR/.done" ]; then
  export PYTHONPATH="$PWD/$DEPS_DIR${PYTHONPATH:+:$PYTHONPATH}"
fi
"$VENV/bin/python" -m pytest -q -rs python/tests
echo "test_python: done in $((SECONDS - t0)) s"
