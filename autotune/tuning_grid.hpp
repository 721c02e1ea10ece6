// What canopy-tune measures: the grid of work-item shapes per kernel config
// and of merges, its estimated time, and synthetic timings of it (for CI and
// the fixture: the cost model's own predictions with noise).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "canopy/cost_model.hpp"
#include "canopy/kernel_spec.hpp"
#include "canopy/planner.hpp"
#include "canopy/tuning.hpp"

namespace canopy::autotune {

struct GridOptions {
  std::vector<int> head_dims{128};
  std::vector<DType> dtypes{DType::kF16, DType::kBF16};
  std::vector<std::string> families;  ///< empty: every partial family the arch runs
  std::vector<int> page_sizes{16};
  std::vector<int> rows{1, 4, 8, 16, 32, 64, 128};
  /// Rows beyond a config's largest row tile, for the tensor-core families:
  /// items of several tiles over the same KV (the siblings read it from L2),
  /// the shape of a wide shared prefix and where those configs turn
  /// math-bound, so that their flops_per_us is measured, not assumed.
  std::vector<int> shared_rows{256, 512};
  std::vector<int> tokens{64, 256, 1024, 4096, 16384};
  std::vector<int> fan_ins{2, 3, 4, 8, 16};
  std::vector<std::int64_t> merge_rows{4096, 32768, 262144};
  int warmup = 3;
  int iters = 10;
  int waves_low = 2;   ///< items per block slot of the shorter timed plan...
  int waves_high = 4;  ///< ...and the longer: their difference is the item time
};

struct ItemPoint {
  AttentionSpec spec;  ///< head dim, dtype, page size (heads: set by the measuring loop)
  KernelConfig config;
  int row_tile = 0;
  int rows = 0;
  int tokens = 0;
  std::string key() const;  ///< identifies the point in a resumed run
  ItemMeasurement measurement(double us) const;
};

struct MergePoint {
  AttentionSpec spec;
  int fan_in = 2;
  std::int64_t rows = 0;
  std::string key() const;
  MergeMeasurement measurement(double us) const;
};

struct Grid {
  std::vector<ItemPoint> items;
  std::vector<MergePoint> merges;
};

/// Every config of the requested families that `gpu.arch` implements and that
/// fits its shared memory, each row count at the smallest row tile the config
/// runs that holds it, and each of `shared_rows` (tensor-core families) at
/// the largest.
Grid measurement_grid(const GridOptions& options, const GpuCoefficients& gpu);

/// Seconds the grid takes to time: per point, both plans' warm-up and timed
/// runs at the cost model's predicted step time, plus a fixed cost to plan,
/// upload and allocate (and compile each kernel once).
double estimate_seconds(const Grid& grid, const GridOptions& options, const GpuCoefficients& gpu);
double estimate_seconds(const ItemPoint& point, const GridOptions& options,
                        const GpuCoefficients& gpu);

/// The plan canopy-tune times for an item point: `requests` requests, each
/// one GQA group of p.rows rows over its own p.tokens tokens, with
/// kPointKvHeads KV heads; one config and row tile, no split, no absorb, no
/// head packs, so requests * kPointKvHeads tasks of point_tiles(p) identical
/// items (one per row tile, as the planner runs a wide group: the point's
/// time is the task's, the planner's item_us, and an item costs a tile's share).
inline constexpr int kPointKvHeads = 8;
AttentionSpec point_spec(const ItemPoint& p);
int point_tiles(const ItemPoint& p);
PlannerOptions point_options(const ItemPoint& p, const CostModel& model);
/// Request r reads pages [r * pages_per_request, (r + 1) * pages_per_request).
BlockTables point_tables(const ItemPoint& p, int requests);
/// Throws Error(kNotSupported) unless `plan` is exactly what the point
/// describes (its time would mean nothing otherwise).
void check_point_plan(const Plan& plan, const ItemPoint& p, int requests);

/// The key of an already recorded measurement (ItemPoint::key's form).
std::string measurement_key(const ItemMeasurement& m);
std::string measurement_key(const MergeMeasurement& m);

/// Timings of the grid as `truth` prices them, times exp(N(0, noise)):
/// synthetic, deterministic for a seed.
void simulate(const Grid& grid, const GpuCoefficients& truth, double noise, std::uint64_t seed,
              std::vector<ItemMeasurement>& items, std::vector<MergeMeasurement>& merges);

}  // namespace canopy::autotune
