// The registry's register facts against real cubins: a few shipped kernels
// compiled with NVRTC (no GPU), their register counts read from the cubin.
//
// Why: the planner sizes its block slots with blocks_per_sm before anything
// compiles, from the family's register cap (templates/common/kernel_layouts.cuh).
// The generated __launch_bounds__(threads, min_blocks_per_sm) makes ptxas keep
// to it; if a cap and the launch bounds ever drift apart, or ptxas spills to
// meet a cap, the plans would count on an occupancy the kernels do not have.
// tests/generator/kernel_compile_test.cpp checks the same on every shipped
// kernel (minutes); this checks the extremes in seconds.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "canopy/kernel_spec.hpp"
#include "families/kernel_families.hpp"
#include "families/occupancy.hpp"
#include "generator/kernel_source.hpp"
#include "runtime/jit/cubin_resources.hpp"
#include "runtime/jit/nvrtc_compiler.hpp"
#include "templates/common/kernel_layouts.cuh"

namespace canopy::families {
namespace {

KernelSpec partial(int head_dim, const char* config, Arch arch, bool soft_cap = false) {
  AttentionSpec a;
  a.head_dim = head_dim;
  a.logits_soft_cap = soft_cap ? 30.0 : 0.0;
  return partial_kernel_spec(a, KernelConfig::parse(config), arch);
}

KernelSpec merge(int head_dim, int fan_in, Arch arch) {
  AttentionSpec a;
  a.head_dim = head_dim;
  a.with_lse = true;
  return merge_kernel_spec(a, fan_in, arch);
}

TEST(FamilyRegisters, CompiledKernelsReachTheOccupancyTheRegistryPlans) {
  // The extremes measured with CUDA 13.0 (docs/kernels.md, "Resources"):
  // mma D = 64 under its 168-register cap (3 blocks), the wide kernel's 245
  // on sm_80, the D = 256 kernel at 255, the FMA reference, the merge that
  // uses most (D = 256, unrolled fan-in 8: 128 unbounded, cap 168; a cap of
  // exactly 128 made ptxas spill 24 bytes, which this test caught).
  const std::vector<KernelSpec> specs = {
      partial(64, "mma_q128_kv32_w4_s3", kSm90, true),
      partial(128, "mma_q128_kv32_w4_s3", kSm80),
      partial(256, "mma_q64_kv64_w4_s2", kSm90),
      partial(128, "fma_q16_kv64_w4_s2", kSm90),
      merge(256, 8, kSm90),
      // The Hopper kernels: two consumer warpgroups (registers reallocated
      // from the producer by setmaxnreg) and one at D = 256.
      partial(128, "wgmma_q128_kv128_w12_s2", kSm90a),
      partial(256, "wgmma_q64_kv64_w8_s2", kSm90a),
  };
  for (const KernelSpec& k : specs) {
    SCOPED_TRACE(k.to_string());
    const NvrtcResult r =
        nvrtc_compile(generator::generate_kernel_source(k), k.kernel_name(), k.to_string(), k.arch);
    const std::vector<KernelResources> all = cubin_resources(r.binary);
    const auto it = std::find_if(all.begin(), all.end(), [&](const KernelResources& x) {
      return x.name == k.kernel_name();
    });
    ASSERT_NE(it, all.end());
    ASSERT_GT(it->registers, 0);
    const int threads = kernel_threads(k);
    // The launch bounds hold: the real count leaves room for min_blocks_per_sm blocks.
    EXPECT_GE(canopy_abi::blocks_by_registers(it->registers, threads), min_blocks_per_sm(k))
        << it->registers << " registers";
    // So the real occupancy is at least what the planner counts with.
    const Occupancy real = occupancy(k.arch, threads, it->registers, kernel_smem_bytes(k),
                                     static_cast<std::int64_t>(it->static_smem));
    const Occupancy planned = occupancy(k, k.arch);
    EXPECT_GE(real.by_registers, planned.by_registers) << it->registers << " registers";
    EXPECT_GE(real.blocks, planned.blocks);
    // The cubin's static shared memory is the reserved 1 KiB or nothing.
    EXPECT_LE(it->static_smem, static_cast<std::uint64_t>(k.arch.reserved_smem_per_block()));
    EXPECT_EQ(real.by_smem, planned.by_smem);
    // Meeting the cap cost no spills (nor any local memory).
    EXPECT_EQ(it->frame_bytes, 0);
  }
}

}  // namespace
}  // namespace canopy::families
