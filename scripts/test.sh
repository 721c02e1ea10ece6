#!/usr/bin/env bash
# The README's test command: set up, build, run every test. GPU tests skip
# (and say why) on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)"
bash scripts/test_consumer.sh  # C++ hosts: installed package and add_subdirectory (docs/cpp-consumers.md)
bash scripts/test_python.sh
# ASan + UBSan build of the host tests (docs/reliability.md has its timing).
bash scripts/test_sanitizers.sh
