// Irregular batches: seeded random prefix forests whose nodes all differ in
// length (agent traces, sampling trees, requests that joined at different
// times), unlike the suite's trees, which repeat a few node shapes. Used by
// the planner benchmark and tests (issue 17, docs/planner.md section 4.5).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "canopy/batch.hpp"
#include "workloads/workload.hpp"

namespace canopy::workload {

/// What the generator draws from. Zero in `group` or `page_size` means "draw
/// it from the seed": GQA group in 1..8, page size a power of two in 1..256.
struct IrregularOptions {
  int requests = 300;  ///< exact batch size
  int min_depth = 3, max_depth = 8;
  int min_roots = 1, max_roots = 4;
  int max_fanout = 8;               ///< children per inner node above the last level
  double inner_request_prob = 0.2;  ///< chance a request ends at an inner node
  int group = 0;                    ///< qo heads per KV head
  int num_kv_heads = 8;
  int head_dim = 128;
  int page_size = 0;
  int root_tokens_max = 4096;   ///< roots: system prompts, documents
  int inner_tokens_max = 1024;  ///< inner nodes: shared turns, branches
  int leaf_tokens_max = 512;    ///< leaves: each request's own tail
};

/// The forest as generated (before paging): node i's parent (-1: a root),
/// its tokens, and per request the node it ends at. Nodes are in preorder.
struct IrregularForest {
  std::vector<int> parent;
  std::vector<int> tokens;
  std::vector<int> request_node;
  int depth = 0;  ///< nodes on the longest root-to-leaf path
  int roots = 0;
};

/// The forest for `seed` (deterministic on every platform: its own PRNG and
/// range reduction, no std:: distributions). Node lengths are pairwise
/// different; every leaf ends one request, and some requests end at inner
/// nodes.
IrregularForest irregular_forest(std::uint64_t seed, const IrregularOptions& options);

/// Block tables of `forest` as a paged cache with prefix caching holds them
/// (as block_tables_from_shape): a node's full pages are shared by everything
/// below it, a partly filled last page is copied into each child branch; a
/// request ending at an inner node reads the node's full pages only (a true
/// inner request) when it has one, else its own copy of the tail. Page ids
/// are dense from 0, in preorder.
BlockTables irregular_tables(const IrregularForest& forest, int page_size);

/// A workload (name "irr-<requests>-s<seed>", spec fp16 NHD) from the seed:
/// the forest, the drawn GQA group and page size, and its tables.
Workload irregular_workload(std::uint64_t seed, const IrregularOptions& options = {});

/// One decode step of an irregular batch with churn: every request grows by
/// one token, `finish` requests (drawn from the seed) leave and `join` new
/// requests arrive, each branching off a random request's pages at a page
/// boundary with a fresh tail. New page ids start at tables.num_pages.
BlockTables churn_step(const BlockTables& tables, int page_size, std::uint64_t seed, int finish,
                       int join);

}  // namespace canopy::workload
