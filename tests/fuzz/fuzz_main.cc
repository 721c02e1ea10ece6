// libFuzzer entry point of one target (CANOPY_FUZZ_TARGET, set per
// executable by tests/fuzz/CMakeLists.txt). A broken contract aborts, so
// libFuzzer saves the input as a crasher. Named .cc, not .cpp, so that the
// test glob of the root CMakeLists.txt leaves it out of canopy_tests.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "tests/fuzz/fuzz_support.hpp"

#ifndef CANOPY_FUZZ_TARGET
#error "define CANOPY_FUZZ_TARGET to a target name of all_targets()"
#endif

namespace {

const canopy::fuzz::Target& this_target() {
  for (const canopy::fuzz::Target& t : canopy::fuzz::all_targets()) {
    if (std::strcmp(t.name, CANOPY_FUZZ_TARGET) == 0) return t;
  }
  std::fprintf(stderr, "no fuzz target named %s\n", CANOPY_FUZZ_TARGET);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const canopy::fuzz::Target& target = this_target();
  try {
    target.run(data, size);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\n%s: contract broken: %s\n", target.name, e.what());
    std::abort();
  }
  return 0;
}
