// PrefixTree helpers, explicit trees, and the block tables a tree implies.
#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <span>
#include <string>

#include "canopy/error.hpp"
#include "canopy/spec.hpp"
#include "canopy/tree.hpp"

namespace canopy {

int PrefixTree::max_depth() const {
  int depth = 0;
  for (const Node& n : nodes) depth = std::max(depth, n.depth + 1);
  return depth;
}

std::vector<int> PrefixTree::subtree_request_list(int node) const {
  std::vector<int> out;
  std::vector<int> stack{node};
  while (!stack.empty()) {
    const int id = stack.back();
    stack.pop_back();
    const std::span<const int> ending = requests(id);
    const std::span<const int> below = children(id);
    out.insert(out.end(), ending.begin(), ending.end());
    stack.insert(stack.end(), below.begin(), below.end());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string PrefixTree::to_string() const {
  std::string out = fmt::format("prefix tree: {} requests, {} nodes, {} roots, depth {}\n",
                                batch_size, nodes.size(), roots.size(), max_depth());
  constexpr std::size_t kMaxLines = 200;  // huge trees: the shape is what matters
  for (std::size_t i = 0; i < nodes.size() && i < kMaxLines; ++i) {
    const Node& n = nodes[i];
    out += fmt::format("{:>{}}node {}: {} tokens in {} pages (pages {}..), {} requests below", "",
                       2 * n.depth, i, n.num_tokens, n.page_count,
                       n.page_count ? pages[n.page_begin] : -1, n.subtree_requests);
    if (n.request_count > 0) {
      out += fmt::format(", ending here: {}", n.request_count);
    }
    out += '\n';
  }
  if (nodes.size() > kMaxLines) out += fmt::format("... {} more nodes\n", nodes.size() - kMaxLines);
  return out;
}

namespace {

// Every request must end at a node, so the nodes list at least batch_size
// request ends. Checked before anything is sized by batch_size: a batch_size
// near 2^31 with a few nodes allocated 8 GiB before the missing requests were
// reported (found by fuzzing). Names the first request that ends nowhere.
void check_every_request_listed(const ExplicitTree& in) {
  std::int64_t listed = 0;
  for (const auto& node : in.nodes) listed += static_cast<std::int64_t>(node.requests.size());
  if (in.batch_size <= listed) return;
  std::vector<int> ids;
  ids.reserve(static_cast<std::size_t>(listed));
  for (const auto& node : in.nodes)
    for (int r : node.requests)
      if (r >= 0 && r < in.batch_size) ids.push_back(r);
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  int missing = 0;
  while (missing < static_cast<int>(ids.size()) &&
         ids[static_cast<std::size_t>(missing)] == missing)
    ++missing;
  throw Error(ErrorKind::kInvalidArgument,
              fmt::format("explicit tree: request {} ends at no node (batch_size {}, but the nodes "
                          "list only {} request ends)",
                          missing, in.batch_size, listed));
}

}  // namespace

PrefixTree tree_from_explicit(const ExplicitTree& in, int page_size) {
  check_page_size(page_size);
  CANOPY_CHECK(in.batch_size >= 1, ErrorKind::kInvalidArgument,
               "explicit tree: batch_size must be >= 1, got {}", in.batch_size);
  check_every_request_listed(in);
  const int n = static_cast<int>(in.nodes.size());
  std::vector<std::vector<int>> children(n);
  std::vector<int> roots;
  std::vector<int> request_node(in.batch_size, -1);
  for (int i = 0; i < n; ++i) {
    const auto& node = in.nodes[i];
    CANOPY_CHECK(node.parent >= -1 && node.parent < n && node.parent != i,
                 ErrorKind::kInvalidArgument,
                 "explicit tree: node {} has parent {}, not -1 or another node in [0, {})", i,
                 node.parent, n);
    (node.parent < 0 ? roots : children[node.parent]).push_back(i);
    const std::int64_t pages = static_cast<std::int64_t>(node.pages.size());
    CANOPY_CHECK(node.num_tokens >= 1 && node.num_tokens <= pages * page_size &&
                     node.num_tokens > (pages - 1) * page_size,
                 ErrorKind::kInvalidArgument,
                 "explicit tree: node {} has {} tokens in {} pages of {}: needs exactly "
                 "ceil(tokens / page_size) pages and at least one token",
                 i, node.num_tokens, pages, page_size);
    for (std::int32_t page : node.pages) {
      CANOPY_CHECK(page >= 0 && page < in.num_pages, ErrorKind::kInvalidArgument,
                   "explicit tree: node {} has page id {} out of range [0, {})", i, page,
                   in.num_pages);
    }
    for (int r : node.requests) {
      CANOPY_CHECK(r >= 0 && r < in.batch_size, ErrorKind::kInvalidArgument,
                   "explicit tree: node {} lists request {} out of range [0, {})", i, r,
                   in.batch_size);
      CANOPY_CHECK(request_node[r] < 0, ErrorKind::kInvalidArgument,
                   "explicit tree: request {} ends at two nodes ({} and {})", r, request_node[r],
                   i);
      request_node[r] = i;
    }
  }
  for (int r = 0; r < in.batch_size; ++r) {
    CANOPY_CHECK(request_node[r] >= 0, ErrorKind::kInvalidArgument,
                 "explicit tree: request {} ends at no node", r);
  }
  // Preorder from the roots; any node not reached sits on a cycle. Each
  // node's children get consecutive slots in child_ids, reserved when the
  // node is numbered and filled as they are.
  PrefixTree tree;
  tree.page_size = page_size;
  tree.batch_size = in.batch_size;
  tree.request_node.assign(in.batch_size, -1);
  tree.roots.resize(roots.size());
  tree.nodes.reserve(n);
  std::vector<std::int32_t> page_ids;  // owned by the tree at the end
  tree.child_ids.reserve(n);
  tree.request_ids.reserve(in.batch_size);
  struct Visit {
    int old;     // node of `in`
    int parent;  // new id, -1 for a root
    int slot;    // index among the parent's children (or the roots)
  };
  std::vector<Visit> stack;
  auto push_children = [&stack](const std::vector<int>& below, int parent) {
    for (int slot = static_cast<int>(below.size()) - 1; slot >= 0; --slot) {
      stack.push_back({below[slot], parent, slot});
    }
  };
  std::vector<int> new_id(n, -1);
  push_children(roots, -1);
  while (!stack.empty()) {
    const Visit v = stack.back();
    stack.pop_back();
    const auto& src = in.nodes[v.old];
    const int id = static_cast<int>(tree.nodes.size());
    new_id[v.old] = id;
    PrefixTree::Node& node = tree.nodes.emplace_back();
    node.parent = v.parent;
    if (v.parent >= 0) {
      const PrefixTree::Node& up = tree.nodes[v.parent];
      CANOPY_CHECK(up.num_tokens == up.page_count * page_size, ErrorKind::kInvalidArgument,
                   "explicit tree: node {} has children but its last page is partly filled "
                   "({} tokens in {} pages)",
                   src.parent, up.num_tokens, up.page_count);
      node.depth = up.depth + 1;
      // Lengths are int32 everywhere (seq_lens, token offsets): so is every path.
      const std::int64_t path = std::int64_t{up.prefix_tokens} + up.num_tokens + src.num_tokens;
      CANOPY_CHECK(path <= std::numeric_limits<std::int32_t>::max(), ErrorKind::kInvalidArgument,
                   "explicit tree: node {} ends a path of {} tokens, more than 2^31 - 1", v.old,
                   path);
      node.prefix_tokens = up.prefix_tokens + up.num_tokens;
      tree.child_ids[up.child_begin + v.slot] = id;
    } else {
      tree.roots[v.slot] = id;
    }
    node.page_begin = static_cast<std::int32_t>(page_ids.size());
    node.page_count = static_cast<std::int32_t>(src.pages.size());
    node.num_tokens = src.num_tokens;
    page_ids.insert(page_ids.end(), src.pages.begin(), src.pages.end());
    node.request_begin = static_cast<std::int32_t>(tree.request_ids.size());
    node.request_count = static_cast<std::int32_t>(src.requests.size());
    tree.request_ids.insert(tree.request_ids.end(), src.requests.begin(), src.requests.end());
    std::sort(tree.request_ids.begin() + node.request_begin, tree.request_ids.end());
    for (int r : src.requests) tree.request_node[r] = id;
    node.child_begin = static_cast<std::int32_t>(tree.child_ids.size());
    node.child_count = static_cast<std::int32_t>(children[v.old].size());
    tree.child_ids.resize(tree.child_ids.size() + children[v.old].size());
    push_children(children[v.old], id);
  }
  for (int i = 0; i < n; ++i) {
    CANOPY_CHECK(new_id[i] >= 0, ErrorKind::kInvalidArgument,
                 "explicit tree: node {} (parent {}) is on a cycle, not under any root", i,
                 in.nodes[i].parent);
  }
  for (int i = static_cast<int>(tree.nodes.size()) - 1; i >= 0; --i) {
    PrefixTree::Node& node = tree.nodes[i];
    node.subtree_requests += node.request_count;
    if (node.parent >= 0) tree.nodes[node.parent].subtree_requests += node.subtree_requests;
  }
  tree.page_storage = std::make_shared<const std::vector<std::int32_t>>(std::move(page_ids));
  tree.pages = *tree.page_storage;
  return tree;
}

BlockTables block_tables_from_tree(const PrefixTree& tree, std::int64_t num_pages) {
  BlockTables t;
  t.num_pages = num_pages;
  t.indptr.push_back(0);
  std::vector<int> path;
  for (int r = 0; r < tree.batch_size; ++r) {
    path.clear();
    for (int id = tree.request_node[r]; id >= 0; id = tree.nodes[id].parent) path.push_back(id);
    std::int32_t len = 0;
    for (auto it = path.rbegin(); it != path.rend(); ++it) {
      const auto& node = tree.nodes[*it];
      t.indices.insert(t.indices.end(), tree.pages.begin() + node.page_begin,
                       tree.pages.begin() + node.page_begin + node.page_count);
      len += node.num_tokens;
    }
    t.indptr.push_back(static_cast<std::int32_t>(t.indices.size()));
    t.seq_lens.push_back(len);
  }
  return t;
}

}  // namespace canopy
