// Tree strings, block tables from shapes (page sharing), the suite and batch files.
#include "workloads/workload.hpp"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "canopy/error.hpp"
#include "canopy/tree.hpp"
#include "tests/test_data.hpp"

namespace canopy::workload {
namespace {

using test::expect_error;

std::vector<std::int32_t> pages_of(const BlockTables& t, int r) {
  return {t.indices.begin() + t.indptr[r], t.indices.begin() + t.indptr[r + 1]};
}

TEST(TreeShape, Parse) {
  const TreeShape s = TreeShape::parse("1,4,64|2048,1024,256");
  EXPECT_EQ(s.nodes_per_level, (std::vector<int>{1, 4, 64}));
  EXPECT_EQ(s.tokens_per_level, (std::vector<int>{2048, 1024, 256}));
  EXPECT_EQ(s.num_requests(), 64);
  EXPECT_EQ(s.path_tokens(), 3328);
  EXPECT_EQ(s.to_string(), "1,4,64|2048,1024,256");
  EXPECT_EQ(TreeShape::parse(s.to_string()).to_string(), s.to_string());

  const TreeShape flat = TreeShape::parse("256|1024");
  EXPECT_EQ(flat.num_requests(), 256);
  EXPECT_EQ(flat.path_tokens(), 1024);
  const TreeShape multi = TreeShape::parse("2,8,16,256|256,256,32,32");
  EXPECT_EQ(multi.nodes_per_level.front(), 2);
}

TEST(TreeShape, ParseRejectsBadStrings) {
  for (const std::string bad :
       {"", "|", "1,64", "1,64|4096", "1,64|4096,256,1", "1,64|4096,256|3", "2,3|8,8", "1,x|8,8",
        "1,64|0,256", "1,-4|8,8", "1,,64|8,8,8", "0|16", "1,64|4096,2.5", "1 ,64|8,8x"}) {
    SCOPED_TRACE("'" + bad + "'");
    EXPECT_EQ(expect_error([&] { TreeShape::parse(bad); }, ErrorKind::kInvalidArgument, {}), "");
  }
  // The message names the bad part.
  EXPECT_EQ(
      expect_error([&] { TreeShape::parse("1,x|8,8"); }, ErrorKind::kInvalidArgument, {"'x'"}), "");
  EXPECT_EQ(expect_error([&] { TreeShape::parse("2,3|8,8"); }, ErrorKind::kInvalidArgument, {"3"}),
            "");
}

TEST(TreeShape, Scaled) {
  const TreeShape s = TreeShape::parse("1,4|2048,256").scaled(0.5);
  EXPECT_EQ(s.tokens_per_level, (std::vector<int>{1024, 128}));
  EXPECT_EQ(s.nodes_per_level, (std::vector<int>{1, 4}));
  EXPECT_EQ(TreeShape::parse("1,4|2048,256").scaled(1e-9).tokens_per_level,
            (std::vector<int>{1, 1}));
}

TEST(BlockTablesFromShape, SharedSystemPrompt) {
  // 4096 shared tokens = 256 full pages; 256 own tokens = 16 pages per request.
  const BlockTables t = block_tables_from_shape(TreeShape::parse("1,64|4096,256"), 16);
  ASSERT_EQ(t.batch_size(), 64);
  std::map<std::int32_t, int> uses;
  for (int r = 0; r < 64; ++r) {
    EXPECT_EQ(t.seq_lens[static_cast<std::size_t>(r)], 4352);
    const auto pages = pages_of(t, r);
    ASSERT_EQ(pages.size(), 272u);
    EXPECT_TRUE(std::equal(pages.begin(), pages.begin() + 256, pages_of(t, 0).begin()));
    for (auto p : pages) {
      ++uses[p];
      EXPECT_GE(p, 0);
      EXPECT_LT(p, t.num_pages);
    }
  }
  EXPECT_EQ(uses.size(), 256u + 64u * 16u);
  EXPECT_EQ(t.num_pages, 256 + 64 * 16);  // dense from 0
  const auto first = pages_of(t, 0);
  for (std::size_t i = 0; i < first.size(); ++i) EXPECT_EQ(uses[first[i]], i < 256 ? 64 : 1);
  int shared = 0;
  for (const auto& [page, n] : uses) shared += n == 64;
  EXPECT_EQ(shared, 256);
}

TEST(BlockTablesFromShape, PartialPageIsCopiedPerChild) {
  // Root: 8 tokens (half a page), copied into each of its 2 children; each child
  // adds 256 tokens (ends at 264 = 16.5 pages); each leaf adds 32 (ends at 296).
  const BlockTables t = block_tables_from_shape(TreeShape::parse("1,2,64|8,256,32"), 16);
  ASSERT_EQ(t.batch_size(), 64);
  std::map<std::int32_t, std::set<int>> users;
  for (int r = 0; r < 64; ++r) {
    EXPECT_EQ(t.seq_lens[static_cast<std::size_t>(r)], 296);
    const auto pages = pages_of(t, r);
    ASSERT_EQ(pages.size(), 19u);
    for (auto p : pages) users[p].insert(r);
  }
  for (int r = 0; r < 64; ++r) {
    const auto pages = pages_of(t, r);
    const int group = r / 32;
    for (std::size_t i = 0; i < 16; ++i) {  // the child's 16 full pages: its 32 leaves only
      const auto& u = users[pages[i]];
      EXPECT_EQ(u.size(), 32u) << "request " << r << " page " << i;
      EXPECT_EQ(*u.begin(), group * 32);
    }
    for (std::size_t i = 16; i < 19; ++i) EXPECT_EQ(users[pages[i]].size(), 1u);
  }
  EXPECT_EQ(users.size(), 2u * 16u + 64u * 3u);
  const PrefixTree tree = discover_prefix_tree(t, 16);
  EXPECT_EQ(tree.roots.size(), 2u);
  EXPECT_EQ(tree.nodes.size(), 66u);
}

TEST(BlockTablesFromShape, PageSizeOneSharesEveryToken) {
  const BlockTables t = block_tables_from_shape(TreeShape::parse("1,3|5,2"), 1);
  ASSERT_EQ(t.batch_size(), 3);
  EXPECT_EQ(t.num_pages, 5 + 3 * 2);
  const auto first = pages_of(t, 0);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(t.seq_lens[static_cast<std::size_t>(r)], 7);
    const auto pages = pages_of(t, r);
    ASSERT_EQ(pages.size(), 7u);
    EXPECT_TRUE(std::equal(pages.begin(), pages.begin() + 5, first.begin()));
  }
}

// Found by fuzzing (tests/fuzz): shapes whose tables break int32 (a path
// over 2^31 - 1 tokens, or more page-table entries than int32 indexes) were
// built anyway, running out of memory or overflowing page ids and lengths.
TEST(BlockTablesFromShape, RejectsTablesBeyondInt32) {
  const BlockTables longest =
      block_tables_from_shape(TreeShape::parse("1,1|1073741823,1073741823"), 256);
  EXPECT_EQ(longest.seq_lens, std::vector<std::int32_t>{2147483646});
  EXPECT_EQ(longest.indices.size(), 8388608u);
  EXPECT_EQ(
      expect_error(
          [] { block_tables_from_shape(TreeShape::parse("1,2,4|1073741823,1073741823,2"), 16); },
          ErrorKind::kInvalidArgument, {"2147483648 tokens", "2^31 - 1"}),
      "");
  EXPECT_EQ(expect_error([] { block_tables_from_shape(TreeShape::parse("1,1048576|256,2049"), 1); },
                         ErrorKind::kInvalidArgument,
                         {"1048576 requests", "2305 pages", "2416967680 page-table entries"}),
            "");
}

TEST(Suite, LoadsAllWorkloads) {
  const auto suite = load_suite();
  ASSERT_EQ(suite.size(), 30u);
  std::set<std::string> names;
  for (const auto& w : suite) {
    SCOPED_TRACE(w.name);
    EXPECT_TRUE(names.insert(w.name).second) << "duplicate name";
    EXPECT_NO_THROW(w.spec.validate());
    const TreeShape shape = TreeShape::parse(w.tree);
    EXPECT_EQ(w.tables.batch_size(), shape.num_requests());
    for (int r = 0; r < w.tables.batch_size(); ++r)
      ASSERT_EQ(w.tables.seq_lens[static_cast<std::size_t>(r)], shape.path_tokens());
    EXPECT_NO_THROW(discover_prefix_tree(w.tables, w.spec.page_size));
  }
  const auto by = [&](const std::string& n) { return find_workload(n); };
  EXPECT_EQ(by("sys-16k-x128-mha").spec.num_kv_heads, 32);
  EXPECT_EQ(by("sys-16k-x128-70b").spec.num_qo_heads, 64);
  EXPECT_EQ(by("sys-8k-x512-mqa").spec.num_kv_heads, 1);
  EXPECT_EQ(by("two-level-d64").spec.head_dim, 64);
  EXPECT_EQ(by("two-level-d256").spec.head_dim, 256);
  EXPECT_EQ(by("sys-16k-x128-bf16").spec.kv_dtype, DType::kBF16);
  EXPECT_EQ(by("sys-4k-x64-p1").spec.page_size, 1);
  EXPECT_EQ(by("sys-4k-x64-p64").spec.page_size, 64);
  const Workload d = by("sys-4k-x64");
  EXPECT_EQ(d.model, "llama3-8b");
  EXPECT_EQ(d.spec.num_qo_heads, 32);
  EXPECT_EQ(d.spec.num_kv_heads, 8);
  EXPECT_EQ(d.spec.head_dim, 128);
  EXPECT_EQ(d.spec.q_dtype, DType::kF16);
  EXPECT_EQ(d.spec.page_size, 16);
  EXPECT_EQ(expect_error([] { find_workload("no-such-workload"); }, ErrorKind::kInvalidArgument,
                         {"no-such-workload", "sys-4k-x64"}),
            "");
}

TEST(Suite, ScaledForCpuStaysUnderBudget) {
  for (const auto& w : load_suite()) {
    SCOPED_TRACE(w.name);
    for (double budget : {4e6, 1e5}) {
      const Workload s = scaled_for_cpu(w, budget);
      EXPECT_EQ(s.name, w.name);
      EXPECT_EQ(s.spec.to_string(), w.spec.to_string());
      EXPECT_EQ(s.tables.batch_size(), w.tables.batch_size());
      const TreeShape shape = TreeShape::parse(s.tree);
      EXPECT_EQ(shape.nodes_per_level, TreeShape::parse(w.tree).nodes_per_level);
      const double work = static_cast<double>(shape.num_requests()) * s.spec.num_qo_heads *
                          static_cast<double>(shape.path_tokens());
      // Levels are rounded to whole tokens (at least 1), which may add up to
      // one token per level to every path.
      const double slack = static_cast<double>(shape.num_requests()) * s.spec.num_qo_heads *
                           static_cast<double>(shape.tokens_per_level.size());
      EXPECT_LE(work, budget + slack) << s.tree;
      EXPECT_NO_THROW(discover_prefix_tree(s.tables, s.spec.page_size));
    }
  }
}

TEST(Workloads, FromTree) {
  const Workload w = workload_from_tree("1,4|64,16");
  EXPECT_EQ(w.spec.num_qo_heads, 32);
  EXPECT_EQ(w.spec.num_kv_heads, 8);
  EXPECT_EQ(w.tables.batch_size(), 4);
  const Workload m = workload_from_tree("1,4|64,16", "mqa-16", DType::kBF16, 64);
  EXPECT_EQ(m.spec.num_kv_heads, 1);
  EXPECT_EQ(m.spec.kv_dtype, DType::kBF16);
  EXPECT_EQ(m.spec.page_size, 64);
  EXPECT_EQ(m.tables.num_pages, 1 + 4);  // 64 tokens: one shared page; 16 more: one page each
  EXPECT_EQ(expect_error([] { workload_from_tree("1,4|64,16", "gpt-9"); },
                         ErrorKind::kInvalidArgument, {"gpt-9"}),
            "");
}

TEST(Workloads, BatchJson) {
  const Workload w = parse_batch_json(R"({
    "num_qo_heads": 28, "num_kv_heads": 4, "head_dim": 64, "dtype": "bf16",
    "page_size": 16, "kv_layout": "HND",
    "requests": [{"pages": [3, 9], "seq_len": 20}, {"pages": [3, 1], "seq_len": 32}]})",
                                      "mine");
  EXPECT_EQ(w.name, "mine");
  EXPECT_EQ(w.spec.num_qo_heads, 28);
  EXPECT_EQ(w.spec.num_kv_heads, 4);
  EXPECT_EQ(w.spec.head_dim, 64);
  EXPECT_EQ(w.spec.kv_dtype, DType::kBF16);
  EXPECT_EQ(w.spec.kv_layout, KvLayout::kHND);
  EXPECT_EQ(w.tables.indptr, (std::vector<std::int32_t>{0, 2, 4}));
  EXPECT_EQ(w.tables.indices, (std::vector<std::int32_t>{3, 9, 3, 1}));
  EXPECT_EQ(w.tables.seq_lens, (std::vector<std::int32_t>{20, 32}));
  EXPECT_EQ(w.tables.num_pages, 10);  // max id + 1
  const PrefixTree tree = discover_prefix_tree(w.tables, 16);
  EXPECT_EQ(tree.nodes.size(), 3u);

  const Workload n = parse_batch_json(
      R"({"num_qo_heads": 8, "num_kv_heads": 8, "head_dim": 128, "num_pages": 100,
          "requests": [{"pages": [0], "seq_len": 5}]})");
  EXPECT_EQ(n.tables.num_pages, 100);
  EXPECT_EQ(n.spec.page_size, 16);

  EXPECT_EQ(expect_error([] { parse_batch_json("{not json", "broken"); },
                         ErrorKind::kInvalidArgument, {"broken"}),
            "");
  EXPECT_EQ(expect_error([] { parse_batch_json(R"({"num_qo_heads": 8})", "partial"); },
                         ErrorKind::kInvalidArgument, {"partial"}),
            "");
  // Numbers that do not fit are rejected by name, not cast (found by fuzzing:
  // 1e300 into an int was undefined behaviour, 2^32 + 8 silently became 8).
  for (const char* bad : {"1e300", "4294967304", "1.5", "true", "\"8\""}) {
    const std::string text = fmt::format(
        R"({{"num_qo_heads": 8, "num_kv_heads": {}, "head_dim": 128,
             "requests": [{{"pages": [0], "seq_len": 5}}]}})",
        bad);
    EXPECT_EQ(expect_error([&] { parse_batch_json(text, "wide"); }, ErrorKind::kInvalidArgument,
                           {"wide", "num_kv_heads"}),
              "")
        << bad;
  }
  EXPECT_EQ(expect_error(
                [] {
                  parse_batch_json(R"({"num_qo_heads": 8, "num_kv_heads": 8, "head_dim": 128,
                                       "requests": [{"pages": [4294967296], "seq_len": 5}]})",
                                   "page");
                },
                ErrorKind::kInvalidArgument, {"page id", "4294967296"}),
            "");
  EXPECT_EQ(expect_error([] { load_batch_file("/nonexistent/batch.json"); }, ErrorKind::kIo,
                         {"/nonexistent/batch.json"}),
            "");
}

}  // namespace
}  // namespace canopy::workload
