// Fuzz target explicit_tree: explicit prefix trees (cycles, self and
// out-of-range parents, depth up to 64, partial inner pages, missing,
// duplicated and out-of-range requests, runs of pages near 2^31 tokens)
// through tree_from_explicit, block_tables_from_tree and make_plan. An
// independent oracle decides which trees are valid and what tables they imply.
#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "canopy/planner.hpp"
#include "canopy/tree.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace canopy::fuzz {
namespace {

constexpr int kMaxDepth = 64;

ExplicitTree decode_tree(FuzzReader& r, int page_size, bool& huge) {
  ExplicitTree t;
  const int n = r.chance(90) ? r.int_in(0, 24) : r.int_in(0, 600);
  const bool chain = r.chance(20);  // deep trees: mostly each node under the previous one
  std::vector<int> depth(static_cast<std::size_t>(n), 1);
  t.nodes.resize(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    int parent = -1;
    const int how = r.int_in(0, 15);
    if (i > 0 && (chain ? how < 13 : how < 3)) {
      parent = i - 1;
    } else if (i > 0 && how < 12) {
      parent = r.int_in(-1, i - 1);
    } else if (how == 13) {
      parent = r.int_in(-1, n - 1);  // forward, self: cycles
    } else if (how == 14) {
      parent = r.nasty_int32();
    }
    if (parent >= 0 && parent < i && depth[static_cast<std::size_t>(parent)] >= kMaxDepth)
      parent = -1;
    if (parent >= 0 && parent < i)
      depth[static_cast<std::size_t>(i)] = depth[static_cast<std::size_t>(parent)] + 1;
    t.nodes[static_cast<std::size_t>(i)].parent = parent;
  }
  std::vector<bool> has_child(static_cast<std::size_t>(n), false);
  for (const auto& node : t.nodes)
    if (node.parent >= 0 && node.parent < n)
      has_child[static_cast<std::size_t>(node.parent)] = true;

  std::int32_t next_page = 0;
  int huge_nodes = 0;
  for (int i = 0; i < n; ++i) {
    auto& node = t.nodes[static_cast<std::size_t>(i)];
    const int kind = r.int_in(0, 9);
    std::int64_t pages = r.chance(85) ? r.int_in(1, 4) : r.int_in(0, 64);
    if (kind == 9 && huge_nodes < 2 && page_size >= 128 && r.chance(2)) {
      // A run of pages near 2^31 tokens: two of them on one path overflow int32.
      ++huge_nodes;
      huge = true;
      pages = (kInt32Max - r.int_in(0, 1024)) / page_size;
      node.pages.assign(static_cast<std::size_t>(pages), r.flag() ? 0 : next_page++);
    } else {
      for (std::int64_t k = 0; k < pages; ++k) {
        if (kind == 7) {
          node.pages.push_back(r.int_in(0, 7));  // a small pool: ids repeat
        } else if (kind == 8 && r.chance(40)) {
          node.pages.push_back(r.nasty_int32());
        } else {
          node.pages.push_back(next_page++);
        }
      }
    }
    const std::int64_t full = pages * page_size;
    std::int64_t tokens = full;
    if (!has_child[static_cast<std::size_t>(i)] && pages > 0 && r.flag())
      tokens -= r.int_in(0, page_size - 1);  // a leaf's partly filled last page
    const int tokens_kind = r.int_in(0, 19);
    if (tokens_kind == 17) tokens -= r.int_in(1, page_size);  // partial, maybe an inner node
    if (tokens_kind == 18) tokens = full + r.int_in(1, 3);
    if (tokens_kind == 19) tokens = r.nasty_int32();
    node.num_tokens = static_cast<int>(std::clamp<std::int64_t>(tokens, -kInt32Max - 1, kInt32Max));
  }

  // Requests: mostly one per leaf plus some at inner nodes; sometimes broken.
  std::vector<int> ends;
  for (int i = 0; i < n; ++i) {
    if (!has_child[static_cast<std::size_t>(i)] || r.chance(20)) ends.push_back(i);
    if (r.chance(15)) ends.push_back(i);  // a duplicate request
  }
  if (r.chance(5) && !ends.empty()) ends.pop_back();  // a node left without its request
  t.batch_size = static_cast<int>(ends.size());
  for (int q = 0; q < t.batch_size; ++q)
    t.nodes[static_cast<std::size_t>(ends[static_cast<std::size_t>(q)])].requests.push_back(q);
  if (n > 0 && r.chance(5)) {
    const int what = r.int_in(0, 3);
    auto& node = t.nodes[static_cast<std::size_t>(r.int_in(0, n - 1))];
    if (what == 0) node.requests.push_back(r.nasty_int32());
    if (what == 1 && t.batch_size > 0) node.requests.push_back(r.int_in(0, t.batch_size - 1));
    if (what == 2) ++t.batch_size;  // a request that ends nowhere
    if (what == 3) t.batch_size = r.nasty_int32();
  }
  std::int64_t max_id = next_page - 1;
  for (const auto& node : t.nodes)
    for (std::int32_t p : node.pages) max_id = std::max<std::int64_t>(max_id, p);
  t.num_pages = max_id + 1 + r.int_in(0, 2);
  if (r.chance(5)) t.num_pages = r.chance(50) ? r.nasty_int32() : t.num_pages - 1;
  return t;
}

// The oracle: "" when `t` is a valid explicit tree for pages of `page_size`,
// else why not. Written from the ExplicitTree documentation, not the library.
std::string tree_problem(const ExplicitTree& t, int page_size) {
  const auto n = static_cast<std::int64_t>(t.nodes.size());
  if (t.batch_size < 1) return "no requests";
  // Each request ends exactly once, so a batch larger than the requests
  // listed leaves one ending nowhere (and would not fit a per-request array).
  std::int64_t listed = 0;
  for (const auto& node : t.nodes) listed += static_cast<std::int64_t>(node.requests.size());
  if (t.batch_size > listed) return "request ends nowhere";
  std::vector<int> ends(static_cast<std::size_t>(t.batch_size), 0);
  for (std::int64_t i = 0; i < n; ++i) {
    const auto& node = t.nodes[static_cast<std::size_t>(i)];
    if (node.parent < -1 || node.parent >= n || node.parent == i) return "bad parent";
    const auto pages = static_cast<std::int64_t>(node.pages.size());
    if (node.num_tokens < 1 || node.num_tokens > pages * page_size ||
        node.num_tokens <= (pages - 1) * page_size)
      return "tokens do not match pages";
    for (std::int32_t p : node.pages)
      if (p < 0 || p >= t.num_pages) return "page id out of range";
    for (int q : node.requests) {
      if (q < 0 || q >= t.batch_size) return "request out of range";
      if (ends[static_cast<std::size_t>(q)]++ > 0) return "request ends twice";
    }
  }
  for (int e : ends)
    if (e == 0) return "request ends nowhere";
  for (std::int64_t i = 0; i < n; ++i) {  // acyclic, full pages above children, int32 paths
    std::int64_t tokens = 0;
    std::int64_t steps = 0;
    for (std::int64_t at = i; at >= 0; at = t.nodes[static_cast<std::size_t>(at)].parent) {
      if (++steps > n) return "cycle";
      const auto& node = t.nodes[static_cast<std::size_t>(at)];
      if (at != i && node.num_tokens != static_cast<std::int64_t>(node.pages.size()) * page_size)
        return "partial page above a child";
      tokens += node.num_tokens;
    }
    if (tokens > kInt32Max) return "path over 2^31 - 1 tokens";
  }
  return "";
}

// Entries of the tables the (valid) tree implies: each request's path pages.
std::int64_t table_entries(const ExplicitTree& t) {
  std::int64_t entries = 0;
  for (std::size_t i = 0; i < t.nodes.size(); ++i) {
    std::int64_t path = 0;
    for (int at = static_cast<int>(i); at >= 0; at = t.nodes[static_cast<std::size_t>(at)].parent)
      path += static_cast<std::int64_t>(t.nodes[static_cast<std::size_t>(at)].pages.size());
    entries += path * static_cast<std::int64_t>(t.nodes[i].requests.size());
  }
  return entries;
}

// Each request's root-to-node pages and tokens (for a valid tree).
BlockTables oracle_tables(const ExplicitTree& t) {
  std::vector<int> end(static_cast<std::size_t>(t.batch_size), -1);
  for (std::size_t i = 0; i < t.nodes.size(); ++i)
    for (int q : t.nodes[i].requests) end[static_cast<std::size_t>(q)] = static_cast<int>(i);
  BlockTables b;
  b.num_pages = t.num_pages;
  b.indptr.push_back(0);
  for (int q = 0; q < t.batch_size; ++q) {
    std::vector<int> path;
    for (int at = end[static_cast<std::size_t>(q)]; at >= 0;
         at = t.nodes[static_cast<std::size_t>(at)].parent)
      path.push_back(at);
    std::int64_t len = 0;
    for (auto it = path.rbegin(); it != path.rend(); ++it) {
      const auto& node = t.nodes[static_cast<std::size_t>(*it)];
      b.indices.insert(b.indices.end(), node.pages.begin(), node.pages.end());
      len += node.num_tokens;
    }
    b.indptr.push_back(static_cast<std::int32_t>(b.indices.size()));
    b.seq_lens.push_back(static_cast<std::int32_t>(len));
  }
  return b;
}

}  // namespace

void fuzz_explicit_tree(const std::uint8_t* data, std::size_t size) {
  FuzzReader r(data, size);
  const AttentionSpec spec = decode_spec(r);
  bool sane = true;
  const PlannerOptions options = decode_options(r, spec, sane);
  const bool spec_ok = spec_is_valid(spec);
  int page_size = spec_ok ? spec.page_size : 16;
  if (r.chance(3)) page_size = r.chance(50) ? r.int_in(1, kMaxPageSize) : r.nasty_int32();
  const bool page_size_ok = page_size >= 1 && page_size <= kMaxPageSize;
  bool huge = false;
  const ExplicitTree t = decode_tree(r, page_size_ok ? page_size : 16, huge);
  const std::string problem = page_size_ok ? tree_problem(t, page_size) : "bad page size";

  PrefixTree tree;
  if (rejects([&] { tree = tree_from_explicit(t, page_size); })) {
    if (problem.empty()) fail("tree_from_explicit rejects a valid tree");
    return;
  }
  if (!problem.empty()) fail("tree_from_explicit accepts an invalid tree: " + problem);

  // The tables the tree implies, by the library and by the oracle (unless
  // they are too big to build in one fuzz execution).
  if (table_entries(t) > kMaxPlannedPages) return;
  const BlockTables tables = oracle_tables(t);
  const BlockTables mine = block_tables_from_tree(tree, t.num_pages);
  if (mine.indptr != tables.indptr || mine.indices != tables.indices ||
      mine.seq_lens != tables.seq_lens)
    fail("block_tables_from_tree disagrees with the tree's paths");
  if (!plannable_size(spec, tables)) return;

  Plan plan;
  try {
    make_plan(spec, tree, options, plan);
  } catch (const Error& e) {
    check_error(e);
    if (e.kind() == ErrorKind::kInvalidArgument && sane && spec_ok && spec.page_size == page_size &&
        !huge)
      fail(fmt::format("a valid tree is rejected ({}): {}", spec.to_string(), e.what()));
    return;
  }
  if (!spec_ok || spec.page_size != page_size)
    fail("make_plan accepts a bad spec or a tree of another page size");
  check_accepted_plan(plan, tables, "explicit tree");
}

}  // namespace canopy::fuzz
