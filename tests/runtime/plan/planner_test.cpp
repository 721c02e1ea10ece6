// Planner decisions: KV read once per shared node, absorb rule, KV splitting,
// balancing, tile choice.
#include "canopy/planner.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "canopy/error.hpp"
#include "workloads/workload.hpp"

namespace canopy {
namespace {

Plan plan_for(const std::string& tree, PlannerOptions options = {}) {
  const auto w = workload::workload_from_tree(tree);
  return make_plan(w.spec, w.tables, options);
}

// Tokens read per KV head, summed over items (a head pack reads its range once per head).
std::int64_t tokens_read(const Plan& plan) {
  std::int64_t total = 0;
  for (const WorkItem& it : plan.items)
    total += std::int64_t{it.token_end - it.token_begin} * it.kv_heads;
  return total / plan.spec.num_kv_heads;
}

// (item, KV head) pairs: what a plan without head packs would have as items.
std::int64_t item_heads(const Plan& plan) {
  std::int64_t n = 0;
  for (const WorkItem& it : plan.items) n += it.kv_heads;
  return n;
}

TEST(Planner, SharedPrefixIsReadOncePerRowTile) {
  PlannerOptions options;
  options.allow_split = false;
  const Plan plan = plan_for("1,64|4096,256", options);
  // The 4096-token root serves 64 requests x 4 group heads = 256 rows in
  // row tiles of 64 (mma) or 128 (wgmma, on Hopper): 4 or 2 reads instead of
  // 64. Leaves read their own 256 tokens.
  std::int64_t root_tokens = 0;
  int root_tile = 0;
  for (const WorkItem& it : plan.items) {
    if (it.node != 0) continue;
    root_tokens += std::int64_t{it.token_end - it.token_begin} * it.kv_heads;
    root_tile = it.row_tile;
  }
  ASSERT_TRUE(root_tile == 64 || root_tile == 128) << root_tile;
  const int reads = 256 / root_tile;
  EXPECT_EQ(root_tokens, std::int64_t{reads} * 4096 * plan.spec.num_kv_heads);
  EXPECT_EQ(tokens_read(plan), reads * 4096 + 64 * 256);
  EXPECT_EQ(plan.max_merge_fan_in, 2);
}

TEST(Planner, TinyParentIsAbsorbedIntoChildren) {
  // The 8-token root holds one partly filled page: requests do not even share
  // it (copied per child), so its level-1 children become roots of their own.
  // A 16-token shared node under 2 children of 256 tokens is cheaper read
  // twice than planned, launched and merged on its own.
  PlannerOptions options;
  options.allow_split = false;
  const Plan with = plan_for("1,2,64|16,256,32", options);
  options.allow_absorb = false;
  const Plan without = plan_for("1,2,64|16,256,32", options);
  EXPECT_LT(with.items.size(), without.items.size());
  // The rule prices work per node, not the final placement on block slots:
  // the whole step may come out a hair either way, never clearly worse.
  EXPECT_LE(with.predicted_us, without.predicted_us * 1.01);
}

TEST(Planner, LongKvIsSplitToFillTheGpu) {
  PlannerOptions options;
  // 8 requests x 8 KV heads = 64 items leave half of 132 SMs idle.
  const Plan split = plan_for("8|32768", options);
  options.allow_split = false;
  const Plan whole = plan_for("8|32768", options);
  EXPECT_EQ(item_heads(whole), 8 * 8);
  EXPECT_GT(split.items.size(), whole.items.size());
  EXPECT_LT(split.predicted_us, 0.6 * whole.predicted_us);
  for (const WorkItem& it : split.items) {
    EXPECT_GE(it.token_end - it.token_begin, options.min_split_tokens);
  }
  EXPECT_EQ(tokens_read(split), tokens_read(whole));
}

TEST(Planner, NoSplitWhenWaveQuantizationEatsTheGain) {
  // 16 x 8 = 128 items on 132 SMs: any even split still takes as long.
  PlannerOptions options;
  const Plan split = plan_for("16|32768", options);
  options.allow_split = false;
  const Plan whole = plan_for("16|32768", options);
  EXPECT_LE(split.predicted_us, whole.predicted_us * 1.001);
}

TEST(Planner, BalancerKeepsSmLoadsClose) {
  const Plan plan = plan_for("1,128|16384,512");
  const auto [lo, hi] = std::minmax_element(plan.sm_load_us.begin(), plan.sm_load_us.end());
  EXPECT_LT(*hi - *lo, 0.5 * *hi);
}

TEST(Planner, LaunchGroupsCoverItemsByConfigLongestFirst) {
  const Plan plan = plan_for("1,4,64|2048,1024,256");
  plan.validate();
  for (const LaunchStep& g : plan.launches) {
    if (g.family == KernelFamily::kMergeStates) continue;
    for (int i = g.begin + 1; i < g.end; ++i) {
      EXPECT_GE(plan.items[i - 1].predicted_us, plan.items[i].predicted_us);
    }
  }
  std::set<int> configs;
  for (const LaunchStep& g : plan.launches) EXPECT_TRUE(configs.insert(g.config).second);
  // A shared prefix means merged rows: the schedule ends with the merge.
  ASSERT_FALSE(plan.launches.empty());
  EXPECT_EQ(plan.launches.back().family, KernelFamily::kMergeStates);
}

TEST(Planner, MergeOrderFollowsPathPosition) {
  const Plan plan = plan_for("1,4,64|2048,1024,256");
  std::vector<std::int32_t> position(plan.num_partial_slots);
  for (const WorkItem& it : plan.items) {
    for (int i = 0; i < it.slot_count(); ++i) {
      position[it.row_begin + i] = it.path_token_offset + it.token_begin;
    }
  }
  for (std::size_t r = 0; r + 1 < plan.merge_indptr.size(); ++r) {
    for (int k = plan.merge_indptr[r] + 1; k < plan.merge_indptr[r + 1]; ++k) {
      for (int q = 0; q < plan.spec.num_qo_heads; ++q) {
        EXPECT_LT(position[plan.merge_slot(plan.merge_parts[k - 1], q)],
                  position[plan.merge_slot(plan.merge_parts[k], q)]);
      }
    }
  }
}

TEST(Planner, NarrowLeavesPackKvHeads) {
  // 32-token leaves of one request (4 rows per KV head): a block takes 4 KV
  // heads (one warp each) instead of one, so 8 heads need 2 blocks, not 8.
  PlannerOptions options;
  options.allow_split = false;
  options.allow_absorb = false;  // the same tasks and kernel either way: only the blocks differ
  options.candidates = {KernelConfig::parse("mma_q64_kv64_w4_s3")};
  const Plan packed = plan_for("1,256|256,32", options);
  options.head_packs = false;
  const Plan single = plan_for("1,256|256,32", options);
  packed.validate();
  EXPECT_EQ(item_heads(packed), item_heads(single));
  EXPECT_LT(packed.items.size(), single.items.size());
  EXPECT_LT(packed.predicted_us, single.predicted_us);
  int packs = 0;
  for (const WorkItem& it : packed.items) {
    if (it.kv_heads > 1) {
      ++packs;
      EXPECT_EQ(it.row_tile, 16);
      EXPECT_LE(it.row_count, 16);
    }
  }
  EXPECT_GT(packs, 0);
  for (const WorkItem& it : single.items) EXPECT_EQ(it.kv_heads, 1);
  EXPECT_EQ(tokens_read(packed), tokens_read(single));
}

TEST(Planner, RequestsAloneWriteTheirOutputDirectly) {
  // Nothing shared, nothing split: every item is a request's whole KV, writes
  // its rows itself, and the step is one launch with no merge.
  PlannerOptions options;
  options.allow_split = false;
  const Plan flat = plan_for("64|1000", options);
  EXPECT_TRUE(flat.merge_requests.empty());
  ASSERT_EQ(flat.launches.size(), 1u);
  EXPECT_NE(flat.launches[0].family, KernelFamily::kMergeStates);
  for (const WorkItem& it : flat.items) EXPECT_TRUE(it.direct);
  // Split, the pieces merge again.
  options.allow_split = true;
  options.min_split_tokens = 100;
  const Plan split = plan_for("4|30000", options);
  EXPECT_FALSE(split.merge_requests.empty());
  for (const WorkItem& it : split.items) EXPECT_FALSE(it.direct);
}

TEST(Planner, PrefixBlindReadsEveryRequestWhole) {
  PlannerOptions options;
  options.prefix_blind = true;
  options.allow_split = false;
  const auto w = workload::workload_from_tree("1,4,64|2048,1024,256");
  const Plan blind = make_plan(w.spec, w.tables, options);
  blind.validate();
  std::int64_t path_tokens = 0;
  for (int len : w.tables.seq_lens) path_tokens += len;
  EXPECT_EQ(tokens_read(blind), path_tokens);  // the shared prefix once per request
  EXPECT_TRUE(blind.merge_requests.empty());   // one item per request and head: direct
  const Plan aware = make_plan(w.spec, w.tables, PlannerOptions{});
  EXPECT_LT(tokens_read(aware), tokens_read(blind) / 4);
}

TEST(Planner, RowTilesCanBePinned) {
  PlannerOptions options;
  options.row_tiles = {32};
  const Plan plan = plan_for("1,4,64|2048,1024,256", options);
  for (const WorkItem& it : plan.items) EXPECT_EQ(it.row_tile, 32);
  options.row_tiles = {24};  // no kernel runs it
  EXPECT_THROW(plan_for("1,4,64|2048,1024,256", options), Error);
}

TEST(Planner, RejectsMismatchedPageSize) {
  const auto w = workload::workload_from_tree("1,2|32,32");
  const PrefixTree tree = discover_prefix_tree(w.tables, 16);
  AttentionSpec spec = w.spec;
  spec.page_size = 32;
  try {
    make_plan(spec, tree);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("page_size 16"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace canopy

namespace canopy {
namespace {

TEST(Planner, PlanningIntoAReusedPlanEqualsAFreshPlan) {
  // The reused Plan first holds a larger, different plan: nothing of it may leak.
  Plan reused = plan_for("1,4,256|2048,1024,256");
  for (const char* tree : {"1,4,64|2048,1024,256", "8|32768", "1,2,4,8|16,16,16,16"}) {
    const auto w = workload::workload_from_tree(tree);
    make_plan(w.spec, w.tables, {}, reused);
    EXPECT_EQ(plan_to_json(reused), plan_to_json(make_plan(w.spec, w.tables))) << tree;
  }
}

}  // namespace
}  // namespace canopy
