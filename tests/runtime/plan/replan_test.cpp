// IncrementalPlanner: a patched plan is a correct plan for the new tables
// (coverage, the CPU executor against the reference), and whatever cannot be
// patched is planned from scratch, exactly as make_plan plans it.
#include "canopy/replan.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "canopy/error.hpp"
#include "canopy/plan.hpp"
#include "canopy/planner.hpp"
#include "tests/test_data.hpp"
#include "workloads/workload.hpp"

namespace canopy {
namespace {

// Checks one step's plan: valid and covering; a full plan is make_plan's,
// bit for bit.
void check_step(const IncrementalPlanner& planner, const Plan& plan, const AttentionSpec& spec,
                const BlockTables& tables, const PlannerOptions& options,
                const std::string& where) {
  SCOPED_TRACE(where);
  ASSERT_NO_THROW(plan.validate());
  ASSERT_NO_THROW(check_plan_coverage(plan, tables));
  if (planner.last_outcome() == ReplanOutcome::kFull) {
    EXPECT_EQ(plan_to_json(plan), plan_to_json(make_plan(spec, tables, options)));
  }
}

TEST(Replan, DecodingStepsArePatchedAndCorrect) {
  // ft-1-4-256's shape with 64 leaves: every request ends alone at a leaf.
  const workload::Workload w = workload::workload_from_tree("1,4,64|8,256,32");
  IncrementalPlanner planner(w.spec);
  BlockTables tables = w.tables;
  int patched = 0;
  for (int step = 0; step < 40; ++step) {
    const Plan& plan = planner.plan(tables);
    check_step(planner, plan, w.spec, tables, {}, "step " + std::to_string(step));
    if (planner.last_outcome() == ReplanOutcome::kPatched) {
      ++patched;
      // Decisions are the last full plan's; the predicted time stays close
      // to a fresh plan's.
      const Plan fresh = make_plan(w.spec, tables);
      EXPECT_EQ(plan.items.size(), fresh.items.size());
      EXPECT_LT(plan.predicted_us, fresh.predicted_us * 1.1f) << "step " << step;
    }
    tables = workload::decode_step(tables, w.spec.page_size);
  }
  EXPECT_EQ(planner.full_plans() + planner.patched_plans(), 40);
  EXPECT_GE(patched, 30) << "one-token steps of lone leaves should mostly patch";
}

TEST(Replan, PatchedPlansMatchTheReferenceOnTheCpu) {
  const workload::Workload w = workload::workload_from_tree("1,2,6|40,24,5");
  IncrementalPlanner planner(w.spec);
  BlockTables tables = w.tables;
  int patched = 0;
  for (int step = 0; step < 12; ++step) {
    const Plan& plan = planner.plan(tables);
    if (planner.last_outcome() == ReplanOutcome::kPatched) {
      ++patched;
      const test::HostProblem p = test::make_problem(w.spec, tables, 100 + step);
      const test::HostResult got = test::run_plan_cpu(plan, p);
      const test::HostResult ref = test::run_reference(p);
      EXPECT_LT(test::relative_l2(got.out, ref.out), 1e-12) << "step " << step;
      EXPECT_LT(test::relative_l2(got.lse, ref.lse), 1e-12) << "step " << step;
    }
    tables = workload::decode_step(tables, w.spec.page_size);
  }
  EXPECT_GE(patched, 6);
}

TEST(Replan, UnchangedTablesKeepThePlan) {
  const workload::Workload w = workload::workload_from_tree("1,8|300,20");
  IncrementalPlanner planner(w.spec);
  const std::string first = plan_to_json(planner.plan(w.tables));
  EXPECT_EQ(planner.last_outcome(), ReplanOutcome::kFull);
  EXPECT_EQ(plan_to_json(planner.plan(w.tables)), first);
  EXPECT_EQ(planner.last_outcome(), ReplanOutcome::kUnchanged);
}

// Each change that a patch cannot take plans from scratch, and says why.
TEST(Replan, FallsBackToAFullPlan) {
  const workload::Workload w = workload::workload_from_tree("1,8|300,20");
  const int ps = w.spec.page_size;
  struct Case {
    std::string name;
    std::string reason;  // a word of last_reason()
    BlockTables (*change)(const BlockTables&, int);
  };
  const std::vector<Case> cases = {
      {"shrink", "shrank",
       [](const BlockTables& t, int) {
         BlockTables n = t;
         --n.seq_lens[3];
         return n;
       }},
      {"page remapped", "pages changed",
       [](const BlockTables& t, int) {
         BlockTables n = t;
         n.indices[n.indptr[2]] = static_cast<std::int32_t>(n.num_pages++);
         return n;
       }},
      {"departure", "batch",
       [](const BlockTables& t, int) {
         BlockTables n = t;
         n.seq_lens.pop_back();
         n.indices.resize(n.indptr[n.indptr.size() - 2]);
         n.indptr.pop_back();
         return n;
       }},
      {"arrival", "batch",
       [](const BlockTables& t, int) {
         BlockTables n = t;
         n.indices.insert(n.indices.end(), t.indices.begin(), t.indices.begin() + t.indptr[1]);
         n.indptr.push_back(static_cast<std::int32_t>(n.indices.size()));
         n.seq_lens.push_back(t.seq_lens[0]);
         return n;
       }},
      {"inner request grows", "alone",
       [](const BlockTables& t, int page_size) {
         // Request 0 becomes a prefix of request 1 (it ends at the shared
         // node), then grows.
         BlockTables n = t;
         n.seq_lens[0] = 300 / page_size * page_size;
         return workload::decode_step(n, page_size, std::vector<int>(n.batch_size(), 0));
       }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    IncrementalPlanner planner(w.spec);
    const BlockTables before = c.name == "inner request grows" ? c.change(w.tables, ps) : w.tables;
    planner.plan(before);
    const BlockTables after = c.name == "inner request grows"
                                  ? workload::decode_step(before, ps, {1, 0, 0, 0, 0, 0, 0, 0})
                                  : c.change(before, ps);
    const Plan& plan = planner.plan(after);
    EXPECT_EQ(planner.last_outcome(), ReplanOutcome::kFull);
    EXPECT_NE(planner.last_reason().find(c.reason), std::string::npos) << planner.last_reason();
    check_step(planner, plan, w.spec, after, {}, c.name);
  }
}

TEST(Replan, FullPlanEveryNSteps) {
  const workload::Workload w = workload::workload_from_tree("1,16|500,100");
  ReplanOptions replan;
  replan.full_every = 4;
  IncrementalPlanner planner(w.spec, {}, replan);
  BlockTables tables = w.tables;
  std::vector<ReplanOutcome> outcomes;
  for (int step = 0; step < 9; ++step) {
    planner.plan(tables);
    outcomes.push_back(planner.last_outcome());
    tables = workload::decode_step(tables, w.spec.page_size);
  }
  const ReplanOutcome F = ReplanOutcome::kFull, P = ReplanOutcome::kPatched;
  EXPECT_EQ(outcomes, (std::vector<ReplanOutcome>{F, P, P, P, F, P, P, P, F}));
}

TEST(Replan, RejectsBadTablesAndRecovers) {
  const workload::Workload w = workload::workload_from_tree("1,4|64,20");
  IncrementalPlanner planner(w.spec);
  planner.plan(w.tables);
  BlockTables bad = workload::decode_step(w.tables, w.spec.page_size);
  bad.indices.back() = static_cast<std::int32_t>(bad.num_pages + 5);
  EXPECT_EQ(
      test::expect_error([&] { planner.plan(bad); }, ErrorKind::kInvalidArgument, {"out of range"}),
      "");
  const BlockTables good = workload::decode_step(w.tables, w.spec.page_size);
  planner.plan(good);
  EXPECT_EQ(planner.last_outcome(), ReplanOutcome::kFull);
  EXPECT_THROW(IncrementalPlanner(w.spec, {}, ReplanOptions{0, 0.25}), Error);
}

// Patch-only steps (no step or growth limit) over many pages appended: the
// grown tasks' segments are written in place, moved to the end of kv_pages
// when full and compacted now and then. Every plan covers the tables (each
// token read from the request's own page), kv_pages stays within 1.25x the
// live pages plus a margin, and the same steps with append-only tables make
// the same items (their pages may sit elsewhere in kv_pages).
TEST(Replan, PatchedPageListGrowsInPlace) {
  const workload::Workload w = workload::workload_from_tree("1,4,32|40,24,3");  // page size 16
  ReplanOptions patch_only;
  patch_only.full_every = 1 << 30;
  patch_only.max_growth = 1e9;
  ReplanOptions append_only = patch_only;
  append_only.append_only_tables = true;
  IncrementalPlanner planner(w.spec, {}, patch_only);
  IncrementalPlanner trusting(w.spec, {}, append_only);
  BlockTables tables = w.tables;
  std::int64_t live = 0;
  for (int step = 0; step < 200; ++step) {
    const Plan& plan = planner.plan(tables);
    const Plan& other = trusting.plan(tables);
    ASSERT_EQ(planner.last_outcome(), step == 0 ? ReplanOutcome::kFull : ReplanOutcome::kPatched)
        << "step " << step << ": " << planner.last_reason();
    ASSERT_EQ(trusting.last_outcome(), planner.last_outcome()) << "step " << step;
    if (step == 0) live = static_cast<std::int64_t>(plan.kv_pages.size());
    if (step % 8 == 0 || step == 199) {
      SCOPED_TRACE("step " + std::to_string(step));
      ASSERT_NO_THROW(plan.validate());
      ASSERT_NO_THROW(check_plan_coverage(plan, tables));
      ASSERT_NO_THROW(check_plan_coverage(other, tables));
    }
    EXPECT_EQ(plan.predicted_us, other.predicted_us);
    ASSERT_EQ(plan.items.size(), other.items.size());
    for (std::size_t i = 0; i < plan.items.size(); ++i) {
      ASSERT_EQ(plan.items[i].token_end, other.items[i].token_end);
    }
    // 32 leaves grow a page every 16 steps.
    const std::int64_t now_live = live + 32 * (step / 16 + 1);
    EXPECT_LE(static_cast<std::int64_t>(plan.kv_pages.size()),
              now_live + now_live / 4 + 64 + 32 * 3)
        << "step " << step;
    tables = workload::decode_step(tables, w.spec.page_size);
  }
  EXPECT_GT(planner.patched_plans(), 190);
}

// Append-only tables: only each request's first and last used page are
// compared (a copy-on-write of the partly filled last page plans from
// scratch); the default compares every used page.
TEST(Replan, AppendOnlyTablesCompareTheLastPage) {
  const workload::Workload w = workload::workload_from_tree("1,8|300,20");
  ReplanOptions append_only;
  append_only.append_only_tables = true;
  const auto remap = [](const BlockTables& t, int r, int page) {
    BlockTables n = t;
    n.indices[n.indptr[r] + page] = static_cast<std::int32_t>(n.num_pages++);
    return n;
  };
  const int ps = w.spec.page_size;
  const int last_page = (w.tables.seq_lens[2] + ps - 1) / ps - 1;
  for (const bool trusted : {false, true}) {
    SCOPED_TRACE(trusted ? "append-only" : "default");
    for (const int page : {0, 3, last_page}) {
      IncrementalPlanner planner(w.spec, {}, trusted ? append_only : ReplanOptions{});
      planner.plan(w.tables);
      const BlockTables after = remap(workload::decode_step(w.tables, ps), 2, page);
      const Plan& plan = planner.plan(after);
      const bool caught = !trusted || page != 3;  // a middle page is the caller's promise
      EXPECT_EQ(planner.last_outcome() == ReplanOutcome::kFull, caught) << "page " << page;
      if (caught) {
        EXPECT_NE(planner.last_reason().find("pages changed"), std::string::npos);
        check_step(planner, plan, w.spec, after, {}, "page " + std::to_string(page));
      }
    }
  }
}

// The growth floor: a task may grow by min_growth_tokens even where that is
// more than max_growth of its tokens; past both, a full plan.
TEST(Replan, GrowthFloorForShortLeaves) {
  const workload::Workload w = workload::workload_from_tree("1,8|64,4");  // leaves of 4 tokens
  for (const int floor : {0, 8}) {
    ReplanOptions replan;
    replan.min_growth_tokens = floor;
    IncrementalPlanner planner(w.spec, {}, replan);
    BlockTables tables = w.tables;
    std::vector<ReplanOutcome> outcomes;
    for (int step = 0; step < 11; ++step) {
      planner.plan(tables);
      outcomes.push_back(planner.last_outcome());
      tables = workload::decode_step(tables, w.spec.page_size);
    }
    const ReplanOutcome F = ReplanOutcome::kFull, P = ReplanOutcome::kPatched;
    if (floor == 0) {  // 25% of 4 tokens: one token, then a full plan
      EXPECT_EQ(outcomes[0], F);
      EXPECT_EQ(outcomes[1], P);
      EXPECT_EQ(outcomes[2], F);
      EXPECT_NE(planner.full_plans(), 1);
    } else {  // 4 + 8 tokens: 8 patched steps, a full plan at the 9th
      EXPECT_EQ(outcomes, (std::vector<ReplanOutcome>{F, P, P, P, P, P, P, P, P, F, P}));
    }
  }
  EXPECT_THROW(IncrementalPlanner(w.spec, {}, ReplanOptions{16, 0.25, -1}), Error);
}

// Random forests and random steps: each request grows by 0-2 tokens, now and
// then one leaves or arrives. Every plan is valid and covering; every full
// plan is make_plan's; prefix-blind and no-split options too.
TEST(Replan, RandomStepsOnRandomForests) {
  std::mt19937_64 rng(11);
  std::vector<PlannerOptions> option_sets(3);
  ReplanOptions append_only;  // random steps only append pages
  append_only.append_only_tables = true;
  option_sets[1].prefix_blind = true;
  option_sets[2].min_split_tokens = 32;
  const workload::Workload shape = workload::workload_from_tree("1|16");
  std::int64_t patched = 0, total = 0;
  for (int forest = 0; forest < 24; ++forest) {
    test::RandomTreeOptions ro;
    ro.max_nodes = 12 + forest % 20;
    ro.max_pages_per_node = 1 + forest % 6;
    BlockTables tables = test::random_tree_tables(rng, ro);
    const PlannerOptions& options = option_sets[forest % option_sets.size()];
    IncrementalPlanner planner(shape.spec, options, forest % 2 ? append_only : ReplanOptions{});
    for (int step = 0; step < 12; ++step) {
      const Plan& plan = planner.plan(tables);
      check_step(planner, plan, shape.spec, tables, options,
                 "forest " + std::to_string(forest) + " step " + std::to_string(step));
      ++total;
      patched += planner.last_outcome() != ReplanOutcome::kFull;
      std::vector<int> grow(tables.batch_size());
      for (int& g : grow) g = static_cast<int>(rng() % 3);
      tables = workload::decode_step(tables, ro.page_size, grow);
      if (rng() % 6 == 0 && tables.batch_size() > 1) {  // the last request leaves
        tables.seq_lens.pop_back();
        tables.indptr.pop_back();
        tables.indices.resize(tables.indptr.back());
      }
    }
  }
  EXPECT_GT(patched, 0);
  EXPECT_LT(patched, total);
}

}  // namespace
}  // namespace canopy
