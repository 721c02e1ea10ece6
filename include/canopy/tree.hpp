// PrefixTree: the radix tree over page ids that Canopy plans on, in flat arrays.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "canopy/batch.hpp"

namespace canopy {

/// A forest: each node owns a run of pages and KV tokens [0, num_tokens) over
/// them (page-aligned: token t is in its pages[t / page_size]). A request's KV
/// is the concatenation of the nodes on its root-to-node path. Only a node
/// with no children may end with a partly filled page.
///
/// One flat form, for discovery, planning and inspection alike: a node's
/// pages, children and requests are ranges of three shared arrays, read
/// through pages_of(), children() and requests().
///
/// Pages are owned or borrowed (see TreePages). An owned tree holds each
/// node's page ids, copied and concatenated in node order, in page_storage
/// (shared by copies of the tree), and stays valid after the block tables it
/// was discovered from are gone. A borrowed tree's `pages` is a view of the
/// tables' indices (node pages are where the tables hold them): no copy, for
/// planning straight from block tables, valid while the tables live unchanged.
///
/// Example (page_size 16): requests A=[1,2,3] len 48, B=[1,2,4] len 40,
/// C=[1,2] len 32 give root {1,2} (32 tokens, C ends here) with children
/// {3} (16 tokens, A) and {4} (8 tokens, B):
///   nodes       0: pages [0, 2)  children [0, 2)  requests [0, 1)  depth 0
///               1: pages [2, 3)  children [2, 2)  requests [1, 2)  depth 1
///               2: pages [3, 4)  children [2, 2)  requests [2, 3)  depth 1
///   pages       {1, 2, 3, 4}      (owned; a borrowed tree views the tables'
///                                  {1, 2, 3, 1, 2, 4, 1, 2}, node 2's pages at [5, 6))
///   child_ids   {1, 2}
///   request_ids {2, 0, 1}          request_node {1, 2, 0}
struct PrefixTree {
  struct Node {
    int parent = -1;
    int depth = 0;                ///< 0 for roots
    std::int32_t page_begin = 0;  ///< pages[page_begin .. +page_count)
    std::int32_t page_count = 0;
    std::int32_t num_tokens = 0;        ///< <= page_count * page_size
    std::int32_t prefix_tokens = 0;     ///< tokens on the path above this node
    std::int32_t subtree_requests = 0;  ///< requests ending in this subtree
    std::int32_t child_begin = 0;       ///< child_ids[child_begin .. +child_count)
    std::int32_t child_count = 0;
    std::int32_t request_begin = 0;  ///< request_ids[request_begin .. +request_count)
    std::int32_t request_count = 0;
  };

  int page_size = 16;
  int batch_size = 0;
  std::vector<Node> nodes;              ///< in preorder: parents before children
  std::span<const std::int32_t> pages;  ///< every node's page ids (owned or borrowed)
  std::shared_ptr<const std::vector<std::int32_t>> page_storage;  ///< `pages` when owned, else null
  std::vector<int> child_ids;    ///< every node's children, in order of first appearance
  std::vector<int> request_ids;  ///< every node's requests (those ending there), ascending
  std::vector<int> roots;
  std::vector<int> request_node;  ///< [batch] the node where each request ends

  std::span<const int> children(const Node& n) const {
    return {child_ids.data() + n.child_begin, static_cast<std::size_t>(n.child_count)};
  }
  std::span<const int> children(int node) const { return children(nodes[node]); }
  std::span<const int> requests(const Node& n) const {
    return {request_ids.data() + n.request_begin, static_cast<std::size_t>(n.request_count)};
  }
  std::span<const int> requests(int node) const { return requests(nodes[node]); }
  std::span<const std::int32_t> pages_of(const Node& n) const {
    return pages.subspan(n.page_begin, n.page_count);
  }
  std::span<const std::int32_t> pages_of(int node) const { return pages_of(nodes[node]); }

  int max_depth() const;  ///< nodes on the longest root-to-leaf path
  /// Requests in a node's subtree, ascending (computed on demand).
  std::vector<int> subtree_request_list(int node) const;
  std::string to_string() const;  ///< indented, human readable
};

/// Where a discovered tree's page ids live.
enum class TreePages {
  kOwned,     ///< copied into the tree: it outlives the tables
  kBorrowed,  ///< a view of tables.indices, no copy: valid while the tables live unchanged
};

/// Builds the tree from block tables: requests whose used pages share leading
/// ids share those nodes. Validates every request (page range, lengths) and
/// throws Error(kInvalidArgument) naming the request and value.
/// make_plan(spec, tables) plans on a borrowed tree.
PrefixTree discover_prefix_tree(const BlockTables& tables, int page_size,
                                TreePages pages = TreePages::kOwned);

/// Checks and converts an explicit tree (cycles, bad parents, missing or
/// duplicated requests, page ids, token counts) into the planner's form.
PrefixTree tree_from_explicit(const ExplicitTree& tree, int page_size);

/// The block tables a tree implies (each request's path pages and length).
BlockTables block_tables_from_tree(const PrefixTree& tree, std::int64_t num_pages);

}  // namespace canopy
