// PrefixTree: the radix tree over page ids that Canopy plans on.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "canopy/batch.hpp"
#include "canopy/spec.hpp"

namespace canopy {

/// A forest: each node owns a run of pages and KV tokens [0, num_tokens) over
/// them (page-aligned: token t is in pages[t / page_size]). A request's KV is
/// the concatenation of the nodes on its root-to-node path. Only a node with no
/// children may end with a partly filled page.
///
/// Example (page_size 16): requests A=[1,2,3] len 48, B=[1,2,4] len 40,
/// C=[1,2] len 32 give root {1,2} (32 tokens, C ends here) with children
/// {3} (16 tokens, A) and {4} (8 tokens, B).
struct PrefixTree {
  struct Node {
    int parent = -1;
    int depth = 0;                ///< 0 for roots
    std::int32_t page_begin = 0;  ///< this node's pages: pages[page_begin .. page_begin+page_count)
    std::int32_t page_count = 0;
    std::int32_t num_tokens = 0;        ///< <= page_count * page_size
    std::int32_t prefix_tokens = 0;     ///< tokens on the path above this node
    std::vector<int> children;          ///< in order of first appearance
    std::vector<int> requests;          ///< requests ending here, ascending
    std::int32_t subtree_requests = 0;  ///< requests ending in this subtree
  };

  int page_size = 16;
  int batch_size = 0;
  std::vector<Node> nodes;          ///< parents before children (topological)
  std::vector<std::int32_t> pages;  ///< all nodes' pages, concatenated
  std::vector<int> roots;
  std::vector<int> request_node;  ///< [batch] the node where each request ends

  int max_depth() const;  ///< nodes on the longest root-to-leaf path
  /// Requests in a node's subtree, ascending (computed on demand).
  std::vector<int> subtree_request_list(int node) const;
  std::string to_string() const;  ///< indented, human readable
};

/// Builds the tree from block tables: requests whose used pages share leading
/// ids share those nodes. Validates every request (page range, lengths) and
/// throws Error(kInvalidArgument) naming the request and value.
PrefixTree discover_prefix_tree(const BlockTables& tables, int page_size);

/// Checks and converts an explicit tree (cycles, bad parents, missing or
/// duplicated requests, page ids, token counts) into the planner's form.
PrefixTree tree_from_explicit(const ExplicitTree& tree, int page_size);

/// The block tables a tree implies (each request's path pages and length).
BlockTables block_tables_from_tree(const PrefixTree& tree, std::int64_t num_pages);

}  // namespace canopy
