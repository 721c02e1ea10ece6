#!/usr/bin/env bash
# libFuzzer runs of the tests/fuzz targets (docs/reliability.md has the
# figures and what they found).
#
#   scripts/fuzz.sh build                 # clang + ASan + UBSan + libFuzzer into build-fuzz/
#   scripts/fuzz.sh run TARGET [SECONDS]  # fuzz one target from its corpus (default 600 s)
#   scripts/fuzz.sh merge TARGET          # minimize the found inputs into tests/fuzz/corpus/TARGET
#   scripts/fuzz.sh campaign [SECONDS]    # every target in turn: 10^6 executions or SECONDS
#                                         # (default 1000) each, then a table of the counts
#   scripts/fuzz.sh pack                  # the four binaries, stripped, into fuzz-carry/
#                                         # (for a machine with more cores: ~20 MB)
#   scripts/fuzz.sh parallel SECONDS [JOBS]
#                                         # all four targets at once for SECONDS, each
#                                         # with JOBS fuzzers on one shared corpus
#                                         # (default: cores / 4); reads fuzz-carry/ if
#                                         # there, else build-fuzz/; new corpus units,
#                                         # crashers and logs under $FUZZ_OUT, a table last
#
# Targets: block_tables explicit_tree workload plan_json tuning_db. A run grows
# fuzz-out/TARGET/ (a scratch corpus seeded from tests/fuzz/corpus/TARGET),
# writes crashers to fuzz-out/crashes/TARGET/ and its log to
# fuzz-out/TARGET.log; the last "#N DONE cov: C ft: F" line gives
# executions and coverage. Extra libFuzzer flags: FUZZ_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=$ROOT/build-fuzz
OUT=${FUZZ_OUT:-$ROOT/fuzz-out}
# Crashers are found under ASan/UBSan; a leak at exit is not a finding. A
# small quarantine: freed 64 MiB tables otherwise pile up past -rss_limit_mb
# (one such "oom" is kept in tests/fuzz/regressions/workload). No allocation
# stacks (malloc_context_size=0: their unwinding was 6% of an execution); run
# the binary on a crasher directly to see them.
FUZZ_ASAN=detect_leaks=0:allocator_may_return_null=1:quarantine_size_mb=16:malloc_context_size=0
# The CPU executor checking accepted plans would start a thread per core in
# every fuzzer on every execution; one thread each, the fuzzers themselves
# fill the cores.
export CANOPY_CPU_THREADS=${CANOPY_CPU_THREADS:-1}

case "${1:-build}" in
  build)
    cuda_home="${CUDA_HOME:-/usr/local/cuda}"
    # _GLIBCXX_SANITIZE_VECTOR: ASan also flags reads past a vector's size
    # within its capacity. --as-needed as Debian's gcc does: CUDA::nvrtc drags in the libcuda stub,
    # which the library loads at run time instead.
    flags="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -g -O2 -D_GLIBCXX_SANITIZE_VECTOR"
    flags+=" -fsanitize-coverage-ignorelist=$ROOT/tests/fuzz/coverage_ignorelist.txt"
    CC=clang CXX=clang++ cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_CXX_FLAGS="$flags" -DCUDAToolkit_ROOT="$cuda_home" \
      -DCMAKE_EXE_LINKER_FLAGS="-Wl,--as-needed" \
      -DCANOPY_FUZZ=ON -DCANOPY_BUILD_TESTS=OFF -DCANOPY_BUILD_BENCH=OFF >/dev/null
    ninja -C "$BUILD" -j"$(nproc)" canopy_fuzz_block_tables canopy_fuzz_explicit_tree \
      canopy_fuzz_workload canopy_fuzz_plan_json canopy_fuzz_tuning_db
    ;;
  run)
    target=${2:?target name}
    seconds=${3:-600}
    mkdir -p "$OUT/$target" "$OUT/crashes/$target"
    ASAN_OPTIONS=${ASAN_OPTIONS:-$FUZZ_ASAN} \
      "$BUILD/tests/fuzz/canopy_fuzz_$target" "$OUT/$target" "$ROOT/tests/fuzz/corpus/$target" \
      -max_total_time="$seconds" -max_len=4096 -timeout=30 -rss_limit_mb=4096 \
      -artifact_prefix="$OUT/crashes/$target/" -print_final_stats=1 ${FUZZ_FLAGS:-} \
      >"$OUT/$target.log" 2>&1 || true
    grep -E '^#[0-9]+ +DONE|^stat::|ERROR|contract broken' "$OUT/$target.log" | tail -n 12
    ;;
  merge)
    target=${2:?target name}
    fresh=$(mktemp -d)
    mkdir -p "$OUT/crashes/$target"
    # -rss_limit_mb=2048: a unit needing more (a few at the harness's size
    # limits take 3 GiB under ASan) stays out of the corpus CI replays.
    ASAN_OPTIONS=${ASAN_OPTIONS:-$FUZZ_ASAN} "$BUILD/tests/fuzz/canopy_fuzz_$target" -merge=1 \
      -rss_limit_mb=2048 -artifact_prefix="$OUT/crashes/$target/" "$fresh" \
      "$ROOT/tests/fuzz/corpus/$target" "$OUT/$target" >"$OUT/$target.merge.log" 2>&1
    rm -rf "$ROOT/tests/fuzz/corpus/$target"
    mkdir -p "$ROOT/tests/fuzz/corpus/$target"
    cp "$fresh"/* "$ROOT/tests/fuzz/corpus/$target/"
    rm -rf "$fresh"
    echo "$target: $(ls "$ROOT/tests/fuzz/corpus/$target" | wc -l) files," \
      "$(du -sh --apparent-size "$ROOT/tests/fuzz/corpus/$target" | cut -f1)"
    ;;
  campaign)
    seconds=${2:-1000}
    for target in block_tables explicit_tree workload plan_json tuning_db; do
      FUZZ_FLAGS="-runs=1000000 ${FUZZ_FLAGS:-}" bash "$0" run "$target" "$seconds" >/dev/null
    done
    printf '%-14s %10s %8s %7s %6s %s\n' target executions seconds exec/s corpus crashers
    for target in block_tables explicit_tree workload plan_json tuning_db; do
      log=$OUT/$target.log
      runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
      rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
      secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
      printf '%-14s %10s %8s %7s %6s %s\n' "$target" "${runs:-?}" "${secs:-?}" "${rate:-?}" \
        "$(ls "$OUT/$target" | wc -l)" "$(ls "$OUT/crashes/$target" | wc -l)"
    done
    ;;
  pack)
    rm -rf "$ROOT/fuzz-carry"
    mkdir -p "$ROOT/fuzz-carry"
    for target in block_tables explicit_tree workload plan_json tuning_db; do
      strip --strip-debug -o "$ROOT/fuzz-carry/canopy_fuzz_$target" \
        "$BUILD/tests/fuzz/canopy_fuzz_$target"
    done
    du -sh "$ROOT/fuzz-carry"
    ;;
  parallel)
    seconds=${2:?seconds}
    jobs=${3:-$(($(nproc) / 4))}
    bin=$ROOT/fuzz-carry
    [[ -d $bin ]] || bin=$BUILD/tests/fuzz
    pids=()
    for target in block_tables explicit_tree workload plan_json tuning_db; do
      mkdir -p "$OUT/$target" "$OUT/crashes/$target"
      # JOBS independent fuzzers per target sharing one corpus directory, each
      # reloading the others' new units (-reload, every second by default).
      for job in $(seq 1 "$jobs"); do
        ASAN_OPTIONS=${ASAN_OPTIONS:-$FUZZ_ASAN} \
          timeout $((seconds + 120)) "$bin/canopy_fuzz_$target" "$OUT/$target" \
          "$ROOT/tests/fuzz/corpus/$target" -max_total_time="$seconds" -max_len=4096 \
          -timeout=30 -rss_limit_mb=4096 -artifact_prefix="$OUT/crashes/$target/" \
          -print_final_stats=1 ${FUZZ_FLAGS:-} >"$OUT/$target.$job.log" 2>&1 &
        pids+=($!)
      done
    done
    for pid in "${pids[@]}"; do wait "$pid" || true; done
    # Executions per job: its final stat line, or its last "#N" status line if
    # it stopped on a crash (then listed under crashers).
    printf '%-14s %10s %8s %7s %6s %s\n' target executions seconds exec/s corpus crashers
    for target in block_tables explicit_tree workload plan_json tuning_db; do
      runs=0
      for job in $(seq 1 "$jobs"); do
        log=$OUT/$target.$job.log
        n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        [[ -n $n ]] || n=$(sed -nE 's/^#([0-9]+).*/\1/p' "$log" | tail -n 1)
        runs=$((runs + ${n:-0}))
      done
      printf '%-14s %10s %8s %7s %6s %s\n' "$target" "$runs" "$seconds" \
        "$((runs / seconds))" "$(ls "$OUT/$target" | wc -l)" \
        "$(ls "$OUT/crashes/$target" | wc -l)"
    done
    ;;
  *)
    echo "usage: $0 build | run TARGET [SECONDS] | merge TARGET | campaign [SECONDS] |" \
      "pack | parallel SECONDS [JOBS]" >&2
    exit 2
    ;;
esac
