// canopy-tune --workloads: the planner's alternatives and the winner per
// shape class from timed alternatives (tools/tune_winners.hpp).
#include "tools/tune_winners.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

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

Alternative named(const std::string& name) {
  Alternative a{name, {}};
  if (name == "no-split") a.options.allow_split = false;
  if (name == "waves-2") a.options.waves = 2;
  return a;
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
  const std::string text = book.summary(winners);
  EXPECT_NE(text.find("no-split 180.0 us (-10.0%)"), std::string::npos) << text;
}

}  // namespace
}  // namespace canopy::tune
