#!/usr/bin/env bash
# Installs what Canopy builds with (Debian packages) when missing, and checks
# for the CUDA toolkit (NVRTC and cuda.h; libcuda is never linked).
set -euo pipefail
packages=(cmake ninja-build g++ libfmt-dev nlohmann-json3-dev libgtest-dev libbenchmark-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
if [ ! -f "$cuda_home/include/nvrtc.h" ]; then
  echo "setup: no CUDA toolkit at $cuda_home (need nvrtc.h and libnvrtc); set CUDA_HOME" >&2
  exit 1
fi
