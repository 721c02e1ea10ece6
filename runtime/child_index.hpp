// Tree-discovery internals shared by the builder and the planner:
// ChildIndex: (parent node, first element key) -> child node, an open-addressing
// hash map. Tree discovery does one lookup per request per branch point, so
// this keeps planning for 1024 requests in the tens of microseconds.
// FlatTree: a PrefixTree in flat arrays, what make_plan(spec, tables) plans on.
#pragma once

#include <cstdint>
#include <vector>

#include "canopy/batch.hpp"
#include "canopy/tree.hpp"

namespace canopy {

/// A PrefixTree's shape in flat arrays: same node numbering and field
/// meanings, but children and requests are ranges of shared arrays and the
/// pages are borrowed. Planning a step builds one of these instead of a
/// PrefixTree: no allocation per node, no copy of the block tables.
struct FlatTree {
  struct Node {
    int parent = -1;
    std::int32_t page_begin = 0;  ///< into pages
    std::int32_t page_count = 0;
    std::int32_t num_tokens = 0;
    std::int32_t prefix_tokens = 0;
    std::int32_t subtree_requests = 0;
    std::int32_t child_begin = 0;  ///< children[child_begin .. +child_count), in order
    std::int32_t child_count = 0;
    std::int32_t request_begin = 0;  ///< requests[request_begin .. +request_count), ascending
    std::int32_t request_count = 0;
  };
  int page_size = 16;
  int batch_size = 0;
  int max_depth = 0;        ///< nodes on the longest root-to-leaf path
  std::vector<Node> nodes;  ///< parents before children
  std::vector<int> children;
  std::vector<int> requests;
  std::vector<int> roots;
  const std::int32_t* pages = nullptr;  ///< borrowed: the tables' indices or a tree's pages
};

/// discover_prefix_tree's tree as a FlatTree; pages borrow tables.indices.
FlatTree discover_flat_tree(const BlockTables& tables, int page_size);
/// A view of `tree` (pages borrow tree.pages).
FlatTree flatten(const PrefixTree& tree);

class ChildIndex {
 public:
  void reserve(std::size_t entries) {
    std::size_t capacity = 16;
    while (capacity < 2 * entries) capacity *= 2;
    slots_.assign(capacity, Slot{});
    size_ = 0;
  }
  /// The child of `parent` whose first element is `key`, or -1.
  int find(int parent, std::uint64_t key) const {
    for (std::size_t i = hash(parent, key) & mask();; i = (i + 1) & mask()) {
      if (slots_[i].value < 0) return -1;
      if (slots_[i].key == key && slots_[i].parent == parent) return slots_[i].value;
    }
  }
  void insert(int parent, std::uint64_t key, int child) {
    if (2 * (size_ + 1) > slots_.size()) grow();
    put(parent, key, child);
  }
  /// Points an existing entry at another child (used when a node is split).
  void replace(int parent, std::uint64_t key, int child) { put(parent, key, child); }

 private:
  struct Slot {
    std::uint64_t key = 0;
    int parent = 0;
    int value = -1;  // -1: empty
  };
  static std::size_t hash(int parent, std::uint64_t key) {
    std::uint64_t x = key * 0x9E3779B97F4A7C15ull ^ static_cast<std::uint64_t>(parent);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    return static_cast<std::size_t>(x ^ (x >> 29));
  }
  std::size_t mask() const { return slots_.size() - 1; }
  void put(int parent, std::uint64_t key, int value) {
    for (std::size_t i = hash(parent, key) & mask();; i = (i + 1) & mask()) {
      if (slots_[i].value < 0) {
        slots_[i] = {key, parent, value};
        ++size_;
        return;
      }
      if (slots_[i].key == key && slots_[i].parent == parent) {
        slots_[i].value = value;
        return;
      }
    }
  }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.size() * 2, Slot{});
    size_ = 0;
    for (const Slot& s : old) {
      if (s.value >= 0) put(s.parent, s.key, s.value);
    }
  }
  std::vector<Slot> slots_;
  std::size_t size_ = 0;
};

}  // namespace canopy
