#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer build of the host tests (CI,
# from scripts/test.sh). Builds canopy_tests with gcc into build-asan/ and runs
# every CPU test except the slow ones below; any sanitizer report fails the run.
#
#   bash scripts/test_sanitizers.sh          # build and run (CI)
#   SAN_FILTER='Plan*' bash scripts/test_sanitizers.sh   # another gtest filter
#   SANITIZER=thread bash scripts/test_sanitizers.sh     # ThreadSanitizer build
#       (build-tsan/) of the threaded tests only; not in CI (5 more minutes)
#
# Left out (the plain build runs them): Gpu* (skip without a GPU anyway),
# *KernelCompile* and *ColdVsWarmTimings* (NVRTC compiles and timings, not our
# code), and FuzzReplay.FreshRandomInputs (the fuzzers run such inputs under
# ASan + UBSan themselves: scripts/fuzz.sh). docs/reliability.md has timings.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=$ROOT/build-asan
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
# --as-needed as in scripts/fuzz.sh: CUDA::nvrtc drags in the libcuda stub, which
# the library loads at run time instead.
sanitize=address,undefined
default_filter='*'
if [[ "${SANITIZER:-}" == thread ]]; then
  sanitize=thread
  BUILD=$ROOT/build-tsan
  default_filter='ConcurrentPlanning.*:CubinCacheTest.Concurrent*:CubinCacheProcesses.*'
fi
flags="-fsanitize=$sanitize -fno-sanitize-recover=all -fno-omit-frame-pointer -O1 -g1"
t0=$SECONDS
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=$sanitize -Wl,--as-needed" \
  -DCUDAToolkit_ROOT="$cuda_home" \
  -DCANOPY_BUILD_BENCH=OFF -DCANOPY_FMT_HEADER_ONLY=OFF -DCANOPY_PCH=ON >/dev/null
ninja -C "$BUILD" -j"$(nproc)" canopy_tests
built=$((SECONDS - t0))
filter=${SAN_FILTER:-$default_filter}
# halt_on_error: the first report fails the test binary; leaks are reported too.
# One gtest shard per core (the tests are independent), each with its own log.
export ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 TSAN_OPTIONS=halt_on_error=1
shards=${SAN_SHARDS:-$(nproc)}
pids=()
for ((i = 0; i < shards; ++i)); do
  GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=$i "$BUILD/canopy_tests" \
    --gtest_filter="$filter:-Gpu*:*KernelCompile*:*FreshRandomInputs*:*ColdVsWarmTimings*" \
    --gtest_brief=1 --gtest_color=no >"$BUILD/shard-$i.log" 2>&1 &
  pids+=($!)
done
failed=0
for ((i = 0; i < shards; ++i)); do
  if ! wait "${pids[$i]}"; then
    failed=1
    echo "sanitizer tests: shard $i of $shards FAILED; its log ($BUILD/shard-$i.log):"
  fi
  cat "$BUILD/shard-$i.log"
done
((failed == 0)) || exit 1
echo "sanitizer tests: built in ${built} s, ran in $((SECONDS - t0 - built)) s"
