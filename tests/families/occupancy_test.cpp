// Occupancy: the per-limit breakdown, and the planner's block slots
// (blocks_per_sm) unchanged from the v1 register estimates for every shipped
// config, so plans do not change with the register caps.
#include "families/occupancy.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "canopy/planner.hpp"
#include "families/kernel_families.hpp"
#include "templates/common/kernel_layouts.cuh"

namespace canopy::families {
namespace {

AttentionSpec spec_with_head_dim(int head_dim) {
  AttentionSpec a;
  a.head_dim = head_dim;
  return a;
}

/// blocks_per_sm as v1 computed it, from the registers it kept by hand
/// (fma 128; mma 136 / 248 / 256 at D = 64 / 128 / 256; merge 56).
int v1_blocks_per_sm(const KernelSpec& spec, Arch arch) {
  int registers = 56;
  if (spec.family == KernelFamily::kFmaAttention) registers = 128;
  if (spec.family == KernelFamily::kMmaAttention) {
    registers = spec.head_dim <= 64 ? 136 : (spec.head_dim <= 128 ? 248 : 256);
  }
  const int threads = kernel_threads(spec);
  const int regs_per_warp = (registers + 7) / 8 * 8 * 32;
  const int by_regs = arch.registers_per_sm() / (regs_per_warp * ((threads + 31) / 32));
  const int by_smem =
      arch.max_smem_per_sm() / (kernel_smem_bytes(spec) + arch.reserved_smem_per_block());
  const int by_threads = arch.max_threads_per_sm() / threads;
  return std::max(1, std::min({by_regs, by_smem, by_threads, arch.max_blocks_per_sm()}));
}

TEST(Occupancy, BlockSlotsOfEveryShippedConfigAreV1s) {
  int checked = 0;
  for (const Arch arch : {kSm80, kSm86, kSm89, kSm90, kSm90a}) {
    for (int head_dim : {64, 128, 256}) {
      for (DType dtype : {DType::kF16, DType::kBF16}) {
        AttentionSpec a = spec_with_head_dim(head_dim);
        a.q_dtype = a.kv_dtype = dtype;
        for (const KernelConfig& c : shipped_kernel_configs(a)) {
          if (c.family == KernelFamily::kWgmmaAttention) continue;  // not a v1 kernel
          const KernelSpec k = partial_kernel_spec(a, c, arch);
          EXPECT_EQ(blocks_per_sm(k, arch), v1_blocks_per_sm(k, arch))
              << k.to_string() << " on " << arch.to_string();
          ++checked;
        }
      }
    }
  }
  EXPECT_EQ(checked, 5 * 2 * (4 + 4 + 3));
}

TEST(Occupancy, TensorCoreKernelsAsPlanned) {
  // Both shipped configs run two blocks per SM at D = 128 on sm_90 (shared
  // memory and registers both allow 2); three at D = 64; one at D = 256.
  const AttentionSpec d128 = spec_with_head_dim(128);
  const KernelSpec general =
      partial_kernel_spec(d128, KernelConfig::parse("mma_q64_kv64_w4_s3"), kSm90);
  const Occupancy o = occupancy(general, kSm90);
  EXPECT_EQ(o.blocks, 2);
  EXPECT_EQ(o.warps(), 8);
  EXPECT_EQ(o.by_registers, 2);  // 255 registers: 256 allocated per thread
  EXPECT_EQ(o.by_smem, 2);       // 115,712 + 1,024 bytes of 228 KiB
  EXPECT_EQ(o.by_threads, 16);
  EXPECT_EQ(o.by_block_limit, 32);
  EXPECT_STREQ(o.limiter, "shared memory");
  EXPECT_EQ(o.registers, 255);
  EXPECT_EQ(o.smem_per_block, kernel_smem_bytes(general) + 1024);
  EXPECT_EQ(min_blocks_per_sm(general), 2);

  const KernelSpec d64 =
      partial_kernel_spec(spec_with_head_dim(64), KernelConfig::parse("mma_q64_kv64_w4_s3"), kSm90);
  EXPECT_EQ(occupancy(d64, kSm90).blocks, 3);
  EXPECT_EQ(occupancy(d64, kSm90).by_registers, 3);  // 168 registers: 3 x 4 warps
  EXPECT_EQ(occupancy(d64, kSm90).by_smem, 3);       // 57,856 + 1,024 bytes
  EXPECT_EQ(min_blocks_per_sm(d64), 3);

  const KernelSpec d256 = partial_kernel_spec(spec_with_head_dim(256),
                                              KernelConfig::parse("mma_q64_kv64_w4_s2"), kSm90);
  EXPECT_EQ(occupancy(d256, kSm90).blocks, 1);
  EXPECT_STREQ(occupancy(d256, kSm90).limiter, "shared memory");
  // sm_80's 164 KiB per SM holds one general block at D = 128.
  EXPECT_EQ(blocks_per_sm(
                partial_kernel_spec(d128, KernelConfig::parse("mma_q64_kv64_w4_s3"), kSm80), kSm80),
            1);
}

TEST(Occupancy, MeasuredResources) {
  // What canopy-inspect reports for a compiled kernel: 227 registers (232
  // allocated), 4 warps, 115,712 bytes: 2 blocks by registers and by memory.
  const Occupancy o = occupancy(kSm90, 128, 227, 115712);
  EXPECT_EQ(o.by_registers, 2);
  EXPECT_EQ(o.by_smem, 2);
  EXPECT_EQ(o.blocks, 2);
  // 40 registers and no shared memory: the threads limit.
  const Occupancy small = occupancy(kSm90, 128, 40, 0);
  EXPECT_EQ(small.by_registers, 12);
  EXPECT_EQ(small.blocks, 12);
  EXPECT_STREQ(small.limiter, "registers");
  EXPECT_EQ(occupancy(kSm90, 128, 16, 0).blocks, 16);
  EXPECT_STREQ(occupancy(kSm90, 128, 16, 0).limiter, "threads");
  EXPECT_EQ(occupancy(kSm90, 32, 16, 0).blocks, 32);
  EXPECT_STREQ(occupancy(kSm90, 32, 16, 0).limiter, "blocks per SM");
  // A cubin's static .nv.shared (the 1 KiB reserve on sm_90) counts once.
  EXPECT_EQ(occupancy(kSm90, 128, 227, 115200, 1024).smem_per_block, 116224);
  EXPECT_EQ(occupancy(kSm90, 128, 227, 115200, 1024).by_smem, 2);
  EXPECT_EQ(occupancy(kSm90, 128, 227, 115200, 4096).smem_per_block, 119296);
  // Never 0, even for a block no SM can hold.
  EXPECT_EQ(occupancy(kSm90, 128, 255, 300 * 1024).blocks, 1);
  EXPECT_EQ(occupancy(kSm90, 128, 255, 300 * 1024).by_smem, 0);
}

TEST(Occupancy, RegisterCapsLaunchBoundsAndArchAgree) {
  // The constexpr count the templates use is the arches' register file.
  for (const Arch arch : {kSm80, kSm86, kSm89, kSm90, kSm90a}) {
    EXPECT_EQ(arch.registers_per_sm(), canopy_abi::registers_per_sm()) << arch.to_string();
  }
  // ptxas holds a kernel with __launch_bounds__(T, N) to 65536 / (N * T)
  // registers, rounded down to 8: never below the cap N was derived from.
  for (const FamilyInfo& f : all_families()) {
    for (int head_dim : {64, 128, 256}) {
      AttentionSpec a = spec_with_head_dim(head_dim);
      const KernelSpec k = f.params == ParamsBlock::kMerge
                               ? merge_kernel_spec(a, 4, kSm90)
                               : partial_kernel_spec(a, f.shipped_configs(a).front(), kSm90);
      const int cap = kernel_max_registers(k);
      const int blocks = min_blocks_per_sm(k);
      const int threads = kernel_threads(k);
      EXPECT_LE(cap, 255) << k.to_string();
      EXPECT_GE(blocks, 1) << k.to_string();
      const int ptxas_limit = std::min(255, 65536 / (blocks * threads) / 8 * 8);
      EXPECT_GE(ptxas_limit, cap) << k.to_string();
      EXPECT_GE(canopy_abi::blocks_by_registers(ptxas_limit, threads), blocks) << k.to_string();
      EXPECT_EQ(occupancy(k, kSm90).by_registers, blocks) << k.to_string();
    }
  }
}

}  // namespace
}  // namespace canopy::families
