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

namespace canopy::test {

/// One layer's inputs on the host in float64. q, k, v hold values that are
/// exactly representable in spec.q_dtype / spec.kv_dtype, so the GPU sees the
/// same numbers as the float64 reference. Shapes as in AttentionSpec:
/// q [batch, H_qo, D]; k, v [num_pages, page_size, H_kv, D] (NHD) or
/// [num_pages, H_kv, page_size, D] (HND), num_pages = tables.num_pages.
struct HostProblem {
  AttentionSpec spec;
  BlockTables tables;
  std::vector<double> q, k, v;

  HostTensors tensors() const { return {q.data(), k.data(), v.data(), tables.num_pages}; }
  std::int64_t out_elems() const {
    return std::int64_t{tables.batch_size()} * spec.num_qo_heads * spec.head_dim;
  }
  std::int64_t lse_elems() const { return std::int64_t{tables.batch_size()} * spec.num_qo_heads; }
};

/// Random q (in [-2, 2]) and K/V (in [-1, 1]) on a grid that the dtypes hold
/// exactly (fp16: 11 significant bits, bf16: 8). Pages not referenced by the
/// tables are filled too. Deterministic in `seed`.
HostProblem make_problem(const AttentionSpec& spec, const BlockTables& tables, std::uint64_t seed);

/// Outputs of one attention computation (lse empty unless asked for).
struct HostResult {
  std::vector<double> out;
  std::vector<double> lse;
};
HostResult run_reference(const HostProblem& problem, bool with_lse = true);
HostResult run_plan_cpu(const Plan& plan, const HostProblem& problem, bool with_lse = true);

/// ||a - ref||_2 / ||ref||_2 (absolute norm when ref is all zero).
double relative_l2(const double* a, const double* ref, std::size_t n);
double relative_l2(const std::vector<double>& a, const std::vector<double>& ref);
double max_abs_diff(const std::vector<double>& a, const std::vector<double>& ref);

/// Host encoding of the element types (round to nearest even; no NaN payloads).
std::uint16_t to_fp16_bits(double x);
double from_fp16_bits(std::uint16_t bits);
std::uint16_t to_bf16_bits(double x);
double from_bf16_bits(std::uint16_t bits);
/// x rounded to the nearest value of `dtype`.
double round_to(DType dtype, double x);
/// Packs values as `dtype` (2 or 4 bytes each, little endian as on the GPU) and back.
std::vector<std::uint8_t> encode(const std::vector<double>& values, DType dtype);
std::vector<double> decode(const void* data, std::size_t count, DType dtype);

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
