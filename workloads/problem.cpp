#include "workloads/problem.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>

namespace canopy::workload {
namespace {

/// Significant bits of a dtype (including the implicit one).
int significant_bits(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return 11;
    case DType::kBF16:
      return 8;
    case DType::kF32:
      return 24;
  }
  return 8;
}

/// splitmix64 of a counter: the same stream on every platform, and element i
/// needs no other element's draw, so filling parallelises deterministically.
std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/// values[i] = m * range / half, m uniform in [-half, half]: exact in dtype
/// for a power-of-two range.
void fill_grid(std::vector<double>& values, std::uint64_t seed, DType dtype, double range) {
  const std::int64_t half = std::int64_t{1} << (significant_bits(dtype) - 1);
  const std::uint64_t span = static_cast<std::uint64_t>(2 * half + 1);
  const double step = range / static_cast<double>(half);
  const std::uint64_t base = splitmix64(seed);
  parallel_chunks(values.size(), [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) {
      // Multiply-shift maps 32 random bits onto [0, span) (span <= 2^24 + 1).
      const auto m = static_cast<std::int64_t>(((splitmix64(base + i) >> 32) * span) >> 32) - half;
      values[i] = static_cast<double>(m) * step;
    }
  });
}

/// Round-to-nearest-even encoding of |x| for a binary format with `man` stored
/// mantissa bits and exponent bias `bias`; returns bits without sign.
std::uint32_t encode_magnitude(double a, int man, int bias, int max_exp_field) {
  if (std::isnan(a)) return (static_cast<std::uint32_t>(max_exp_field) << man) | (1u << (man - 1));
  if (std::isinf(a)) return static_cast<std::uint32_t>(max_exp_field) << man;
  if (a == 0) return 0;
  int e = 0;
  std::frexp(a, &e);
  const int exp = e - 1;  // a = 1.f * 2^exp
  const int min_exp = 1 - bias;
  if (exp < min_exp) {  // subnormal: a = m * 2^(min_exp - man)
    const double m = std::nearbyint(std::ldexp(a, man - min_exp));
    return static_cast<std::uint32_t>(m);  // m == 2^man encodes the smallest normal
  }
  double m = std::nearbyint(std::ldexp(a, man - exp));  // in [2^man, 2^(man+1)]
  int field = exp + bias;
  if (m == std::ldexp(1.0, man + 1)) {
    m = std::ldexp(1.0, man);
    ++field;
  }
  if (field >= max_exp_field) return static_cast<std::uint32_t>(max_exp_field) << man;
  return (static_cast<std::uint32_t>(field) << man) | (static_cast<std::uint32_t>(m) - (1u << man));
}

}  // namespace

void parallel_chunks(std::size_t n, const std::function<void(std::size_t, std::size_t)>& fn) {
  const std::size_t hw = std::max(1u, std::thread::hardware_concurrency());
  const std::size_t threads = std::min(hw, n);
  if (threads <= 1) {
    if (n > 0) fn(0, n);
    return;
  }
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] { fn(n * t / threads, n * (t + 1) / threads); });
  }
  for (auto& th : pool) th.join();
}

HostProblem make_problem(const AttentionSpec& spec, const BlockTables& tables, std::uint64_t seed) {
  HostProblem p;
  p.spec = spec;
  p.tables = tables;
  p.q.resize(static_cast<std::size_t>(p.out_elems()));
  const std::size_t kv =
      static_cast<std::size_t>(tables.num_pages) * static_cast<std::size_t>(spec.page_size) *
      static_cast<std::size_t>(spec.num_kv_heads) * static_cast<std::size_t>(spec.head_dim);
  p.k.resize(kv);
  p.v.resize(kv);
  fill_grid(p.q, seed * 3 + 0, spec.q_dtype, 2.0);
  fill_grid(p.k, seed * 3 + 1, spec.kv_dtype, 1.0);
  fill_grid(p.v, seed * 3 + 2, spec.kv_dtype, 1.0);
  return p;
}

double relative_l2(const double* a, const double* ref, std::size_t n) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = a[i] - ref[i];
    diff += d * d;
    norm += ref[i] * ref[i];
  }
  if (std::isnan(diff)) return diff;
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

double relative_l2(const std::vector<double>& a, const std::vector<double>& ref) {
  if (a.size() != ref.size()) return std::numeric_limits<double>::infinity();
  return relative_l2(a.data(), ref.data(), a.size());
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& ref) {
  if (a.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - ref[i]));
  return m;
}

std::uint16_t to_fp16_bits(double x) {
  const std::uint32_t sign = std::signbit(x) ? 0x8000u : 0u;
  return static_cast<std::uint16_t>(sign | encode_magnitude(std::fabs(x), 10, 15, 31));
}

double from_fp16_bits(std::uint16_t bits) {
  const double sign = (bits & 0x8000u) ? -1.0 : 1.0;
  const int field = (bits >> 10) & 0x1f;
  const int man = bits & 0x3ff;
  if (field == 0) return sign * std::ldexp(man, -24);
  if (field == 31)
    return man ? std::numeric_limits<double>::quiet_NaN()
               : sign * std::numeric_limits<double>::infinity();
  return sign * std::ldexp(1024 + man, field - 25);
}

std::uint16_t to_bf16_bits(double x) {
  const std::uint32_t sign = std::signbit(x) ? 0x8000u : 0u;
  return static_cast<std::uint16_t>(sign | encode_magnitude(std::fabs(x), 7, 127, 255));
}

double from_bf16_bits(std::uint16_t bits) {
  const std::uint32_t word = static_cast<std::uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &word, sizeof f);
  return f;
}

double round_to(DType dtype, double x) {
  switch (dtype) {
    case DType::kF16:
      return from_fp16_bits(to_fp16_bits(x));
    case DType::kBF16:
      return from_bf16_bits(to_bf16_bits(x));
    case DType::kF32:
      return static_cast<double>(static_cast<float>(x));
  }
  return x;
}

std::vector<std::uint8_t> encode(const std::vector<double>& values, DType dtype) {
  const std::size_t width = dtype == DType::kF32 ? 4 : 2;
  std::vector<std::uint8_t> bytes(values.size() * width);
  parallel_chunks(values.size(), [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) {
      if (dtype == DType::kF32) {
        const float f = static_cast<float>(values[i]);
        std::memcpy(bytes.data() + 4 * i, &f, 4);
      } else {
        const std::uint16_t h =
            dtype == DType::kF16 ? to_fp16_bits(values[i]) : to_bf16_bits(values[i]);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
      }
    }
  });
  return bytes;
}

std::vector<double> decode(const void* data, std::size_t count, DType dtype) {
  std::vector<double> values(count);
  const auto* bytes = static_cast<const std::uint8_t*>(data);
  for (std::size_t i = 0; i < count; ++i) {
    if (dtype == DType::kF32) {
      float f;
      std::memcpy(&f, bytes + 4 * i, 4);
      values[i] = f;
    } else {
      std::uint16_t h;
      std::memcpy(&h, bytes + 2 * i, 2);
      values[i] = dtype == DType::kF16 ? from_fp16_bits(h) : from_bf16_bits(h);
    }
  }
  return values;
}

}  // namespace canopy::workload
