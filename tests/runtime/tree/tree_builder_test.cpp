// Prefix-tree discovery from block tables, explicit trees, padded tables and
// the tables a tree implies.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "canopy/tree.hpp"
#include "tests/test_data.hpp"
#include "workloads/workload.hpp"

namespace canopy {
namespace {

/// Request r's used pages.
std::vector<std::int32_t> used_pages(const BlockTables& t, int r, int page_size) {
  const int n = (t.seq_lens[static_cast<std::size_t>(r)] + page_size - 1) / page_size;
  return {t.indices.begin() + t.indptr[r], t.indices.begin() + t.indptr[r] + n};
}

/// Same requests, lengths and used pages.
void expect_same_requests(const BlockTables& a, const BlockTables& b, int page_size) {
  ASSERT_EQ(a.batch_size(), b.batch_size());
  EXPECT_EQ(a.seq_lens, b.seq_lens);
  for (int r = 0; r < a.batch_size(); ++r)
    EXPECT_EQ(used_pages(a, r, page_size), used_pages(b, r, page_size)) << "request " << r;
}

/// A span of node ids as a vector, to compare and print.
std::vector<int> ids(std::span<const int> span) { return {span.begin(), span.end()}; }

/// Structural invariants every PrefixTree must satisfy, and that its paths
/// reproduce the block tables.
void expect_valid_tree(const PrefixTree& tree, const BlockTables& tables) {
  const int ps = tree.page_size;
  ASSERT_EQ(tree.batch_size, tables.batch_size());
  ASSERT_EQ(static_cast<int>(tree.request_node.size()), tree.batch_size);
  std::vector<int> ends_at(static_cast<std::size_t>(tree.batch_size), -1);
  std::vector<std::int32_t> subtree(tree.nodes.size(), 0);
  int max_depth = 0;
  std::int64_t pages_total = 0;
  std::int64_t children_total = 0;
  std::int64_t requests_total = 0;
  for (std::size_t i = 0; i < tree.nodes.size(); ++i) {
    const auto& n = tree.nodes[i];
    SCOPED_TRACE("node " + std::to_string(i));
    EXPECT_LT(n.parent, static_cast<int>(i));  // parents first
    if (n.parent < 0) {
      EXPECT_EQ(n.depth, 0);
      EXPECT_EQ(n.prefix_tokens, 0);
      EXPECT_NE(std::find(tree.roots.begin(), tree.roots.end(), static_cast<int>(i)),
                tree.roots.end());
    } else {
      const auto& p = tree.nodes[static_cast<std::size_t>(n.parent)];
      EXPECT_EQ(n.depth, p.depth + 1);
      EXPECT_EQ(n.prefix_tokens, p.prefix_tokens + p.num_tokens);
      EXPECT_EQ(p.num_tokens, p.page_count * ps) << "inner node with a partial page";
      const std::vector<int> siblings = ids(tree.children(p));
      EXPECT_NE(std::find(siblings.begin(), siblings.end(), static_cast<int>(i)), siblings.end());
    }
    EXPECT_GE(n.num_tokens, 1);
    EXPECT_GT(n.num_tokens, (n.page_count - 1) * ps);
    EXPECT_LE(n.num_tokens, n.page_count * ps);
    EXPECT_EQ(n.page_begin, pages_total);  // concatenated in node order
    pages_total += n.page_count;
    EXPECT_EQ(tree.pages_of(static_cast<int>(i)).data(), tree.pages.data() + n.page_begin);
    // Child and request ranges partition child_ids and request_ids, in node order.
    EXPECT_EQ(n.child_begin, children_total);
    children_total += n.child_count;
    EXPECT_EQ(n.request_begin, requests_total);
    requests_total += n.request_count;
    const std::vector<int> ending = ids(tree.requests(n));
    EXPECT_TRUE(std::is_sorted(ending.begin(), ending.end()));
    for (int r : ending) {
      EXPECT_EQ(ends_at[static_cast<std::size_t>(r)], -1) << "request " << r << " twice";
      ends_at[static_cast<std::size_t>(r)] = static_cast<int>(i);
    }
    // Siblings never start with the same page (else they would share a node).
    std::set<std::int32_t> firsts;
    for (int c : tree.children(n))
      EXPECT_TRUE(firsts
                      .insert(tree.pages[static_cast<std::size_t>(
                          tree.nodes[static_cast<std::size_t>(c)].page_begin)])
                      .second);
    max_depth = std::max(max_depth, n.depth + 1);
  }
  EXPECT_EQ(static_cast<std::int64_t>(tree.pages.size()), pages_total);
  EXPECT_EQ(static_cast<std::int64_t>(tree.child_ids.size()), children_total);
  EXPECT_EQ(static_cast<std::int64_t>(tree.request_ids.size()), requests_total);
  for (std::size_t i = tree.nodes.size(); i-- > 0;) {
    const auto& n = tree.nodes[i];
    subtree[i] += n.request_count;
    EXPECT_EQ(n.subtree_requests, subtree[i]) << "node " << i;
    if (n.parent >= 0) subtree[static_cast<std::size_t>(n.parent)] += subtree[i];
    std::vector<int> listed = tree.subtree_request_list(static_cast<int>(i));
    EXPECT_EQ(static_cast<int>(listed.size()), n.subtree_requests);
    EXPECT_TRUE(std::is_sorted(listed.begin(), listed.end()));
  }
  EXPECT_EQ(tree.max_depth(), max_depth);
  std::set<std::int32_t> root_firsts;
  for (int root : tree.roots) {
    EXPECT_EQ(tree.nodes[static_cast<std::size_t>(root)].parent, -1);
    EXPECT_TRUE(root_firsts
                    .insert(tree.pages[static_cast<std::size_t>(
                        tree.nodes[static_cast<std::size_t>(root)].page_begin)])
                    .second);
  }
  // Each request's path reproduces its table.
  for (int r = 0; r < tree.batch_size; ++r) {
    ASSERT_EQ(ends_at[static_cast<std::size_t>(r)], tree.request_node[static_cast<std::size_t>(r)]);
    std::vector<int> path;
    for (int n = ends_at[static_cast<std::size_t>(r)]; n >= 0;
         n = tree.nodes[static_cast<std::size_t>(n)].parent)
      path.push_back(n);
    std::reverse(path.begin(), path.end());
    std::vector<std::int32_t> pages;
    std::int32_t tokens = 0;
    for (int n : path) {
      const auto& node = tree.nodes[static_cast<std::size_t>(n)];
      pages.insert(pages.end(), tree.pages.begin() + node.page_begin,
                   tree.pages.begin() + node.page_begin + node.page_count);
      tokens += node.num_tokens;
    }
    EXPECT_EQ(tokens, tables.seq_lens[static_cast<std::size_t>(r)]) << "request " << r;
    EXPECT_EQ(pages, used_pages(tables, r, ps)) << "request " << r;
  }
}

TEST(TreeBuilder, HeaderExample) {
  BlockTables t;
  t.num_pages = 5;
  t.indptr = {0, 3, 6, 8};
  t.indices = {1, 2, 3, 1, 2, 4, 1, 2};
  t.seq_lens = {48, 40, 32};
  const PrefixTree tree = discover_prefix_tree(t, 16);
  expect_valid_tree(tree, t);
  ASSERT_EQ(tree.nodes.size(), 3u);
  ASSERT_EQ(tree.roots, std::vector<int>{0});
  const auto& root = tree.nodes[0];
  EXPECT_EQ(root.num_tokens, 32);
  EXPECT_EQ(root.page_count, 2);
  EXPECT_EQ(ids(tree.requests(root)), std::vector<int>{2});
  EXPECT_EQ(root.subtree_requests, 3);
  const std::vector<int> children = ids(tree.children(root));
  ASSERT_EQ(children.size(), 2u);
  const auto& a = tree.nodes[static_cast<std::size_t>(children[0])];
  const auto& b = tree.nodes[static_cast<std::size_t>(children[1])];
  EXPECT_EQ(tree.pages[static_cast<std::size_t>(a.page_begin)], 3);  // order of first appearance
  EXPECT_EQ(a.num_tokens, 16);
  EXPECT_EQ(ids(tree.requests(a)), std::vector<int>{0});
  EXPECT_EQ(tree.pages[static_cast<std::size_t>(b.page_begin)], 4);
  EXPECT_EQ(b.num_tokens, 8);
  EXPECT_EQ(ids(tree.requests(b)), std::vector<int>{1});
  EXPECT_EQ(a.prefix_tokens, 32);
  EXPECT_EQ(tree.max_depth(), 2);
  EXPECT_EQ(tree.request_node, (std::vector<int>{children[0], children[1], 0}));
  // The flat arrays, exactly as the header's example shows them.
  EXPECT_EQ(std::vector<std::int32_t>(tree.pages.begin(), tree.pages.end()),
            (std::vector<std::int32_t>{1, 2, 3, 4}));
  EXPECT_EQ(tree.child_ids, (std::vector<int>{1, 2}));
  EXPECT_EQ(tree.request_ids, (std::vector<int>{2, 0, 1}));
  EXPECT_EQ(tree.request_node, (std::vector<int>{1, 2, 0}));
  // Borrowed, node 2's page is where the tables hold it.
  const PrefixTree borrowed = discover_prefix_tree(t, 16, TreePages::kBorrowed);
  EXPECT_EQ(borrowed.nodes[2].page_begin, 5);
  EXPECT_EQ(borrowed.pages_of(2)[0], 4);
  EXPECT_FALSE(tree.to_string().empty());
  expect_same_requests(block_tables_from_tree(tree, t.num_pages), t, 16);
}

TEST(TreeBuilder, BorrowedPagesViewTheTables) {
  for (std::uint64_t seed = 0; seed < 20; ++seed) {
    std::mt19937_64 rng(seed);
    const BlockTables t = test::random_tree_tables(rng, {});
    SCOPED_TRACE("seed " + std::to_string(seed));
    const PrefixTree owned = discover_prefix_tree(t, 16);
    const PrefixTree borrowed = discover_prefix_tree(t, 16, TreePages::kBorrowed);
    EXPECT_NE(owned.page_storage, nullptr);
    EXPECT_EQ(borrowed.page_storage, nullptr);
    EXPECT_EQ(borrowed.pages.data(), t.indices.data());  // no copy
    EXPECT_EQ(borrowed.to_string(), owned.to_string());
    ASSERT_EQ(borrowed.nodes.size(), owned.nodes.size());
    for (int i = 0; i < static_cast<int>(owned.nodes.size()); ++i) {
      const auto o = owned.pages_of(i);
      const auto b = borrowed.pages_of(i);
      EXPECT_TRUE(std::equal(o.begin(), o.end(), b.begin(), b.end())) << "node " << i;
    }
    EXPECT_EQ(borrowed.child_ids, owned.child_ids);
    EXPECT_EQ(borrowed.request_ids, owned.request_ids);
    expect_same_requests(block_tables_from_tree(borrowed, t.num_pages), t, 16);
    // A copy of an owned tree shares its pages and outlives the original.
    PrefixTree copy;
    {
      const PrefixTree original = discover_prefix_tree(t, 16);
      copy = original;
    }
    EXPECT_EQ(copy.to_string(), owned.to_string());
  }
}

TEST(TreeBuilder, MultipleRoots) {
  BlockTables t;
  t.num_pages = 8;
  t.indptr = {0, 2, 4, 6, 7};
  t.indices = {0, 1, 5, 6, 0, 2, 7};
  t.seq_lens = {20, 17, 32, 3};
  const PrefixTree tree = discover_prefix_tree(t, 16);
  expect_valid_tree(tree, t);
  EXPECT_EQ(tree.roots.size(), 3u);  // {0} with children {1},{2}; {5,6}; {7}
  EXPECT_EQ(tree.nodes.size(), 5u);
  EXPECT_EQ(tree.max_depth(), 2);
}

TEST(TreeBuilder, SingleRequestAndIdenticalTables) {
  BlockTables one;
  one.num_pages = 4;
  one.indptr = {0, 3};
  one.indices = {3, 0, 2};
  one.seq_lens = {33};
  PrefixTree tree = discover_prefix_tree(one, 16);
  expect_valid_tree(tree, one);
  EXPECT_EQ(tree.nodes.size(), 1u);

  BlockTables same;
  same.num_pages = 4;
  same.indptr = {0, 2, 4, 6};
  same.indices = {1, 2, 1, 2, 1, 2};
  same.seq_lens = {30, 30, 30};
  tree = discover_prefix_tree(same, 16);
  expect_valid_tree(tree, same);
  ASSERT_EQ(tree.nodes.size(), 1u);
  EXPECT_EQ(ids(tree.requests(0)), (std::vector<int>{0, 1, 2}));
}

// Neighbouring requests that hold the same pages with different fills share
// only the full pages (discovery reuses the previous request's path): A and D
// (page 2 holds 4 tokens), B (5 tokens), E (full) with C below it.
TEST(TreeBuilder, NeighboursDifferingInTheLastPagesFill) {
  BlockTables t;
  t.num_pages = 4;
  t.indptr = {0, 2, 4, 7, 9, 11};
  t.indices = {1, 2, 1, 2, 1, 2, 3, 1, 2, 1, 2};
  t.seq_lens = {20, 21, 40, 20, 32};  // A, B, C, D, E
  const PrefixTree tree = discover_prefix_tree(t, 16);
  ASSERT_EQ(tree.roots.size(), 1u);
  const int root = tree.roots[0];
  EXPECT_EQ(tree.nodes[root].num_tokens, 16);
  const std::vector<int> kids = ids(tree.children(root));
  ASSERT_EQ(kids.size(), 3u);
  EXPECT_EQ(tree.nodes[kids[0]].num_tokens, 4);
  EXPECT_EQ(ids(tree.requests(kids[0])), (std::vector<int>{0, 3}));
  EXPECT_EQ(tree.nodes[kids[1]].num_tokens, 5);
  EXPECT_EQ(ids(tree.requests(kids[1])), (std::vector<int>{1}));
  EXPECT_EQ(tree.nodes[kids[2]].num_tokens, 16);
  EXPECT_EQ(ids(tree.requests(kids[2])), (std::vector<int>{4}));
  ASSERT_EQ(tree.children(kids[2]).size(), 1u);
  const int c = tree.children(kids[2])[0];
  EXPECT_EQ(tree.nodes[c].num_tokens, 8);
  EXPECT_EQ(ids(tree.requests(c)), (std::vector<int>{2}));
}

TEST(TreeBuilder, UnusedTrailingPagesAreIgnored) {
  BlockTables t;
  t.num_pages = 6;
  t.indptr = {0, 4, 6};
  t.indices = {1, 2, 5, 5, 1, 3};
  t.seq_lens = {20, 17};  // request 0 uses pages 1, 2 only
  const PrefixTree tree = discover_prefix_tree(t, 16);
  expect_valid_tree(tree, t);
  EXPECT_EQ(tree.nodes.size(), 3u);
}

/// Nodes a tree string gives after discovery, for shapes whose node counts
/// strictly grow: a level-i node owns the full pages that end inside it
/// (those are shared by its whole subtree); a partly filled page at its end
/// is copied per child and belongs to the child. Nodes owning no page vanish.
int expected_nodes(const workload::TreeShape& s, int ps, int* depth) {
  int nodes = 0;
  *depth = 0;
  std::int64_t end = 0;
  const std::size_t levels = s.nodes_per_level.size();
  for (std::size_t l = 0; l < levels; ++l) {
    const std::int64_t begin = end;
    end += s.tokens_per_level[l];
    const bool leaf = l + 1 == levels;
    const std::int64_t owned = leaf ? (end + ps - 1) / ps - begin / ps : end / ps - begin / ps;
    if (owned > 0) {
      nodes += s.nodes_per_level[l];
      ++*depth;
    }
  }
  return nodes;
}

TEST(TreeBuilder, SuiteShapesGiveTheExpectedNodes) {
  int checked = 0;
  for (const auto& w : workload::load_suite()) {
    const auto shape = workload::TreeShape::parse(w.tree);
    bool growing = true;
    for (std::size_t l = 1; l < shape.nodes_per_level.size(); ++l)
      growing = growing && shape.nodes_per_level[l] > shape.nodes_per_level[l - 1];
    if (!growing) continue;
    SCOPED_TRACE(w.name + " " + w.tree);
    const PrefixTree tree = discover_prefix_tree(w.tables, w.spec.page_size);
    int depth = 0;
    EXPECT_EQ(static_cast<int>(tree.nodes.size()), expected_nodes(shape, w.spec.page_size, &depth));
    EXPECT_EQ(tree.max_depth(), depth);
    expect_valid_tree(tree, w.tables);
    ++checked;
  }
  EXPECT_GE(checked, 25);
}

TEST(TreeBuilder, KnownSuiteShapes) {
  struct Case {
    const char* tree;
    int page_size;
    std::size_t nodes, roots;
    int depth;
  };
  for (const Case& c :
       {Case{"1,4,64|2048,1024,256", 16, 1 + 4 + 64, 1, 3}, Case{"1,64|4096,256", 16, 65, 1, 2},
        Case{"1,2,64|8,256,32", 16, 66, 2, 2},  // root's 8 tokens are copied
        Case{"1,64|4096,250", 64, 65, 1, 2},
        Case{"1,4,16,64,256,1024|256,8,256,64,32,256", 16, 1361, 1, 5},
        Case{"256|1024", 16, 256, 256, 1},
        Case{"2,8,16,256|256,256,32,32", 16, 2 + 8 + 16 + 256, 2, 4}}) {
    SCOPED_TRACE(c.tree);
    const BlockTables t =
        workload::block_tables_from_shape(workload::TreeShape::parse(c.tree), c.page_size);
    const PrefixTree tree = discover_prefix_tree(t, c.page_size);
    EXPECT_EQ(tree.nodes.size(), c.nodes);
    EXPECT_EQ(tree.roots.size(), c.roots);
    EXPECT_EQ(tree.max_depth(), c.depth);
  }
}

TEST(TreeBuilder, RandomTreesRoundTrip) {
  for (std::uint64_t seed = 0; seed < 120; ++seed) {
    std::mt19937_64 rng(seed);
    test::RandomTreeOptions o;
    o.page_size = std::vector<int>{1, 16, 64}[seed % 3];
    o.max_depth = static_cast<int>(1 + seed % 20);
    o.max_roots = static_cast<int>(1 + seed % 4);
    o.max_fanout = static_cast<int>(1 + seed % 6);
    const test::RandomTree r = test::random_tree(rng, o);
    SCOPED_TRACE("seed " + std::to_string(seed));
    const PrefixTree discovered = discover_prefix_tree(r.tables, o.page_size);
    expect_valid_tree(discovered, r.tables);
    expect_same_requests(block_tables_from_tree(discovered, r.tables.num_pages), r.tables,
                         o.page_size);
    EXPECT_EQ(block_tables_from_tree(discovered, r.tables.num_pages).num_pages, r.tables.num_pages);
    // Discovery is idempotent on its own output.
    const PrefixTree again =
        discover_prefix_tree(block_tables_from_tree(discovered, r.tables.num_pages), o.page_size);
    EXPECT_EQ(again.to_string(), discovered.to_string());
    EXPECT_LE(discovered.nodes.size(), r.tree.nodes.size());

    const PrefixTree given = tree_from_explicit(r.tree, o.page_size);
    expect_valid_tree(given, r.tables);
    expect_same_requests(block_tables_from_tree(given, r.tables.num_pages), r.tables, o.page_size);
    if (HasFailure()) break;
  }
}

TEST(TreeBuilder, ExplicitTreeKeepsInnerRequests) {
  ExplicitTree e;
  e.num_pages = 6;
  e.batch_size = 3;
  e.nodes.resize(3);
  e.nodes[0] = {-1, {4, 5}, 32, {1}};
  e.nodes[1] = {0, {0}, 10, {0}};
  e.nodes[2] = {0, {2}, 16, {2}};
  const PrefixTree tree = tree_from_explicit(e, 16);
  expect_valid_tree(tree, test::tables_of_explicit(e));
  ASSERT_EQ(tree.nodes.size(), 3u);
  EXPECT_EQ(ids(tree.requests(0)), std::vector<int>{1});
  EXPECT_EQ(tree.nodes[0].subtree_requests, 3);
}

// Found by fuzzing (tests/fuzz): ceil(len / page_size) was computed in int32,
// so a request within page_size of 2^31 tokens came out with a negative page
// count and vanished from the tree (its rows never written by the plan).
TEST(TreeBuilder, LengthsNearInt32MaxKeepEveryRequest) {
  constexpr int kPageSize = 256;
  const std::int32_t len = 2147483647 - 100;
  const std::int32_t pages = (len + std::int64_t{kPageSize} - 1) / kPageSize;
  BlockTables t;
  t.indptr = {0, 2, 2 + pages};
  t.indices = {0, 1};
  for (std::int32_t p = 0; p < pages; ++p) t.indices.push_back(p);  // shares page 0 with request 0
  t.seq_lens = {300, len};
  t.num_pages = pages;
  const PrefixTree tree = discover_prefix_tree(t, kPageSize);
  ASSERT_EQ(tree.request_node.size(), 2u);
  for (int r = 0; r < 2; ++r) {
    const int node = tree.request_node[static_cast<std::size_t>(r)];
    ASSERT_GE(node, 0) << "request " << r;
    const PrefixTree::Node& n = tree.nodes[static_cast<std::size_t>(node)];
    EXPECT_EQ(n.prefix_tokens + n.num_tokens, t.seq_lens[static_cast<std::size_t>(r)]);
  }
}

TEST(TreeBuilder, FromPaddedEqualsCsr) {
  for (std::uint64_t seed = 0; seed < 20; ++seed) {
    std::mt19937_64 rng(seed);
    test::RandomTreeOptions o;
    o.extra_table_pages_prob = 0;
    const BlockTables csr = test::random_tree_tables(rng, o);
    int max_pages = 0;
    for (int r = 0; r < csr.batch_size(); ++r)
      max_pages = std::max(max_pages, csr.indptr[r + 1] - csr.indptr[r]);
    max_pages += static_cast<int>(seed % 3);
    std::vector<std::int32_t> padded(static_cast<std::size_t>(csr.batch_size()) * max_pages, -1);
    for (int r = 0; r < csr.batch_size(); ++r)
      std::copy(csr.indices.begin() + csr.indptr[r], csr.indices.begin() + csr.indptr[r + 1],
                padded.begin() + static_cast<std::ptrdiff_t>(r) * max_pages);
    const BlockTables from =
        BlockTables::from_padded(padded, max_pages, csr.seq_lens, csr.num_pages, o.page_size);
    SCOPED_TRACE("seed " + std::to_string(seed));
    expect_same_requests(from, csr, o.page_size);
    EXPECT_EQ(from.num_pages, csr.num_pages);
    EXPECT_EQ(discover_prefix_tree(from, o.page_size).to_string(),
              discover_prefix_tree(csr, o.page_size).to_string());
  }
}

}  // namespace
}  // namespace canopy
