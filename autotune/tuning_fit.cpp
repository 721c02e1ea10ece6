// The fit (docs/tuning.md). An item's time is
//   y = tiles * o + out + max(m * u + l, c * v)
// with o the item overhead, u = 1 / bandwidth_fraction, v = 1 / flops_per_us
// and a, m, l, c, out known per measurement (CostModel::item_us's terms).
// Within one regime (memory- or math-bound) that is linear in (o, u, v), so
// the fit alternates: assign each measurement the regime the current
// coefficients give it, solve weighted least squares on relative errors,
// reweight (Huber, scale from the median absolute deviation) and repeat.
#include "autotune/tuning_fit.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

#include "autotune/step_pricing.hpp"
#include "canopy/kernel_spec.hpp"
#include "core/ceil_div.hpp"

namespace canopy::autotune {

namespace {

struct Sample {
  double y = 0;    // measured
  double a = 0;    // tiles: multiplies the overhead
  double m = 0;    // memory term per unit of 1 / bandwidth_fraction
  double l = 0;    // L2 re-reads of sibling tiles (fixed)
  double c = 0;    // math term per unit of 1 / flops_per_us
  double out = 0;  // partial states written (fixed)
};

AttentionSpec spec_of(int head_dim, DType dtype) {
  AttentionSpec spec;
  spec.head_dim = head_dim;
  spec.q_dtype = spec.kv_dtype = spec.o_dtype = dtype;
  return spec;
}

Sample sample(const GpuCoefficients& g, const ItemMeasurement& x) {
  const double sms = g.num_sms;
  const auto tiles = static_cast<double>(ceil_div(x.rows, x.row_tile));
  const double bytes = double(x.tokens) * 2.0 * x.head_dim * dtype_bytes(x.dtype);
  Sample s;
  s.y = x.us;
  s.a = tiles;
  s.m = x.heads * bytes * sms / g.hbm_bytes_per_us;
  s.l = x.heads * (tiles - 1) * bytes * sms / g.l2_bytes_per_us;
  s.c = x.heads * 4.0 * tiles * x.row_tile * double(x.tokens) * x.head_dim * sms;
  s.out = x.heads * 2.0 * x.rows * (x.head_dim + 1) * 4.0 * sms / g.hbm_bytes_per_us;
  return s;
}

using Params = std::array<double, 3>;  // o, u, v

bool memory_bound(const Sample& s, const Params& p) { return s.m * p[1] + s.l >= s.c * p[2]; }
double predict(const Sample& s, const Params& p) {
  return s.a * p[0] + s.out + std::max(s.m * p[1] + s.l, s.c * p[2]);
}

// Weighted least squares over the free columns (k <= 3) by the normal
// equations, columns scaled to unit RMS first (v's column is ~1e12 times
// o's). Returns false when the system is singular.
bool solve(const std::vector<std::array<double, 3>>& rows, const std::vector<double>& target,
           const std::vector<double>& w, const std::array<bool, 3>& free, Params& p) {
  std::vector<int> cols;
  for (int j = 0; j < 3; ++j) {
    if (free[j]) cols.push_back(j);
  }
  const std::size_t k = cols.size();
  if (k == 0) return true;
  std::array<double, 3> scale{1, 1, 1};
  for (std::size_t j = 0; j < k; ++j) {
    double sum = 0;
    for (std::size_t i = 0; i < rows.size(); ++i) sum += w[i] * rows[i][cols[j]] * rows[i][cols[j]];
    if (sum <= 0) return false;
    scale[j] = std::sqrt(sum);
  }
  std::array<std::array<double, 4>, 3> a{};  // [A | b], A = X^T W X scaled
  for (std::size_t i = 0; i < rows.size(); ++i) {
    for (std::size_t r = 0; r < k; ++r) {
      const double xr = rows[i][cols[r]] / scale[r];
      for (std::size_t c = 0; c < k; ++c) a[r][c] += w[i] * xr * rows[i][cols[c]] / scale[c];
      a[r][3] += w[i] * xr * target[i];
    }
  }
  for (std::size_t c = 0; c < k; ++c) {
    std::size_t pivot = c;
    for (std::size_t r = c + 1; r < k; ++r) {
      if (std::abs(a[r][c]) > std::abs(a[pivot][c])) pivot = r;
    }
    if (std::abs(a[pivot][c]) < 1e-12) return false;
    std::swap(a[c], a[pivot]);
    for (std::size_t r = 0; r < k; ++r) {
      if (r == c) continue;
      const double f = a[r][c] / a[c][c];
      for (std::size_t j = c; j < 4; ++j) a[r][j] -= f * a[c][j];
    }
  }
  for (std::size_t j = 0; j < k; ++j) p[cols[j]] = a[j][3] / a[j][j] / scale[j];
  return true;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  const auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  return *mid;
}

// Huber weights on relative errors (k = 1.345 robust scales): outliers (a
// clock dip, a noisy neighbour) count linearly, not quadratically.
std::vector<double> huber_weights(const std::vector<double>& rel) {
  std::vector<double> abs_rel(rel.size());
  for (std::size_t i = 0; i < rel.size(); ++i) abs_rel[i] = std::abs(rel[i]);
  const double scale = std::max(1.4826 * median(abs_rel), 1e-4);
  std::vector<double> w(rel.size(), 1.0);
  for (std::size_t i = 0; i < rel.size(); ++i) {
    if (abs_rel[i] > 1.345 * scale) w[i] = 1.345 * scale / abs_rel[i];
  }
  return w;
}

double rms(const std::vector<double>& v) {
  if (v.empty()) return 0;
  double sum = 0;
  for (double x : v) sum += x * x;
  return std::sqrt(sum / static_cast<double>(v.size()));
}

struct KernelResult {
  KernelCoefficients k;
  KernelFit fit;
};

// One config's fit from `start`; `fixed` regimes without enough samples keep
// the prior.
KernelResult fit_kernel(const std::vector<Sample>& samples, const KernelCoefficients& prior,
                        double tensor_rate, bool start_all_memory) {
  const Params prior_p{prior.item_overhead_us, 1.0 / prior.bandwidth_fraction,
                       1.0 / (prior.flops_per_us > 0 ? prior.flops_per_us : tensor_rate)};
  Params p = prior_p;
  const std::size_t n = samples.size();
  std::vector<bool> memory(n);
  for (std::size_t i = 0; i < n; ++i) memory[i] = start_all_memory || memory_bound(samples[i], p);
  std::vector<double> huber(n, 1.0);
  std::array<bool, 3> free{true, true, true};
  for (int iter = 0; iter < 40; ++iter) {
    std::vector<std::array<double, 3>> rows(n);
    std::vector<double> target(n), w(n);
    int in_memory = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const Sample& s = samples[i];
      in_memory += memory[i] ? 1 : 0;
      rows[i] = memory[i] ? std::array<double, 3>{s.a, s.m, 0} : std::array<double, 3>{s.a, 0, s.c};
      target[i] = s.y - s.out - (memory[i] ? s.l : 0);
      w[i] = huber[i] / (s.y * s.y);
    }
    free = {true, in_memory >= 2, static_cast<int>(n) - in_memory >= 2};
    Params next = prior_p;
    next[0] = p[0];
    // Fixed columns move to the target.
    for (std::size_t i = 0; i < n; ++i) {
      for (int j = 1; j < 3; ++j) {
        if (!free[j]) target[i] -= rows[i][j] * prior_p[j];
      }
    }
    if (!solve(rows, target, w, free, next)) next = p;
    if (next[0] < 0) {  // a negative overhead: pin it at zero and refit the rates
      next[0] = 0;
      std::array<bool, 3> rates = free;
      rates[0] = false;
      if (!solve(rows, target, w, rates, next)) next = p;
      next[0] = 0;
    }
    next[1] = std::max(next[1], 1.0 / 1.5);    // bandwidth_fraction <= 1.5
    if (!(next[2] > 0)) next[2] = prior_p[2];  // a rate must be positive
    if (!(next[1] > 0)) next[1] = prior_p[1];
    std::vector<double> rel(n);
    bool changed = false;
    for (std::size_t i = 0; i < n; ++i) {
      rel[i] = predict(samples[i], next) / samples[i].y - 1;
      const bool mem = memory_bound(samples[i], next);
      changed = changed || mem != memory[i];
      memory[i] = mem;
    }
    huber = huber_weights(rel);
    const bool settled = std::abs(next[0] - p[0]) <= 1e-9 * (1 + std::abs(p[0])) &&
                         std::abs(next[1] / p[1] - 1) < 1e-9 && std::abs(next[2] / p[2] - 1) < 1e-9;
    p = next;
    if (!changed && settled && iter >= 3) break;
  }
  KernelResult r;
  r.k.item_overhead_us = std::max(p[0], 1e-3);  // a database needs every value > 0
  r.k.bandwidth_fraction = 1.0 / p[1];
  r.k.flops_per_us = 1.0 / p[2];
  std::vector<double> all, mem, math;
  for (const Sample& s : samples) {
    const double e = predict(s, {r.k.item_overhead_us, p[1], p[2]}) / s.y - 1;
    all.push_back(e);
    (memory_bound(s, p) ? mem : math).push_back(e);
  }
  const int n_int = static_cast<int>(n);
  r.fit.samples = n_int;
  r.fit.item_overhead_us = {r.k.item_overhead_us, rms(all), n_int};
  r.fit.bandwidth_fraction = {r.k.bandwidth_fraction, rms(mem),
                              free[1] ? static_cast<int>(mem.size()) : 0};
  r.fit.flops_per_us = {r.k.flops_per_us, rms(math), free[2] ? static_cast<int>(math.size()) : 0};
  return r;
}

double loss(const std::vector<Sample>& samples, const KernelCoefficients& k) {
  const Params p{k.item_overhead_us, 1.0 / k.bandwidth_fraction, 1.0 / k.flops_per_us};
  double sum = 0;
  for (const Sample& s : samples) {
    const double e = std::abs(predict(s, p) / s.y - 1);
    sum += e < 0.1 ? e * e : 0.2 * e - 0.01;  // Huber at 10%: the same robustness as the fit
  }
  return sum;
}

Validation validate(const std::vector<double>& predicted, const std::vector<double>& measured) {
  Validation v;
  v.samples = static_cast<int>(measured.size());
  v.median_abs_rel_error = median_abs_rel_error(predicted, measured);
  v.spearman = spearman(predicted, measured);
  return v;
}

constexpr std::size_t kHoldoutEvery = 5;    // every fifth measurement is held out...
constexpr std::size_t kMinForHoldout = 10;  // ...when a config has at least this many
constexpr std::size_t kMinToFit = 4;

}  // namespace

double predict_item_us(const GpuCoefficients& gpu, const ItemMeasurement& m) {
  return CostModel(gpu).item_us(spec_of(m.head_dim, m.dtype), KernelConfig::parse(m.config),
                                m.row_tile, m.rows, m.tokens, m.heads);
}

double predict_merge_us(const GpuCoefficients& gpu, const MergeMeasurement& m) {
  const StepPricer pricer(spec_of(m.head_dim, m.dtype), gpu, 1);
  return pricer.merge_us(m.rows * m.fan_in) + pricer.launch_us(1);
}

double spearman(std::span<const double> a, std::span<const double> b) {
  const std::size_t n = std::min(a.size(), b.size());
  if (n < 2) return 0;
  auto ranks = [n](std::span<const double> v) {
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](std::size_t x, std::size_t y) { return v[x] < v[y]; });
    std::vector<double> r(n);
    for (std::size_t i = 0; i < n;) {
      std::size_t j = i;
      while (j + 1 < n && v[order[j + 1]] == v[order[i]]) ++j;
      for (std::size_t k = i; k <= j; ++k) r[order[k]] = (double(i) + double(j)) / 2;
      i = j + 1;
    }
    return r;
  };
  const std::vector<double> ra = ranks(a), rb = ranks(b);
  const double mean = (double(n) - 1) / 2;
  double sab = 0, saa = 0, sbb = 0;
  for (std::size_t i = 0; i < n; ++i) {
    sab += (ra[i] - mean) * (rb[i] - mean);
    saa += (ra[i] - mean) * (ra[i] - mean);
    sbb += (rb[i] - mean) * (rb[i] - mean);
  }
  return saa > 0 && sbb > 0 ? sab / std::sqrt(saa * sbb) : 0;
}

double median_abs_rel_error(std::span<const double> predicted, std::span<const double> measured) {
  std::vector<double> e;
  for (std::size_t i = 0; i < std::min(predicted.size(), measured.size()); ++i) {
    e.push_back(std::abs(predicted[i] / measured[i] - 1));
  }
  return median(std::move(e));
}

FitResult fit_coefficients(const GpuCoefficients& base, std::span<const ItemMeasurement> items,
                           std::span<const MergeMeasurement> merges) {
  FitResult out;
  out.coefficients = base;
  GpuCoefficients& g = out.coefficients;
  std::map<std::string, std::vector<const ItemMeasurement*>> by_config;
  for (const ItemMeasurement& m : items) by_config[m.config].push_back(&m);
  std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> family_holdout;
  for (const auto& [config, ms] : by_config) {
    const KernelConfig parsed = KernelConfig::parse(config);
    if (ms.size() < kMinToFit) {
      out.notes.push_back(fmt::format("{}: {} measurements, fewer than {}: prior kept", config,
                                      ms.size(), kMinToFit));
      continue;
    }
    const bool holdout = ms.size() >= kMinForHoldout;
    std::vector<Sample> train;
    std::vector<const ItemMeasurement*> held;
    for (std::size_t i = 0; i < ms.size(); ++i) {
      // One in five, on a diagonal of the grid (the offset turns with each
      // run of five): a plain stride would hold out one token count only.
      if (holdout && i % kHoldoutEvery == (i / kHoldoutEvery) % kHoldoutEvery) {
        held.push_back(ms[i]);
      } else {
        train.push_back(sample(g, *ms[i]));
      }
    }
    const KernelCoefficients prior = g.kernel(parsed);
    KernelResult best = fit_kernel(train, prior, g.tensor_flops_per_us, false);
    const KernelResult alt = fit_kernel(train, prior, g.tensor_flops_per_us, true);
    if (loss(train, alt.k) < loss(train, best.k)) best = alt;
    if (best.fit.bandwidth_fraction.samples == 0) {
      out.notes.push_back(
          fmt::format("{}: no memory-bound measurements: bandwidth_fraction is "
                      "the prior",
                      config));
    }
    if (best.fit.flops_per_us.samples == 0) {
      out.notes.push_back(
          fmt::format("{}: no math-bound measurements: flops_per_us is the prior", config));
    }
    g.kernels[config] = best.k;
    std::vector<double> predicted, measured;
    for (const ItemMeasurement* m : held) {
      predicted.push_back(predict_item_us(g, *m));
      measured.push_back(m->us);
    }
    best.fit.holdout = validate(predicted, measured);
    out.fits[config] = best.fit;
    auto& fam = family_holdout[to_string(parsed.family)];
    fam.first.insert(fam.first.end(), predicted.begin(), predicted.end());
    fam.second.insert(fam.second.end(), measured.begin(), measured.end());
  }
  for (const auto& [family, pm] : family_holdout) {
    out.family_validation[family] = validate(pm.first, pm.second);
  }

  // Merges: us = launch + n * bytes_per_partial / merge_bytes_per_us, linear
  // in (launch, 1 / merge_bytes_per_us).
  out.merge_bytes_per_us = {g.merge_bytes_per_us, 0, 0};
  out.launch_overhead_us = {g.launch_overhead_us, 0, 0};
  if (merges.size() < 3) {
    out.notes.push_back(
        fmt::format("{} merge measurements: merge rate and launch overhead are "
                    "the priors",
                    merges.size()));
    return out;
  }
  std::vector<std::array<double, 3>> rows;
  std::vector<double> target, huber(merges.size(), 1.0);
  for (const MergeMeasurement& m : merges) {
    const double per_partial = (m.head_dim + 1) * 4.0 + m.head_dim * double(dtype_bytes(m.dtype));
    rows.push_back({1.0, double(m.rows) * m.fan_in * per_partial, 0});
    target.push_back(m.us);
  }
  Params p{g.launch_overhead_us, 1.0 / g.merge_bytes_per_us, 0};
  for (int iter = 0; iter < 8; ++iter) {
    std::vector<double> w(merges.size());
    for (std::size_t i = 0; i < merges.size(); ++i) w[i] = huber[i] / (target[i] * target[i]);
    Params next = p;
    if (!solve(rows, target, w, {true, true, false}, next) || !(next[1] > 0)) break;
    if (next[0] < 0) {
      next[0] = 0;
      if (!solve(rows, target, w, {false, true, false}, next) || !(next[1] > 0)) break;
    }
    p = next;
    std::vector<double> rel(merges.size());
    for (std::size_t i = 0; i < merges.size(); ++i) {
      rel[i] = (p[0] + rows[i][1] * p[1]) / target[i] - 1;
    }
    huber = huber_weights(rel);
  }
  g.launch_overhead_us = std::max(p[0], 1e-3);
  g.merge_bytes_per_us = 1.0 / p[1];
  std::vector<double> rel;
  for (std::size_t i = 0; i < merges.size(); ++i) {
    rel.push_back(predict_merge_us(g, merges[i]) / merges[i].us - 1);
  }
  const int n = static_cast<int>(merges.size());
  out.merge_bytes_per_us = {g.merge_bytes_per_us, rms(rel), n};
  out.launch_overhead_us = {g.launch_overhead_us, rms(rel), n};
  return out;
}

std::string fit_summary(const FitResult& fit) {
  std::string out = fmt::format("{:<26} {:<20} {:>12} {:>9} {:>7}\n", "kernel", "coefficient",
                                "value", "residual", "samples");
  auto line = [&](const std::string& key, const char* name, const CoefficientFit& c) {
    out += fmt::format("{:<26} {:<20} {:>12.4g} {:>8.1f}% {:>7}{}\n", key, name, c.value,
                       100 * c.residual, c.samples, c.samples == 0 ? "  (prior)" : "");
  };
  for (const auto& [key, f] : fit.fits) {
    line(key, "item_overhead_us", f.item_overhead_us);
    line(key, "flops_per_us", f.flops_per_us);
    line(key, "bandwidth_fraction", f.bandwidth_fraction);
  }
  line("(gpu)", "merge_bytes_per_us", fit.merge_bytes_per_us);
  line("(gpu)", "launch_overhead_us", fit.launch_overhead_us);
  out += fmt::format("\nheld-out validation {:>26} {:>10} {:>9}\n", "median |error|", "Spearman",
                     "samples");
  for (const auto& [key, f] : fit.fits) {
    out += fmt::format("  {:<36} {:>9.1f}% {:>10.3f} {:>9}\n", key,
                       100 * f.holdout.median_abs_rel_error, f.holdout.spearman, f.holdout.samples);
  }
  for (const auto& [family, v] : fit.family_validation) {
    out += fmt::format("  family {:<29} {:>9.1f}% {:>10.3f} {:>9}\n", family,
                       100 * v.median_abs_rel_error, v.spearman, v.samples);
  }
  for (const std::string& note : fit.notes) out += "note: " + note + "\n";
  return out;
}

}  // namespace canopy::autotune
