#!/usr/bin/env bash
# The README's main command: set up, build, run a workload end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
./build/canopy-demo "$@"
