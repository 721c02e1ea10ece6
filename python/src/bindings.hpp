// The parts of the canopy._canopy module, one function per file.
#pragma once

#include <nanobind/nanobind.h>

namespace canopy::python {

void bind_errors(nanobind::module_& m);       // errors.cpp: ErrorKind, the exception translator
void bind_spec(nanobind::module_& m);         // spec.cpp: AttentionSpec
void bind_options(nanobind::module_& m);      // options.cpp: PlannerOptions
void bind_tables(nanobind::module_& m);       // tables.cpp: BlockTables
void bind_plan(nanobind::module_& m);         // plan.cpp: planning and running
void bind_incremental(nanobind::module_& m);  // incremental.cpp: IncrementalPlanner
void bind_device(nanobind::module_& m);       // device.cpp: gpu_available, device_info
void bind_kernels(nanobind::module_& m);      // kernels.cpp: kernel_source

}  // namespace canopy::python
