// Shared test helpers: random attention inputs that are exact in the spec's
// dtypes, error norms, host fp16/bf16 encoding, and random prefix trees.
// Used by the CPU suites (tests/runtime) and the GPU suites alike.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "canopy/batch.hpp"
#include "canopy/cpu.hpp"
#include "canopy/error.hpp"
#include "canopy/plan.hpp"
#include "canopy/spec.hpp"
#include "workloads/problem.hpp"

namespace canopy::test {

// Inputs, encodings and error norms live in workloads/problem.hpp (shared with
// the demo); tests use them under canopy::test as before.
using workload::decode;
using workload::encode;
using workload::from_bf16_bits;
using workload::from_fp16_bits;
using workload::HostProblem;
using workload::make_problem;
using workload::max_abs_diff;
using workload::relative_l2;
using workload::round_to;
using workload::to_bf16_bits;
using workload::to_fp16_bits;

/// Outputs of one attention computation (lse empty unless asked for).
struct HostResult {
  std::vector<double> out;
  std::vector<double> lse;
};
HostResult run_reference(const HostProblem& problem, bool with_lse = true);
HostResult run_plan_cpu(const Plan& plan, const HostProblem& problem, bool with_lse = true);

/// Random forest for planner and executor tests. For a single request use
/// min_roots = max_roots = 1, max_fanout = 1, inner_request_prob = 0,
/// duplicate_prob = 0 (a chain of nodes with one request at its end).
struct RandomTreeOptions {
  int page_size = 16;
  int min_roots = 1, max_roots = 3;
  int max_depth = 6;   ///< nodes on the longest path, 1..
  int max_fanout = 4;  ///< children per inner node, drawn from 1..max_fanout
  int max_nodes = 48;  ///< stop growing past this many nodes
  int max_pages_per_node = 3;
  double inner_request_prob = 0.3;      ///< chance an inner node also has a request ending there
  double duplicate_prob = 0.2;          ///< chance a node gets a second (identical) request
  double partial_leaf_prob = 0.6;       ///< chance a leaf's last page is partly filled
  double extra_table_pages_prob = 0.2;  ///< chance a table lists unused trailing pages
  double spare_pages = 0.5;             ///< extra unreferenced pages in the cache, as a fraction
};

/// An explicit tree (fresh, randomly permuted page ids, requests in random
/// order) and the block tables it implies, computed independently of the
/// library's tree code.
struct RandomTree {
  ExplicitTree tree;
  BlockTables tables;
};
RandomTree random_tree(std::mt19937_64& rng, const RandomTreeOptions& options);
BlockTables random_tree_tables(std::mt19937_64& rng, const RandomTreeOptions& options);

/// The block tables of an explicit tree: each request's root-to-node pages
/// and token count (no validation; for well-formed trees).
BlockTables tables_of_explicit(const ExplicitTree& tree);

/// Runs `fn`, expecting canopy::Error of `kind` whose message contains every
/// one of `needles`; returns "" on success or a description of the mismatch
/// (use: EXPECT_EQ(expect_error(...), "")).
std::string expect_error(const std::function<void()>& fn, ErrorKind kind,
                         std::initializer_list<std::string> needles);

}  // namespace canopy::test
