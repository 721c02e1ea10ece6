// Workloads: the team suite (bench/workloads/suite.json), tree strings such as
// "1,4,64|2048,1024,256" and batch files, turned into specs and block tables.
// One workload struct feeds tests, benchmarks and tools.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "canopy/batch.hpp"
#include "canopy/spec.hpp"

namespace canopy::workload {

/// "n0,n1,...,nk|t0,t1,...,tk": level i holds n_i nodes of t_i tokens; level
/// i+1's nodes are divided evenly among level i's. Every leaf is one request.
struct TreeShape {
  std::vector<int> nodes_per_level;
  std::vector<int> tokens_per_level;
  /// Throws Error(kInvalidArgument) naming the bad part of the string.
  static TreeShape parse(const std::string& text);
  std::string to_string() const;
  int num_requests() const { return nodes_per_level.back(); }
  /// Tokens on each root-to-leaf path.
  std::int64_t path_tokens() const;
  /// Shape with every level's tokens multiplied by `factor` (at least 1 token each).
  TreeShape scaled(double factor) const;
};

/// The one shared function that turns a shape into page-aligned block tables,
/// as a paged cache with prefix caching holds them: a node's full pages are
/// shared by all requests below it; a partly filled last page is copied into
/// each child branch (a fresh page per child). Page ids are dense from 0.
BlockTables block_tables_from_shape(const TreeShape& shape, int page_size);

struct Workload {
  std::string name;
  std::string tree;  ///< tree string, empty for batch files
  std::string model;
  AttentionSpec spec;
  BlockTables tables;
};

/// Path of the suite: $CANOPY_SUITE if set, else the copy in the source tree.
std::string default_suite_path();
/// Every workload of the suite, with tables built.
std::vector<Workload> load_suite(const std::string& path = default_suite_path());
/// One workload of the suite by name; throws listing the known names.
Workload find_workload(const std::string& name, const std::string& path = default_suite_path());
/// A workload from a tree string with the suite's default model/dtype/page size
/// unless overridden (model: a suite model name).
Workload workload_from_tree(const std::string& tree, const std::string& model = "llama3-8b",
                            DType dtype = DType::kF16, int page_size = 16);
/// A batch file: {"num_qo_heads": 32, "num_kv_heads": 8, "head_dim": 128,
/// "dtype": "fp16", "page_size": 16, "requests": [{"pages": [3, 9], "seq_len": 20}, ...]}
/// Optional: "kv_layout" ("NHD"|"HND"), "num_pages" (default max id + 1).
Workload load_batch_file(const std::string& path);
Workload parse_batch_json(const std::string& text, const std::string& name = "batch");

/// The same workload made small enough for the float64 CPU reference in CI:
/// tokens scaled so that requests * qo_heads * path_tokens stays under `budget`.
Workload scaled_for_cpu(const Workload& w, double budget = 4e6);

/// The next decode step of `tables`: request r grows by grow[r] tokens (grow
/// empty: one each); a request whose last page is full gets fresh pages
/// (ids from num_pages up, num_pages grows). Unused table entries are dropped.
BlockTables decode_step(const BlockTables& tables, int page_size,
                        const std::vector<int>& grow = {});

}  // namespace canopy::workload
