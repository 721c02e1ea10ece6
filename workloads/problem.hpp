// Host problems: random attention inputs that are exact in the spec's dtypes,
// fp16/bf16 encoding as the GPU stores it, and error norms. One source of
// inputs for tests, benchmarks and the demo (like the workloads themselves).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "canopy/batch.hpp"
#include "canopy/cpu.hpp"
#include "canopy/spec.hpp"

namespace canopy::workload {

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
/// tables are filled too. Deterministic in `seed` whatever the thread count
/// (element i's value depends on i and the seed only); filled on all cores,
/// since full-size workloads hold up to ~1e9 KV values.
HostProblem make_problem(const AttentionSpec& spec, const BlockTables& tables, std::uint64_t seed);

/// Runs fn(begin, end) over [0, n) in chunks on all hardware threads.
void parallel_chunks(std::size_t n, const std::function<void(std::size_t, std::size_t)>& fn);

/// ||a - ref||_2 / ||ref||_2 (absolute norm when ref is all zero; NaN stays NaN).
double relative_l2(const double* a, const double* ref, std::size_t n);
/// As above; infinity when the sizes differ.
double relative_l2(const std::vector<double>& a, const std::vector<double>& ref);
double max_abs_diff(const std::vector<double>& a, const std::vector<double>& ref);

/// Host encoding of the element types (round to nearest even; no NaN payloads).
std::uint16_t to_fp16_bits(double x);
double from_fp16_bits(std::uint16_t bits);
std::uint16_t to_bf16_bits(double x);
double from_bf16_bits(std::uint16_t bits);
/// x rounded to the nearest value of `dtype`.
double round_to(DType dtype, double x);
/// Packs values as `dtype` (2 or 4 bytes each, little endian as on the GPU), on all cores.
std::vector<std::uint8_t> encode(const std::vector<double>& values, DType dtype);
std::vector<double> decode(const void* data, std::size_t count, DType dtype);

}  // namespace canopy::workload
