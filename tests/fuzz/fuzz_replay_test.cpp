// Replays the fuzz corpus (tests/fuzz/corpus/<target>/) and every crasher
// the fuzzers found (tests/fuzz/regressions/<target>/) through the same
// checks the libFuzzer targets run, built with the ordinary compiler: CI
// needs no clang. Plus a few thousand fresh pseudo-random inputs per target.
// docs/reliability.md says how the corpus was made.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_support.hpp"

namespace canopy::fuzz {
namespace {

namespace fs = std::filesystem;

fs::path fuzz_dir() {
  if (const char* env = std::getenv("CANOPY_FUZZ_DIR"); env != nullptr && *env != '\0') return env;
  return fs::path(__FILE__).parent_path();  // the sources' tests/fuzz
}

std::vector<std::uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// "" when the input keeps the contract, else what broke.
std::string run_one(const Target& target, const std::vector<std::uint8_t>& bytes) {
  try {
    target.run(bytes.data(), bytes.size());
    return "";
  } catch (const FuzzFailure& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("unexpected exception: ") + e.what();
  }
}

class FuzzReplay : public ::testing::TestWithParam<Target> {};

}  // namespace

// gtest prints a failing case's parameter: the target's name, not its bytes.
void PrintTo(const Target& target, std::ostream* os) { *os << target.name; }

namespace {

TEST_P(FuzzReplay, CorpusAndRegressions) {
  const Target& target = GetParam();
  int files = 0;
  for (const char* folder : {"corpus", "regressions"}) {
    const fs::path dir = fuzz_dir() / folder / target.name;
    if (!fs::is_directory(dir)) continue;
    std::vector<fs::path> paths;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file()) paths.push_back(e.path());
    std::sort(paths.begin(), paths.end());
    for (const fs::path& p : paths) {
      ++files;
      const std::string broken = run_one(target, read_bytes(p));
      EXPECT_EQ(broken, "") << p;
    }
  }
  // The corpus is part of the repository: an empty replay means a wrong path.
  EXPECT_GT(files, 0) << "no corpus under " << fuzz_dir() / "corpus" / target.name;
  std::printf("[ replay   ] %s: %d files\n", target.name, files);
}

TEST_P(FuzzReplay, FreshRandomInputs) {
  // Deterministic inputs of 0..512 bytes; CANOPY_FUZZ_RANDOM_RUNS overrides the count.
  const Target& target = GetParam();
  const char* env = std::getenv("CANOPY_FUZZ_RANDOM_RUNS");
  const int runs = env != nullptr ? std::atoi(env) : 2000;
  std::mt19937_64 rng(std::hash<std::string>{}(target.name));
  std::vector<std::uint8_t> bytes;
  int broken = 0;
  for (int i = 0; i < runs && broken < 5; ++i) {
    bytes.resize(rng() % 513);
    for (auto& b : bytes) b = static_cast<std::uint8_t>(rng());
    const std::string why = run_one(target, bytes);
    if (!why.empty()) {
      ++broken;
      ADD_FAILURE() << "random input " << i << " (" << bytes.size() << " bytes): " << why;
      // CANOPY_FUZZ_SAVE=dir keeps failing inputs, to replay with the fuzzer binaries.
      if (const char* save = std::getenv("CANOPY_FUZZ_SAVE"); save != nullptr && *save != '\0') {
        fs::create_directories(save);
        std::ofstream(fs::path(save) / (std::string(target.name) + "-" + std::to_string(i)),
                      std::ios::binary)
            .write(reinterpret_cast<const char*>(bytes.data()),
                   static_cast<std::streamsize>(bytes.size()));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzReplay,
                         ::testing::ValuesIn(all_targets().begin(), all_targets().end()),
                         [](const ::testing::TestParamInfo<Target>& param) {
                           return std::string(param.param.name);
                         });

}  // namespace
}  // namespace canopy::fuzz
