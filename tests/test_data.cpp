#include "tests/test_data.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <numeric>

namespace canopy::test {

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

/// splitmix64: fast, and the same stream on every platform (std:: distributions are not).
struct SplitMix64 {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
};

/// Uniform values m / 2^(bits-1) * range, |m| <= 2^(bits-1): exact in dtype for
/// a power-of-two range.
void fill_grid(std::vector<double>& values, SplitMix64& rng, DType dtype, double range) {
  const std::int64_t half = std::int64_t{1} << (significant_bits(dtype) - 1);
  const std::uint64_t span = static_cast<std::uint64_t>(2 * half + 1);
  const double step = range / static_cast<double>(half);
  for (double& x : values) {
    // Multiply-shift maps 32 random bits onto [0, span) (span <= 2^24 + 1).
    const std::int64_t m = static_cast<std::int64_t>(((rng.next() >> 32) * span) >> 32) - half;
    x = static_cast<double>(m) * step;
  }
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

HostProblem make_problem(const AttentionSpec& spec, const BlockTables& tables, std::uint64_t seed) {
  HostProblem p;
  p.spec = spec;
  p.tables = tables;
  SplitMix64 rng{seed};
  p.q.resize(static_cast<std::size_t>(p.out_elems()));
  const std::size_t kv =
      static_cast<std::size_t>(tables.num_pages) * static_cast<std::size_t>(spec.page_size) *
      static_cast<std::size_t>(spec.num_kv_heads) * static_cast<std::size_t>(spec.head_dim);
  p.k.resize(kv);
  p.v.resize(kv);
  fill_grid(p.q, rng, spec.q_dtype, 2.0);
  fill_grid(p.k, rng, spec.kv_dtype, 1.0);
  fill_grid(p.v, rng, spec.kv_dtype, 1.0);
  return p;
}

HostResult run_reference(const HostProblem& problem, bool with_lse) {
  HostResult r;
  r.out.assign(static_cast<std::size_t>(problem.out_elems()), 0.0);
  if (with_lse) r.lse.assign(static_cast<std::size_t>(problem.lse_elems()), 0.0);
  reference_attention(problem.spec, problem.tables, problem.tensors(), r.out.data(),
                      with_lse ? r.lse.data() : nullptr);
  return r;
}

HostResult run_plan_cpu(const Plan& plan, const HostProblem& problem, bool with_lse) {
  HostResult r;
  r.out.assign(static_cast<std::size_t>(problem.out_elems()), 0.0);
  if (with_lse) r.lse.assign(static_cast<std::size_t>(problem.lse_elems()), 0.0);
  execute_plan_cpu(plan, problem.tensors(), r.out.data(), with_lse ? r.lse.data() : nullptr);
  return r;
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
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      const float f = static_cast<float>(values[i]);
      std::memcpy(bytes.data() + 4 * i, &f, 4);
    } else {
      const std::uint16_t h =
          dtype == DType::kF16 ? to_fp16_bits(values[i]) : to_bf16_bits(values[i]);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
  }
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

BlockTables tables_of_explicit(const ExplicitTree& tree) {
  BlockTables t;
  t.num_pages = tree.num_pages;
  std::vector<int> at(static_cast<std::size_t>(tree.batch_size), -1);
  for (std::size_t n = 0; n < tree.nodes.size(); ++n)
    for (int r : tree.nodes[n].requests) at[static_cast<std::size_t>(r)] = static_cast<int>(n);
  t.indptr.push_back(0);
  for (int r = 0; r < tree.batch_size; ++r) {
    std::vector<int> path;
    for (int n = at[static_cast<std::size_t>(r)]; n >= 0;
         n = tree.nodes[static_cast<std::size_t>(n)].parent)
      path.push_back(n);
    std::reverse(path.begin(), path.end());
    std::int32_t len = 0;
    for (int n : path) {
      const auto& node = tree.nodes[static_cast<std::size_t>(n)];
      t.indices.insert(t.indices.end(), node.pages.begin(), node.pages.end());
      len += node.num_tokens;
    }
    t.seq_lens.push_back(len);
    t.indptr.push_back(static_cast<std::int32_t>(t.indices.size()));
  }
  return t;
}

RandomTree random_tree(std::mt19937_64& rng, const RandomTreeOptions& opt) {
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  const int ps = opt.page_size;

  struct Gen {
    int parent;
    int depth;  // 1 for roots
    int children = 0;
  };
  std::vector<Gen> gen;
  const int roots = uniform(opt.min_roots, std::max(opt.min_roots, opt.max_roots));
  // A spine from root 0 of a random depth, so that deep trees actually occur.
  const int spine = uniform(1, std::max(1, opt.max_depth));
  gen.push_back({-1, 1});
  for (int d = 2; d <= spine; ++d) {
    gen.back().children++;
    gen.push_back({static_cast<int>(gen.size()) - 1, d});
  }
  for (int r = 1; r < roots; ++r) gen.push_back({-1, 1});
  const int target =
      uniform(static_cast<int>(gen.size()), std::max(static_cast<int>(gen.size()), opt.max_nodes));
  for (int tries = 0; static_cast<int>(gen.size()) < target && tries < 20 * target; ++tries) {
    const int p = uniform(0, static_cast<int>(gen.size()) - 1);
    Gen& g = gen[static_cast<std::size_t>(p)];
    if (g.depth >= opt.max_depth || g.children >= opt.max_fanout) continue;
    g.children++;
    gen.push_back({p, g.depth + 1});
  }

  // Pages: a random permutation of the cache, handed out in node order.
  int total_pages = 0;
  std::vector<int> page_count(gen.size());
  for (auto& c : page_count) total_pages += (c = uniform(1, std::max(1, opt.max_pages_per_node)));
  const int num_pages =
      total_pages + static_cast<int>(std::ceil(total_pages * std::max(0.0, opt.spare_pages)));
  std::vector<std::int32_t> ids(static_cast<std::size_t>(num_pages));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);

  RandomTree out;
  ExplicitTree& tree = out.tree;
  tree.num_pages = num_pages;
  tree.nodes.resize(gen.size());
  std::vector<int> request_nodes;  // one entry per request, the node it ends at
  std::size_t next_page = 0;
  for (std::size_t n = 0; n < gen.size(); ++n) {
    auto& node = tree.nodes[n];
    node.parent = gen[n].parent;
    const int pc = page_count[n];
    node.pages.assign(ids.begin() + static_cast<std::ptrdiff_t>(next_page),
                      ids.begin() + static_cast<std::ptrdiff_t>(next_page + pc));
    next_page += static_cast<std::size_t>(pc);
    const bool leaf = gen[n].children == 0;
    node.num_tokens = pc * ps;
    if (leaf && ps > 1 && chance(opt.partial_leaf_prob)) node.num_tokens -= uniform(1, ps - 1);
    if (leaf || chance(opt.inner_request_prob)) {
      request_nodes.push_back(static_cast<int>(n));
      if (chance(opt.duplicate_prob)) request_nodes.push_back(static_cast<int>(n));
    }
  }
  std::shuffle(request_nodes.begin(), request_nodes.end(), rng);
  tree.batch_size = static_cast<int>(request_nodes.size());
  for (int r = 0; r < tree.batch_size; ++r)
    tree.nodes[static_cast<std::size_t>(request_nodes[static_cast<std::size_t>(r)])]
        .requests.push_back(r);

  // Tables: each request's path, sometimes followed by unused trailing pages.
  BlockTables used = tables_of_explicit(tree);
  BlockTables& t = out.tables;
  t.num_pages = num_pages;
  t.seq_lens = used.seq_lens;
  t.indptr.push_back(0);
  for (int r = 0; r < tree.batch_size; ++r) {
    t.indices.insert(t.indices.end(), used.indices.begin() + used.indptr[r],
                     used.indices.begin() + used.indptr[r + 1]);
    if (chance(opt.extra_table_pages_prob)) {
      const int extra = uniform(1, 2);
      for (int i = 0; i < extra; ++i) t.indices.push_back(uniform(0, num_pages - 1));
    }
    t.indptr.push_back(static_cast<std::int32_t>(t.indices.size()));
  }
  return out;
}

BlockTables random_tree_tables(std::mt19937_64& rng, const RandomTreeOptions& options) {
  return random_tree(rng, options).tables;
}

std::string expect_error(const std::function<void()>& fn, ErrorKind kind,
                         std::initializer_list<std::string> needles) {
  try {
    fn();
  } catch (const Error& e) {
    std::string problems;
    if (e.kind() != kind)
      problems +=
          std::string("kind is ") + to_string(e.kind()) + ", expected " + to_string(kind) + "; ";
    const std::string what = e.what();
    for (const auto& n : needles)
      if (what.find(n) == std::string::npos) problems += "message lacks \"" + n + "\"; ";
    if (!problems.empty()) problems += "message: " + what;
    return problems;
  } catch (const std::exception& e) {
    return std::string("threw a non-canopy exception: ") + e.what();
  }
  return "did not throw";
}

}  // namespace canopy::test
