// Prefix-tree discovery: a radix tree over each request's used page ids.
//
// Elements are (page id, tokens used in that page): all pages of a request are
// full except possibly its last, so two requests share a node exactly when
// they hold the same pages with the same fill. Nodes are built by inserting
// requests one by one (O(total pages)), splitting a node where a request
// diverges inside it, as in any compressed trie.
#include "runtime/tree/tree_builder.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "canopy/error.hpp"
#include "canopy/spec.hpp"
#include "canopy/tree.hpp"
#include "core/ceil_div.hpp"

namespace canopy {
namespace {

// Length of the common prefix of a[0 .. n) and b[0 .. n). Shared prefixes are
// long (thousands of tokens), so whole blocks are compared at once: wide ones
// while they match, then narrow ones to find the first difference.
std::int32_t common_prefix(const std::int32_t* a, const std::int32_t* b, std::int32_t n) {
  constexpr std::int32_t kWide = 64;
  constexpr std::int32_t kBlock = 8;
  std::int32_t i = 0;
  while (i + kWide <= n && std::memcmp(a + i, b + i, kWide * sizeof(std::int32_t)) == 0) {
    i += kWide;
  }
  while (i + kBlock <= n && std::memcmp(a + i, b + i, kBlock * sizeof(std::int32_t)) == 0) {
    i += kBlock;
  }
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

// BlockTables::validate without the page ranges (TreeBuilder checks those).
bool well_formed(const BlockTables& t, int page_size) {
  const std::size_t batch = t.seq_lens.size();
  if (t.indptr.size() != batch + 1 || t.indptr[0] != 0 ||
      static_cast<std::size_t>(t.indptr.back()) != t.indices.size()) {
    return false;
  }
  for (std::size_t r = 0; r < batch; ++r) {
    const std::int64_t held = std::int64_t{t.indptr[r + 1]} - t.indptr[r];
    const std::int64_t len = t.seq_lens[r];
    // ceil(len / page_size) > held, without a division per request.
    if (held < 0 || len < 1 || len > held * page_size) return false;
  }
  return true;
}

class TreeBuilder {
 public:
  TreeBuilder(const BlockTables& t, int page_size, TreeBuilderScratch& scratch)
      : t_(t),
        page_size_(page_size),
        nodes_(scratch.nodes),
        next_request_(scratch.next_request),
        index_(scratch.index),
        stack_(scratch.stack),
        path_(scratch.path) {
    next_request_.assign(t.seq_lens.size(), -1);
    nodes_.clear();
    nodes_.reserve(2 * t.seq_lens.size() + 1);
    index_.reserve(2 * t.seq_lens.size() + 1);
    nodes_.emplace_back();  // virtual super-root (index 0): parent of every root
    path_.clear();
  }

  void insert(int request) {
    const std::int32_t begin = t_.indptr[request];
    const std::int32_t len = t_.seq_lens[request];
    const auto n = static_cast<std::int32_t>(ceil_div(len, page_size_));
    const std::int32_t last_fill = len - (n - 1) * page_size_;
    auto fill = [&](std::int32_t i) { return i == n - 1 ? last_fill : page_size_; };
    // Requests that share a prefix are usually neighbours: the nodes of the
    // previous request's path that this one matches in full are taken as they
    // are (the lookups and comparisons below would find exactly them).
    int at = 0;
    std::int32_t pos = 0;
    std::size_t kept = 0;
    if (!path_.empty()) {
      const std::int32_t prev_begin = t_.indptr[request - 1];
      const std::int32_t prev_len = t_.seq_lens[request - 1];
      const auto prev_n = static_cast<std::int32_t>(ceil_div(prev_len, page_size_));
      const std::int32_t overlap = std::min(n, prev_n);
      std::int32_t same =
          common_prefix(t_.indices.data() + prev_begin, t_.indices.data() + begin, overlap);
      if (same > 0 && (same == n || same == prev_n)) {  // the last common page may differ in fill
        const std::int32_t prev_fill =
            same == prev_n ? prev_len - (prev_n - 1) * page_size_ : page_size_;
        if (prev_fill != fill(same - 1)) --same;
      }
      while (kept < path_.size() && path_[kept].end <= same) ++kept;
      if (kept > 0) {
        at = path_[kept - 1].node;
        pos = path_[kept - 1].end;
      }
    }
    path_.resize(kept);
    while (pos < n) {
      const std::uint64_t key = element_key(t_.indices[begin + pos], fill(pos));
      int child = index_.find(at, key);
      if (child < 0) {
        child = add_node(at, begin + pos, n - pos, len - pos * page_size_);
        at = child;
        path_.push_back({child, n});
        break;
      }
      const BuildNode& node = nodes_[child];
      const std::int32_t limit = std::min(node.length, n - pos);
      // Element 0 matched through the key; compare the rest of the overlap.
      std::int32_t m = 1 + common_prefix(t_.indices.data() + node.src + 1,
                                         t_.indices.data() + begin + pos + 1, limit - 1);
      if (node_fill(node, m - 1) != fill(pos + m - 1)) --m;  // same page, different fill
      if (m < node.length) child = split(child, m);
      at = child;
      pos += m;
      path_.push_back({child, pos});
    }
    add_request(at, request);
  }

  void finish(TreePages pages, PrefixTree& tree);
  /// Some used page id lies outside [0, num_pages).
  bool bad_page() const { return bad_page_; }

 private:
  static std::uint64_t element_key(std::int32_t page, std::int32_t fill) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(page)) << 9) |
           static_cast<std::uint64_t>(fill - 1);
  }
  std::int32_t node_fill(const BuildNode& node, std::int32_t i) const {
    return i == node.length - 1 ? node.tokens - i * page_size_ : page_size_;
  }

  void add_request(int id, int request) {
    BuildNode& node = nodes_[id];
    (node.last_request < 0 ? node.first_request : next_request_[node.last_request]) = request;
    node.last_request = request;
    ++node.num_requests;
  }

  void append_child(int parent, int child) {
    BuildNode& p = nodes_[parent];
    (p.last_child < 0 ? p.first_child : nodes_[p.last_child].next_sibling) = child;
    p.last_child = child;
    ++p.num_children;
  }

  int add_node(int parent, std::int32_t src, std::int32_t length, std::int32_t tokens) {
    const int id = static_cast<int>(nodes_.size());
    BuildNode& node = nodes_.emplace_back();
    node.parent = parent;
    node.src = src;
    node.length = length;
    node.tokens = tokens;
    append_child(parent, id);
    index_.insert(parent, element_key(t_.indices[src], node_fill(node, 0)), id);
    total_pages_ += length;
    // Only a new node's pages are checked: every other used page equals one
    // of an earlier request's path (the previous request's, or a node's).
    const auto limit = static_cast<std::uint32_t>(
        std::clamp<std::int64_t>(t_.num_pages, 0, std::int64_t{1} << 31) - 1);
    std::uint32_t signs = 0;
    for (std::int32_t i = 0; i < length; ++i) {
      const auto page = static_cast<std::uint32_t>(t_.indices[src + i]);
      signs |= page | (limit - page);
    }
    bad_page_ |= (signs >> 31) != 0;
    return id;
  }

  // Splits `id` after its first m pages (all full); returns the new upper node,
  // which takes id's place among its parent's children.
  int split(int id, std::int32_t m) {
    const int upper = static_cast<int>(nodes_.size());
    BuildNode& top = nodes_.emplace_back();
    BuildNode& lower = nodes_[id];
    top.parent = lower.parent;
    top.src = lower.src;
    top.length = m;
    top.tokens = m * page_size_;
    top.first_child = top.last_child = id;
    top.num_children = 1;
    BuildNode& parent = nodes_[lower.parent];
    int* link = &parent.first_child;
    while (*link != id) link = &nodes_[*link].next_sibling;
    *link = upper;
    top.next_sibling = lower.next_sibling;
    if (parent.last_child == id) parent.last_child = upper;
    lower.next_sibling = -1;
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
  std::vector<BuildNode>& nodes_;
  std::vector<int>& next_request_;  // [batch] next request ending at the same node, or -1
  ChildIndex& index_;
  std::vector<TreeBuilderScratch::Visit>& stack_;
  std::vector<TreeBuilderScratch::PathStep>& path_;  // the last inserted request's nodes
  bool bad_page_ = false;
  std::int64_t total_pages_ = 0;  // pages over all nodes
};

// Numbers the nodes in preorder from the roots (parents before children,
// deterministic). Each node's children get consecutive slots in child_ids,
// reserved when the node is numbered and filled as they are. Its pages are
// copied out of the tables (kOwned) or left where the tables hold them.
void TreeBuilder::finish(TreePages pages, PrefixTree& tree) {
  tree.page_size = page_size_;
  tree.batch_size = static_cast<int>(t_.seq_lens.size());
  tree.nodes.clear();
  tree.nodes.reserve(nodes_.size() - 1);
  std::vector<std::int32_t> owned;
  if (pages == TreePages::kOwned) owned.reserve(static_cast<std::size_t>(total_pages_));
  tree.child_ids.clear();
  tree.child_ids.reserve(nodes_.size() - 1);
  tree.request_ids.clear();
  tree.request_ids.reserve(tree.batch_size);
  tree.request_node.resize(tree.batch_size);
  std::vector<TreeBuilderScratch::Visit>& stack = stack_;
  stack.clear();
  auto push_children = [&](const BuildNode& src, int id, int depth) {
    const std::size_t top = stack.size();
    int slot = 0;
    for (int c = src.first_child; c >= 0; c = nodes_[c].next_sibling) {
      stack.push_back({c, id, slot++, depth});
    }
    std::reverse(stack.begin() + static_cast<std::ptrdiff_t>(top), stack.end());
  };
  tree.roots.resize(nodes_[0].num_children);
  push_children(nodes_[0], -1, 0);
  while (!stack.empty()) {
    const TreeBuilderScratch::Visit v = stack.back();
    stack.pop_back();
    const BuildNode& src = nodes_[v.build];
    const int id = static_cast<int>(tree.nodes.size());
    PrefixTree::Node& node = tree.nodes.emplace_back();
    node.parent = v.parent;
    node.depth = v.depth;
    if (v.parent < 0) {
      tree.roots[v.slot] = id;
    } else {
      const PrefixTree::Node& up = tree.nodes[v.parent];
      node.prefix_tokens = up.prefix_tokens + up.num_tokens;
      tree.child_ids[up.child_begin + v.slot] = id;
    }
    node.page_count = src.length;
    node.num_tokens = src.tokens;
    if (pages == TreePages::kOwned) {
      node.page_begin = static_cast<std::int32_t>(owned.size());
      owned.insert(owned.end(), t_.indices.begin() + src.src,
                   t_.indices.begin() + src.src + src.length);
    } else {
      node.page_begin = src.src;
    }
    node.request_begin = static_cast<std::int32_t>(tree.request_ids.size());
    node.request_count = src.num_requests;
    for (int r = src.first_request; r >= 0; r = next_request_[r]) {
      tree.request_ids.push_back(r);
      tree.request_node[r] = id;
    }
    node.child_begin = static_cast<std::int32_t>(tree.child_ids.size());
    node.child_count = src.num_children;
    tree.child_ids.resize(tree.child_ids.size() + src.num_children);
    push_children(src, id, v.depth + 1);
  }
  for (int i = static_cast<int>(tree.nodes.size()) - 1; i >= 0; --i) {
    auto& node = tree.nodes[i];
    node.subtree_requests += node.request_count;
    if (node.parent >= 0) tree.nodes[node.parent].subtree_requests += node.subtree_requests;
  }
  if (pages == TreePages::kOwned) {
    tree.page_storage = std::make_shared<const std::vector<std::int32_t>>(std::move(owned));
    tree.pages = *tree.page_storage;
  } else {
    tree.page_storage.reset();
    tree.pages = t_.indices;
  }
}

}  // namespace

void discover_prefix_tree(const BlockTables& tables, int page_size, TreePages pages,
                          TreeBuilderScratch& scratch, PrefixTree& out) {
  check_page_size(page_size);
  check(tables.batch_size() >= 1, ErrorKind::kInvalidArgument, "the batch has no requests");
  // The tables' structure first; page ranges while inserting (one read of
  // each page id instead of two). Either failing, validate() names the
  // problem exactly as it always does.
  if (!well_formed(tables, page_size)) tables.validate(page_size);
  TreeBuilder builder(tables, page_size, scratch);
  for (int r = 0; r < tables.batch_size(); ++r) builder.insert(r);
  if (builder.bad_page()) tables.validate(page_size);
  builder.finish(pages, out);
}

PrefixTree discover_prefix_tree(const BlockTables& tables, int page_size, TreePages pages) {
  TreeBuilderScratch scratch;
  PrefixTree tree;
  discover_prefix_tree(tables, page_size, pages, scratch, tree);
  return tree;
}

}  // namespace canopy
