#!/usr/bin/env bash
# The Python package on the GPU machine, in two steps:
#
#   scripts/device_python.sh prepare   # HERE (network): what the GPU machine
#                                      # lacks goes to .deps/python-device/:
#                                      # fmt and nlohmann-json (Debian packages
#                                      # unpacked, CMake configs included) and a
#                                      # prebuilt fallback wheel for its Python
#                                      # 3.12, built against those same deps
#   scripts/device_python.sh           # ON THE GPU MACHINE (no network), from
#                                      # the repo root, with .deps carried:
#                                      # pip-builds the package from source
#                                      # (falls back to the prebuilt wheel if
#                                      # that fails, and says so), runs pytest
#                                      # (GPU tests included) and the decode-loop
#                                      # example; summary table last, logs in $OUT
#
# Environment: OUT (logs, default ./device-out), PYTHON (device interpreter,
# default /opt/torch/.venv/bin/python3), WHEEL_PYTHON (prepare: the 3.12
# interpreter for the fallback wheel), CANOPY_CACHE_DIR (kernel cache, default
# build/kernel-cache-python), BUILD_TIMEOUT / TEST_TIMEOUT / EXAMPLE_TIMEOUT (s),
# E2E (check, bench or all: bench/engines/transformers_e2e.py, with E2E_ARGS,
# default --quick, and E2E_TIMEOUT).
set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPS=$ROOT/.deps/python-device
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
export PATH="$cuda_home/bin:$PATH"
export CMAKE_PREFIX_PATH="$DEPS/root/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"

# A Python 3.12 here, for a wheel the device's Python 3.12 can install.
find_wheel_python() {
  local c
  for c in "${WHEEL_PYTHON:-}" python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
    [[ -n "$c" ]] && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null &&
      { echo "$c"; return 0; }
  done
  return 1
}

if [[ "${1:-run}" == "prepare" ]]; then
  set -e
  rm -rf "$DEPS"
  mkdir -p "$DEPS/debs" "$DEPS/root" "$DEPS/wheels"
  (cd "$DEPS/debs" && apt-get download libfmt-dev libfmt9 nlohmann-json3-dev)
  for deb in "$DEPS"/debs/*.deb; do dpkg -x "$deb" "$DEPS/root"; done
  test -f "$DEPS/root/usr/include/fmt/format.h" && test -f "$DEPS/root/usr/include/nlohmann/json.hpp"
  rm -rf "$DEPS/debs"
  wheel_py=$(find_wheel_python) || {
    echo "prepare: no Python 3.12 here (set WHEEL_PYTHON): no fallback wheel" >&2
    du -sh "$DEPS"
    exit 0
  }
  venv=$ROOT/build/venv-cp312
  [[ -x "$venv/bin/python" ]] || "$wheel_py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    "scikit-build-core>=0.10" "nanobind>=2.0"
  # The same configure the device runs: fmt and nlohmann-json from .deps only.
  "$venv/bin/python" -m pip wheel -q --no-build-isolation --no-deps -w "$DEPS/wheels" \
    -C build-dir="$ROOT/build/pip-cp312" .
  grep -E '^(fmt|nlohmann_json)_DIR' "$ROOT/build/pip-cp312/CMakeCache.txt"
  ls -l "$DEPS/wheels"
  du -sh "$DEPS"
  exit 0
fi

OUT=${OUT:-$ROOT/device-out}
mkdir -p "$OUT"
PY=${PYTHON:-/opt/torch/.venv/bin/python3}
[[ -x "$PY" ]] || PY=python3
SITE=$ROOT/build/python-device  # pip --target: the device's environment stays untouched
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="$cuda_home/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CANOPY_CACHE_DIR=${CANOPY_CACHE_DIR:-$ROOT/build/kernel-cache-python}
source scripts/device_steps.sh  # step


echo "== environment" | tee "$OUT/python_env.txt"
{
  nvidia-smi -L 2>&1
  "$PY" -c 'import sys; print("python", sys.version.split()[0], sys.executable)'
  for m in torch numpy nanobind scikit_build_core pytest; do
    "$PY" -c "import $m; print('$m', $m.__version__)" 2>&1 | tail -n 1
  done
  cmake --version | head -n 1
  nvcc --version | tail -n 1
  echo "deps prefix: $DEPS/root/usr ($(ls "$DEPS/root/usr/include" 2>/dev/null | tr '\n' ' '))"
} 2>&1 | tee -a "$OUT/python_env.txt"

# 1. pip install from source, as a user would (no network: --no-index).
rm -rf "$SITE"
step build "${BUILD_TIMEOUT:-360}" "$OUT/python_build.log" \
  "$PY" -m pip install -v --disable-pip-version-check --no-index --no-build-isolation \
  --no-deps --target "$SITE" -C build-dir="$ROOT/build/pip-device" .
installed="source build"
if [[ ${STATUS[build]} != ok ]]; then
  echo "!! the source build failed (tail of $OUT/python_build.log):"
  tail -n 30 "$OUT/python_build.log"
  rm -rf "$SITE"
  step fallback_wheel 120 "$OUT/python_fallback.log" \
    "$PY" -m pip install --disable-pip-version-check --no-index --no-deps --target "$SITE" \
    "$DEPS"/wheels/canopy-*.whl
  installed="prebuilt wheel (the source build FAILED)"
fi

# 2. Every test: the GPU ones run here (prewarm compiles their kernels first).
step pytest "${TEST_TIMEOUT:-420}" "$OUT/python_tests.log" \
  "$PY" -m pytest -v -s -rs --durations=10 python/tests

# 3. The decode-loop example at full size, both dtypes and layouts.
step example_fp16_nhd "${EXAMPLE_TIMEOUT:-120}" "$OUT/decode_loop_fp16_nhd.log" \
  "$PY" examples/python/decode_loop.py --dtype fp16 --layout NHD
step example_bf16_hnd "${EXAMPLE_TIMEOUT:-120}" "$OUT/decode_loop_bf16_hnd.log" \
  "$PY" examples/python/decode_loop.py --dtype bf16 --layout HND

# 3b. transformers end to end (docs/engines.md): E2E=check|bench|all, off by default.
if [[ -n ${E2E:-} ]]; then
  step transformers_e2e "${E2E_TIMEOUT:-420}" "$OUT/transformers_e2e.log" \
    "$PY" bench/engines/transformers_e2e.py "$E2E" ${E2E_ARGS:---quick} --out "$OUT"
fi

# 4. Summary (last).
echo
echo "================ summary ================"
echo "package: $installed"
grep -E '^prewarm:' "$OUT/python_tests.log" | head -n 1
grep -E '(passed|failed|error)' "$OUT/python_tests.log" | tail -n 1
echo "GPU cases passed: $(grep -cE 'test_gpu.py::.* PASSED' "$OUT/python_tests.log")," \
  "failed: $(grep -cE 'test_gpu.py::.* (FAILED|ERROR)' "$OUT/python_tests.log")"
grep -E '^(FAILED|ERROR) ' "$OUT/python_tests.log" | head -n 20
grep -E '^SKIPPED ' "$OUT/python_tests.log" | head -n 10
[[ -f $OUT/transformers_e2e.log ]] && grep -E '^(check|\|)' "$OUT/transformers_e2e.log" | tail -n 20
for log in "$OUT"/decode_loop_*.log; do
  echo "$(basename "$log"): $(grep -E '^(OK|MISMATCH|no GPU)' "$log" | head -n 1)"
done
for name in "${ORDER[@]}"; do
  printf '%-18s %-16s %5ss\n' "$name" "${STATUS[$name]}" "${TIMES[$name]}"
done
fail=0
for name in "${ORDER[@]}"; do
  [[ $name == fallback_wheel || ${STATUS[$name]} == ok ]] || fail=1
done
exit $fail
