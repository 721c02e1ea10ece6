// What a planning pass derives from the spec and the options alone: the
// candidate kernels, their variants and the step pricer with its block
// slots (docs/planner.md, 2a and 2c).
#pragma once

#include <cstdint>
#include <vector>

#include "autotune/step_pricing.hpp"
#include "canopy/planner.hpp"
#include "runtime/plan/planner_types.hpp"

namespace canopy::planning {

/// Kept for the next pass with the same spec and options (make_plan plans
/// twice per call, a server every step).
struct PlannerSetup {
  std::vector<KernelConfig> configs;
  std::vector<KernelCoefficients> kernels;  // per config
  std::vector<Variant> variants;
  std::vector<int> unpacked;    // per variant: the same kernel and row tile, one head per block
  autotune::StepPricer pricer;  // block slots over these configs, merge, launches
  std::vector<std::int32_t> slot_sm;  // per block slot: its SM
  /// `setup`, rebuilt unless it was built for this spec and these options.
  static const PlannerSetup& ready(const AttentionSpec& spec, const PlannerOptions& options,
                                   PlannerSetup& setup);

 private:
  bool matches(const AttentionSpec& spec, const PlannerOptions& options) const;
  void build(const AttentionSpec& spec, const PlannerOptions& options);
  // What it was built for.
  bool valid = false;
  AttentionSpec spec_key;
  std::vector<KernelConfig> candidates;
  std::vector<int> row_tiles;
  bool head_packs = true;
  GpuCoefficients gpu;
};

}  // namespace canopy::planning
