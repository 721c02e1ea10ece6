// CostModel: per-kernel coefficient lookup, item_us (row tiles, head packs,
// the L2 term) and step_us, against the formulas in docs/cost-model.md.
#include "canopy/cost_model.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace canopy {
namespace {

const KernelConfig kGeneral = KernelConfig::parse("mma_q64_kv64_w4_s3");
const KernelConfig kWide = KernelConfig::parse("mma_q128_kv32_w4_s3");
const KernelConfig kFma = KernelConfig::parse("fma_q16_kv64_w4_s2");

TEST(CostModel, DefaultKernelCoefficients) {
  // docs/cost-model.md quotes these (calibrated on the H200, docs/perf-notes.md).
  const auto k = default_kernel_coefficients();
  ASSERT_EQ(k.size(), 6u);
  EXPECT_EQ(k.at("mma"), (KernelCoefficients{1.0, 2.2e8, 0.9}));
  EXPECT_EQ(k.at("wgmma"), (KernelCoefficients{2.0, 4.5e8, 0.85}));
  EXPECT_EQ(k.at("wgmma_q64_kv128_w8_s2"), (KernelCoefficients{2.0, 3.0e8, 0.8}));
  EXPECT_EQ(k.at("mma_q128_kv32_w4_s3"), (KernelCoefficients{3.0, 2.8e8, 0.6}));
  EXPECT_EQ(k.at("fma"), (KernelCoefficients{1.5, 8.0e6, 0.4}));
}

TEST(CostModel, KernelLookupPrefersTheExactConfigThenTheFamily) {
  GpuCoefficients c;
  EXPECT_EQ(&c.kernel(kWide), &c.kernels.at("mma_q128_kv32_w4_s3"));  // exact config
  EXPECT_EQ(&c.kernel(kGeneral), &c.kernels.at("mma"));               // its family
  EXPECT_EQ(&c.kernel(kFma), &c.kernels.at("fma"));
  c.kernels.erase("fma");
  EXPECT_EQ(c.kernel(kFma), KernelCoefficients{});  // neither: the built-in fallback
  c.kernels["fma_q16_kv64_w4_s2"] = {0.5, 1e7, 0.7};
  EXPECT_EQ(c.kernel(kFma), (KernelCoefficients{0.5, 1e7, 0.7}));
  // Another config of the same family does not match the exact key.
  EXPECT_EQ(c.kernel(KernelConfig::parse("fma_q64_kv64_w4_s2")), KernelCoefficients{});
}

TEST(CostModel, ItemFollowsTheFormula) {
  // One 16-row tile of 4 rows over 1024 tokens, D = 128 fp16, general kernel.
  const GpuCoefficients c;
  const CostModel model(c);
  const AttentionSpec spec;
  const double sms = c.num_sms;
  const double bytes = 1024.0 * 2 * 128 * 2;
  const double t_mem = bytes / (c.hbm_bytes_per_us * 0.9 / sms);
  const double t_math = 4.0 * 16 * 1024 * 128 / (2.2e8 / sms);
  const double t_out = 2.0 * 4 * 129 * 4 / (c.hbm_bytes_per_us / sms);
  EXPECT_DOUBLE_EQ(model.item_us(spec, kGeneral, 16, 4, 1024),
                   1.0 + (std::max(t_mem, t_math) + t_out));
  // Four tiles of the same KV: four overheads, the first tile's KV from HBM,
  // the other three's from L2, and the math of all four.
  const double t_mem4 = t_mem + 3 * bytes / (c.l2_bytes_per_us / sms);
  const double t_math4 = 4.0 * 64 * 1024 * 128 / (2.2e8 / sms);
  const double t_out4 = 2.0 * 64 * 129 * 4 / (c.hbm_bytes_per_us / sms);
  EXPECT_DOUBLE_EQ(model.item_us(spec, kGeneral, 16, 64, 1024),
                   4 * 1.0 + (std::max(t_mem4, t_math4) + t_out4));
}

TEST(CostModel, ItemCostIsAffineInTokens) {
  // The incremental planner prices a grown item from a line through two
  // prices (runtime/plan/replan.cpp): item_us must stay affine in the tokens,
  // for every family and across the memory- and math-bound regimes.
  const CostModel model;
  for (const char* name : {"mma_q64_kv64_w4_s3", "mma_q128_kv32_w4_s3", "fma_q16_kv64_w4_s2",
                           "wgmma_q128_kv128_w12_s2"}) {
    const KernelConfig config = KernelConfig::parse(name);
    for (const int rows : {1, 7, 64, 200}) {
      for (const int heads : {1, 3}) {
        AttentionSpec spec;
        spec.head_dim = rows == 7 ? 256 : 128;
        const int tile = config.tile_q;
        const double base = model.item_us(spec, config, tile, rows, 0, heads);
        const double slope =
            (model.item_us(spec, config, tile, rows, 1 << 16, heads) - base) / (1 << 16);
        for (const int tokens : {1, 17, 1000, 33333, 250000}) {
          const double want = model.item_us(spec, config, tile, rows, tokens, heads);
          EXPECT_NEAR(base + slope * tokens, want, 1e-9 * want)
              << name << " rows " << rows << " heads " << heads << " tokens " << tokens;
        }
      }
    }
  }
}

TEST(CostModel, ItemGrowsWithTilesAndHeads) {
  const CostModel model;
  const AttentionSpec spec;
  // More rows in one row tile: only the partial states grow.
  EXPECT_LT(model.item_us(spec, kGeneral, 16, 4, 2048),
            model.item_us(spec, kGeneral, 16, 16, 2048));
  // The same 64 rows in more, smaller tiles: more block starts and L2 re-reads.
  const double one_tile = model.item_us(spec, kGeneral, 64, 64, 2048);
  const double four_tiles = model.item_us(spec, kGeneral, 16, 64, 2048);
  EXPECT_LT(one_tile, four_tiles);
  // A head pack streams and computes once per head, for one block start.
  const double one = model.item_us(spec, kGeneral, 16, 4, 256, 1);
  const double four = model.item_us(spec, kGeneral, 16, 4, 256, 4);
  EXPECT_GT(four, one);
  EXPECT_LT(four, 4 * one);
  EXPECT_NEAR(four - 1.0, 4 * (one - 1.0), 1e-9);  // item_overhead_us of "mma" is 1.0
  // The L2 term prices sibling tiles only: a faster L2 helps four tiles, not one.
  GpuCoefficients fast_l2;
  fast_l2.l2_bytes_per_us *= 4;
  const CostModel fast(fast_l2);
  EXPECT_LT(fast.item_us(spec, kGeneral, 16, 64, 2048), four_tiles);
  EXPECT_DOUBLE_EQ(fast.item_us(spec, kGeneral, 64, 64, 2048), one_tile);
}

TEST(CostModel, ConfigsPriceWithTheirOwnCoefficients) {
  const CostModel model;
  const AttentionSpec spec;
  // 128 rows of a long shared prefix: the general kernel needs two 64-row
  // tiles at 220 TFLOP/s, the wide one a single tile at 280 TFLOP/s (streaming
  // at 0.6 of the bandwidth), which wins despite its start-up cost.
  EXPECT_LT(model.item_us(spec, kWide, 128, 128, 32768),
            model.item_us(spec, kGeneral, 64, 128, 32768));
  // A narrow item streams: the general kernel's 0.9 of bandwidth wins.
  EXPECT_LT(model.item_us(spec, kGeneral, 32, 32, 32768),
            model.item_us(spec, kWide, 32, 32, 32768));
}

TEST(CostModel, StepAddsMergeAndLaunches) {
  const GpuCoefficients c;
  const CostModel model(c);
  const AttentionSpec spec;
  EXPECT_DOUBLE_EQ(model.step_us(spec, 10.0, 0, 0), 10.0);
  EXPECT_DOUBLE_EQ(model.step_us(spec, 10.0, 0, 3), 10.0 + 3 * c.launch_overhead_us);
  EXPECT_DOUBLE_EQ(model.launch_us(), c.launch_overhead_us);
  // Merging spreads every partial state over the SMs.
  const double merge = 1000.0 * model.merge_row_us(spec, 1) / c.num_sms;
  EXPECT_DOUBLE_EQ(model.step_us(spec, 10.0, 1000, 2), 10.0 + merge + 2 * c.launch_overhead_us);
  // One row's merge reads its partials (D + 1 floats each) and writes D outputs.
  EXPECT_DOUBLE_EQ(model.merge_row_us(spec, 3),
                   (3 * 129 * 4.0 + 128 * 2.0) / (c.merge_bytes_per_us / c.num_sms));
}

TEST(CostModel, FitsComparesSharedMemoryWithTheDeviceLimit) {
  const AttentionSpec spec;
  EXPECT_EQ(CostModel::smem_bytes(spec, kGeneral), 115200);
  EXPECT_EQ(CostModel::smem_bytes(spec, kWide), 82432);
  GpuCoefficients small;
  small.max_smem_per_block = 99 * 1024;  // sm_86/89
  EXPECT_TRUE(CostModel().fits(spec, kGeneral));
  EXPECT_FALSE(CostModel(small).fits(spec, kGeneral));
  EXPECT_TRUE(CostModel(small).fits(spec, kWide));
}

}  // namespace
}  // namespace canopy
