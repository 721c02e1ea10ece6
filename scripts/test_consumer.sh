#!/usr/bin/env bash
# Builds and runs examples/cpp_consumer against Canopy both ways a C++ host can
# take it, and checks that the README's host-application snippet is the
# example's README block. Run after scripts/build.sh (it installs from ./build).
#
#   scripts/test_consumer.sh            # readme, package, subdirectory
#   scripts/test_consumer.sh package    # any subset of the three, in that order
#
# package:      cmake --install build --prefix TMP, then the consumer with
#               -DCANOPY_CONSUMER_MODE=package -DCMAKE_PREFIX_PATH=TMP
# subdirectory: the consumer with -DCANOPY_CONSUMER_MODE=subdirectory, which
#               compiles the library again inside the consumer's build (only
#               libcanopy: tests, benchmarks and tools default off there)
# Both leave CMAKE_BUILD_TYPE unset, as a host might (and it compiles fastest).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
steps=("$@")
((${#steps[@]})) || steps=(readme package subdirectory)
export CUDAToolkit_ROOT=${CUDA_HOME:-/usr/local/cuda}
work=$(mktemp -d "${TMPDIR:-/tmp}/canopy-consumer.XXXXXX")
trap 'rm -rf "$work"' EXIT

readme() {
  local snippet=$work/readme_snippet.cpp block=$work/main_block.cpp
  awk '/^## Using it from a host application/ {in_section = 1}
       in_section && /^```cpp/ {in_code = 1; next}
       in_code && /^```/ {exit}
       in_code {print}' README.md >"$snippet"
  sed -n '/\/\/ README begin/,/\/\/ README end/{//!p}' examples/cpp_consumer/main.cpp |
    sed 's/^  //' >"$block"
  if [[ ! -s "$snippet" ]] || ! diff -u "$block" "$snippet"; then
    echo "test_consumer: README's host-application snippet differs from the README block" \
      "of examples/cpp_consumer/main.cpp (diff above: - main.cpp, + README)" >&2
    return 1
  fi
}

consumer() {  # consumer MODE BUILD_DIR [cmake args...]: configure, build, run
  local mode=$1 dir=$2
  shift 2
  cmake -S examples/cpp_consumer -B "$dir" -G Ninja -DCANOPY_CONSUMER_MODE="$mode" "$@" \
    >"$dir.log" || { cat "$dir.log" >&2; return 1; }
  cmake --build "$dir" -j"$(nproc)" >>"$dir.log" || { cat "$dir.log" >&2; return 1; }
  "$dir/canopy_consumer" >"$dir.out" || { cat "$dir.out" >&2; return 1; }
  tail -n 2 "$dir.out"
}

package() {
  [[ -f build/CMakeCache.txt ]] || { echo "test_consumer: no ./build; run scripts/build.sh" >&2; return 1; }
  cmake --install build --prefix "$work/prefix" >/dev/null
  consumer package "$work/package" -DCMAKE_PREFIX_PATH="$work/prefix"
}

subdirectory() {
  consumer subdirectory "$work/subdirectory" -DCANOPY_ROOT="$root"
  # As a subproject Canopy builds only the library and installs nothing.
  local option
  for option in CANOPY_BUILD_TESTS CANOPY_BUILD_BENCH CANOPY_BUILD_TOOLS CANOPY_INSTALL; do
    grep -q "^$option:BOOL=OFF$" "$work/subdirectory/CMakeCache.txt" ||
      { echo "test_consumer: $option is not OFF for a subproject" >&2; return 1; }
  done
}

for step in "${steps[@]}"; do
  case $step in
    readme | package | subdirectory) ;;
    *) echo "test_consumer: unknown step '$step' (readme, package, subdirectory)" >&2; exit 2 ;;
  esac
  t0=$SECONDS
  "$step"
  echo "test_consumer: $step ok in $((SECONDS - t0)) s"
done
