// The irregular-batch generator: the same batch for the same seed, valid
// block tables that discovery turns into irregular forests, and churn steps.
#include "workloads/irregular.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <string>

#include "canopy/plan.hpp"
#include "canopy/planner.hpp"
#include "canopy/replan.hpp"
#include "canopy/tree.hpp"

namespace canopy::workload {
namespace {

bool same_tables(const BlockTables& a, const BlockTables& b) {
  return a.indptr == b.indptr && a.indices == b.indices && a.seq_lens == b.seq_lens &&
         a.num_pages == b.num_pages;
}

TEST(IrregularWorkload, SameSeedSameBatch) {
  for (std::uint64_t seed : {0ull, 1ull, 17ull, 123456789ull}) {
    SCOPED_TRACE(seed);
    const Workload a = irregular_workload(seed);
    const Workload b = irregular_workload(seed);
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.spec, b.spec);
    EXPECT_TRUE(same_tables(a.tables, b.tables));
    const IrregularForest f = irregular_forest(seed, {});
    EXPECT_EQ(f.parent, irregular_forest(seed, {}).parent);
    EXPECT_EQ(f.tokens, irregular_forest(seed, {}).tokens);
  }
  EXPECT_FALSE(same_tables(irregular_workload(1).tables, irregular_workload(2).tables));
}

// Seed 42's nodes, depth, roots, GQA group, page size and page ids.
constexpr const char* kPinned42 = "347 4 4 1 256 4612";

// Pinned numbers: the generator draws from its own PRNG, so a seed gives the
// same batch on every platform and standard library.
TEST(IrregularWorkload, SeedIsPortable) {
  const IrregularForest f = irregular_forest(42, {});
  const Workload w = irregular_workload(42);
  EXPECT_EQ(w.tables.batch_size(), 300);
  const std::string got = std::to_string(f.parent.size()) + " " + std::to_string(f.depth) + " " +
                          std::to_string(f.roots) + " " + std::to_string(w.spec.group_size()) +
                          " " + std::to_string(w.spec.page_size) + " " +
                          std::to_string(w.tables.indices.size());
  EXPECT_EQ(got, kPinned42);
}

TEST(IrregularWorkload, ForestsAreIrregular) {
  int inner_requests = 0;
  int multi_root = 0;
  std::set<int> groups, page_sizes, depths;
  for (std::uint64_t seed = 0; seed < 40; ++seed) {
    SCOPED_TRACE(seed);
    IrregularOptions o;
    o.requests = 20 + static_cast<int>(seed) * 7;
    const IrregularForest f = irregular_forest(seed, o);
    EXPECT_EQ(static_cast<int>(f.request_node.size()), o.requests);
    EXPECT_GE(f.depth, 1);
    EXPECT_LE(f.depth, o.max_depth);
    EXPECT_GE(f.roots, o.min_roots);
    EXPECT_LE(f.roots, o.max_roots);
    depths.insert(f.depth);
    multi_root += f.roots > 1;
    // Every node a different length; parents before children (preorder).
    EXPECT_EQ(std::set<int>(f.tokens.begin(), f.tokens.end()).size(), f.tokens.size());
    std::set<int> has_children;
    for (std::size_t n = 0; n < f.parent.size(); ++n) {
      EXPECT_LT(f.parent[n], static_cast<int>(n));
      if (f.parent[n] >= 0) has_children.insert(f.parent[n]);
    }
    for (int node : f.request_node) inner_requests += has_children.count(node) > 0;
    const Workload w = irregular_workload(seed, o);
    groups.insert(w.spec.group_size());
    page_sizes.insert(w.spec.page_size);
    EXPECT_GE(w.spec.group_size(), 1);
    EXPECT_LE(w.spec.group_size(), 8);
    EXPECT_GE(w.spec.page_size, 1);
    EXPECT_LE(w.spec.page_size, 256);
    EXPECT_EQ(w.spec.page_size & (w.spec.page_size - 1), 0);
  }
  EXPECT_GT(inner_requests, 0);
  EXPECT_GT(multi_root, 0);
  EXPECT_GE(groups.size(), 4u);
  EXPECT_GE(page_sizes.size(), 4u);
  EXPECT_GE(depths.size(), 3u);
}

// The tables validate, discovery finds at least the generated roots and
// requests ending at inner nodes, and the planner takes them.
TEST(IrregularWorkload, TablesAreValidAndPlan) {
  int inner = 0;
  for (std::uint64_t seed = 0; seed < 24; ++seed) {
    SCOPED_TRACE(seed);
    IrregularOptions o;
    o.requests = 10 + static_cast<int>(seed) * 5;
    o.root_tokens_max = 600;  // small enough for page size 1
    o.inner_tokens_max = 200;
    o.leaf_tokens_max = 100;
    const Workload w = irregular_workload(seed, o);
    ASSERT_NO_THROW(w.tables.validate(w.spec.page_size));
    ASSERT_EQ(w.tables.batch_size(), o.requests);
    const PrefixTree tree = discover_prefix_tree(w.tables, w.spec.page_size);
    EXPECT_GE(static_cast<int>(tree.roots.size()), irregular_forest(seed, o).roots);
    for (const PrefixTree::Node& n : tree.nodes) inner += n.child_count > 0 && n.request_count > 0;
    const Plan plan = make_plan(w.spec, w.tables);
    ASSERT_NO_THROW(plan.validate());
    ASSERT_NO_THROW(check_plan_coverage(plan, w.tables));
  }
  EXPECT_GT(inner, 0);
}

TEST(IrregularWorkload, ChurnStepsFinishJoinAndGrow) {
  IrregularOptions o;
  o.requests = 60;
  o.page_size = 16;
  const Workload w = irregular_workload(5, o);
  BlockTables tables = w.tables;
  IncrementalPlanner planner(w.spec);
  for (int step = 0; step < 12; ++step) {
    SCOPED_TRACE(step);
    const int finish = step % 3;
    const int join = (step + 1) % 3;
    const BlockTables next = churn_step(tables, w.spec.page_size, 100 + step, finish, join);
    ASSERT_NO_THROW(next.validate(w.spec.page_size));
    EXPECT_EQ(next.batch_size(), tables.batch_size() - finish + join);
    EXPECT_TRUE(same_tables(next, churn_step(tables, w.spec.page_size, 100 + step, finish, join)));
    if (finish == 0) {  // the survivors grew by one token each, pages kept
      for (int r = 0; r < tables.batch_size(); ++r) {
        EXPECT_EQ(next.seq_lens[r], tables.seq_lens[r] + 1);
        EXPECT_EQ(next.indices[next.indptr[r]], tables.indices[tables.indptr[r]]);
      }
    }
    tables = next;
    const Plan& plan = planner.plan(tables);
    ASSERT_NO_THROW(plan.validate());
    ASSERT_NO_THROW(check_plan_coverage(plan, tables));
  }
}

}  // namespace
}  // namespace canopy::workload
