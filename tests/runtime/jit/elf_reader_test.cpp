// The ELF reader on real cubins and on damaged data: answers or throws, never crashes.
#include "runtime/jit/elf_reader.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "canopy/error.hpp"
#include "canopy/kernel_spec.hpp"
#include "generator/kernel_source.hpp"
#include "runtime/jit/cubin_resources.hpp"
#include "runtime/jit/nvrtc_compiler.hpp"

namespace canopy {
namespace {

const std::vector<char>& sample_cubin() {
  static const std::vector<char> cubin = [] {
    AttentionSpec a;
    const KernelSpec k = merge_kernel_spec(a, 2, kSm90);
    return nvrtc_compile(generator::generate_kernel_source(k), k.kernel_name(), k.to_string(),
                         kSm90)
        .binary;
  }();
  return cubin;
}

TEST(ElfSymbols, CubinExportsItsKernel) {
  AttentionSpec a;
  const std::string name = merge_kernel_spec(a, 2, kSm90).kernel_name();
  const std::vector<std::string> functions = elf_function_names(sample_cubin());
  EXPECT_NE(std::find(functions.begin(), functions.end(), name), functions.end());
}

TEST(ElfSymbols, RejectsNonElfAndTruncatedImages) {
  EXPECT_THROW(elf_symbols(std::vector<char>{}), Error);
  EXPECT_THROW(elf_symbols(std::vector<char>(100, 'x')), Error);
  const std::vector<char>& cubin = sample_cubin();
  // Every prefix either parses (if it keeps all referenced bytes) or throws.
  for (std::size_t cut = 0; cut < cubin.size();
       cut += std::max<std::size_t>(1, cubin.size() / 97)) {
    std::vector<char> prefix(cubin.begin(), cubin.begin() + static_cast<std::ptrdiff_t>(cut));
    try {
      elf_symbols(prefix);
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    }
  }
}

TEST(ElfSymbols, SurvivesRandomCorruption) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<char> damaged = sample_cubin();
    for (int flips = 0; flips < 8; ++flips) {
      // Concentrate on the header and section table, where offsets live.
      const std::size_t at = trial % 2 == 0 ? rng() % 64 : rng() % damaged.size();
      damaged[at] = static_cast<char>(rng());
    }
    try {
      elf_symbols(damaged);
    } catch (const Error&) {
    }
  }
}

TEST(ElfImage, NamesSectionsAndListsSymbolsByIndex) {
  const ElfImage elf(sample_cubin());
  bool has_nv_info = false;
  std::size_t symbol_tables = 0;
  for (const ElfSection& s : elf.sections()) {
    has_nv_info = has_nv_info || elf.name(s) == ".nv.info";
    if (s.type != ElfImage::kSymtab) continue;
    ++symbol_tables;
    const std::vector<ElfSymbol> all = elf.symbols(s);
    ASSERT_FALSE(all.empty());
    EXPECT_TRUE(all[0].name.empty());  // index 0 is the null symbol
  }
  EXPECT_TRUE(has_nv_info);
  EXPECT_EQ(symbol_tables, 1u);
}

TEST(CubinResources, ReportsTheKernelsRegistersAndParameters) {
  AttentionSpec a;
  const std::string name = merge_kernel_spec(a, 2, kSm90).kernel_name();
  const std::vector<KernelResources> all = cubin_resources(sample_cubin());
  const auto it = std::find_if(all.begin(), all.end(), [&](const KernelResources& r) {
    return r.name == name;
  });  // (NVRTC may add weak helper functions)
  ASSERT_NE(it, all.end());
  EXPECT_GT(it->registers, 0);
  EXPECT_LE(it->registers, kSm90.max_registers_per_thread());
  EXPECT_GT(it->code_bytes, 0u);
  EXPECT_GE(it->param_bank, sizeof(void*));
  EXPECT_GE(it->frame_bytes, 0);
}

TEST(CubinResources, DamagedCubinsThrowOrAnswer) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<char> damaged = sample_cubin();
    for (int flips = 0; flips < 8; ++flips) {
      damaged[rng() % damaged.size()] = static_cast<char>(rng());
    }
    try {
      cubin_resources(damaged);
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    }
  }
}

}  // namespace
}  // namespace canopy
