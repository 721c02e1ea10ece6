#!/usr/bin/env bash
# Times canopy-demo on suite workloads on the GPU machine (build carried in
# build-device/, see scripts/device_test.sh) and prints one table:
# median time, plan prediction, effective bandwidth on unique KV, floor.
#   scripts/device_bench.sh [WORKLOAD ...]     (default: a spread of the suite)
set -u -o pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-device}
OUT=${OUT:-./device-out}
mkdir -p "$OUT"
export CANOPY_SUITE=$PWD/bench/workloads/suite.json
export CANOPY_CACHE_DIR=${CANOPY_CACHE_DIR:-$PWD/$BUILD/kernel-cache}
export LD_LIBRARY_PATH=$PWD/$BUILD/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
workloads=("$@")
if ((${#workloads[@]} == 0)); then
  workloads=(two-level-3 sys-4k-x64 sys-16k-x128 sys-32k-x256 ft-1-1024 tot-10x3 flat-256x1k
             flat-16x32k sys-16k-x128-bf16 two-level-d256)
fi
rows=()
for w in "${workloads[@]}"; do
  log="$OUT/bench_${w}.log"
  "$BUILD/canopy-demo" --workload "$w" --iters "${ITERS:-20}" >"$log" 2>&1
  rc=$?
  check=$(grep -oE '(PASS|FAIL)' "$log" | head -1)
  time_us=$(sed -nE 's/^time +median ([0-9.]+) us.*/\1/p' "$log")
  predicted=$(sed -nE 's/.*plan predicted ([0-9.]+) us.*/\1/p' "$log")
  bw=$(sed -nE 's/^bandwidth +([0-9.]+) TB\/s.*/\1/p' "$log")
  floor=$(sed -nE 's/.*floor ([0-9.]+) us.*/\1/p' "$log")
  rows+=("$(printf '%-18s %4s %5s %10s %10s %8s %9s' "$w" "$rc" "${check:--}" "${time_us:--}" \
            "${predicted:--}" "${bw:--}" "${floor:--}")")
done
echo
printf '%-18s %4s %5s %10s %10s %8s %9s\n' workload rc check median_us predict_us TB/s floor_us
printf '%s\n' "${rows[@]}"
