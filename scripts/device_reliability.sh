#!/usr/bin/env bash
# GPU reliability run (docs/reliability.md), in two steps like
# scripts/device_test.sh (whose build it reuses):
#
#   scripts/device_reliability.sh build   # HERE (no GPU): binaries into build-device/
#   scripts/device_reliability.sh         # ON THE GPU MACHINE, from the repo root,
#                                         # with build-device/ carried over
#
# The run: (1) the reliability tests at full size: GpuDeterminism (100 runs of
# one plan and 10 rebuilt plans, bit-identical), GpuThreads (threads planning
# and running on their own streams with one Runtime), GpuDecodeStress (10^4
# decode steps, reference every 100, host RSS and device memory reported);
# (2) compute-sanitizer memcheck, racecheck, synccheck and initcheck over the
# whole GPU test suite (Gpu*), with the suite's workloads scaled down
# (CANOPY_GPU_REF_BUDGET / CANOPY_GPU_KV_BUDGET) and the stress cut to
# SAN_STRESS_STEPS steps so that the four fit the time; (3) a summary table.
# About 4 minutes on the H200 (racecheck 2.5 of them). Logs go to $OUT.
#
# Environment: OUT (default ./device-out/reliability), SANITIZERS (default
# "memcheck racecheck synccheck initcheck"), SANITIZER_TIMEOUT (s per tool,
# default 90), SAN_REF_BUDGET (default 2e6), SAN_KV_BUDGET (default 3e7),
# SAN_STRESS_STEPS (default 300), SAN_TESTS (gtest filter, default Gpu*).
set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=$ROOT/build-device

if [[ "${1:-run}" == "build" ]]; then
  exec bash scripts/device_test.sh build
fi

OUT=${OUT:-$ROOT/device-out/reliability}
mkdir -p "$OUT"
source scripts/device_steps.sh  # use_device_build, step
use_device_build "$BUILD"
TESTS=$BUILD/canopy_tests


nvidia-smi -L 2>&1 | tee "$OUT/device.txt"
compute-sanitizer --version 2>&1 | tail -n 1 | tee -a "$OUT/device.txt"

# 0. Kernels compiled on the device (16 threads), so that the sanitizers time GPU work only.
step prewarm 120 "$OUT/prewarm.log" "$TESTS" --gtest_filter='GpuPrewarm.*' --gtest_color=no

# 1. The reliability tests at full size.
step reliability 240 "$OUT/reliability.log" "$TESTS" \
  --gtest_filter='GpuDeterminism.*:GpuThreads.*:GpuDecodeStress.*' --gtest_color=no

# 2. Every GPU test under each sanitizer, scaled down.
read -r -a TOOLS <<<"${SANITIZERS-memcheck racecheck synccheck initcheck}"
for tool in "${TOOLS[@]}"; do
  extra=() skip=GpuPrewarm.* limit=${SANITIZER_TIMEOUT:-90}
  # Two tests provoke driver errors on purpose (an impossible cuMemAlloc, a
  # host pointer given as device memory); the library checks every driver
  # result itself, so memcheck reports memory errors only.
  [[ $tool == memcheck ]] && extra=(--report-api-errors no)
  # racecheck checks shared memory inside each kernel: the determinism and
  # thread tests only rerun kernels the suite tests already cover (under
  # racecheck the 220 runs of GpuDeterminism alone take 80 s).
  if [[ $tool == racecheck ]]; then
    skip=$skip:GpuDeterminism.*:GpuThreads.*
    limit=${RACECHECK_TIMEOUT:-420}
  fi
  CANOPY_GPU_REF_BUDGET=${SAN_REF_BUDGET:-2e6} CANOPY_GPU_KV_BUDGET=${SAN_KV_BUDGET:-3e7} \
    CANOPY_STRESS_STEPS=${SAN_STRESS_STEPS:-300} \
    step "$tool" "$limit" "$OUT/$tool.log" \
    compute-sanitizer --tool "$tool" "${extra[@]}" --error-exitcode 86 --print-limit 20 \
    "$TESTS" --gtest_filter="${SAN_TESTS:-Gpu*}:-$skip" --gtest_color=no
done

# 3. Summary (last).
echo
echo "================ reliability summary ================"
grep -E '^\[ (determin|threads|stress) ' "$OUT/reliability.log"
grep -E '^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED  \] Gpu' "$OUT/reliability.log" | head -n 10
printf '%-12s %-14s %6s  %-9s %-7s %s\n' step status seconds passed failed summary
for name in prewarm reliability "${TOOLS[@]}"; do
  log=$OUT/$name.log
  passed=$(grep -c '^\[       OK \]' "$log" 2>/dev/null)
  failed=$(grep -c '^\[  FAILED  \] Gpu.*ms)$' "$log" 2>/dev/null)
  summary=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" 2>/dev/null | tail -n 1)
  printf '%-12s %-14s %6s  %-9s %-7s %s\n' "$name" "${STATUS[$name]}" "${TIMES[$name]}" \
    "${passed:-0}" "${failed:-0}" "$summary"
done
fail=0
for s in "${STATUS[@]}"; do [[ $s == ok ]] || fail=1; done
exit $fail
