#!/usr/bin/env bash
# GPU correctness run for Canopy, in two steps:
#
#   scripts/device_test.sh build   # HERE (no GPU needed): Release build in
#                                  # build-device-obj/, binaries stripped into
#                                  # build-device/, with libbenchmark
#                                  # copied into build-device/lib and the kernel
#                                  # cubins prewarmed for sm_90 into
#                                  # build-device/kernel-cache
#   scripts/device_test.sh         # ON THE GPU MACHINE, from the repo root, with
#                                  # build-device/ carried over: runs the Gpu*
#                                  # tests, compute-sanitizer memcheck, racecheck
#                                  # and initcheck on a small subset, prints a
#                                  # summary table last. Logs go to $OUT.
#
# Environment: OUT (log folder, default ./device-out), PREWARM_ARCH (build
# step with PREWARM=1, default 90), GPU_TESTS (gtest filter, default Gpu*),
# SANITIZERS (tools, default "memcheck racecheck initcheck synccheck"; empty:
# none), SANITIZER_SUBSET (gtest filter the sanitizers run; default below),
# GPU_TEST_TIMEOUT (s, default 300), SANITIZER_TIMEOUT (s
# per tool, default 100; the defaults keep a whole run under 10 minutes),
# CANOPY_GPU_REF_BUDGET / CANOPY_GPU_KV_BUDGET (tests/runtime/device/gpu_attention_test.cpp).
# docs/gpu-correctness.md has the commands and the last results.
set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=$ROOT/build-device

if [[ "${1:-run}" == "build" ]]; then
  # Objects stay in build-device-obj (incremental); build-device gets only what
  # the GPU machine runs, so it stays far under the 64 MiB that can travel.
  set -e
  OBJ=$ROOT/build-device-obj
  cmake -S . -B "$OBJ" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCANOPY_BUILD_BENCH=ON
  ninja -j"${JOBS:-2}" -C "$OBJ" canopy_tests
  ninja -j"${JOBS:-2}" -k 0 -C "$OBJ" || echo "warning: some other targets did not build" >&2
  rm -rf "$BUILD"
  mkdir -p "$BUILD/lib"
  find "$OBJ" -maxdepth 1 -type f -perm -u+x -name 'canopy*' -exec cp {} "$BUILD/" \;
  strip --strip-unneeded "$BUILD"/canopy*
  cp -a /usr/lib/x86_64-linux-gnu/libbenchmark.so.1* "$BUILD/lib/" 2>/dev/null || true
  # Kernels for the device's arch, compiled here (PREWARM=1) so the GPU machine
  # only loads them; by default the device compiles them itself in the first
  # test (GpuPrewarm, 16 threads: ~20 s), which keeps the carry small.
  if [[ "${PREWARM:-0}" == 1 ]]; then
    CANOPY_PREWARM_ARCH=${PREWARM_ARCH:-90} CANOPY_CACHE_DIR=$BUILD/kernel-cache \
      CANOPY_SUITE=$ROOT/bench/workloads/suite.json \
      "$BUILD/canopy_tests" --gtest_filter='GpuPrewarm.*'
  fi
  du -sh "$BUILD"
  exit 0
fi

OUT=${OUT:-$ROOT/device-out}
mkdir -p "$OUT"
source scripts/device_steps.sh  # use_device_build, step
use_device_build "$BUILD"
TESTS=$BUILD/canopy_tests


echo "== device"
nvidia-smi -L 2>&1 | tee "$OUT/device.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 |
  tee -a "$OUT/device.txt"
compute-sanitizer --version 2>&1 | tail -n 2 | tee -a "$OUT/device.txt"
echo "cubins carried: $(find "$CANOPY_CACHE_DIR" -type f 2>/dev/null | wc -l)" | tee -a "$OUT/device.txt"

# 1. Every GPU test (the whole suite at full size, random trees, API tests).
export CANOPY_GPU_REPORT=$OUT/gpu_report.tsv
step gpu_tests "${GPU_TEST_TIMEOUT:-300}" "$OUT/gpu_tests.log" \
  "$TESTS" --gtest_filter="${GPU_TESTS:-Gpu*}" --gtest_color=no
unset CANOPY_GPU_REPORT

# 2. Sanitizers on a representative subset: small workloads, every head dim,
#    both dtypes and layouts, page sizes 1/16/64, soft cap, lse, graph replay.
SUBSET='GpuWorkloads/GpuSuite.MatchesReference/ft_1_2_64'
SUBSET+=':GpuWorkloads/GpuSuite.MatchesReference/binary_9'
SUBSET+=':GpuTrees/GpuRandom.MatchesReference/fp16_nhd_d64_*'
SUBSET+=':GpuTrees/GpuRandom.MatchesReference/bf16_hnd_d256_*'
SUBSET+=':GpuTrees/GpuRandom.MatchesReference/fp16_hnd_d128_g7*'
SUBSET+=':GpuTrees/GpuRandom.MatchesReference/bf16_nhd_d128_g16*'
SUBSET+=':GpuRuntime.GraphCaptureAndReplay:GpuRuntime.CallerWorkspace'
SUBSET+=':GpuKernels/GpuFamilies.MatchesReference/two_level_3_small*'
SUBSET+=':GpuKernels/GpuFamilies.MatchesReference/flat_8x300*'
SUBSET+=':GpuKernels/GpuFamilies.MatchesReference/bf16_hnd_d256*'
SUBSET=${SANITIZER_SUBSET:-$SUBSET}
read -r -a TOOLS <<<"${SANITIZERS-memcheck racecheck initcheck synccheck}"
for tool in "${TOOLS[@]}"; do
  step "$tool" "${SANITIZER_TIMEOUT:-100}" "$OUT/$tool.log" \
    compute-sanitizer --tool "$tool" --error-exitcode 86 --print-limit 20 \
    "$TESTS" --gtest_filter="$SUBSET" --gtest_color=no
done

# 3. Summary (last): the per-case table, then one line per step.
echo
echo "================ summary ================"
grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$OUT/gpu_tests.log" | sort | uniq -c | head -n 60 || true
grep -E '^(suite|graph|random|planner|family) ' "$OUT/gpu_tests.log" | awk '$NF != "PASS"' | head -n 40
if [[ -f "$OUT/gpu_report.tsv" ]]; then
  awk -F'\t' 'NR > 1 { n++; if ($11 == "PASS") p++; if ($7 > mo) mo = $7; if ($8 > ml) ml = $8 }
              END { printf "cases: %d, passed: %d, max out rel-L2 %.3e, max lse rel-L2 %.3e\n", n, p, mo, ml }' \
    "$OUT/gpu_report.tsv"
fi
for tool in "${TOOLS[@]}"; do
  summary=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/$tool.log" 2>/dev/null | tail -n 1)
  tests=$(grep -E '^\[  (PASSED|FAILED) ' "$OUT/$tool.log" 2>/dev/null | tr '\n' ' ')
  printf '%-10s %-14s %5ss  %s  %s\n' "$tool" "${STATUS[$tool]}" "${TIMES[$tool]}" "$summary" "$tests"
done
printf '%-10s %-14s %5ss  %s\n' gpu_tests "${STATUS[gpu_tests]}" "${TIMES[gpu_tests]}" \
  "$(grep -E '^\[  (PASSED|FAILED) ' "$OUT/gpu_tests.log" | tr '\n' ' ')"
fail=0
for s in "${STATUS[@]}"; do [[ $s == ok ]] || fail=1; done
exit $fail
