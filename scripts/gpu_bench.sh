#!/usr/bin/env bash
# Canopy side by side with FlashInfer on the lent GPU (bench/gpu/run_bench.py),
# in two steps:
#
#   scripts/gpu_bench.sh build   # HERE (no GPU needed): Release build of
#                                # libcanopy_bench_capi.so into build-gpu-bench/lib,
#                                # Canopy's kernels for the chosen workloads
#                                # compiled for sm_90 into
#                                # build-gpu-bench/kernel-cache.tar.xz, the FlashInfer
#                                # bundle copied into .peers/ if missing, FlashInfer's
#                                # BatchAttention and xqa modules compiled ahead of time
#                                # into .peers/fi_aot_extra.tar.xz if missing (needs
#                                # $FI_PYTHON: a python with the full flashinfer-python
#                                # 0.7.4 wheel and torch; bench/gpu/prebuild_flashinfer_extra.py);
#                                # prints the carry list and its size
#   scripts/gpu_bench.sh [run] [run_bench.py args]
#                                # ON THE GPU MACHINE, from the repo root, with
#                                # build-gpu-bench/ and .peers/ carried: installs the
#                                # bundle into /tmp/site, runs the benchmark, then
#                                # Nsight Compute's DRAM bytes, plots and the markdown
#                                # table, all under $OUT; prints the table last
#   scripts/gpu_bench.sh check-fi [check_fi_extra.py args]
#                                # ON THE GPU MACHINE, with .peers/ carried: installs the
#                                # bundle, then smoke-tests fi-batch-attention and fi-xqa
#                                # alone (bench/gpu/check_fi_extra.py, ~1 minute)
#
# Environment: OUT (default ./device-out), WORKLOADS (comma list; default the
# whole suite), METHODS, ITERS (50), DEADLINE_S (330: no workload starts after
# it), NCU (1: measure DRAM bytes; 0: skip), NCU_DEADLINE_S (120), NCU_TIMEOUT_S
# (170), CANOPY_BENCH_VARIANTS (JSON: extra Canopy methods, name -> planner
# options, e.g. '{"canopy-w8": {"candidates": ["mma_q128_kv64_w8_s3"]}}'; give
# the same at build time, with PREWARM_METHODS naming them, so their kernels
# are prewarmed), FI_JIT (1 lets FlashInfer JIT-compile modules missing from the bundle,
# minutes each; default: such a method fails at once), PEERS (the bundle to copy
# at build time), FI_PYTHON (python3: the interpreter that builds the extra modules),
# FI_AOT_EXTRA_DIR (build-fi-aot-extra: where they are compiled; kept so a
# rebuild only adds what is missing). Kernels are prewarmed for the H200 (sm_90, 132 SMs, 227 KB
# shared memory: canopy_capi.py's H200). Users without the bundle
# install FlashInfer with `pip install flashinfer-python==0.7.4` and run
# bench/gpu/run_bench.py directly (README "Benchmark", docs/benchmark.md).
set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CARRY_BUILD=build-gpu-bench
BUNDLE=.peers/flashinfer-0.7.4
AOT_EXTRA=.peers/fi_aot_extra.tar.xz  # fi-batch-attention and fi-xqa's modules (sm_90a)

if [[ "${1:-run}" == "build" ]]; then
  set -e
  shift
  bash scripts/setup.sh
  OBJ=$ROOT/build-gpu-bench-obj
  cuda_home="${CUDA_HOME:-/usr/local/cuda}"
  cmake -S . -B "$OBJ" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCANOPY_BUILD_TESTS=OFF \
    -DCANOPY_BUILD_BENCH=ON -DCUDAToolkit_ROOT="$cuda_home" >/dev/null
  ninja -j"${JOBS:-2}" -C "$OBJ" canopy_bench_capi
  rm -rf "$CARRY_BUILD"
  mkdir -p "$CARRY_BUILD/lib"
  cp "$OBJ/bench/gpu/libcanopy_bench_capi.so" "$CARRY_BUILD/lib/"
  strip --strip-unneeded "$CARRY_BUILD/lib/libcanopy_bench_capi.so"
  # Canopy's kernels for the benchmark's plans on the H200 (arch 90, 132 SMs,
  # 227 KB), prefix-aware and prefix-blind, compiled here with NVRTC.
  cache=$(mktemp -d)
  # shellcheck disable=SC2054  # the comma is --methods' list
  prewarm_args=(--prewarm "$cache" --capi "$CARRY_BUILD/lib/libcanopy_bench_capi.so"
                --methods "${PREWARM_METHODS:-canopy,canopy-blind}")
  [[ -n "${WORKLOADS:-}" ]] && prewarm_args+=(--workloads "$WORKLOADS")
  # A method that cannot plan a workload (a variant whose kernels do not fit)
  # fails that cell on the device too; the other kernels are still carried.
  python3 bench/gpu/run_bench.py "${prewarm_args[@]}" "$@" ||
    echo "warning: some plans failed to prewarm (see above); those cells will fail" >&2
  tar -C "$cache" -cJf "$CARRY_BUILD/kernel-cache.tar.xz" .
  rm -rf "$cache"
  # FlashInfer 0.7.4, prepared for the H200 (never committed: .peers/ is ignored).
  if [[ ! -f "$BUNDLE/fi_aot.tar.xz" ]]; then
    peers=${PEERS:-}
    for p in "$ROOT/../shared/peers/flashinfer-0.7.4" /work/shared/peers/flashinfer-0.7.4; do
      [[ -z "$peers" && -f "$p/fi_aot.tar.xz" ]] && peers=$p
    done
    if [[ -n "$peers" ]]; then
      mkdir -p "$BUNDLE"
      cp "$peers"/*.whl "$peers"/fi_aot.tar.xz "$peers"/README.md "$BUNDLE/"
    else
      echo "warning: no FlashInfer bundle found (set PEERS); FlashInfer methods will fail" >&2
    fi
  fi
  # BatchAttention and xqa: compiled here for the suite's shapes (nvcc, no GPU).
  if [[ ! -f "$AOT_EXTRA" ]]; then
    fi_py=${FI_PYTHON:-python3}
    if "$fi_py" -c 'import os, sys, torch, flashinfer
sys.exit(not os.path.isdir(os.path.join(os.path.dirname(flashinfer.__file__), "data", "csrc", "xqa")))' \
        >/dev/null 2>&1; then
      mkdir -p .peers
      FLASHINFER_CUDA_ARCH_LIST=9.0 MAX_JOBS=${JOBS:-2} nice -n 19 "$fi_py" \
        bench/gpu/prebuild_flashinfer_extra.py "${FI_AOT_EXTRA_DIR:-build-fi-aot-extra}" \
        --tar "$AOT_EXTRA" ||
        echo "warning: some BatchAttention/xqa modules failed to build (see above)" >&2
    else
      echo "warning: no $AOT_EXTRA and $fi_py lacks the full flashinfer-python==0.7.4 wheel" \
           "or torch (set FI_PYTHON): fi-batch-attention and fi-xqa will fail at once" \
           "(FI_JIT=1 compiles them on the device instead, minutes each)" >&2
    fi
  fi
  echo
  echo "carry (the run tool's carry list): [\"$CARRY_BUILD\", \".peers\"]"
  du -sh "$CARRY_BUILD" .peers 2>/dev/null
  du -cb "$CARRY_BUILD" .peers 2>/dev/null | tail -n 1 |
    awk '{ printf "total %.1f MiB (limit 64 MiB)\n", $1 / 1048576 }'
  exit 0
fi
MODE=run
[[ "${1:-}" == "run" ]] && shift
[[ "${1:-}" == "check-fi" ]] && { MODE=check-fi; shift; }

OUT=${OUT:-$ROOT/device-out}
mkdir -p "$OUT"
T0=$SECONDS
echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
  --format=csv 2>&1 | tee "$OUT/device.txt"

# 1. FlashInfer from the carried bundle (its README's three lines), plus the
#    BatchAttention/xqa modules built by 'build' (same AOT folder).
SITE=/tmp/site
if [[ -f "$BUNDLE/fi_aot.tar.xz" ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$BUNDLE"/*.whl \
    >"$OUT/pip.log" 2>&1 || echo "warning: installing the FlashInfer bundle failed ($OUT/pip.log)"
  mkdir -p "$SITE/flashinfer/data/aot"
  tar xJf "$BUNDLE/fi_aot.tar.xz" -C "$SITE/flashinfer/data/aot" ||
    echo "warning: unpacking FlashInfer's AOT modules failed"
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
else
  echo "warning: no $BUNDLE (carry .peers); using whatever FlashInfer python3 finds"
fi
if [[ ! -f "$AOT_EXTRA" ]]; then
  echo "warning: no $AOT_EXTRA (scripts/gpu_bench.sh build makes it): fi-batch-attention" \
       "and fi-xqa fail unless FI_JIT=1"
elif [[ -d "$SITE/flashinfer" ]]; then
  mkdir -p "$SITE/flashinfer/data/aot"
  tar xJf "$AOT_EXTRA" -C "$SITE/flashinfer/data/aot" ||
    echo "warning: unpacking the BatchAttention/xqa modules failed"
fi
export FLASHINFER_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
[[ "${FI_JIT:-0}" == 1 ]] || export FLASHINFER_DISABLE_JIT=1
if [[ "$MODE" == check-fi ]]; then
  echo "setup: $((SECONDS - T0)) s"
  python3 bench/gpu/check_fi_extra.py "$@" 2>&1 | tee "$OUT/check_fi_extra.log"
  exit "${PIPESTATUS[0]}"
fi

# 2. Canopy: the C API and its prewarmed kernels.
export CANOPY_BENCH_CAPI=$ROOT/$CARRY_BUILD/lib/libcanopy_bench_capi.so
export CANOPY_CACHE_DIR=/tmp/canopy-kernel-cache
mkdir -p "$CANOPY_CACHE_DIR"
if [[ -f "$CARRY_BUILD/kernel-cache.tar.xz" ]]; then
  tar xJf "$CARRY_BUILD/kernel-cache.tar.xz" -C "$CANOPY_CACHE_DIR"
else
  echo "warning: no $CARRY_BUILD/ (run 'scripts/gpu_bench.sh build' and carry it)"
fi
export CANOPY_SUITE=$ROOT/bench/workloads/suite.json
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PATH=/usr/local/cuda/bin:$PATH
echo "setup: $((SECONDS - T0)) s; cubins carried: $(find "$CANOPY_CACHE_DIR" -type f | wc -l)"

# 3. The benchmark (supervised: a crash or hang costs one method, not the run).
args=(--out "$OUT/gpu_bench.json" --iters "${ITERS:-50}" --deadline-s "${DEADLINE_S:-330}")
[[ -n "${WORKLOADS:-}" ]] && args+=(--workloads "$WORKLOADS")
[[ -n "${METHODS:-}" ]] && args+=(--methods "$METHODS")
python3 bench/gpu/run_bench.py "${args[@]}" "$@" >"$OUT/run_bench.log" 2>&1
echo "== bench: rc $? in $((SECONDS - T0)) s (log: $OUT/run_bench.log)"
grep -E 'FAIL|ERROR|Traceback|worker ' "$OUT/run_bench.log" | head -n 20

# 4. DRAM bytes read, per (workload, method), from Nsight Compute.
if [[ "${NCU:-1}" == 1 && -f "$OUT/gpu_bench.json" ]] && command -v ncu >/dev/null; then
  ncu_args=(--ncu --out "$OUT/gpu_bench.json" --ncu-manifest "$OUT/ncu_manifest.json"
            --deadline-s "${NCU_DEADLINE_S:-120}")
  [[ -n "${WORKLOADS:-}" ]] && ncu_args+=(--workloads "$WORKLOADS")
  timeout -k 10 "${NCU_TIMEOUT_S:-170}" ncu --clock-control none --profile-from-start off \
    --target-processes all --metrics dram__bytes_read.sum --csv --log-file "$OUT/ncu.csv" \
    python3 bench/gpu/run_bench.py "${ncu_args[@]}" >"$OUT/ncu_run.log" 2>&1
  echo "== ncu: rc $? in $((SECONDS - T0)) s (log: $OUT/ncu_run.log)"
  python3 bench/gpu/run_bench.py --parse-ncu "$OUT/ncu.csv" --manifest "$OUT/ncu_manifest.json" \
    --json "$OUT/gpu_bench.json" >"$OUT/ncu_parse.log" 2>&1 ||
    echo "ncu parse failed (see $OUT/ncu_parse.log)"
  grep -E '^merged|problem' "$OUT/ncu_parse.log" | tail -n 8
fi

# 5. Plots and the markdown table (docs/performance.md), then the table, last.
if [[ -f "$OUT/gpu_bench.json" ]]; then
  python3 bench/gpu/plot_bench.py "$OUT/gpu_bench.json" --markdown \
    >"$OUT/performance_table.md" 2>"$OUT/plots.log" || echo "plots failed ($OUT/plots.log)"
  echo "== total $((SECONDS - T0)) s; files in $OUT"
  python3 bench/gpu/plot_bench.py "$OUT/gpu_bench.json" --table --no-plots
else
  tail -n 60 "$OUT/run_bench.log"
  exit 1
fi
