#!/usr/bin/env bash
# Nsight Compute profiles of Canopy's kernels on the GPU machine, one launch
# of each kernel of a step (launches 3-5: a fused step is one launch, so the
# demo runs 4 steps), for the cases below (or PROFILE_CASES): speed of
# light, occupancy, warp stall reasons, tensor-pipe and memory throughput.
# Uses canopy-demo from build-device/ (scripts/device_test.sh build).
#
#   PROFILE_CASES='sys-32k-x256|--configs mma_q128_kv64_w8_s3;flat-64x4k|' \
#     bash scripts/device_profile.sh
#
# Each case is "workload|canopy-demo planner options"; cases are separated by
# ';'. Full reports go to $OUT/profile.txt; a one-line summary per kernel is
# printed last. `ncu --clock-control none` leaves the GPU clocks alone.
set -u -o pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-device}
OUT=${OUT:-./device-out}
mkdir -p "$OUT"
export CANOPY_SUITE=$PWD/bench/workloads/suite.json
export CANOPY_CACHE_DIR=${CANOPY_CACHE_DIR:-/tmp/canopy-profile-cache}
export LD_LIBRARY_PATH=$PWD/$BUILD/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# Default: v2's kernels (wgmma and mma, persistent with the merge fused in) on a
# wide shared prefix, a head-dim-256 tree and a small step.
V2=--fuse-merge
CASES=${PROFILE_CASES:-"sys-16k-x128|$V2 --configs wgmma_q128_kv128_w12_s2;sys-16k-x128|$V2 --configs mma_q64_kv64_w4_s3;two-level-d256|$V2 --configs wgmma_q64_kv64_w8_s2,mma_q64_kv64_w4_s2;ft-1-2-64|$V2 --configs mma_q64_kv64_w4_s3,wgmma_q64_kv128_w8_s2"}
METRICS=gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed
METRICS+=,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active
# wgmma (HGMMA) counts in its own pipe metric on Hopper; added only where this
# ncu knows it, since an unknown metric name fails the whole run.
GMMA=sm__pipe_tensor_op_gmma_cycles_active
if ncu --query-metrics --chip gh100 2>/dev/null | grep -q "^$GMMA "; then
  METRICS+=,$GMMA.avg.pct_of_peak_sustained_active
fi
METRICS+=,sm__warps_active.avg.pct_of_peak_sustained_active,dram__bytes_read.sum
# Load balance of a launch: the busiest SM's active cycles against the mean
# (a persistent launch's static queues show up here) and the elapsed cycles.
METRICS+=,sm__cycles_active.max,sm__cycles_active.avg,sm__cycles_active.min,sm__cycles_elapsed.max
METRICS+=,dram__throughput.avg.pct_of_peak_sustained_elapsed,lts__t_bytes.sum
METRICS+=,lts__throughput.avg.pct_of_peak_sustained_elapsed
METRICS+=,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum
METRICS+=,l1tex__throughput.avg.pct_of_peak_sustained_active
# Why warps wait, in cycles per issued instruction (WarpStateStats prints no breakdown as text).
for r in barrier long_scoreboard short_scoreboard math_pipe_throttle mio_throttle wait \
  not_selected lg_throttle no_instruction dispatch_stall branch_resolving selected; do
  METRICS+=,smsp__average_warps_issue_stalled_${r}_per_issue_active.ratio
done
: >"$OUT/profile.txt"
summary=()
IFS=';' read -r -a cases <<<"$CASES"
for c in "${cases[@]}"; do
  workload=${c%%|*}
  opts=${c#*|}
  # shellcheck disable=SC2086  # opts is a list of options
  timeout 150 ncu --clock-control none --kernel-name regex:'canopy_' --launch-skip 2 \
    --launch-count 3 --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
    --section MemoryWorkloadAnalysis --metrics "$METRICS" --print-units base \
    "$BUILD/canopy-demo" --workload "$workload" --no-check --iters 3 --warmup 1 $opts \
    >"$OUT/profile_case.txt" 2>&1
  rc=$?
  { echo "######## $workload $opts (rc $rc)"; cat "$OUT/profile_case.txt"; } >>"$OUT/profile.txt"
  # One line per profiled kernel: name, duration, tensor pipe, occupancy, throughputs.
  summary+=("$(awk -v tag="$workload $opts" '
    function num(x) { gsub(/,/, "", x); return x + 0 }
    function flush() {
      if (name != "")
        printf "%-34s %-30s %9s ns  hmma %5s%%  gmma %5s%%  occ %5s%%  dram %5s%%  l2 %5s%%  l1 %5s%%  sm-active avg/max %4.2f  max/elapsed %4.2f\n",
               tag, substr(name, 1, 30), t, hmma, gmma, occ, dram, l2, l1,
               (amax > 0 ? aavg / amax : 0), (el > 0 ? amax / el : 0)
      name = ""; gmma = "-"
    }
    /^  canopy_/ { flush(); name = $1; sub(/canopy_/, "", name); sub(/_q_.*_nhd_/, "_", name) }
    /gpu__time_duration.sum/ { t = $NF }
    /sm__pipe_tensor_op_hmma_cycles_active/ { hmma = $NF }
    /sm__pipe_tensor_op_gmma_cycles_active/ { gmma = $NF }
    /sm__warps_active.avg.pct/ { occ = $NF }
    /sm__cycles_active.max/ { amax = num($NF) }
    /sm__cycles_active.avg/ { aavg = num($NF) }
    /sm__cycles_elapsed.max/ { el = num($NF) }
    /dram__throughput.avg.pct/ { dram = $NF }
    /lts__throughput.avg.pct/ { l2 = $NF }
    /l1tex__throughput.avg.pct/ { l1 = $NF }
    END { flush() }' "$OUT/profile_case.txt")")
done
rm -f "$OUT/profile_case.txt"
echo "================ profile summary (full reports: profile.txt) ================"
printf '%s\n' "${summary[@]}"
