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

}  // namespace canopy
