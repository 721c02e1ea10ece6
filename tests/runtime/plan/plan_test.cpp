// Plans: determinism, JSON round trip, validation, and that the coverage check
// catches every kind of corruption.
#include "canopy/plan.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "canopy/cpu.hpp"
#include "canopy/error.hpp"
#include "canopy/planner.hpp"
#include "canopy/tree.hpp"
#include "tests/test_data.hpp"
#include "workloads/workload.hpp"

namespace canopy {
namespace {

using test::expect_error;

bool bit_identical(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
}

void expect_same_plan(const Plan& a, const Plan& b) {
  EXPECT_EQ(a.spec.to_string(), b.spec.to_string());
  EXPECT_EQ(a.batch_size, b.batch_size);
  EXPECT_EQ(a.tree_depth, b.tree_depth);
  EXPECT_EQ(a.configs, b.configs);
  ASSERT_EQ(a.items.size(), b.items.size());
  for (std::size_t i = 0; i < a.items.size(); ++i) {
    const WorkItem &x = a.items[i], &y = b.items[i];
    EXPECT_TRUE(x.node == y.node && x.config == y.config && x.row_tile == y.row_tile &&
                x.kv_head == y.kv_head && x.kv_heads == y.kv_heads &&
                x.kv_page_offset == y.kv_page_offset && x.token_begin == y.token_begin &&
                x.token_end == y.token_end && x.path_token_offset == y.path_token_offset &&
                x.row_begin == y.row_begin && x.row_count == y.row_count && x.direct == y.direct &&
                x.sm == y.sm && x.predicted_us == y.predicted_us &&
                x.task_row_begin == y.task_row_begin)
        << "item " << i;
  }
  ASSERT_EQ(a.launches.size(), b.launches.size());
  for (std::size_t i = 0; i < a.launches.size(); ++i) {
    EXPECT_EQ(a.launches[i].config, b.launches[i].config);
    EXPECT_EQ(a.launches[i], b.launches[i]);
  }
  EXPECT_EQ(a.task_rows, b.task_rows);
  EXPECT_EQ(a.kv_pages, b.kv_pages);
  EXPECT_EQ(a.merge_requests, b.merge_requests);
  EXPECT_EQ(a.merge_indptr, b.merge_indptr);
  EXPECT_EQ(a.merge_parts, b.merge_parts);
  EXPECT_EQ(a.max_merge_fan_in, b.max_merge_fan_in);
  EXPECT_EQ(a.num_partial_slots, b.num_partial_slots);
  EXPECT_EQ(a.sm_load_us, b.sm_load_us);
  EXPECT_EQ(a.predicted_us, b.predicted_us);
  EXPECT_EQ(a.num_sms, b.num_sms);
  EXPECT_EQ(a.workspace_bytes(), b.workspace_bytes());
}

struct Input {
  std::string name;
  AttentionSpec spec;
  BlockTables tables;
  PlannerOptions options;
};

/// A few suite workloads (scaled) and random trees with random options.
std::vector<Input> inputs() {
  std::vector<Input> all;
  for (const char* name :
       {"two-level-3", "ft-1-4-8-256", "pat-multiroot-b", "flat-16x32k", "sys-4k-x64-p1"}) {
    const auto w = workload::scaled_for_cpu(workload::find_workload(name), 1.5e5);
    all.push_back({name, w.spec, w.tables, {}});
  }
  for (std::uint64_t seed = 0; seed < 12; ++seed) {
    std::mt19937_64 rng(seed);
    test::RandomTreeOptions o;
    o.page_size = seed % 3 == 0 ? 1 : 16;
    o.max_depth = static_cast<int>(2 + seed);
    Input in{"random " + std::to_string(seed), {}, test::random_tree_tables(rng, o), {}};
    in.spec.page_size = o.page_size;
    in.spec.num_qo_heads = seed % 2 ? 28 : 16;
    in.spec.num_kv_heads = seed % 2 ? 4 : 1;
    in.spec.with_lse = seed % 4 == 0;
    in.spec.logits_soft_cap = seed % 3 == 1 ? 20.0 : 0.0;
    in.options.allow_absorb = seed % 2 == 0;
    in.options.min_split_tokens = seed % 4 == 0 ? 1 : 64;
    GpuCoefficients gpu;
    gpu.num_sms = seed % 2 ? 8 : 132;
    in.options.cost_model = CostModel(gpu);
    all.push_back(in);
  }
  return all;
}

TEST(Plan, PlannerOutputIsValidAndCovering) {
  for (const Input& in : inputs()) {
    SCOPED_TRACE(in.name);
    const Plan plan = make_plan(in.spec, in.tables, in.options);
    EXPECT_NO_THROW(plan.validate());
    EXPECT_NO_THROW(check_plan_coverage(plan, in.tables));
    EXPECT_EQ(plan.batch_size, in.tables.batch_size());
    std::int64_t slots = 0;
    for (const WorkItem& it : plan.items) slots += it.slot_count();
    EXPECT_EQ(plan.num_partial_slots, slots);
    EXPECT_GT(plan.workspace_bytes(), 0);
    const PlanLayout layout = plan.layout();
    EXPECT_EQ(layout.partial_lse % 256, 0);
    EXPECT_EQ(layout.merge_parts % 256, 0);
    EXPECT_GE(layout.workspace_bytes, plan.num_partial_slots * (plan.spec.head_dim + 1) * 4);
    EXPECT_FALSE(plan_to_text(plan).empty());
  }
}

TEST(Plan, Deterministic) {
  for (const Input& in : inputs()) {
    SCOPED_TRACE(in.name);
    const Plan a = make_plan(in.spec, in.tables, in.options);
    const Plan b = make_plan(in.spec, in.tables, in.options);
    EXPECT_EQ(plan_to_json(a), plan_to_json(b));
    expect_same_plan(a, b);
    // Through a separately discovered tree, too.
    const Plan c =
        make_plan(in.spec, discover_prefix_tree(in.tables, in.spec.page_size), in.options);
    EXPECT_EQ(plan_to_json(a), plan_to_json(c));

    const test::HostProblem p = test::make_problem(in.spec, in.tables, 42);
    const test::HostResult ra = test::run_plan_cpu(a, p), rb = test::run_plan_cpu(b, p);
    EXPECT_TRUE(bit_identical(ra.out, rb.out));
    EXPECT_TRUE(bit_identical(ra.lse, rb.lse));
  }
}

TEST(Plan, JsonRoundTrip) {
  for (const Input& in : inputs()) {
    SCOPED_TRACE(in.name);
    const Plan plan = make_plan(in.spec, in.tables, in.options);
    const std::string json = plan_to_json(plan);
    const Plan back = plan_from_json(json);
    expect_same_plan(plan, back);
    EXPECT_EQ(plan_to_json(back), json);
    EXPECT_EQ(plan_to_json(plan_from_json(plan_to_json(plan, 0)), 0), plan_to_json(plan, 0));
    EXPECT_NO_THROW(back.validate());
    EXPECT_NO_THROW(check_plan_coverage(back, in.tables));
    const test::HostProblem p = test::make_problem(in.spec, in.tables, 7);
    EXPECT_TRUE(bit_identical(test::run_plan_cpu(plan, p).out, test::run_plan_cpu(back, p).out));
  }
}

TEST(Plan, JsonErrors) {
  EXPECT_THROW(plan_from_json("not json"), Error);
  EXPECT_THROW(plan_from_json("{}"), Error);
  EXPECT_THROW(plan_from_json("[1, 2, 3]"), Error);
  // A plan whose spec is invalid is rejected by name, not divided by.
  const auto w = workload::workload_from_tree("1,2|32,32");
  Plan bad = make_plan(w.spec, w.tables);
  // Integers that do not fit their field are rejected, not cast (found by
  // fuzzing: 1e300 into an int was undefined behaviour, 2^32 + 32 became 32).
  const std::string good = plan_to_json(bad, -1);
  const std::string heads = "\"num_qo_heads\":" + std::to_string(bad.spec.num_qo_heads);
  ASSERT_NE(good.find(heads), std::string::npos);
  for (const char* value : {"4294967328", "1e300", "-1.5", "18446744073709551615"}) {
    std::string text = good;
    text.replace(text.find(heads), heads.size(), std::string("\"num_qo_heads\":") + value);
    EXPECT_EQ(expect_error([&] { plan_from_json(text); }, ErrorKind::kInvalidArgument,
                           {"plan JSON", "spec.num_qo_heads", "integer"}),
              "")
        << value;
  }
  bad.spec.page_size = 0;
  EXPECT_EQ(expect_error([&] { plan_from_json(plan_to_json(bad)); }, ErrorKind::kInvalidArgument,
                         {"page_size (0)"}),
            "");
}

TEST(Plan, ValidateRejectsInconsistentPlans) {
  const auto w = workload::scaled_for_cpu(workload::find_workload("two-level-3"), 3e5);
  const Plan good = make_plan(w.spec, w.tables);
  ASSERT_NO_THROW(good.validate());
  Plan bad = good;
  bad.merge_parts[0].slot = static_cast<std::int32_t>(good.num_partial_slots + 5);
  EXPECT_THROW(bad.validate(), Error);
  bad = good;
  bad.items[0].config = static_cast<std::int32_t>(good.configs.size());
  EXPECT_THROW(bad.validate(), Error);
  bad = good;
  bad.num_partial_slots += 1;
  EXPECT_THROW(bad.validate(), Error);
  bad = good;
  bad.merge_indptr.pop_back();
  EXPECT_THROW(bad.validate(), Error);
  bad = good;
  bad.items[0].row_begin = static_cast<std::int32_t>(good.num_partial_slots);
  EXPECT_THROW(bad.validate(), Error);
  // Compact rows: rows past task_rows, a task row of a request outside the
  // batch, a task row past the first group of heads (another KV head's).
  bad = good;
  bad.items[0].task_row_begin = static_cast<std::int32_t>(good.task_rows.size());
  EXPECT_EQ(expect_error([&] { bad.validate(); }, ErrorKind::kInvalidArgument,
                         {"item 0", "run past task_rows"}),
            "");
  bad = good;
  bad.task_rows[0] = good.batch_size * good.spec.num_qo_heads;
  EXPECT_EQ(expect_error([&] { bad.validate(); }, ErrorKind::kInvalidArgument,
                         {"task_rows[0]", "not a row"}),
            "");
  bad = good;
  bad.task_rows[0] += good.group();
  EXPECT_EQ(expect_error([&] { bad.validate(); }, ErrorKind::kInvalidArgument,
                         {"task_rows[0]", "first " + std::to_string(good.group()) + " qo heads"}),
            "");
  bad = good;
  bad.merge_parts[0].head_stride = static_cast<std::int32_t>(good.num_partial_slots);
  EXPECT_EQ(expect_error([&] { bad.validate(); }, ErrorKind::kInvalidArgument,
                         {"merge_parts[0]", "past the"}),
            "");
  bad = good;
  bad.items.push_back(good.items[0]);  // its partial slots would be written twice
  EXPECT_EQ(expect_error([&] { bad.validate(); }, ErrorKind::kInvalidArgument, {"also written"}),
            "");
}

/// Plans with every feature of the format: two partial launches and a merge
/// (both tensor-core configs), head packs, direct items (no merge launch).
struct FeaturePlans {
  Plan two_configs;  ///< 1,64|4096,256 with mma_q128_kv32_w4_s3 and mma_q64_kv64_w4_s3
  Plan packed;       ///< 1,256|256,32, unsplit: narrow leaves in packs of 4 KV heads
  Plan direct;       ///< 64|1000, unsplit: every item writes its output rows
  workload::Workload two_configs_w, packed_w, direct_w;
};

const FeaturePlans& feature_plans() {
  static const FeaturePlans p = [] {
    FeaturePlans f;
    f.two_configs_w = workload::workload_from_tree("1,64|4096,256");
    PlannerOptions o;
    // The wide kernel first: the planner weighs the first candidate alone
    // too, and the wide one alone (128-row tiles only) loses to both.
    o.candidates = {KernelConfig::parse("mma_q128_kv32_w4_s3"),
                    KernelConfig::parse("mma_q64_kv64_w4_s3")};
    o.row_tiles = {16, 128};
    o.fuse_merge = true;  // the merge launch stays in the plan, run inside the partial ones
    f.two_configs = make_plan(f.two_configs_w.spec, f.two_configs_w.tables, o);
    f.packed_w = workload::workload_from_tree("1,256|256,32");
    o = {};
    o.allow_split = false;
    o.allow_absorb = false;
    o.candidates = {KernelConfig::parse("mma_q64_kv64_w4_s3")};
    f.packed = make_plan(f.packed_w.spec, f.packed_w.tables, o);
    f.direct_w = workload::workload_from_tree("64|1000");
    o = {};
    o.allow_split = false;
    f.direct = make_plan(f.direct_w.spec, f.direct_w.tables, o);
    return f;
  }();
  return p;
}

int partial_launches(const Plan& plan) {
  int n = 0;
  for (const LaunchStep& g : plan.launches) n += g.family != KernelFamily::kMergeStates;
  return n;
}

TEST(Plan, FusedPlansLaunchThePersistentKernelsAndNoMerge) {
  const FeaturePlans& f = feature_plans();
  ASSERT_TRUE(f.two_configs.fused_merge);
  const std::vector<KernelSpec> fused = plan_kernel_specs(f.two_configs, kSm90);
  ASSERT_EQ(fused.size(), f.two_configs.configs.size());  // the merge runs inside them
  for (const KernelSpec& k : fused) EXPECT_TRUE(k.persistent) << k.to_string();
  ASSERT_FALSE(f.packed.fused_merge);
  const std::vector<KernelSpec> plain = plan_kernel_specs(f.packed, kSm90);
  ASSERT_EQ(plain.size(), f.packed.configs.size() + 1);
  for (const KernelSpec& k : plain) EXPECT_FALSE(k.persistent) << k.to_string();
  EXPECT_TRUE(plain.back().is_merge());
}

TEST(Plan, JsonRoundTripKeepsPacksDirectItemsAndTheSchedule) {
  const FeaturePlans& f = feature_plans();
  // The plans have what they are here for.
  ASSERT_EQ(partial_launches(f.two_configs), 2);
  ASSERT_EQ(f.two_configs.launches.back().family, KernelFamily::kMergeStates);
  ASSERT_TRUE(std::any_of(f.packed.items.begin(), f.packed.items.end(),
                          [](const WorkItem& it) { return it.kv_heads > 1; }));
  ASSERT_FALSE(f.packed.merge_requests.empty());
  ASSERT_TRUE(std::all_of(f.direct.items.begin(), f.direct.items.end(),
                          [](const WorkItem& it) { return it.direct; }));
  ASSERT_TRUE(f.direct.merge_requests.empty());
  for (const Plan* plan : {&f.two_configs, &f.packed, &f.direct}) {
    const std::string json = plan_to_json(*plan);
    const Plan back = plan_from_json(json);
    expect_same_plan(*plan, back);
    EXPECT_EQ(back.launches, plan->launches);
    EXPECT_EQ(plan_to_json(back), json);
  }
  // The schedule is explicit in the document: one object per launch, the
  // merge (config -1) last, covering every merge entry.
  const nlohmann::json j = nlohmann::json::parse(plan_to_json(f.two_configs));
  EXPECT_EQ(j.at("format"), "canopy-plan/3");
  const nlohmann::json& merge = j.at("launches").back();
  EXPECT_EQ(merge.at("family"), "merge");
  EXPECT_EQ(merge.at("config"), -1);
  EXPECT_EQ(merge.at("end"), f.two_configs.merge_entries());
  EXPECT_EQ(j.at("item_fields").size(), j.at("items").at(0).size());
  EXPECT_EQ(j.at("configs").at(0), "mma_q128_kv32_w4_s3");
  EXPECT_EQ(j.at("fused_merge"), true);
}

TEST(Plan, ValidateRejectsAHeadPackTheKernelCannotRun) {
  // Every item of 8|1000 unsplit is one request's 4 rows: row tile 16, packed.
  const workload::Workload w = workload::workload_from_tree("8|1000");
  PlannerOptions o;
  o.allow_split = false;
  o.candidates = {KernelConfig::parse("mma_q64_kv64_w4_s3")};
  Plan bad = make_plan(w.spec, w.tables, o);
  ASSERT_TRUE(std::all_of(bad.items.begin(), bad.items.end(), [](const WorkItem& it) {
    return it.row_tile == 16 && it.kv_heads == 4;
  }));
  // The FMA reference runs row tile 16 (its tile_q) but no head packs.
  bad.configs[0] = KernelConfig::parse("fma_q16_kv64_w4_s2");
  for (LaunchStep& g : bad.launches) {
    if (g.config == 0) g.family = KernelFamily::kFmaAttention;
  }
  EXPECT_EQ(expect_error([&] { bad.validate(); }, ErrorKind::kInvalidArgument,
                         {"packs 4 KV heads", "fma_q16_kv64_w4_s2", "at most 1"}),
            "");
  // So does the general kernel at row tile 32.
  bad = make_plan(w.spec, w.tables, o);
  bad.items[0].row_tile = 32;
  EXPECT_EQ(expect_error([&] { bad.validate(); }, ErrorKind::kInvalidArgument,
                         {"packs 4 KV heads", "at row tile 32"}),
            "");
}

TEST(Plan, ValidateRejectsARowTileTheKernelDoesNotRun) {
  const FeaturePlans& f = feature_plans();
  Plan bad = f.two_configs;
  bad.items[0].row_tile = 48;
  EXPECT_EQ(expect_error([&] { bad.validate(); }, ErrorKind::kInvalidArgument,
                         {"row tile 48", "does not run"}),
            "");
  // The wide kernel has no 1 x 4 arrangement: its 32-token stages leave a
  // warp less than one 16-token k-step.
  bad = f.two_configs;
  for (WorkItem& it : bad.items) {
    if (bad.configs[it.config] == KernelConfig::parse("mma_q128_kv32_w4_s3")) {
      it.row_tile = 16;  // checked before its row count
      break;
    }
  }
  EXPECT_EQ(expect_error([&] { bad.validate(); }, ErrorKind::kInvalidArgument,
                         {"row tile 16", "mma_q128_kv32_w4_s3"}),
            "");
}

TEST(Plan, ValidateRejectsAnOutputRowWrittenTwice) {
  const FeaturePlans& f = feature_plans();
  // A merged row whose item also writes it directly.
  Plan bad = f.packed;
  bad.items[0].direct = true;
  EXPECT_EQ(
      expect_error([&] { bad.validate(); }, ErrorKind::kInvalidArgument, {"more than one writer"}),
      "");
  // A direct row listed in the merge too.
  bad = f.direct;
  const std::int32_t row = bad.query_row(bad.items[0], 0, 0);
  bad.merge_requests = {row / bad.spec.num_qo_heads};
  bad.merge_indptr = {0, 1};
  bad.merge_parts = {{0, 0}};
  bad.launches.push_back(
      {KernelFamily::kMergeStates, -1, 0, static_cast<std::int32_t>(bad.merge_entries())});
  EXPECT_EQ(
      expect_error([&] { bad.validate(); }, ErrorKind::kInvalidArgument, {"more than one writer"}),
      "");
  // And a row nobody writes.
  bad = f.direct;
  bad.items[0].direct = false;
  EXPECT_EQ(expect_error([&] { bad.validate(); }, ErrorKind::kInvalidArgument, {"never written"}),
            "");
}

TEST(Plan, ValidateRejectsAMergeLaunchThatIsNotLast) {
  const FeaturePlans& f = feature_plans();
  Plan bad = f.two_configs;
  std::rotate(bad.launches.rbegin(), bad.launches.rbegin() + 1, bad.launches.rend());
  ASSERT_EQ(bad.launches.front().family, KernelFamily::kMergeStates);
  EXPECT_EQ(expect_error([&] { bad.validate(); }, ErrorKind::kInvalidArgument,
                         {"the merge must be the last launch"}),
            "");
  // A missing merge launch, a merge over part of the entries, launches out of order.
  bad = f.two_configs;
  bad.launches.pop_back();
  EXPECT_EQ(expect_error([&] { bad.validate(); }, ErrorKind::kInvalidArgument,
                         {"a merge launch iff there are merge entries"}),
            "");
  bad = f.two_configs;
  bad.launches.back().end -= 1;
  EXPECT_EQ(expect_error([&] { bad.validate(); }, ErrorKind::kInvalidArgument,
                         {"the merge launch must cover merge entries"}),
            "");
  bad = f.two_configs;
  std::swap(bad.launches[0], bad.launches[1]);
  EXPECT_EQ(expect_error([&] { bad.validate(); }, ErrorKind::kInvalidArgument,
                         {"partial launches must tile the items"}),
            "");
}

// ---- the coverage check catches corruption -----------------------------------

class Coverage : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto w = workload::scaled_for_cpu(workload::find_workload("ft-1-4-8-256"), 3e5);
    tables_ = w.tables;
    PlannerOptions o;
    o.min_split_tokens = 1;
    good_ = make_plan(w.spec, w.tables, o);
    ASSERT_NO_THROW(check_plan_coverage(good_, tables_));
    // An item that holds several tokens and, ideally, several pages.
    for (std::size_t i = 0; i < good_.items.size(); ++i)
      if (good_.items[i].token_end - good_.items[i].token_begin >
          good_.items[item_].token_end - good_.items[item_].token_begin)
        item_ = i;
    ASSERT_GT(good_.items[item_].token_end - good_.items[item_].token_begin, 1);
  }
  std::string rejected(const Plan& plan, std::initializer_list<std::string> needles) {
    return expect_error([&] { check_plan_coverage(plan, tables_); }, ErrorKind::kInvalidArgument,
                        needles);
  }
  BlockTables tables_;
  Plan good_;
  std::size_t item_ = 0;
};

TEST_F(Coverage, ShortenedItemLeavesAGap) {
  Plan bad = good_;
  bad.items[item_].token_end -= 1;
  EXPECT_EQ(rejected(bad, {"request", "qo head", "not covered"}), "");
}

TEST_F(Coverage, DroppedItemLeavesAGap) {
  Plan bad = good_;
  bad.items[item_].token_end = bad.items[item_].token_begin;
  EXPECT_EQ(rejected(bad, {"not covered"}), "");
}

TEST_F(Coverage, DuplicatedItemCoversTwice) {
  Plan bad = good_;
  WorkItem copy = bad.items[item_];
  copy.row_begin = static_cast<std::int32_t>(bad.num_partial_slots);  // same rows, new slots
  bad.num_partial_slots += copy.slot_count();
  bad.items.push_back(copy);
  EXPECT_EQ(rejected(bad, {"covered twice"}), "");
}

TEST_F(Coverage, WrongPage) {
  Plan bad = good_;
  const WorkItem& it = bad.items[item_];
  bad.kv_pages[static_cast<std::size_t>(it.kv_page_offset + it.token_begin / bad.spec.page_size)] =
      static_cast<std::int32_t>(tables_.num_pages + 3);
  EXPECT_EQ(rejected(bad, {"request", "page " + std::to_string(tables_.num_pages + 3)}), "");
}

TEST_F(Coverage, ShiftedPositions) {
  Plan bad = good_;
  bad.items[item_].path_token_offset += 1;
  EXPECT_NE(rejected(bad, {}), "did not throw");
  EXPECT_EQ(rejected(bad, {"request"}), "");
}

// Rows follow their KV head (compact rows: qo head = KV head * group + g),
// so an item moved to another KV head covers that head's rows a second time
// and leaves its own uncovered.
TEST_F(Coverage, ItemOnAnotherKvHead) {
  Plan bad = good_;
  bad.items[item_].kv_head = (bad.items[item_].kv_head + 1) % bad.spec.num_kv_heads;
  EXPECT_EQ(rejected(bad, {"request", "qo head", "covered"}), "");
}

TEST_F(Coverage, MergeIntoWrongRow) {
  Plan bad = good_;
  // Swap the first parts of two merged requests: each merges the other's slots.
  const auto& ip = bad.merge_indptr;
  ASSERT_GE(ip.size(), 3u);
  std::swap(bad.merge_parts[static_cast<std::size_t>(ip[0])],
            bad.merge_parts[static_cast<std::size_t>(ip[1])]);
  EXPECT_EQ(rejected(bad, {"request 0", "merge"}), "");
}

TEST_F(Coverage, SlotNeverMerged) {
  Plan bad = good_;
  // Drop the last part of the last merged request.
  bad.merge_parts.pop_back();
  bad.merge_indptr.back() -= 1;
  EXPECT_NE(rejected(bad, {}), "did not throw");
}

TEST_F(Coverage, WrongBatch) {
  BlockTables fewer = tables_;
  fewer.seq_lens.pop_back();
  fewer.indptr.pop_back();
  EXPECT_EQ(rejected(good_, {}), "did not throw");  // sanity: good plan passes
  EXPECT_EQ(expect_error([&] { check_plan_coverage(good_, fewer); }, ErrorKind::kInvalidArgument,
                         {std::to_string(tables_.batch_size())}),
            "");
}

TEST(CoverageSpeed, LargestSuiteWorkloadFullSize) {
  // The check must be cheap enough for full-size plans (GPU tests call it).
  const auto w = workload::find_workload("sys-32k-x256");
  const Plan plan = make_plan(w.spec, w.tables);
  EXPECT_NO_THROW(check_plan_coverage(plan, w.tables));
}

}  // namespace
}  // namespace canopy
