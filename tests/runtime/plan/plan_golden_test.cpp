// Plans pinned bit for bit: a hash of the plan's JSON for every suite workload
// and for random trees, under several option sets. The hashes were produced
// by the planner before the speed work (commit 58bdac2); the speed work
// (docs/planner.md, section 4) must not change a single plan. A deliberate
// change of the planner's decisions updates them:
//   CANOPY_PRINT_PLAN_HASHES=1 build/canopy_tests --gtest_filter='PlanGolden.<test>'
// prints the new table to paste into its .inc file (JSON floats are printed exactly, so the
// hashes hold on any IEEE-754 host that does not contract a*b+c).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "canopy/plan.hpp"
#include "canopy/planner.hpp"
#include "families/kernel_families.hpp"
#include "tests/test_data.hpp"
#include "workloads/workload.hpp"

namespace canopy {
namespace {

std::uint64_t fnv1a(const std::string& text, std::uint64_t h = 1469598103934665603ull) {
  for (const unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// The plan in the explicit-row format the hashes were taken in
// (canopy-plan/2): query_rows[slot] and one merge entry per output row with
// its slots, expanded from the compact rows (Plan::task_rows,
// WorkItem::task_row_begin, MergePart). The compact format changed how a plan is stored,
// not what it computes: the same hashes pin both.
std::string explicit_plan_json(const Plan& plan) {
  nlohmann::json j = nlohmann::json::parse(plan_to_json(plan));
  j["format"] = "canopy-plan/2";
  j.erase("fused_merge");  // how the step launches, not what it computes
  for (nlohmann::json& item : j["items"]) item.erase(item.end() - 1);
  j["item_fields"].erase(j["item_fields"].end() - 1);
  std::vector<std::int32_t> query_rows(static_cast<std::size_t>(plan.num_partial_slots));
  for (const WorkItem& it : plan.items) {
    for (int h = 0; h < it.kv_heads; ++h) {
      for (int k = 0; k < it.row_count; ++k) {
        query_rows[static_cast<std::size_t>(it.row_begin + h * it.row_count + k)] =
            plan.query_row(it, h, k);
      }
    }
  }
  std::vector<std::int32_t> merge_rows, merge_indptr{0}, merge_indices;
  const int heads = plan.spec.num_qo_heads;
  for (std::size_t m = 0; m < plan.merge_requests.size(); ++m) {
    for (int q = 0; q < heads; ++q) {
      merge_rows.push_back(plan.merge_requests[m] * heads + q);
      for (int k = plan.merge_indptr[m]; k < plan.merge_indptr[m + 1]; ++k) {
        merge_indices.push_back(plan.merge_slot(plan.merge_parts[k], q));
      }
      merge_indptr.push_back(static_cast<std::int32_t>(merge_indices.size()));
    }
  }
  j.erase("task_rows");
  j.erase("merge_requests");
  j.erase("merge_parts");
  j["query_rows"] = query_rows;
  j["merge_rows"] = merge_rows;
  j["merge_indptr"] = merge_indptr;
  j["merge_indices"] = merge_indices;
  return j.dump(2);
}

// The option sets: defaults, no split, no absorb, prefix-blind, no head
// packs, and finer splitting.
std::vector<PlannerOptions> option_sets() {
  std::vector<PlannerOptions> sets(6);
  sets[1].allow_split = false;
  sets[2].allow_absorb = false;
  sets[3].prefix_blind = true;
  sets[4].head_packs = false;
  sets[5].min_split_tokens = 64;
  sets[5].waves = 4;
  return sets;
}

// The options as the v1 planner saw them: its default kernels (the mma
// family alone) and its launches (one block per item and a merge launch). The
// hashes pin that planner; the Hopper family and fused merges are new
// choices, pinned by the v2 table below.
PlannerOptions v1(const AttentionSpec& spec, PlannerOptions o) {
  o.candidates = families::family_info(KernelFamily::kMmaAttention).shipped_configs(spec);
  o.fuse_merge = false;
  return o;
}

// The v2 candidates (the Hopper kernels where sm_90 has them) and the fused
// merge: issue 14's planner, opt-in for now.
PlannerOptions v2(const AttentionSpec& spec, PlannerOptions o) {
  o.candidates = hopper_kernel_configs(spec);
  o.fuse_merge = true;
  return o;
}

// Name -> hash of every pinned plan, with the options as `era` sets them.
std::map<std::string, std::uint64_t> plan_hashes(PlannerOptions (*era)(const AttentionSpec&,
                                                                       PlannerOptions)) {
  std::map<std::string, std::uint64_t> out;
  const std::vector<PlannerOptions> sets = option_sets();
  std::vector<workload::Workload> workloads = workload::load_suite();
  for (const char* tree : {"1|4096", "1,4,64|2048,1024,256", "1,4,256|2048,1024,256",
                           "1,4,1024|2048,1024,256", "1,64|4096,256", "1,2,64|16,256,32"}) {
    workloads.push_back(workload::workload_from_tree(tree));
    workloads.back().name = tree;
  }
  for (const workload::Workload& w : workloads) {
    for (std::size_t o = 0; o < sets.size(); ++o) {
      const std::string key = w.name + "/o" + std::to_string(o);
      out[key] = fnv1a(explicit_plan_json(make_plan(w.spec, w.tables, era(w.spec, sets[o]))));
    }
  }
  // Random forests (inner requests, duplicates, partial pages), one hash per
  // option set over all of them.
  const workload::Workload shape = workload::workload_from_tree("1|16");
  for (std::size_t o = 0; o < sets.size(); ++o) {
    std::uint64_t h = 1469598103934665603ull;
    for (int seed = 0; seed < 120; ++seed) {
      std::mt19937_64 rng(seed);
      test::RandomTreeOptions ro;
      ro.max_nodes = 16 + seed % 64;
      ro.max_pages_per_node = 1 + seed % 40;
      ro.max_fanout = 1 + seed % 8;
      const BlockTables tables = test::random_tree_tables(rng, ro);
      h = fnv1a(explicit_plan_json(make_plan(shape.spec, tables, era(shape.spec, sets[o]))), h);
    }
    out["random-120/o" + std::to_string(o)] = h;
  }
  return out;
}

// clang-format off
const std::map<std::string, std::uint64_t> kGolden = {
#include "tests/runtime/plan/plan_golden_hashes.inc"
};
const std::map<std::string, std::uint64_t> kGoldenV2 = {
#include "tests/runtime/plan/plan_golden_hashes_v2.inc"
};
// clang-format on

void check_hashes(const std::map<std::string, std::uint64_t>& now,
                  const std::map<std::string, std::uint64_t>& golden) {
  if (std::getenv("CANOPY_PRINT_PLAN_HASHES") != nullptr) {
    for (const auto& [name, h] : now) {
      std::printf("    {\"%s\", 0x%016llxull},\n", name.c_str(),
                  static_cast<unsigned long long>(h));
    }
  }
  EXPECT_EQ(now.size(), golden.size());
  for (const auto& [name, h] : golden) {
    const auto it = now.find(name);
    ASSERT_NE(it, now.end()) << name;
    EXPECT_EQ(it->second, h) << name << ": the plan changed";
  }
}

// The v1 planner's plans: pinned since before the speed work (58bdac2).
TEST(PlanGolden, PlansAreUnchanged) { check_hashes(plan_hashes(v1), kGolden); }

// The v2 plans (wgmma kernels, fused merge; issue 14), pinned when they were
// introduced: a change of the candidates or the priors updates them.
TEST(PlanGolden, V2PlansAreUnchanged) { check_hashes(plan_hashes(v2), kGoldenV2); }

}  // namespace
}  // namespace canopy
