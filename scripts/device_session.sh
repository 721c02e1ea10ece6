#!/usr/bin/env bash
# One call on the lent GPU machine: the GPU tests (scripts/device_test.sh) and
# then the side-by-side benchmark (scripts/gpu_bench.sh), their logs packed
# into $OUT/results.tgz (the device tool returns at most 8 files), the two
# summaries printed last. Build both here first:
#
#   bash scripts/device_test.sh build && bash scripts/gpu_bench.sh build
#
# and carry build-device, build-gpu-bench and .peers. Environment: STEPS
# ("tests bench", default both), TEST_BUDGET_S (default 280), plus everything
# the two scripts read (GPU_TESTS, SANITIZERS, WORKLOADS, NCU, DEADLINE_S, ...).
set -u -o pipefail
cd "$(dirname "$0")/.."
FINAL_OUT=${OUT:-$PWD/device-out}
WORK=$(mktemp -d)
mkdir -p "$FINAL_OUT" "$WORK/tests" "$WORK/bench"
steps=${STEPS:-tests bench}
rc=0
if [[ " $steps " == *" tests "* ]]; then
  OUT=$WORK/tests GPU_TEST_TIMEOUT=${TEST_BUDGET_S:-280} bash scripts/device_test.sh \
    >"$WORK/tests/session.log" 2>&1 || rc=1
fi
if [[ " $steps " == *" bench "* ]]; then
  OUT=$WORK/bench bash scripts/gpu_bench.sh >"$WORK/bench/session.log" 2>&1 || rc=1
fi
tar -C "$WORK" -czf "$FINAL_OUT/results.tgz" .
# Whatever the benchmark made for docs travels separately too (plots, table, JSON).
for f in "$WORK"/bench/*.json "$WORK"/bench/*.png "$WORK"/bench/performance_table.md; do
  [[ -f $f ]] && cp "$f" "$FINAL_OUT/"
done
echo "================ tests ================"
sed -n '/================ summary ================/,$p' "$WORK/tests/session.log" 2>/dev/null | tail -n 60
echo "================ bench ================"
tail -n 70 "$WORK/bench/session.log" 2>/dev/null
exit $rc
