// canopy._canopy.IncrementalPlanner: plans decode step after decode step,
// patching the last plan when the batch only grew (canopy::IncrementalPlanner,
// docs/planner.md section 5). Each step's plan is a canopy.Plan like
// canopy.plan()'s, kept on the host or prepared on the planner's GPU.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "bindings.hpp"
#include "canopy/error.hpp"
#include "canopy/replan.hpp"
#include "plans.hpp"

namespace nb = nanobind;

namespace canopy::python {
namespace {

struct PyIncremental {
  AttentionSpec spec;
  PlannerOptions options;  ///< with the device's cost model for GPU planners
  int device = -1;         ///< CUDA ordinal, or -1 for the CPU executor
  std::unique_ptr<IncrementalPlanner> planner;
};

PyIncremental make_incremental(const AttentionSpec& spec, const PlannerOptions& options, int device,
                               int full_every, double max_growth, int min_growth_tokens,
                               bool append_only_tables) {
  spec.validate();
  CANOPY_CHECK(full_every >= 1, ErrorKind::kInvalidArgument,
               "full_every must be >= 1 (1: plan every step from scratch), got {}", full_every);
  CANOPY_CHECK(max_growth >= 0, ErrorKind::kInvalidArgument, "max_growth must be >= 0, got {}",
               max_growth);
  CANOPY_CHECK(min_growth_tokens >= 0, ErrorKind::kInvalidArgument,
               "min_growth_tokens must be >= 0, got {}", min_growth_tokens);
  ReplanOptions replan;
  replan.full_every = full_every;
  replan.max_growth = max_growth;
  replan.min_growth_tokens = min_growth_tokens;
  replan.append_only_tables = append_only_tables;
  PyIncremental p;
  p.spec = spec;
  p.device = device;
  p.options = with_device_cost_model(options, spec, device);
  p.planner = std::make_unique<IncrementalPlanner>(spec, p.options, replan);
  return p;
}

PyPlan plan_step(PyIncremental& p, const Tables& tables) {
  CANOPY_CHECK(tables.page_size == p.spec.page_size, ErrorKind::kInvalidArgument,
               "the block tables were built for page_size {} but spec.page_size is {}",
               tables.page_size, p.spec.page_size);
  nb::gil_scoped_release release;              // a GPU plan may compile kernels (NVRTC, seconds)
  Plan plan = p.planner->plan(tables.tables);  // a copy: the planner keeps its own
  return wrap_plan(std::move(plan), tables, p.options, p.device);
}

const char* outcome_name(ReplanOutcome o) {
  switch (o) {
    case ReplanOutcome::kFull:
      return "full";
    case ReplanOutcome::kPatched:
      return "patched";
    case ReplanOutcome::kUnchanged:
      return "unchanged";
  }
  return "unknown";
}

}  // namespace

void bind_incremental(nb::module_& m) {
  nb::class_<PyIncremental>(m, "IncrementalPlanner",
                            "Plans step after step, patching the last plan when the batch only "
                            "grew (native part of canopy.IncrementalPlanner).")
      .def("plan", &plan_step, nb::arg("tables"))
      .def_prop_ro("last_outcome",
                   [](const PyIncremental& p) {
                     return std::string(outcome_name(p.planner->last_outcome()));
                   })
      .def_prop_ro("last_reason", [](const PyIncremental& p) { return p.planner->last_reason(); })
      .def_prop_ro("full_plans", [](const PyIncremental& p) { return p.planner->full_plans(); })
      .def_prop_ro("patched_plans",
                   [](const PyIncremental& p) { return p.planner->patched_plans(); });
  m.def("make_incremental_planner", &make_incremental, nb::arg("spec"), nb::arg("options"),
        nb::arg("device"), nb::arg("full_every"), nb::arg("max_growth"),
        nb::arg("min_growth_tokens"), nb::arg("append_only_tables"),
        "An incremental planner for `spec` on the host (device < 0) or CUDA device `device`. "
        "Use canopy.IncrementalPlanner.");
}

}  // namespace canopy::python
