// StepPricer: block slots of the shipped kernels, the merge, launches, the
// step time and the makespan bound, against docs/cost-model.md and the
// formulas the planner used before they moved here (bit for bit: the plan
// goldens depend on it).
#include "autotune/step_pricing.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "autotune/sm_schedule.hpp"
#include "canopy/cost_model.hpp"
#include "canopy/planner.hpp"

namespace canopy::autotune {
namespace {

const KernelConfig kGeneral = KernelConfig::parse("mma_q64_kv64_w4_s3");
const KernelConfig kWide = KernelConfig::parse("mma_q128_kv32_w4_s3");

AttentionSpec spec_with_head_dim(int head_dim) {
  AttentionSpec spec;
  spec.head_dim = head_dim;
  return spec;
}

TEST(StepPricer, BlockSlotsOfTheShippedKernels) {
  // docs/cost-model.md: 2 blocks per SM for both mma configs at D = 128 on
  // sm_90, 3 at D = 64, 1 at D = 256; sm_80's shared memory holds one
  // general block at D = 128.
  const AttentionSpec d128 = spec_with_head_dim(128);
  EXPECT_EQ(StepPricer::blocks_per_sm(d128, kGeneral, kSm90), 2);
  EXPECT_EQ(StepPricer::blocks_per_sm(d128, kWide, kSm90), 2);
  EXPECT_EQ(StepPricer::blocks_per_sm(spec_with_head_dim(64), kGeneral, kSm90), 3);
  EXPECT_EQ(StepPricer::blocks_per_sm(spec_with_head_dim(64), kWide, kSm90), 3);
  EXPECT_EQ(StepPricer::blocks_per_sm(d128, kGeneral, kSm80), 1);

  const GpuCoefficients h100;
  for (const auto& [head_dim, per_sm] : {std::pair{64, 3}, std::pair{128, 2}, std::pair{256, 1}}) {
    const AttentionSpec spec = spec_with_head_dim(head_dim);
    const std::vector<KernelConfig> configs = default_kernel_configs(spec);
    const StepPricer pricer(spec, h100, configs);
    EXPECT_EQ(pricer.slots_per_sm(), per_sm) << "D = " << head_dim;
    EXPECT_EQ(pricer.slots(), h100.num_sms * per_sm) << "D = " << head_dim;
  }
  // No config: the arch's block limit; several: the most any keeps.
  EXPECT_EQ(StepPricer::blocks_per_sm(d128, std::span<const KernelConfig>{}, kSm90),
            kSm90.max_blocks_per_sm());
  const std::vector<KernelConfig> mixed = {kGeneral, kWide};
  EXPECT_EQ(StepPricer::blocks_per_sm(spec_with_head_dim(64), mixed, kSm80),
            std::max(StepPricer::blocks_per_sm(spec_with_head_dim(64), kGeneral, kSm80),
                     StepPricer::blocks_per_sm(spec_with_head_dim(64), kWide, kSm80)));
  // A Hopper kernel owns its SM; the slot layout keeps the mma kernels' two.
  const KernelConfig hopper[] = {kGeneral, KernelConfig::parse("wgmma_q128_kv128_w12_s2")};
  EXPECT_EQ(StepPricer::blocks_per_sm(d128, hopper[1], kSm90), 1);
  EXPECT_EQ(StepPricer::blocks_per_sm(d128, hopper, kSm90), 2);
}

TEST(StepPricer, SlotsComeFromTheGpu) {
  GpuCoefficients a100;
  a100.arch = kSm80;
  a100.num_sms = 108;
  const AttentionSpec spec;
  // On sm_80 at D = 128 the general mma kernel keeps one block per SM (115
  // KB of shared memory), the wide one two: the slots are the wide one's.
  const StepPricer pricer(spec, a100, default_kernel_configs(spec));
  EXPECT_EQ(pricer.slots_per_sm(), 2);
  EXPECT_EQ(pricer.slots(), 216);
  // An item on a slot costs slots-per-SM times its full-SM time.
  const StepPricer three(spec, a100, 3);
  EXPECT_EQ(three.slots(), 324);
  EXPECT_EQ(three.slot_us(1.5), 4.5);
  EXPECT_EQ(pricer.slot_us(1.5), 3.0);
}

TEST(StepPricer, MergeFollowsTheFormulaAndGrowsWithPartials) {
  const GpuCoefficients c;
  const AttentionSpec spec;  // D = 128, fp16 output
  const StepPricer pricer(spec, c, 2);
  // One row's merge reads its partials (D + 1 floats each) and writes D outputs.
  EXPECT_EQ(pricer.merge_row_us(3), (3 * 129 * 4.0 + 128 * 2.0) / (c.merge_bytes_per_us / 132));
  double last = 0;
  for (int partials = 1; partials <= 64; ++partials) {
    const double row = pricer.merge_row_us(partials);
    EXPECT_GT(row, last) << partials;
    last = row;
  }
  // The step's merge spreads every partial state over the SMs.
  EXPECT_EQ(pricer.merge_us(0), 0.0);
  EXPECT_EQ(pricer.merge_us(1000), 1000.0 * pricer.merge_row_us(1) / c.num_sms);
  EXPECT_LT(pricer.merge_us(1000), pricer.merge_us(1001));
  // A float32 output row costs more to write than an fp16 one.
  AttentionSpec f32 = spec;
  f32.o_dtype = DType::kF32;
  EXPECT_GT(StepPricer(f32, c, 2).merge_row_us(1), pricer.merge_row_us(1));
  // The merge rate is a coefficient: twice the rate, half the time.
  GpuCoefficients fast = c;
  fast.merge_bytes_per_us *= 2;
  EXPECT_DOUBLE_EQ(StepPricer(spec, fast, 2).merge_us(1000), pricer.merge_us(1000) / 2);
}

TEST(StepPricer, StepAddsMergeAndLaunches) {
  GpuCoefficients c;
  c.launch_overhead_us = 2.5;
  const AttentionSpec spec;
  const StepPricer pricer(spec, c, 2);
  EXPECT_EQ(pricer.launch_us(0), 0.0);
  EXPECT_EQ(pricer.launch_us(3), 7.5);
  EXPECT_EQ(pricer.step_us(10.0, 0, 0), 10.0);
  EXPECT_EQ(pricer.step_us(10.0, 0, 3), 17.5);
  EXPECT_EQ(pricer.step_us(10.0, 1000, 2), 10.0 + pricer.merge_us(1000) + 5.0);
  // Every term only adds.
  EXPECT_LT(pricer.step_us(10.0, 1000, 2), pricer.step_us(10.0, 1000, 3));
  EXPECT_LT(pricer.step_us(10.0, 1000, 2), pricer.step_us(10.0, 2000, 2));
  EXPECT_LT(pricer.step_us(10.0, 1000, 2), pricer.step_us(11.0, 1000, 2));
}

// The formulas as they stood in the planner and in CostModel before moving
// here, evaluated in the same order: the pricer must answer bit for bit alike.
TEST(StepPricer, MatchesTheFormerFormulasExactly) {
  std::mt19937 rng(7);
  const std::vector<AttentionSpec> specs = [] {
    std::vector<AttentionSpec> v;
    for (const int head_dim : {64, 128, 256}) {
      for (const auto& [qo, kv] : {std::pair{32, 8}, std::pair{64, 8}, std::pair{28, 4},
                                   std::pair{32, 32}, std::pair{16, 1}}) {
        AttentionSpec s = spec_with_head_dim(head_dim);
        s.num_qo_heads = qo;
        s.num_kv_heads = kv;
        v.push_back(s);
        s.o_dtype = DType::kF32;
        v.push_back(s);
      }
    }
    return v;
  }();
  GpuCoefficients gpu;
  gpu.merge_bytes_per_us = 2.3e6;
  gpu.launch_overhead_us = 2.7;
  gpu.num_sms = 131;
  const CostModel model(gpu);
  std::uniform_real_distribution<double> us(0.0, 500.0);
  std::uniform_int_distribution<int> small(0, 5000);
  for (const AttentionSpec& spec : specs) {
    for (const int per_sm : {1, 2, 3}) {
      const StepPricer pricer(spec, gpu, per_sm);
      const double slot_scale = per_sm;
      const int slots = gpu.num_sms * per_sm;
      const double merge_row1 = (1 * (spec.head_dim + 1) * 4.0 +
                                 spec.head_dim * static_cast<double>(dtype_bytes(spec.o_dtype))) /
                                (gpu.merge_bytes_per_us / gpu.num_sms);
      EXPECT_EQ(pricer.merge_row_us(1), merge_row1);
      EXPECT_EQ(model.merge_row_us(spec, 1), merge_row1);
      for (int i = 0; i < 50; ++i) {
        const int requests = small(rng);
        const std::int64_t merged = std::int64_t{small(rng)} * small(rng);
        const int launches = i % 4;
        const double busiest = us(rng);
        const double work = us(rng) * slots;
        const double longest = us(rng);
        // Planner::partial_us, the absorb rule's merge price.
        EXPECT_EQ(pricer.added_partials_us(requests), slot_scale * requests * spec.num_qo_heads *
                                                          model.merge_row_us(spec, 1) /
                                                          spec.num_kv_heads);
        // CostModel::step_us.
        const double step =
            busiest + static_cast<double>(merged) * merge_row1 / gpu.num_sms + launches * 2.7;
        EXPECT_EQ(pricer.step_us(busiest, merged, launches), step);
        EXPECT_EQ(model.step_us(spec, busiest, merged, launches), step);
        // Planner::makespan_bound.
        EXPECT_EQ(pricer.makespan_lower_bound(work, longest), std::max(work / slots, longest));
        // Planner::item_us's slot scale.
        EXPECT_EQ(pricer.slot_us(busiest), busiest * slot_scale);
      }
    }
  }
}

TEST(StepPricer, MakespanBoundHoldsForEveryPlacement) {
  std::mt19937 rng(11);
  const AttentionSpec spec;
  const StepPricer pricer(spec, GpuCoefficients{}, 2);
  std::uniform_real_distribution<double> cost(0.5, 40.0);
  std::uniform_int_distribution<int> count(1, 700);
  for (int trial = 0; trial < 200; ++trial) {
    // Runs of equal items, longest first, as the planner places them.
    std::vector<std::pair<double, std::int64_t>> runs(1 + trial % 12);
    for (auto& run : runs) run = {cost(rng), count(rng)};
    std::sort(runs.begin(), runs.end(),
              [](const auto& a, const auto& b) { return a.first > b.first; });
    SmSchedule loads;
    loads.reset(pricer.slots(), false);
    double work = 0;
    double longest = 0;
    for (const auto& [c, n] : runs) {
      loads.place(c, n);
      work += c * static_cast<double>(n);
      longest = std::max(longest, c);
    }
    const double bound = pricer.makespan_lower_bound(work, longest);
    EXPECT_LE(bound, loads.max_load() * (1 + 1e-12)) << "trial " << trial;
    // The bound is tight for one item per slot.
    if (trial == 0) {
      SmSchedule one;
      one.reset(pricer.slots(), false);
      one.place(3.0, pricer.slots());
      EXPECT_DOUBLE_EQ(pricer.makespan_lower_bound(3.0 * pricer.slots(), 3.0), one.max_load());
    }
  }
}

}  // namespace
}  // namespace canopy::autotune
