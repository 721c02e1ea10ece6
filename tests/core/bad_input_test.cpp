// Bad input is reported as canopy::Error naming the request, node or field
// and the bad value; never a crash.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "canopy/cpu.hpp"
#include "canopy/error.hpp"
#include "canopy/planner.hpp"
#include "canopy/tree.hpp"
#include "tests/test_data.hpp"

namespace canopy {
namespace {

using test::expect_error;
constexpr ErrorKind kBad = ErrorKind::kInvalidArgument;

/// Three good requests of 16-token pages: 0 -> [0,1,2] 40, 1 -> [0,1,3] 33, 2 -> [4,5] 20.
BlockTables good_tables() {
  BlockTables t;
  t.num_pages = 8;
  t.indptr = {0, 3, 6, 8};
  t.indices = {0, 1, 2, 0, 1, 3, 4, 5};
  t.seq_lens = {40, 33, 20};
  return t;
}

/// Every entry point that takes block tables must reject them the same way.
void expect_tables_rejected(const BlockTables& t, std::initializer_list<std::string> needles) {
  AttentionSpec spec;
  EXPECT_EQ(expect_error([&] { t.validate(spec.page_size); }, kBad, needles), "")
      << "BlockTables::validate";
  EXPECT_EQ(expect_error([&] { discover_prefix_tree(t, spec.page_size); }, kBad, needles), "")
      << "discover_prefix_tree";
  EXPECT_EQ(expect_error([&] { make_plan(spec, t); }, kBad, needles), "") << "make_plan";
  // The reference checks the tables itself (it never sees a tree).
  const std::vector<double> q(static_cast<std::size_t>(t.batch_size()) * 32 * 128, 0.0);
  const std::vector<double> kv(static_cast<std::size_t>(t.num_pages) * 16 * 8 * 128, 0.0);
  std::vector<double> out(q.size());
  EXPECT_EQ(expect_error(
                [&] {
                  reference_attention(spec, t, {q.data(), kv.data(), kv.data(), t.num_pages},
                                      out.data(), nullptr);
                },
                kBad, needles),
            "")
      << "reference_attention";
}

TEST(BadInput, GoodTablesAreAccepted) {
  EXPECT_NO_THROW(make_plan(AttentionSpec{}, good_tables()));
}

TEST(BadInput, NegativePageId) {
  BlockTables t = good_tables();
  t.indices[4] = -7;  // request 1, table position 1
  expect_tables_rejected(t, {"request 1", "-7"});
}

TEST(BadInput, PageIdPastTheCache) {
  BlockTables t = good_tables();
  t.indices[7] = 8;  // == num_pages, request 2
  expect_tables_rejected(t, {"request 2", "8"});
  t.indices[7] = 123456;
  expect_tables_rejected(t, {"request 2", "123456"});
}

TEST(BadInput, SequenceLongerThanItsTable) {
  BlockTables t = good_tables();
  t.seq_lens[2] = 33;  // needs 3 pages, holds 2
  expect_tables_rejected(t, {"request 2", "33"});
}

TEST(BadInput, ZeroAndNegativeLengthRequests) {
  BlockTables t = good_tables();
  t.seq_lens[1] = 0;
  expect_tables_rejected(t, {"request 1", "0"});
  t.seq_lens[1] = -5;
  expect_tables_rejected(t, {"request 1", "-5"});
}

TEST(BadInput, BrokenCsr) {
  BlockTables t = good_tables();
  t.indptr = {0, 3, 6};  // one entry short
  AttentionSpec spec;
  EXPECT_EQ(expect_error([&] { discover_prefix_tree(t, 16); }, kBad, {"indptr"}), "");
  t = good_tables();
  t.indptr = {0, 3, 2, 8};  // decreasing at request 1
  EXPECT_EQ(expect_error([&] { discover_prefix_tree(t, 16); }, kBad, {"request 1"}), "");
  t = good_tables();
  t.indptr = {0, 3, 6, 9};  // past the end of indices
  EXPECT_EQ(expect_error([&] { make_plan(spec, t); }, kBad, {"9"}), "");
}

// Found by fuzzing (tests/fuzz, ASan): an indptr that jumps past the end of
// indices and comes back down let validation read request 0's 100 pages from
// an 8-entry array before it saw request 1's decrease.
TEST(BadInput, IndptrPastIndicesThenBack) {
  BlockTables t = good_tables();
  t.indptr = {0, 100, 6, 8};
  t.seq_lens[0] = 100 * 16;
  expect_tables_rejected(t, {"request 0", "indptr[1] = 100", "past the end of indices"});
}

// Found by fuzzing (tests/fuzz, UBSan): splitting a task of close to 2^31
// tokens computed its piece length as tokens + pieces - 1 in int32.
TEST(BadInput, SplittingARequestOfInt32MaxTokens) {
  constexpr std::int32_t kTokens = 2147483647;
  AttentionSpec spec;
  spec.page_size = 256;
  BlockTables t;
  t.num_pages = (std::int64_t{kTokens} + 255) / 256;
  t.indices.resize(static_cast<std::size_t>(t.num_pages));
  for (std::size_t i = 0; i < t.indices.size(); ++i) t.indices[i] = static_cast<std::int32_t>(i);
  t.indptr = {0, static_cast<std::int32_t>(t.indices.size())};
  t.seq_lens = {kTokens};
  PlannerOptions options;
  options.min_split_tokens = 1;
  Plan plan;
  ASSERT_NO_THROW(make_plan(spec, t, options, plan));
  EXPECT_GT(plan.items.size(), static_cast<std::size_t>(spec.num_kv_heads)) << "not split";
  EXPECT_NO_THROW(check_plan_coverage(plan, t));
}

TEST(BadInput, EmptyBatch) {
  BlockTables t;
  t.indptr = {0};
  t.num_pages = 1;
  EXPECT_EQ(expect_error([&] { discover_prefix_tree(t, 16); }, kBad, {}), "");
}

TEST(BadInput, HeadCounts) {
  AttentionSpec spec;
  spec.num_qo_heads = 30;
  spec.num_kv_heads = 8;
  EXPECT_EQ(expect_error([&] { spec.validate(); }, kBad, {"30", "8"}), "");
  EXPECT_EQ(expect_error([&] { make_plan(spec, good_tables()); }, kBad, {"30", "8"}), "");
  spec.num_qo_heads = 32;
  spec.num_kv_heads = 0;
  EXPECT_EQ(expect_error([&] { spec.validate(); }, kBad, {"num_kv_heads", "0"}), "");
  EXPECT_EQ(expect_error([&] { make_plan(spec, good_tables()); }, kBad, {"num_kv_heads"}), "");
  spec.num_qo_heads = 0;
  spec.num_kv_heads = 8;
  EXPECT_EQ(expect_error([&] { spec.validate(); }, kBad, {"num_qo_heads", "0"}), "");
  spec.num_qo_heads = -4;
  EXPECT_EQ(expect_error([&] { spec.validate(); }, kBad, {"num_qo_heads", "-4"}), "");
}

TEST(BadInput, UnsupportedHeadDim) {
  AttentionSpec spec;
  for (int d : {96, 0, 512}) {
    spec.head_dim = d;
    EXPECT_EQ(expect_error([&] { spec.validate(); }, ErrorKind::kNotSupported,
                           {"head_dim", std::to_string(d)}),
              "");
    EXPECT_EQ(expect_error([&] { make_plan(spec, good_tables()); }, ErrorKind::kNotSupported,
                           {"head_dim", std::to_string(d)}),
              "");
  }
}

TEST(BadInput, PageSize) {
  AttentionSpec spec;
  for (int ps : {0, 300, -16}) {
    spec.page_size = ps;
    EXPECT_EQ(expect_error([&] { spec.validate(); }, kBad, {"page_size", std::to_string(ps)}), "");
    EXPECT_EQ(expect_error([&] { make_plan(spec, good_tables()); }, kBad,
                           {"page_size", std::to_string(ps)}),
              "");
    EXPECT_EQ(expect_error([&] { discover_prefix_tree(good_tables(), ps); }, kBad,
                           {"page_size", std::to_string(ps)}),
              "");
  }
}

TEST(BadInput, PaddedTables) {
  const std::vector<std::int32_t> padded = {0, 1, 2, -1, 4, 5, -1, -1};
  EXPECT_NO_THROW(BlockTables::from_padded(padded, 4, {40, 20}, 8, 16));
  EXPECT_EQ(expect_error(
                [&] {
                  BlockTables::from_padded(padded, 4, {40, 70}, 8, 16);
                },
                kBad, {"request 1", "70"}),
            "");
  EXPECT_EQ(expect_error(
                [&] {
                  BlockTables::from_padded(padded, 3, {40, 20}, 8, 16);
                },
                kBad, {}),
            "");
}

// Found by fuzzing (tests/fuzz): query rows (request * num_qo_heads + head)
// are int32; the planner overflowed them (and tried to allocate as many)
// instead of saying so.
TEST(BadInput, MoreQueryRowsThanInt32) {
  AttentionSpec spec;
  spec.num_qo_heads = spec.num_kv_heads = 1 << 30;
  EXPECT_EQ(expect_error([&] { make_plan(spec, good_tables()); }, ErrorKind::kNotSupported,
                         {"3 requests", "1073741824 qo heads", "3221225472 query rows"}),
            "");
}

// Partial states are int32 indices too: 2^15 requests x 2^15 qo heads fit
// (2^30 rows), but each row reading its own leaf and the shared root does not.
TEST(BadInput, MorePartialStatesThanInt32) {
  AttentionSpec spec;
  spec.num_qo_heads = 1 << 15;
  spec.num_kv_heads = 1;
  constexpr int kBatch = 1 << 15;
  BlockTables t;
  t.num_pages = kBatch + 1;
  t.indptr.push_back(0);
  for (int r = 0; r < kBatch; ++r) {
    t.indices.insert(t.indices.end(), {0, r + 1});
    t.indptr.push_back(static_cast<std::int32_t>(t.indices.size()));
    t.seq_lens.push_back(32);
  }
  PlannerOptions separate;
  separate.allow_absorb = false;
  separate.allow_split = false;
  EXPECT_EQ(expect_error([&] { make_plan(spec, t, separate); }, ErrorKind::kNotSupported,
                         {"2147483648 partial states", "2^31 - 1"}),
            "");
}

// ---- explicit trees ---------------------------------------------------------

/// root 0 {0,1} 32 tokens (request 0) -> node 1 {2} 10 (request 1), node 2 {3} 16 (request 2)
ExplicitTree good_tree() {
  ExplicitTree e;
  e.num_pages = 4;
  e.batch_size = 3;
  e.nodes.resize(3);
  e.nodes[0] = {-1, {0, 1}, 32, {0}};
  e.nodes[1] = {0, {2}, 10, {1}};
  e.nodes[2] = {0, {3}, 16, {2}};
  return e;
}

TEST(BadExplicitTree, GoodTreeIsAccepted) { EXPECT_NO_THROW(tree_from_explicit(good_tree(), 16)); }

TEST(BadExplicitTree, Cycle) {
  // Nodes 2 and 3 are each other's parent; request 2 ends on the cycle.
  ExplicitTree e = good_tree();
  e.num_pages = 6;
  e.nodes[2] = {3, {4}, 16, {}};
  e.nodes.push_back({2, {5}, 16, {2}});
  EXPECT_EQ(expect_error([&] { tree_from_explicit(e, 16); }, kBad, {"cycle", "node"}), "");

  ExplicitTree self = good_tree();
  self.nodes[2].parent = 2;
  EXPECT_EQ(expect_error([&] { tree_from_explicit(self, 16); }, kBad, {"node 2"}), "");
}

TEST(BadExplicitTree, ParentOutOfRange) {
  ExplicitTree e = good_tree();
  e.nodes[1].parent = 7;
  EXPECT_EQ(expect_error([&] { tree_from_explicit(e, 16); }, kBad, {"node 1", "7"}), "");
  e.nodes[1].parent = -3;
  EXPECT_EQ(expect_error([&] { tree_from_explicit(e, 16); }, kBad, {"node 1", "-3"}), "");
}

TEST(BadExplicitTree, RequestAtTwoNodes) {
  ExplicitTree e = good_tree();
  e.nodes[2].requests = {2, 1};
  EXPECT_EQ(expect_error([&] { tree_from_explicit(e, 16); }, kBad, {"request 1"}), "");
}

TEST(BadExplicitTree, RequestAtNoNode) {
  ExplicitTree e = good_tree();
  e.nodes[1].requests = {};
  EXPECT_EQ(expect_error([&] { tree_from_explicit(e, 16); }, kBad, {"request 1"}), "");
  e = good_tree();
  e.nodes[1].requests = {5};  // out of range
  EXPECT_EQ(expect_error([&] { tree_from_explicit(e, 16); }, kBad, {"5"}), "");
}

TEST(BadExplicitTree, PagesAndTokens) {
  ExplicitTree e = good_tree();
  e.nodes[2].pages = {9};
  EXPECT_EQ(expect_error([&] { tree_from_explicit(e, 16); }, kBad, {"node 2", "9"}), "");
  e = good_tree();
  e.nodes[0].num_tokens = 30;  // inner node with a partial page
  EXPECT_EQ(expect_error([&] { tree_from_explicit(e, 16); }, kBad, {"node 0"}), "");
  e = good_tree();
  e.nodes[1].num_tokens = 17;  // more than its one page holds
  EXPECT_EQ(expect_error([&] { tree_from_explicit(e, 16); }, kBad, {"node 1", "17"}), "");
  e = good_tree();
  e.nodes[1].num_tokens = 0;
  EXPECT_EQ(expect_error([&] { tree_from_explicit(e, 16); }, kBad, {"node 1"}), "");
  EXPECT_EQ(expect_error([&] { tree_from_explicit(good_tree(), 0); }, kBad, {"page_size"}), "");
}

// Found by fuzzing (tests/fuzz): nodes of up to 2^31 - 1 tokens each add up
// past int32 along a path; prefix_tokens overflowed instead of an error.
TEST(BadExplicitTree, PathLongerThanInt32) {
  constexpr int kPageSize = 256;
  constexpr std::int32_t kTokens = 2147483647 - 255;  // (2^23 - 1) full pages
  ExplicitTree e;
  e.num_pages = 2;
  e.batch_size = 1;
  e.nodes.resize(2);
  e.nodes[0] = {-1, std::vector<std::int32_t>(kTokens / kPageSize, 0), kTokens, {}};
  e.nodes[1] = {0, {1}, 256, {0}};
  EXPECT_EQ(expect_error([&] { tree_from_explicit(e, kPageSize); }, kBad,
                         {"node 1", "2147483648", "2^31 - 1"}),
            "");
  e.nodes[1].num_tokens = 255;  // exactly 2^31 - 1 tokens: fine
  EXPECT_NO_THROW(tree_from_explicit(e, kPageSize));
}

// Found by fuzzing (tests/fuzz): a batch_size near 2^31 with a few nodes
// allocated 8 GiB (one slot per request) before reporting the requests that
// end nowhere.
TEST(BadExplicitTree, HugeBatchSizeIsRejectedWithoutAllocating) {
  ExplicitTree e = good_tree();
  e.batch_size = 2147483647;
  EXPECT_EQ(expect_error([&] { tree_from_explicit(e, 16); }, kBad,
                         {"request 3", "2147483647", "ends at no node"}),
            "");
  e = good_tree();
  e.batch_size = 4;  // one more than the nodes list
  EXPECT_EQ(expect_error([&] { tree_from_explicit(e, 16); }, kBad, {"request 3"}), "");
}

// ---- plans that do not match their input ------------------------------------

TEST(BadInput, ExecutorRejectsCorruptPlans) {
  AttentionSpec spec;
  const BlockTables t = good_tables();
  const test::HostProblem p = test::make_problem(spec, t, 1);
  PlannerOptions separate;  // the shared pages as a task of their own: the plan merges
  separate.allow_absorb = false;
  const Plan good = make_plan(spec, t, separate);
  ASSERT_FALSE(good.merge_parts.empty());
  std::vector<double> out(static_cast<std::size_t>(p.out_elems()));
  EXPECT_NO_THROW(execute_plan_cpu(good, p.tensors(), out.data(), nullptr));

  Plan bad = good;
  bad.kv_pages[0] = 99;
  EXPECT_EQ(
      expect_error([&] { execute_plan_cpu(bad, p.tensors(), out.data(), nullptr); }, kBad, {"99"}),
      "");
  bad = good;
  bad.task_rows[0] = 1000;
  EXPECT_EQ(expect_error([&] { execute_plan_cpu(bad, p.tensors(), out.data(), nullptr); }, kBad,
                         {"1000"}),
            "");
  bad = good;
  bad.merge_parts.back().slot = 5000;
  EXPECT_EQ(expect_error([&] { execute_plan_cpu(bad, p.tensors(), out.data(), nullptr); }, kBad,
                         {"5000"}),
            "");
  bad = good;
  bad.items[0].token_end = 1 << 20;
  EXPECT_EQ(expect_error([&] { execute_plan_cpu(bad, p.tensors(), out.data(), nullptr); }, kBad,
                         {"item 0"}),
            "");
}

TEST(BadInput, CoverageRejectsTablesOfAnotherBatch) {
  AttentionSpec spec;
  const BlockTables t = good_tables();
  const Plan plan = make_plan(spec, t);
  EXPECT_NO_THROW(check_plan_coverage(plan, t));
  BlockTables other = t;
  other.indices[5] = 6;  // request 1's third page
  EXPECT_EQ(expect_error([&] { check_plan_coverage(plan, other); }, kBad, {"request 1", "page 6"}),
            "");
  other = t;
  other.seq_lens[0] = 41;
  EXPECT_EQ(expect_error([&] { check_plan_coverage(plan, other); }, kBad,
                         {"request 0", "KV token 40", "not covered"}),
            "");
  other = t;
  other.seq_lens[2] = 19;
  EXPECT_EQ(expect_error([&] { check_plan_coverage(plan, other); }, kBad, {"request 2", "19"}), "");
}

}  // namespace
}  // namespace canopy
