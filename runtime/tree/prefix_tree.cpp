// PrefixTree helpers, explicit trees, and the block tables a tree implies.
#include <fmt/format.h>

#include <algorithm>
#include <string>

#include "canopy/error.hpp"
#include "canopy/tree.hpp"
#include "runtime/tree/flat_tree.hpp"

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
    out.insert(out.end(), nodes[id].requests.begin(), nodes[id].requests.end());
    stack.insert(stack.end(), nodes[id].children.begin(), nodes[id].children.end());
  }
  std::sort(out.begin(), out.end());
  return out;
}

FlatTree flatten(const PrefixTree& tree) {
  FlatTree flat;
  flat.page_size = tree.page_size;
  flat.batch_size = tree.batch_size;
  flat.max_depth = tree.max_depth();
  flat.roots = tree.roots;
  flat.pages = tree.pages.data();
  flat.nodes.resize(tree.nodes.size());
  flat.children.reserve(tree.nodes.size());
  flat.requests.reserve(tree.batch_size);
  for (std::size_t i = 0; i < tree.nodes.size(); ++i) {
    const PrefixTree::Node& src = tree.nodes[i];
    FlatTree::Node& node = flat.nodes[i];
    node.parent = src.parent;
    node.page_begin = src.page_begin;
    node.page_count = src.page_count;
    node.num_tokens = src.num_tokens;
    node.prefix_tokens = src.prefix_tokens;
    node.subtree_requests = src.subtree_requests;
    node.child_begin = static_cast<std::int32_t>(flat.children.size());
    node.child_count = static_cast<std::int32_t>(src.children.size());
    flat.children.insert(flat.children.end(), src.children.begin(), src.children.end());
    node.request_begin = static_cast<std::int32_t>(flat.requests.size());
    node.request_count = static_cast<std::int32_t>(src.requests.size());
    flat.requests.insert(flat.requests.end(), src.requests.begin(), src.requests.end());
  }
  return flat;
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
    if (!n.requests.empty()) {
      out += fmt::format(", ending here: {}", n.requests.size());
    }
    out += '\n';
  }
  if (nodes.size() > kMaxLines) out += fmt::format("... {} more nodes\n", nodes.size() - kMaxLines);
  return out;
}

PrefixTree tree_from_explicit(const ExplicitTree& in, int page_size) {
  CANOPY_CHECK(page_size >= 1 && page_size <= 256, ErrorKind::kInvalidArgument,
               "page_size must be in 1..256, got {}", page_size);
  CANOPY_CHECK(in.batch_size >= 1, ErrorKind::kInvalidArgument,
               "explicit tree: batch_size must be >= 1, got {}", in.batch_size);
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
  // Preorder from the roots; any node not reached sits on a cycle.
  PrefixTree tree;
  tree.page_size = page_size;
  tree.batch_size = in.batch_size;
  tree.request_node.assign(in.batch_size, -1);
  std::vector<int> new_id(n, -1);
  std::vector<int> stack(roots.rbegin(), roots.rend());
  while (!stack.empty()) {
    const int old = stack.back();
    stack.pop_back();
    const auto& src = in.nodes[old];
    const int id = static_cast<int>(tree.nodes.size());
    new_id[old] = id;
    PrefixTree::Node node;
    node.parent = src.parent < 0 ? -1 : new_id[src.parent];
    if (node.parent >= 0) {
      const auto& up = tree.nodes[node.parent];
      CANOPY_CHECK(up.num_tokens == up.page_count * page_size, ErrorKind::kInvalidArgument,
                   "explicit tree: node {} has children but its last page is partly filled "
                   "({} tokens in {} pages)",
                   src.parent, up.num_tokens, up.page_count);
      node.depth = up.depth + 1;
      node.prefix_tokens = up.prefix_tokens + up.num_tokens;
      tree.nodes[node.parent].children.push_back(id);
    } else {
      tree.roots.push_back(id);
    }
    node.page_begin = static_cast<std::int32_t>(tree.pages.size());
    node.page_count = static_cast<std::int32_t>(src.pages.size());
    node.num_tokens = src.num_tokens;
    node.requests = src.requests;
    std::sort(node.requests.begin(), node.requests.end());
    for (int r : node.requests) tree.request_node[r] = id;
    tree.pages.insert(tree.pages.end(), src.pages.begin(), src.pages.end());
    tree.nodes.push_back(std::move(node));
    stack.insert(stack.end(), children[old].rbegin(), children[old].rend());
  }
  for (int i = 0; i < n; ++i) {
    CANOPY_CHECK(new_id[i] >= 0, ErrorKind::kInvalidArgument,
                 "explicit tree: node {} (parent {}) is on a cycle, not under any root", i,
                 in.nodes[i].parent);
  }
  for (int i = static_cast<int>(tree.nodes.size()) - 1; i >= 0; --i) {
    auto& node = tree.nodes[i];
    node.subtree_requests += static_cast<std::int32_t>(node.requests.size());
    if (node.parent >= 0) tree.nodes[node.parent].subtree_requests += node.subtree_requests;
  }
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
