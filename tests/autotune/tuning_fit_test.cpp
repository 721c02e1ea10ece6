// The fit recovers known coefficients from synthetic timings with noise and
// outliers, and refits the recorded fixture (tests/autotune/data/, made by
// `canopy-tune --simulate`: synthetic timings, not a GPU's).
#include "autotune/tuning_fit.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <vector>

#include "autotune/tuning_grid.hpp"
#include "canopy/tuning.hpp"

namespace canopy::autotune {
namespace {

// A GPU unlike the defaults, with both regimes in the grid (the mma kernels
// turn math-bound at about 40 rows), so a fit that returns its priors fails.
GpuCoefficients truth() {
  GpuCoefficients g;
  g.hbm_bytes_per_us = 4.5e6;
  g.launch_overhead_us = 4.2;
  g.merge_bytes_per_us = 1.8e6;
  g.kernels["mma_q64_kv64_w4_s3"] = {1.6, 1.3e8, 0.8};
  g.kernels["mma_q128_kv32_w4_s3"] = {2.2, 1.7e8, 0.7};
  return g;
}

Grid mma_grid() {
  GridOptions o;
  o.dtypes = {DType::kF16};
  o.families = {"mma"};
  return measurement_grid(o, truth());
}

void expect_near_rel(double got, double want, double tolerance, const std::string& what) {
  EXPECT_LE(std::abs(got / want - 1), tolerance) << what << ": got " << got << ", want " << want;
}

void expect_recovered(const FitResult& fit, double tolerance) {
  const GpuCoefficients want_all = truth();  // kept alive: the loop holds references into it
  for (const char* config : {"mma_q64_kv64_w4_s3", "mma_q128_kv32_w4_s3"}) {
    const KernelCoefficients& want = want_all.kernels.at(config);
    const KernelCoefficients& got = fit.coefficients.kernels.at(config);
    expect_near_rel(got.item_overhead_us, want.item_overhead_us, 2 * tolerance, config);
    expect_near_rel(got.flops_per_us, want.flops_per_us, tolerance, config);
    expect_near_rel(got.bandwidth_fraction, want.bandwidth_fraction, tolerance, config);
    const KernelFit& f = fit.fits.at(config);
    EXPECT_GT(f.flops_per_us.samples, 2) << config;
    EXPECT_GT(f.bandwidth_fraction.samples, 2) << config;
    EXPECT_GT(f.holdout.samples, 4) << config;
    EXPECT_LE(f.holdout.median_abs_rel_error, 0.05) << config;
    EXPECT_GE(f.holdout.spearman, 0.95) << config;
  }
  expect_near_rel(fit.coefficients.merge_bytes_per_us, 1.8e6, tolerance, "merge");
  expect_near_rel(fit.coefficients.launch_overhead_us, 4.2, 2 * tolerance, "launch");
  EXPECT_GE(fit.family_validation.at("mma").spearman, 0.95);
}

GpuCoefficients base() {
  GpuCoefficients g;  // the defaults as priors, the device's bandwidth
  g.hbm_bytes_per_us = 4.5e6;
  return g;
}

TEST(TuningFit, RecoversKnownCoefficientsFromNoisyTimings) {
  std::vector<ItemMeasurement> items;
  std::vector<MergeMeasurement> merges;
  simulate(mma_grid(), truth(), 0.02, 11, items, merges);
  expect_recovered(fit_coefficients(base(), items, merges), 0.06);
}

TEST(TuningFit, OutliersDoNotMoveTheFit) {
  std::vector<ItemMeasurement> items;
  std::vector<MergeMeasurement> merges;
  simulate(mma_grid(), truth(), 0.01, 12, items, merges);
  // A clock dip or a noisy neighbour: a few timings 3x too slow.
  for (std::size_t i = 3; i < items.size(); i += 17) items[i].us *= 3;
  merges[1].us *= 3;
  expect_recovered(fit_coefficients(base(), items, merges), 0.06);
}

TEST(TuningFit, TooFewMeasurementsKeepThePriorAndSaySo) {
  std::vector<ItemMeasurement> items;
  std::vector<MergeMeasurement> merges;
  simulate(mma_grid(), truth(), 0.0, 1, items, merges);
  items.resize(2);
  merges.resize(1);
  const FitResult fit = fit_coefficients(base(), items, merges);
  EXPECT_TRUE(fit.fits.empty());
  EXPECT_EQ(fit.coefficients, base());
  EXPECT_EQ(fit.notes.size(), 2u);
}

TEST(TuningFit, RankStatistics) {
  const std::vector<double> a{1, 2, 3, 4}, b{10, 20, 30, 40}, c{4, 3, 2, 1};
  EXPECT_DOUBLE_EQ(spearman(a, b), 1.0);
  EXPECT_DOUBLE_EQ(spearman(a, c), -1.0);
  EXPECT_DOUBLE_EQ(median_abs_rel_error(a, a), 0.0);
  const std::vector<double> d{1.1, 2, 3.3};
  EXPECT_NEAR(median_abs_rel_error(d, std::vector<double>{1, 2, 3}), 0.1, 1e-12);
}

TEST(TuningFit, RefitsTheRecordedFixture) {
  const auto path =
      std::filesystem::path(__FILE__).parent_path() / "data" / "simulated_sm90_mma_fp16_d128.json";
  const TuningDb db = load_tuning_db(path.string());
  EXPECT_TRUE(db.synthetic);
  GpuCoefficients priors = db.coefficients;
  priors.kernels = default_kernel_coefficients();
  const FitResult fit = fit_coefficients(priors, db.items, db.merges);
  // The fixture was simulated from the default coefficients with 3% noise.
  expect_near_rel(fit.coefficients.kernels.at("mma_q64_kv64_w4_s3").bandwidth_fraction, 0.9, 0.05,
                  "fixture");
  expect_near_rel(fit.coefficients.kernels.at("mma_q128_kv32_w4_s3").item_overhead_us, 3.0, 0.1,
                  "fixture");
  for (const auto& [config, f] : fit.fits) {
    EXPECT_LE(f.holdout.median_abs_rel_error, 0.06) << config;
    EXPECT_GE(f.holdout.spearman, 0.9) << config;
    // The numbers the file records: the fit is deterministic.
    const KernelFit& recorded = db.fits.at(config);
    expect_near_rel(f.bandwidth_fraction.value, recorded.bandwidth_fraction.value, 1e-9, config);
    expect_near_rel(f.item_overhead_us.value, recorded.item_overhead_us.value, 1e-9, config);
  }
}

// Every database shipped in autotune/databases (real timings from canopy-tune
// on a lent GPU): it passes the checks the Runtime makes for its own device,
// and refitting its recorded measurements gives the coefficients it stores
// (the fit is deterministic, so a hand edit or a fit change shows here).
TEST(TuningFit, ShippedDatabasesLoadAndRefitToTheirCoefficients) {
  const auto dir = std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() /
                   "autotune" / "databases";
  int seen = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".json") continue;
    ++seen;
    const std::string name = entry.path().filename().string();
    const TuningDb db = load_tuning_db(entry.path().string());
    EXPECT_FALSE(db.synthetic) << name;
    EXPECT_NO_THROW(check_tuning_db(db, db.device, name)) << name;
    GpuCoefficients priors = db.coefficients;
    priors.kernels = default_kernel_coefficients();
    const FitResult fit = fit_coefficients(priors, db.items, db.merges);
    ASSERT_EQ(fit.fits.size(), db.fits.size()) << name;
    for (const auto& [config, f] : fit.fits) {
      const KernelCoefficients& stored = db.coefficients.kernels.at(config);
      expect_near_rel(f.item_overhead_us.value, stored.item_overhead_us, 1e-6, name + " " + config);
      expect_near_rel(f.bandwidth_fraction.value, stored.bandwidth_fraction, 1e-6,
                      name + " " + config);
      expect_near_rel(f.flops_per_us.value, stored.flops_per_us, 1e-6, name + " " + config);
    }
    expect_near_rel(fit.coefficients.launch_overhead_us, db.coefficients.launch_overhead_us, 1e-6,
                    name);
  }
  EXPECT_GE(seen, 1) << "no database in " << dir;
}

}  // namespace
}  // namespace canopy::autotune
