#!/usr/bin/env bash
# Configures and builds into ./build (Release, warnings as errors).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
export PATH="$cuda_home/bin:$PATH"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCUDAToolkit_ROOT="$cuda_home" >/dev/null
cmake --build build -j"$(nproc)"
