// Fitting the cost model's coefficients to measured timings (canopy-tune;
// docs/tuning.md, "The fit"). Per (family, config): item overhead, math rate
// and bandwidth fraction of CostModel::item_us; for the GPU: the merge rate
// and the launch overhead of StepPricer. Robust least squares on relative
// errors, every fifth measurement held out for validation.
#pragma once

#include <map>
#include <span>
#include <string>
#include <vector>

#include "canopy/cost_model.hpp"
#include "canopy/tuning.hpp"

namespace canopy::autotune {

struct FitResult {
  GpuCoefficients coefficients;           ///< `base` with every fitted value replaced
  std::map<std::string, KernelFit> fits;  ///< per config key, and per family (its first config)
  std::map<std::string, Validation> family_validation;
  CoefficientFit merge_bytes_per_us;
  CoefficientFit launch_overhead_us;
  std::vector<std::string> notes;  ///< coefficients kept at their prior, and why
};

/// Fits `items` and `merges` starting from `base` (the device's bandwidth,
/// L2 and SMs stay as given: the kernel coefficients are relative to them).
/// A (config) with fewer than 4 measurements, or a regime (memory- or
/// math-bound) with fewer than 2, keeps its prior value and says so in notes.
FitResult fit_coefficients(const GpuCoefficients& base, std::span<const ItemMeasurement> items,
                           std::span<const MergeMeasurement> merges);

/// The CostModel's prediction for a measurement (the fit's model).
double predict_item_us(const GpuCoefficients& gpu, const ItemMeasurement& m);
/// StepPricer's price of a merge measurement: launch plus merge.
double predict_merge_us(const GpuCoefficients& gpu, const MergeMeasurement& m);

/// Spearman rank correlation (ties get their mean rank); 0 for fewer than 2.
double spearman(std::span<const double> a, std::span<const double> b);
/// Median of |predicted / measured - 1|.
double median_abs_rel_error(std::span<const double> predicted, std::span<const double> measured);

/// A table of the fit: per coefficient value, residual and samples, and the
/// held-out validation per config and family.
std::string fit_summary(const FitResult& fit);

}  // namespace canopy::autotune
