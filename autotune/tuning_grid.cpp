// canopy-tune's measurement grid, its time estimate and synthetic timings.
#include "autotune/tuning_grid.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "autotune/step_pricing.hpp"
#include "autotune/tuning_fit.hpp"
#include "canopy/error.hpp"
#include "core/ceil_div.hpp"
#include "families/kernel_families.hpp"

namespace canopy::autotune {

namespace {

AttentionSpec grid_spec(int head_dim, DType dtype, int page_size) {
  AttentionSpec spec;
  spec.head_dim = head_dim;
  spec.q_dtype = spec.kv_dtype = spec.o_dtype = dtype;
  spec.page_size = page_size;
  return spec;
}

// Fixed seconds per timed plan (plan, upload, allocate) and per kernel
// compiled (NVRTC, once per config: the cubin cache keeps it).
constexpr double kPlanSeconds = 0.05;
constexpr double kCompileSeconds = 2.0;

}  // namespace

std::string ItemPoint::key() const { return measurement_key(measurement(0)); }

ItemMeasurement ItemPoint::measurement(double us) const {
  return {config.to_string(),
          spec.kv_dtype,
          spec.head_dim,
          spec.page_size,
          row_tile,
          rows,
          tokens,
          1,
          us};
}

std::string MergePoint::key() const { return measurement_key(measurement(0)); }

MergeMeasurement MergePoint::measurement(double us) const {
  return {spec.o_dtype, spec.head_dim, fan_in, rows, us};
}

std::string measurement_key(const ItemMeasurement& m) {
  return fmt::format("{}/{}/d{}/p{}/rt{}/r{}/t{}/h{}", m.config, to_string(m.dtype), m.head_dim,
                     m.page_size, m.row_tile, m.rows, m.tokens, m.heads);
}

std::string measurement_key(const MergeMeasurement& m) {
  return fmt::format("merge/{}/d{}/f{}/r{}", to_string(m.dtype), m.head_dim, m.fan_in, m.rows);
}

Grid measurement_grid(const GridOptions& o, const GpuCoefficients& gpu) {
  Grid grid;
  const CostModel model(gpu);
  for (int d : o.head_dims) {
    for (DType dtype : o.dtypes) {
      for (int page : o.page_sizes) {
        const AttentionSpec spec = grid_spec(d, dtype, page);
        for (const KernelConfig& c :
             runnable_kernel_configs(spec, shipped_kernel_configs(spec), gpu.arch)) {
          const std::string family = to_string(c.family);
          if (!o.families.empty() &&
              std::find(o.families.begin(), o.families.end(), family) == o.families.end()) {
            continue;
          }
          if (!model.fits(spec, c)) continue;
          const families::FamilyInfo& info = families::family_info(c.family);
          std::vector<int> tiles = info.row_tiles(d, c);
          std::sort(tiles.begin(), tiles.end());
          if (tiles.empty()) continue;
          for (int rows : o.rows) {
            const auto tile = std::lower_bound(tiles.begin(), tiles.end(), rows);
            if (tile == tiles.end()) continue;
            for (int tokens : o.tokens) grid.items.push_back({spec, c, *tile, rows, tokens});
          }
          const bool tensor_cores = info.instruction == families::Instruction::kMmaSync ||
                                    info.instruction == families::Instruction::kWgmma;
          for (int rows : tensor_cores ? o.shared_rows : std::vector<int>{}) {
            if (rows <= tiles.back()) continue;
            for (int tokens : o.tokens) grid.items.push_back({spec, c, tiles.back(), rows, tokens});
          }
        }
      }
      for (int fan_in : o.fan_ins) {
        for (std::int64_t rows : o.merge_rows) {
          grid.merges.push_back({grid_spec(d, dtype, o.page_sizes.front()), fan_in, rows});
        }
      }
    }
  }
  return grid;
}

AttentionSpec point_spec(const ItemPoint& p) {
  AttentionSpec spec = p.spec;
  spec.num_kv_heads = kPointKvHeads;
  spec.num_qo_heads = kPointKvHeads * p.rows;
  return spec;
}

int point_tiles(const ItemPoint& p) { return ceil_div(p.rows, p.row_tile); }

PlannerOptions point_options(const ItemPoint& p, const CostModel& model) {
  PlannerOptions options;
  options.cost_model = model;
  options.candidates = {p.config};
  options.row_tiles = {p.row_tile};
  options.allow_split = false;
  options.allow_absorb = false;
  options.head_packs = false;
  return options;
}

BlockTables point_tables(const ItemPoint& p, int requests) {
  const int pages_per_request = (p.tokens + p.spec.page_size - 1) / p.spec.page_size;
  BlockTables tables;
  tables.num_pages = static_cast<std::int32_t>(std::int64_t{requests} * pages_per_request);
  tables.indptr.reserve(static_cast<std::size_t>(requests) + 1);
  tables.indptr.push_back(0);
  for (int r = 0; r < requests; ++r) {
    for (int g = 0; g < pages_per_request; ++g) tables.indices.push_back(r * pages_per_request + g);
    tables.indptr.push_back(static_cast<std::int32_t>(tables.indices.size()));
    tables.seq_lens.push_back(p.tokens);
  }
  return tables;
}

void check_point_plan(const Plan& plan, const ItemPoint& p, int requests) {
  const int tiles = point_tiles(p);
  const int expected = requests * kPointKvHeads * tiles;
  bool ok = static_cast<int>(plan.items.size()) == expected && plan.merge_requests.empty() &&
            plan.configs.size() == 1 && plan.configs.front() == p.config && p.rows % tiles == 0;
  for (const WorkItem& it : plan.items) {
    ok = ok && it.row_count == p.rows / tiles && it.row_tile == p.row_tile && it.kv_heads == 1 &&
         it.token_end - it.token_begin == p.tokens;
  }
  CANOPY_CHECK(ok, ErrorKind::kNotSupported,
               "tuning point {}: the planner did not make {} identical items ({} items)", p.key(),
               expected, plan.items.size());
}

double estimate_seconds(const ItemPoint& p, const GridOptions& o, const GpuCoefficients& gpu) {
  const double item = CostModel(gpu).item_us(p.spec, p.config, p.row_tile, p.rows, p.tokens);
  const int per_sm = StepPricer::blocks_per_sm(p.spec, p.config, gpu.arch);
  double seconds = 0;
  for (int waves : {o.waves_low, o.waves_high}) {
    // waves items per slot, per_sm slots per SM: each SM runs waves * per_sm items.
    const double step_us = waves * per_sm * item + gpu.launch_overhead_us;
    seconds += (o.warmup + o.iters) * step_us * 1e-6 + kPlanSeconds;
  }
  return seconds;
}

double estimate_seconds(const Grid& grid, const GridOptions& o, const GpuCoefficients& gpu) {
  double seconds = 0;
  std::set<std::string> kernels;
  for (const ItemPoint& p : grid.items) {
    seconds += estimate_seconds(p, o, gpu);
    kernels.insert(partial_kernel_spec(p.spec, p.config, gpu.arch).to_string());
  }
  for (const MergePoint& m : grid.merges) {
    const double us = predict_merge_us(gpu, m.measurement(0));
    seconds += (o.warmup + o.iters) * us * 1e-6 + kPlanSeconds;
    kernels.insert(merge_kernel_spec(m.spec, m.fan_in, gpu.arch).to_string());
  }
  return seconds + kCompileSeconds * static_cast<double>(kernels.size());
}

void simulate(const Grid& grid, const GpuCoefficients& truth, double noise, std::uint64_t seed,
              std::vector<ItemMeasurement>& items, std::vector<MergeMeasurement>& merges) {
  std::mt19937_64 rng(seed);
  // Box-Muller from the engine's bits: the same numbers on every standard library.
  auto normal = [&rng] {
    const double u1 = (static_cast<double>(rng() >> 11) + 1.0) / 9007199254740993.0;
    const double u2 = static_cast<double>(rng() >> 11) / 9007199254740992.0;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  };
  for (const ItemPoint& p : grid.items) {
    ItemMeasurement m = p.measurement(0);
    m.us = predict_item_us(truth, m) * std::exp(noise * normal());
    items.push_back(m);
  }
  for (const MergePoint& p : grid.merges) {
    MergeMeasurement m = p.measurement(0);
    m.us = predict_merge_us(truth, m) * std::exp(noise * normal());
    merges.push_back(m);
  }
}

}  // namespace canopy::autotune
