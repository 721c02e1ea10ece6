// canopy-tune's grid: the points it measures, and the plans it times for
// them, which must be exactly what each point describes (checked on the host:
// the GPU run only adds the timing).
#include "autotune/tuning_grid.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "autotune/step_pricing.hpp"
#include "canopy/error.hpp"
#include "families/kernel_families.hpp"

namespace canopy::autotune {
namespace {

GpuCoefficients sm90() {
  GpuCoefficients g;
  g.arch = kSm90;
  return g;
}

TEST(TuningGrid, SharedRowsGiveTensorCoreConfigsMultiTileItems) {
  GridOptions o;
  o.dtypes = {DType::kF16};
  const Grid grid = measurement_grid(o, sm90());
  std::set<std::string> multi_tile;
  for (const ItemPoint& p : grid.items) {
    const families::FamilyInfo& info = families::family_info(p.config.family);
    if (p.rows <= p.row_tile) continue;
    EXPECT_NE(info.instruction, families::Instruction::kFma) << p.key();
    EXPECT_EQ(p.row_tile, info.row_tiles(p.spec.head_dim, p.config).back()) << p.key();
    multi_tile.insert(p.config.to_string());
  }
  // Both tensor-core families, every config of theirs: each one's math rate
  // gets measurements where its tiles share KV.
  for (const char* config : {"mma_q64_kv64_w4_s3", "mma_q128_kv32_w4_s3", "wgmma_q128_kv128_w12_s2",
                             "wgmma_q64_kv128_w8_s2"}) {
    EXPECT_TRUE(multi_tile.count(config)) << config;
  }
  o.shared_rows.clear();
  for (const ItemPoint& p : measurement_grid(o, sm90()).items) EXPECT_LE(p.rows, p.row_tile);
}

TEST(TuningGrid, EveryPointPlansAsTheIdenticalItemsItDescribes) {
  GridOptions o;
  o.dtypes = {DType::kBF16};
  o.head_dims = {64, 128, 256};
  o.tokens = {64, 1024};  // the plan's shape does not depend on the length otherwise
  const GpuCoefficients gpu = sm90();
  const CostModel model(gpu);
  const Grid grid = measurement_grid(o, gpu);
  ASSERT_GT(grid.items.size(), 50u);
  for (const ItemPoint& p : grid.items) {
    const AttentionSpec spec = point_spec(p);
    const int slots = gpu.num_sms * StepPricer::blocks_per_sm(spec, p.config, gpu.arch);
    for (int waves : {o.waves_low, o.waves_high}) {
      const int requests = (waves * slots + kPointKvHeads - 1) / kPointKvHeads;
      const Plan plan = make_plan(spec, point_tables(p, requests), point_options(p, model));
      EXPECT_NO_THROW(check_point_plan(plan, p, requests)) << p.key();
    }
  }
}

TEST(TuningGrid, APlanOfAnotherShapeIsRefused) {
  GridOptions o;
  o.dtypes = {DType::kF16};
  o.rows = {64};
  o.tokens = {256};
  o.shared_rows.clear();
  const GpuCoefficients gpu = sm90();
  const Grid grid = measurement_grid(o, gpu);
  ASSERT_FALSE(grid.items.empty());
  const ItemPoint& p = grid.items.front();
  const PlannerOptions options = point_options(p, CostModel(gpu));
  const Plan plan = make_plan(point_spec(p), point_tables(p, 4), options);
  EXPECT_NO_THROW(check_point_plan(plan, p, 4));
  EXPECT_THROW(check_point_plan(plan, p, 5), canopy::Error);  // a different item count
  ItemPoint longer = p;
  longer.tokens = 512;
  EXPECT_THROW(check_point_plan(plan, longer, 4), canopy::Error);
}

}  // namespace
}  // namespace canopy::autotune
