// The native Plan object both planning entry points return: canopy.plan()
// (plan.cpp) and canopy.IncrementalPlanner (incremental.cpp).
#pragma once

#include <nanobind/ndarray.h>

#include <optional>

#include "canopy/plan.hpp"
#include "canopy/runtime.hpp"
#include "tables.hpp"
#include "tensors.hpp"

namespace canopy::python {

/// One decode step's plan: host only (CPU executor), or prepared on a GPU
/// (kernels loaded, metadata uploaded). Either runs host arrays on the CPU.
struct PyPlan {
  Tables tables;
  Placement placement;                           ///< where GPU runs go (cuda = false: a CPU plan)
  Arch arch;                                     ///< the target its kernels are for
  std::optional<PreparedPlan> prepared;          ///< GPU plans
  Plan host;                                     ///< CPU plans
  std::optional<nanobind::ndarray<>> workspace;  ///< a caller's workspace, kept alive with the plan

  const Plan& plan() const { return prepared ? prepared->plan() : host; }
};

/// Wraps a plan made with `options`: kept on the host (device < 0), or
/// prepared on CUDA device `device` (kernels compiled and loaded, metadata
/// uploaded). Call without the GIL.
PyPlan wrap_plan(Plan plan, const Tables& tables, const PlannerOptions& options, int device);

/// `options` with the device's cost model when they carry the defaults (GPU
/// plans price with the measured or tuned coefficients of the device).
PlannerOptions with_device_cost_model(PlannerOptions options, const AttentionSpec& spec,
                                      int device);

}  // namespace canopy::python
