# Shared by the device scripts (device_test.sh, device_reliability.sh,
# device_python.sh); sourced, not run.

# use_device_build BUILD: the environment the GPU tests run in, from the
# binaries and kernel cache that `scripts/device_test.sh build` made.
use_device_build() {
  local build=$1
  export CANOPY_SUITE=$ROOT/bench/workloads/suite.json
  export CANOPY_CACHE_DIR=$build/kernel-cache
  export LD_LIBRARY_PATH=$build/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export PATH=/usr/local/cuda/bin:$PATH
}

# step NAME TIMEOUT LOG CMD...: runs CMD under a time limit into LOG and
# records ok / TIMEOUT / FAIL and the seconds in STATUS, TIMES and ORDER, so
# one failed step never stops the run and the summary table can list them all.
declare -A STATUS TIMES
ORDER=()
step() {
  local name=$1 limit=$2 log=$3
  shift 3
  ORDER+=("$name")
  local t0=$SECONDS
  timeout --signal=TERM --kill-after=10 "$limit" "$@" >"$log" 2>&1
  local rc=$?
  TIMES[$name]=$((SECONDS - t0))
  case $rc in
    0) STATUS[$name]=ok ;;
    124 | 137) STATUS[$name]="TIMEOUT(${limit}s)" ;;
    *) STATUS[$name]="FAIL(rc=$rc)" ;;
  esac
  echo "== $name: ${STATUS[$name]} in ${TIMES[$name]} s (log: $log)"
}
