// canopy-tune --workloads: the planner's alternatives and the winner per
// shape class from timed alternatives (tools/tune_winners.hpp).
#include "tools/tune_winners.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "canopy/planner.hpp"
#include "workloads/workload.hpp"

namespace canopy::tune {
namespace {

std::set<std::string> names(const std::vector<Alternative>& alternatives) {
  std::set<std::string> out;
  for (const Alternative& a : alternatives) out.insert(a.name);
  return out;
}

TEST(TuneWinners, AlternativesStartWithTheDefaultsAndFollowTheArch) {
  const workload::Workload w = workload::find_workload("sys-4k-x64");
  const auto sm90 = planner_alternatives(w.spec, Arch::parse("90"));
  ASSERT_FALSE(sm90.empty());
  EXPECT_EQ(sm90.front().name, "defaults");
  EXPECT_EQ(sm90.front().options, PlannerOptions{});
  EXPECT_FALSE(sm90.front().builtin_coefficients);
  // The built-in defaults compete on every arch: a database never loses to them.
  for (const auto& alternatives : {sm90, planner_alternatives(w.spec, Arch::parse("80"))}) {
    ASSERT_GE(alternatives.size(), 2u);
    EXPECT_EQ(alternatives[1].name, "builtin-defaults");
    EXPECT_EQ(alternatives[1].options, PlannerOptions{});
    EXPECT_TRUE(alternatives[1].builtin_coefficients);
  }
  EXPECT_EQ(names(sm90).size(), sm90.size()) << "names are unique";
  EXPECT_TRUE(names(sm90).contains("wgmma") && names(sm90).contains("fused"));
  const auto sm80 = planner_alternatives(w.spec, Arch::parse("80"));
  EXPECT_FALSE(names(sm80).contains("wgmma") || names(sm80).contains("fused"));
  // Every alternative plans the batch (with sm_90's default coefficients).
  GpuCoefficients c;
  c.arch = Arch::parse("90");
  for (const Alternative& a : sm90) {
    PlannerOptions o = a.options;
    o.cost_model = CostModel(c);
    const Plan plan = make_plan(w.spec, w.tables, o);
    EXPECT_GT(plan.predicted_us, 0) << a.name;
  }
}

// canopy-tune gives the built-in defaults the defaults' time when both plans
// do the same work: predictions do not count, items and configs do.
TEST(TuneWinners, SameWorkIgnoresPredictionsOnly) {
  const workload::Workload w = workload::find_workload("sys-4k-x64");
  GpuCoefficients c;
  c.arch = Arch::parse("90");
  PlannerOptions o;
  o.cost_model = CostModel(c);
  const Plan plan = make_plan(w.spec, w.tables, o);
  Plan repriced = plan;
  repriced.predicted_us *= 2;
  for (WorkItem& item : repriced.items) item.predicted_us += 1;
  EXPECT_TRUE(same_work(plan, repriced));
  o.candidates = {KernelConfig::parse("mma_q128_kv32_w4_s3")};
  const Plan other = make_plan(w.spec, w.tables, o);
  ASSERT_NE(other.configs, plan.configs);
  EXPECT_FALSE(same_work(plan, other));
  Plan fewer = plan;
  fewer.items.pop_back();
  EXPECT_FALSE(same_work(plan, fewer));
}

// The planner's alternative `name`, as canopy-tune times it on sm_90.
Alternative named(const std::string& name) {
  static const std::vector<Alternative> all =
      planner_alternatives(workload::find_workload("sys-4k-x64").spec, Arch::parse("90"));
  for (const Alternative& a : all) {
    if (a.name == name) return a;
  }
  ADD_FAILURE() << "no alternative named " << name;
  return {name, {}};
}

TEST(TuneWinners, TheFastestOverTheClassWinsBeyondTheMinimumGain) {
  WinnerBook book;
  // Class A: no-split is 10% faster over its two batches; waves-2 is faster
  // on one batch but was not timed on the other, so it does not compete.
  book.add("A", named("defaults"), 100);
  book.add("A", named("defaults"), 300);
  book.add("A", named("no-split"), 95);
  book.add("A", named("no-split"), 265);
  book.add("A", named("waves-2"), 10);
  // Class B: waves-2 is 2% faster: within a 3% minimum gain, the defaults stay.
  book.add("B", named("defaults"), 50);
  book.add("B", named("waves-2"), 49);
  // Class C: no defaults timed: no verdict.
  book.add("C", named("no-split"), 5);
  const auto winners = book.winners(0.03);
  ASSERT_EQ(winners.size(), 2u);
  EXPECT_EQ(winners.at("A").options_json, planner_options_to_json(named("no-split").options));
  EXPECT_DOUBLE_EQ(winners.at("A").measured_us, 180);  // per batch
  EXPECT_DOUBLE_EQ(winners.at("A").default_us, 200);
  EXPECT_EQ(winners.at("B").options_json, planner_options_to_json(PlannerOptions{}));
  EXPECT_DOUBLE_EQ(winners.at("B").measured_us, 50);
  // With no minimum gain, B's 2% wins.
  EXPECT_EQ(book.winners(0).at("B").options_json,
            planner_options_to_json(named("waves-2").options));
  EXPECT_EQ(winners.at("A").alternative, "no-split");
  EXPECT_FALSE(winners.at("A").builtin_coefficients);
  EXPECT_EQ(winners.at("B").alternative, "defaults");
  const std::string text = book.summary(winners);
  EXPECT_NE(text.find("no-split 180.0 us (-10.0%)"), std::string::npos) << text;
}

// The built-in defaults have the defaults' options: the faster of the two is
// the baseline, with no margin (both are the planner's default plan); the
// winner records which coefficients price it, and the summary names it.
TEST(TuneWinners, TheFasterDefaultsAreTheBaseline) {
  WinnerBook book;
  // A: the built-in defaults 2.5% faster (less than the minimum gain): they win.
  book.add("A", named("defaults"), 102.5);
  book.add("A", named("builtin-defaults"), 100);
  book.add("A", named("no-split"), 110);
  // B: the database's defaults faster: they stay.
  book.add("B", named("defaults"), 100);
  book.add("B", named("builtin-defaults"), 101);
  // C: no-split beats the defaults by 4% but the built-in defaults by 1%:
  // within noise of the baseline, the built-in defaults win.
  book.add("C", named("defaults"), 104);
  book.add("C", named("builtin-defaults"), 101);
  book.add("C", named("no-split"), 100);
  // D: the built-in defaults not timed on every batch: no baseline of theirs.
  book.add("D", named("defaults"), 100);
  book.add("D", named("defaults"), 100);
  book.add("D", named("builtin-defaults"), 10);
  const auto winners = book.winners(0.03);
  EXPECT_TRUE(winners.at("A").builtin_coefficients);
  EXPECT_EQ(winners.at("A").alternative, "builtin-defaults");
  EXPECT_EQ(winners.at("A").options_json, planner_options_to_json(PlannerOptions{}));
  EXPECT_DOUBLE_EQ(winners.at("A").measured_us, 100);
  EXPECT_DOUBLE_EQ(winners.at("A").default_us, 102.5);
  EXPECT_FALSE(winners.at("B").builtin_coefficients);
  EXPECT_EQ(winners.at("B").alternative, "defaults");
  EXPECT_EQ(winners.at("C").alternative, "builtin-defaults");
  EXPECT_EQ(winners.at("D").alternative, "defaults");
  const std::string text = book.summary(winners);
  EXPECT_NE(text.find("builtin-defaults 100.0 us (-2.4%)"), std::string::npos) << text;
}

}  // namespace
}  // namespace canopy::tune
