// Tree discovery into a reused tree: the working memory of discover_prefix_tree
// kept between calls, so a warm planner allocates nothing to discover a tree.
#pragma once

#include <cstdint>
#include <vector>

#include "canopy/tree.hpp"
#include "runtime/tree/child_index.hpp"

namespace canopy {

// A node under construction refers to a run of some request's table entries.
// Children and requests are intrusive linked lists (no allocation per node).
struct BuildNode {
  int parent = -1;
  std::int32_t src = 0;     // index into tables.indices of the node's first page
  std::int32_t length = 0;  // pages
  std::int32_t tokens = 0;
  int first_child = -1;  // children in order of first appearance
  int last_child = -1;
  int next_sibling = -1;
  int num_children = 0;
  int first_request = -1;  // requests ending here, ascending (see next_request)
  int last_request = -1;
  int num_requests = 0;
};

struct TreeBuilderScratch {
  std::vector<BuildNode> nodes;
  std::vector<int> next_request;  // [batch] next request ending at the same node, or -1
  ChildIndex index;
  struct Visit {
    int build;   // build node
    int parent;  // final id, -1 for a root
    int slot;    // index in the parent's children (or in roots)
    int depth;
  };
  std::vector<Visit> stack;
  struct PathStep {
    int node;          // build node
    std::int32_t end;  // pages of the path up to the node's end
  };
  std::vector<PathStep> path;
};

/// discover_prefix_tree into `out`, reusing its vectors and `scratch`.
void discover_prefix_tree(const BlockTables& tables, int page_size, TreePages pages,
                          TreeBuilderScratch& scratch, PrefixTree& out);

}  // namespace canopy
