// The persistent schedule's queues and fused-merge groups, checked against
// the plan on suite workloads and random trees: every item runs once in its
// launch's queues, and however the blocks interleave, each (merged request,
// KV head) group completes exactly once, after every partial state it merges
// has been written.
#include "runtime/plan/persistent_schedule.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "canopy/planner.hpp"
#include "tests/test_data.hpp"
#include "workloads/workload.hpp"

namespace canopy {
namespace {

std::vector<int> slots_for(const Plan& plan, int slots) {
  return std::vector<int>(plan.launches.size(), slots);
}

// Each partial item in exactly one queue of its own launch; queue counts as documented.
void check_queues(const Plan& plan, const PersistentSchedule& s, int slots,
                  const std::string& what) {
  std::vector<int> seen(plan.items.size(), 0);
  for (const PersistentSchedule::Launch& l : s.launches) {
    const LaunchStep& step = plan.launches[static_cast<std::size_t>(l.plan_launch)];
    ASSERT_NE(step.family, KernelFamily::kMergeStates) << what;
    EXPECT_EQ(l.blocks, std::min(slots, step.end - step.begin)) << what;
    for (int q = l.first_queue; q < l.first_queue + l.blocks; ++q) {
      EXPECT_LT(s.queue_indptr[q], s.queue_indptr[q + 1]) << what << ": empty queue " << q;
      for (int k = s.queue_indptr[q]; k < s.queue_indptr[q + 1]; ++k) {
        const int item = s.queue[static_cast<std::size_t>(k)];
        ASSERT_GE(item, step.begin) << what;
        ASSERT_LT(item, step.end) << what;
        ++seen[static_cast<std::size_t>(item)];
      }
    }
  }
  for (std::size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], 1) << what << ": item " << i;
}

// Runs the items in a random interleaving of the queues, marking the partial
// slots each writes and counting its touches; a group that reaches its target
// must have all its slots written, and must reach it exactly once.
void check_fused_merge(const Plan& plan, const PersistentSchedule& s, std::mt19937_64& rng,
                       const std::string& what) {
  const int group = plan.group();
  ASSERT_EQ(s.item_touch_indptr.size(), plan.items.size() + 1) << what;
  ASSERT_EQ(s.counters,
            static_cast<std::int64_t>(plan.merge_requests.size()) * plan.spec.num_kv_heads);
  std::vector<char> written(static_cast<std::size_t>(plan.num_partial_slots), 0);
  std::vector<std::int32_t> counter(static_cast<std::size_t>(s.counters), 0);
  std::vector<int> completed(static_cast<std::size_t>(s.counters), 0);
  std::vector<std::int32_t> next(s.queue_indptr.begin(), s.queue_indptr.end() - 1);
  std::vector<int> live;
  for (std::size_t q = 0; q + 1 < s.queue_indptr.size(); ++q) live.push_back(static_cast<int>(q));
  while (!live.empty()) {
    const std::size_t pick = std::uniform_int_distribution<std::size_t>(0, live.size() - 1)(rng);
    const int q = live[pick];
    const int item = s.queue[static_cast<std::size_t>(next[static_cast<std::size_t>(q)]++)];
    if (next[static_cast<std::size_t>(q)] == s.queue_indptr[static_cast<std::size_t>(q) + 1]) {
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(pick));
    }
    const WorkItem& it = plan.items[static_cast<std::size_t>(item)];
    for (int k = 0; k < it.slot_count(); ++k)
      written[static_cast<std::size_t>(it.row_begin + k)] = 1;
    if (it.direct) {
      EXPECT_EQ(s.item_touch_indptr[item], s.item_touch_indptr[item + 1]) << what;
    }
    for (int t = s.item_touch_indptr[item]; t < s.item_touch_indptr[item + 1]; ++t) {
      const MergeTouch& touch = s.touches[static_cast<std::size_t>(t)];
      const std::int32_t fan_in =
          plan.merge_indptr[touch.entry + 1] - plan.merge_indptr[touch.entry];
      ASSERT_EQ(touch.target, fan_in * group) << what;
      const std::size_t c =
          static_cast<std::size_t>(touch.entry) * plan.spec.num_kv_heads + touch.kv_head;
      counter[c] += touch.rows;
      ASSERT_LE(counter[c], touch.target) << what << ": group counted past its target";
      if (counter[c] != touch.target) continue;
      ++completed[c];
      for (int k = plan.merge_indptr[touch.entry]; k < plan.merge_indptr[touch.entry + 1]; ++k) {
        for (int g = 0; g < group; ++g) {
          const int q_head = touch.kv_head * group + g;
          const std::int32_t slot =
              plan.merge_slot(plan.merge_parts[static_cast<std::size_t>(k)], q_head);
          ASSERT_TRUE(written[static_cast<std::size_t>(slot)])
              << what << ": group (" << touch.entry << ", " << touch.kv_head
              << ") completed before slot " << slot << " was written";
        }
      }
    }
  }
  for (std::size_t c = 0; c < completed.size(); ++c) {
    EXPECT_EQ(completed[c], 1) << what << ": group " << c << " completed " << completed[c]
                               << " times";
  }
}

TEST(PersistentSchedule, SuiteWorkloads) {
  std::mt19937_64 rng(7);
  for (const workload::Workload& w : workload::load_suite()) {
    const Plan plan = make_plan(w.spec, w.tables);
    for (int slots : {1, 3, 264}) {
      const PersistentSchedule s = make_persistent_schedule(plan, slots_for(plan, slots));
      const std::string what = w.name + " slots " + std::to_string(slots);
      check_queues(plan, s, slots, what);
      check_fused_merge(plan, s, rng, what);
    }
  }
}

TEST(PersistentSchedule, RandomTreesAndOptions) {
  std::mt19937_64 rng(11);
  const workload::Workload shapes[] = {workload::workload_from_tree("1|16"),
                                       workload::workload_from_tree("1,4|64,16")};
  for (int seed = 0; seed < 60; ++seed) {
    test::RandomTreeOptions ro;
    ro.max_nodes = 8 + seed % 40;
    ro.max_pages_per_node = 1 + seed % 9;
    const BlockTables tables = test::random_tree_tables(rng, ro);
    for (const workload::Workload& shape : shapes) {
      AttentionSpec spec = shape.spec;
      spec.num_kv_heads = 1 + seed % 3;
      spec.num_qo_heads = spec.num_kv_heads * (1 + seed % 7);  // GQA groups 1..7
      PlannerOptions o;
      o.head_packs = seed % 2 == 0;
      o.min_split_tokens = 16;
      const Plan plan = make_plan(spec, tables, o);
      const PersistentSchedule s = make_persistent_schedule(plan, slots_for(plan, 1 + seed % 5));
      const std::string what = "seed " + std::to_string(seed);
      check_queues(plan, s, 1 + seed % 5, what);
      check_fused_merge(plan, s, rng, what);
    }
  }
}

TEST(PersistentSchedule, QueuesBalancePredictedTime) {
  const workload::Workload w = workload::workload_from_tree("1,64|4096,256");
  const Plan plan = make_plan(w.spec, w.tables);
  const PersistentSchedule s = make_persistent_schedule(plan, slots_for(plan, 8));
  ASSERT_FALSE(s.launches.empty());
  for (const PersistentSchedule::Launch& l : s.launches) {
    double lo = 1e30, hi = 0, longest = 0;
    for (int q = l.first_queue; q < l.first_queue + l.blocks; ++q) {
      double load = 0;
      for (int k = s.queue_indptr[q]; k < s.queue_indptr[q + 1]; ++k) {
        const WorkItem& it =
            plan.items[static_cast<std::size_t>(s.queue[static_cast<std::size_t>(k)])];
        load += it.predicted_us;
        longest = std::max(longest, static_cast<double>(it.predicted_us));
      }
      lo = std::min(lo, load);
      hi = std::max(hi, load);
    }
    // Longest-first greedy within a launch: queues differ by at most one item's time.
    EXPECT_LE(hi - lo, longest + 1e-3) << "launch " << l.plan_launch;
  }
}

TEST(PersistentSchedule, RejectsMismatchedSlots) {
  const workload::Workload w = workload::workload_from_tree("1,4|64,16");
  const Plan plan = make_plan(w.spec, w.tables);
  EXPECT_EQ(test::expect_error([&] { make_persistent_schedule(plan, std::vector<int>{}); },
                               ErrorKind::kInvalidArgument, {"slot counts"}),
            "");
  EXPECT_EQ(test::expect_error(
                [&] { make_persistent_schedule(plan, std::vector<int>(plan.launches.size(), 0)); },
                ErrorKind::kInvalidArgument, {"block slots"}),
            "");
}

}  // namespace
}  // namespace canopy
