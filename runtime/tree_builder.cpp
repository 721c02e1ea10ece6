// Prefix-tree discovery: a radix tree over each request's used page ids.
//
// Elements are (page id, tokens used in that page): all pages of a request are
// full except possibly its last, so two requests share a node exactly when
// they hold the same pages with the same fill. Nodes are built by inserting
// requests one by one (O(total pages)), splitting a node where a request
// diverges inside it, as in any compressed trie.
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "canopy/error.hpp"
#include "canopy/tree.hpp"
#include "runtime/child_index.hpp"

namespace canopy {
namespace {

void validate_tables(const BlockTables& t, int page_size) {
  CANOPY_CHECK(page_size >= 1 && page_size <= 256, ErrorKind::kInvalidArgument,
               "page_size must be in 1..256, got {}", page_size);
  const std::size_t batch = t.seq_lens.size();
  check(batch >= 1, ErrorKind::kInvalidArgument, "the batch has no requests");
  CANOPY_CHECK(t.indptr.size() == batch + 1, ErrorKind::kInvalidArgument,
               "indptr has {} entries, expected batch + 1 = {}", t.indptr.size(), batch + 1);
  CANOPY_CHECK(t.indptr[0] == 0, ErrorKind::kInvalidArgument, "indptr[0] must be 0, got {}",
               t.indptr[0]);
  CANOPY_CHECK(static_cast<std::size_t>(t.indptr.back()) == t.indices.size(),
               ErrorKind::kInvalidArgument, "indptr[{}] = {} but indices has {} entries", batch,
               t.indptr.back(), t.indices.size());
  for (std::size_t r = 0; r < batch; ++r) {
    const std::int64_t held = std::int64_t{t.indptr[r + 1]} - t.indptr[r];
    CANOPY_CHECK(held >= 0, ErrorKind::kInvalidArgument, "request {}: indptr decreases ({} -> {})",
                 r, t.indptr[r], t.indptr[r + 1]);
    const std::int64_t len = t.seq_lens[r];
    CANOPY_CHECK(len >= 1, ErrorKind::kInvalidArgument,
                 "request {}: seq_len is {}, must be at least 1", r, len);
    const std::int64_t needed = (len + page_size - 1) / page_size;
    CANOPY_CHECK(needed <= held, ErrorKind::kInvalidArgument,
                 "request {}: seq_len {} needs {} pages of {} tokens but its table holds {}", r,
                 len, needed, page_size, held);
    for (std::int64_t i = 0; i < needed; ++i) {
      const std::int32_t page = t.indices[t.indptr[r] + i];
      CANOPY_CHECK(page >= 0 && page < t.num_pages, ErrorKind::kInvalidArgument,
                   "request {}: page id {} at table position {} is out of range [0, {})", r, page,
                   i, t.num_pages);
    }
  }
}

// A node under construction refers to a run of some request's table entries.
struct BuildNode {
  int parent = -1;
  std::int32_t src = 0;     // index into tables.indices of the node's first page
  std::int32_t length = 0;  // pages
  std::int32_t tokens = 0;
  std::vector<int> children;
  std::vector<int> requests;
};

class TreeBuilder {
 public:
  TreeBuilder(const BlockTables& t, int page_size) : t_(t), page_size_(page_size) {
    nodes_.reserve(2 * t.seq_lens.size() + 1);
    index_.reserve(2 * t.seq_lens.size() + 1);
    nodes_.emplace_back();  // virtual super-root (index 0): parent of every root
  }

  void insert(int request) {
    const std::int32_t begin = t_.indptr[request];
    const std::int32_t len = t_.seq_lens[request];
    const std::int32_t n = (len + page_size_ - 1) / page_size_;
    const std::int32_t last_fill = len - (n - 1) * page_size_;
    auto fill = [&](std::int32_t i) { return i == n - 1 ? last_fill : page_size_; };
    int at = 0;
    std::int32_t pos = 0;
    while (pos < n) {
      const std::uint64_t key = element_key(t_.indices[begin + pos], fill(pos));
      int child = index_.find(at, key);
      if (child < 0) {
        child = add_node(at, begin + pos, n - pos, len - pos * page_size_);
        at = child;
        break;
      }
      BuildNode& node = nodes_[child];
      const std::int32_t limit = std::min(node.length, n - pos);
      std::int32_t m = 1;
      while (m < limit && t_.indices[node.src + m] == t_.indices[begin + pos + m]) ++m;
      if (node_fill(node, m - 1) != fill(pos + m - 1)) --m;  // same page, different fill
      if (m < node.length) child = split(child, m);
      at = child;
      pos += m;
    }
    nodes_[at].requests.push_back(request);
  }

  PrefixTree finish() const;

 private:
  static std::uint64_t element_key(std::int32_t page, std::int32_t fill) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(page)) << 9) |
           static_cast<std::uint64_t>(fill - 1);
  }
  std::int32_t node_fill(const BuildNode& node, std::int32_t i) const {
    return i == node.length - 1 ? node.tokens - i * page_size_ : page_size_;
  }

  int add_node(int parent, std::int32_t src, std::int32_t length, std::int32_t tokens) {
    const int id = static_cast<int>(nodes_.size());
    BuildNode node;
    node.parent = parent;
    node.src = src;
    node.length = length;
    node.tokens = tokens;
    nodes_.push_back(std::move(node));
    nodes_[parent].children.push_back(id);
    index_.insert(parent, element_key(t_.indices[src], node_fill(nodes_[id], 0)), id);
    return id;
  }

  // Splits `id` after its first m pages (all full); returns the new upper node.
  int split(int id, std::int32_t m) {
    const int upper = static_cast<int>(nodes_.size());
    BuildNode top;
    top.parent = nodes_[id].parent;
    top.src = nodes_[id].src;
    top.length = m;
    top.tokens = m * page_size_;
    top.children.push_back(id);
    nodes_.push_back(std::move(top));
    BuildNode& lower = nodes_[id];
    auto& siblings = nodes_[lower.parent].children;
    *std::find(siblings.begin(), siblings.end(), id) = upper;
    index_.replace(lower.parent, element_key(t_.indices[lower.src], page_size_), upper);
    lower.parent = upper;
    lower.src += m;
    lower.length -= m;
    lower.tokens -= m * page_size_;
    index_.insert(upper, element_key(t_.indices[lower.src], node_fill(lower, 0)), id);
    return upper;
  }

  const BlockTables& t_;
  int page_size_;
  std::vector<BuildNode> nodes_;
  ChildIndex index_;
};

PrefixTree TreeBuilder::finish() const {
  PrefixTree tree;
  tree.page_size = page_size_;
  tree.batch_size = static_cast<int>(t_.seq_lens.size());
  tree.request_node.assign(tree.batch_size, -1);
  tree.nodes.reserve(nodes_.size() - 1);
  // Preorder from the roots keeps parents before children and is deterministic.
  std::vector<std::pair<int, int>> stack;  // (build node, final parent)
  const auto& roots = nodes_[0].children;
  for (auto it = roots.rbegin(); it != roots.rend(); ++it) stack.emplace_back(*it, -1);
  while (!stack.empty()) {
    const auto [b, parent] = stack.back();
    stack.pop_back();
    const BuildNode& src = nodes_[b];
    const int id = static_cast<int>(tree.nodes.size());
    PrefixTree::Node node;
    node.parent = parent;
    node.depth = parent < 0 ? 0 : tree.nodes[parent].depth + 1;
    node.prefix_tokens =
        parent < 0 ? 0 : tree.nodes[parent].prefix_tokens + tree.nodes[parent].num_tokens;
    node.page_begin = static_cast<std::int32_t>(tree.pages.size());
    node.page_count = src.length;
    node.num_tokens = src.tokens;
    node.requests = src.requests;
    tree.pages.insert(tree.pages.end(), t_.indices.begin() + src.src,
                      t_.indices.begin() + src.src + src.length);
    for (int r : src.requests) tree.request_node[r] = id;
    if (parent < 0) {
      tree.roots.push_back(id);
    } else {
      tree.nodes[parent].children.push_back(id);
    }
    tree.nodes.push_back(std::move(node));
    for (auto it = src.children.rbegin(); it != src.children.rend(); ++it) {
      stack.emplace_back(*it, id);
    }
  }
  for (int i = static_cast<int>(tree.nodes.size()) - 1; i >= 0; --i) {
    auto& node = tree.nodes[i];
    node.subtree_requests += static_cast<std::int32_t>(node.requests.size());
    if (node.parent >= 0) tree.nodes[node.parent].subtree_requests += node.subtree_requests;
  }
  return tree;
}

}  // namespace

PrefixTree discover_prefix_tree(const BlockTables& tables, int page_size) {
  validate_tables(tables, page_size);
  TreeBuilder builder(tables, page_size);
  for (int r = 0; r < tables.batch_size(); ++r) builder.insert(r);
  return builder.finish();
}

}  // namespace canopy
