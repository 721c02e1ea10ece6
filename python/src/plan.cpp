// canopy._canopy.Plan: planning (host, or prepared on a GPU) and running one
// layer, after checking every tensor against the spec and the plan.
#include "canopy/plan.hpp"

#include <fmt/format.h>
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "canopy/cpu.hpp"
#include "canopy/error.hpp"
#include "canopy/kernel_spec.hpp"
#include "canopy/planner.hpp"
#include "canopy/runtime.hpp"
#include "plans.hpp"
#include "runtimes.hpp"
#include "tables.hpp"
#include "tensors.hpp"

namespace nb = nanobind;

namespace canopy::python {
namespace {

using In = nb::ndarray<nb::ro>;
using Out = nb::ndarray<>;

PyPlan make(const AttentionSpec& spec, const Tables& tables, const PlannerOptions& options,
            int device, std::optional<Out> workspace) {
  CANOPY_CHECK(tables.page_size == spec.page_size, ErrorKind::kInvalidArgument,
               "the block tables were built for page_size {} but spec.page_size is {}",
               tables.page_size, spec.page_size);
  spec.validate();
  CANOPY_CHECK(device >= 0 || !workspace, ErrorKind::kInvalidArgument,
               "workspace applies to GPU plans; a CPU plan (device='cpu') needs none");
  std::uint64_t workspace_ptr = 0;
  std::int64_t workspace_bytes = 0;
  if (workspace) {
    const Out& w = *workspace;
    CANOPY_CHECK(w.device_type() == 2 && w.device_id() == device, ErrorKind::kInvalidArgument,
                 "workspace must be CUDA memory of device {} (the plan's)", device);
    workspace_ptr = reinterpret_cast<std::uint64_t>(w.data());
    workspace_bytes = static_cast<std::int64_t>(w.nbytes());
  }
  PyPlan p;
  {
    nb::gil_scoped_release release;  // planning may compile kernels (NVRTC, seconds)
    const PlannerOptions o = with_device_cost_model(options, spec, device);
    Plan plan = make_plan(spec, tables.tables, o);
    CANOPY_CHECK(workspace_ptr == 0 || workspace_bytes >= plan.workspace_bytes(),
                 ErrorKind::kInvalidArgument,
                 "workspace has {} bytes but this plan needs {} (Plan.workspace_bytes)",
                 workspace_bytes, plan.workspace_bytes());
    if (workspace_ptr == 0) {
      p = wrap_plan(std::move(plan), tables, o, device);
    } else {
      p.tables = tables;
      p.placement = Placement{true, device};
      Runtime& rt = runtime_for(device);
      p.arch = rt.arch();
      p.prepared = rt.prepare(std::move(plan), workspace_ptr);
    }
  }
  p.workspace = std::move(workspace);
  return p;
}

/// The checks both executors share: q, k_cache, v_cache, out and lse against
/// the spec, the batch and the KV cache size the tables were checked for.
void check_tensors(const PyPlan& p, const In& q, const In& k, const In& v, const Out& out,
                   const std::optional<Out>& lse, const Placement& where) {
  const Plan& plan = p.plan();
  const AttentionSpec& s = plan.spec;
  const std::int64_t batch = plan.batch_size;
  const bool cpu = !where.cuda;
  const nb::dlpack::dtype f64 = float64_dtype();
  const std::vector<Dim> rows{
      {"batch", batch}, {"num_qo_heads", s.num_qo_heads}, {"head_dim", s.head_dim}};
  const std::vector<Dim> kv = kv_cache_dims(s, p.tables.tables.num_pages);
  check_array(q, "q", rows, cpu ? f64 : dlpack_dtype(s.q_dtype),
              cpu ? "the CPU executor computes in float64" : "spec.q_dtype", where);
  check_array(k, "k_cache", kv, cpu ? f64 : dlpack_dtype(s.kv_dtype),
              cpu ? "the CPU executor computes in float64" : "spec.kv_dtype", where);
  check_array(v, "v_cache", kv, cpu ? f64 : dlpack_dtype(s.kv_dtype),
              cpu ? "the CPU executor computes in float64" : "spec.kv_dtype", where);
  CANOPY_CHECK(k.shape(0) == v.shape(0), ErrorKind::kInvalidArgument,
               "k_cache has {} pages but v_cache has {}", k.shape(0), v.shape(0));
  check_array(out, "out", rows, cpu ? f64 : dlpack_dtype(s.o_dtype),
              cpu ? "the CPU executor computes in float64" : "spec.o_dtype", where);
  CANOPY_CHECK(lse.has_value() == s.with_lse, ErrorKind::kInvalidArgument, "{}",
               s.with_lse ? "lse is required: the spec has with_lse=True"
                          : "lse was given but the spec has with_lse=False");
  if (lse) {
    check_array(*lse, "lse", {{"batch", batch}, {"num_qo_heads", s.num_qo_heads}},
                cpu ? f64 : nb::dtype<float>(),
                cpu ? "the CPU executor computes in float64" : "log-sum-exp is float32", where);
  }
}

void run_cpu(const PyPlan& p, const In& q, const In& k, const In& v, Out& out,
             std::optional<Out>& lse) {
  check_tensors(p, q, k, v, out, lse, Placement{});
  HostTensors in;
  in.q = static_cast<const double*>(q.data());
  in.k = static_cast<const double*>(k.data());
  in.v = static_cast<const double*>(v.data());
  in.num_pages = static_cast<std::int64_t>(k.shape(0));
  auto* o = static_cast<double*>(out.data());
  auto* l = lse ? static_cast<double*>(lse->data()) : nullptr;
  nb::gil_scoped_release release;
  execute_plan_cpu(p.plan(), in, o, l);
}

void run_gpu(const PyPlan& p, const In& q, const In& k, const In& v, Out& out,
             std::optional<Out>& lse, std::uintptr_t stream) {
  CANOPY_CHECK(p.prepared.has_value(), ErrorKind::kInvalidArgument,
               "this plan was made for the CPU executor (device='cpu'); plan with "
               "device='cuda' to run CUDA arrays");
  check_tensors(p, q, k, v, out, lse, p.placement);
  DeviceTensors t;
  t.q = reinterpret_cast<std::uint64_t>(q.data());
  t.k_cache = reinterpret_cast<std::uint64_t>(k.data());
  t.v_cache = reinterpret_cast<std::uint64_t>(v.data());
  t.out = reinterpret_cast<std::uint64_t>(out.data());
  t.lse = lse ? reinterpret_cast<std::uint64_t>(lse->data()) : 0;
  const Runtime& rt = runtime_for(p.placement.device);
  nb::gil_scoped_release release;  // launches only: no allocation, no synchronization
  rt.run(*p.prepared, t, reinterpret_cast<void*>(stream));
}

std::vector<std::string> kernel_specs(const PyPlan& p) {
  std::vector<std::string> names;
  for (const KernelSpec& k : plan_kernel_specs(p.plan(), p.arch)) names.push_back(k.to_string());
  return names;
}

std::string describe(const PyPlan& p) {
  const Plan& plan = p.plan();
  std::string head =
      fmt::format("device: {} ({}), KV cache pages: {}\n", placement_name(p.placement),
                  p.arch.to_string(), p.tables.tables.num_pages);
  return head + plan_to_text(plan);
}

void check_plan(const PyPlan& p) {
  p.plan().validate();
  check_plan_coverage(p.plan(), p.tables.tables);
}

}  // namespace

PlannerOptions with_device_cost_model(PlannerOptions options, const AttentionSpec& spec,
                                      int device) {
  if (device >= 0 && options.cost_model.coefficients() == GpuCoefficients{}) {
    options.cost_model = runtime_for(device).cost_model(spec);
  }
  return options;
}

PyPlan wrap_plan(Plan plan, const Tables& tables, const PlannerOptions& options, int device) {
  PyPlan p;
  p.tables = tables;
  if (device < 0) {
    p.arch = options.cost_model.coefficients().arch;
    p.host = std::move(plan);
    return p;
  }
  p.placement = Placement{true, device};
  Runtime& rt = runtime_for(device);
  p.arch = rt.arch();
  p.prepared = rt.prepare(std::move(plan));
  return p;
}

void bind_plan(nb::module_& m) {
  nb::class_<PyPlan>(m, "Plan", "A planned decode step (native part of canopy.Plan).")
      .def_prop_ro("spec", [](const PyPlan& p) { return p.plan().spec; })
      .def_prop_ro("batch_size", [](const PyPlan& p) { return p.plan().batch_size; })
      .def_prop_ro("num_pages", [](const PyPlan& p) { return p.tables.tables.num_pages; })
      .def_prop_ro("block_tables", [](const PyPlan& p) { return p.tables; })
      .def_prop_ro("device", [](const PyPlan& p) { return placement_name(p.placement); })
      .def_prop_ro("arch", [](const PyPlan& p) { return p.arch.to_string(); })
      .def_prop_ro("workspace_bytes", [](const PyPlan& p) { return p.plan().workspace_bytes(); })
      .def_prop_ro("predicted_us", [](const PyPlan& p) { return p.plan().predicted_us; })
      .def_prop_ro("tree_depth", [](const PyPlan& p) { return p.plan().tree_depth; })
      .def_prop_ro("num_items",
                   [](const PyPlan& p) { return static_cast<std::int64_t>(p.plan().items.size()); })
      .def_prop_ro("num_launches", [](const PyPlan& p) { return p.plan().device_launches(); })
      .def_prop_ro("fused_merge", [](const PyPlan& p) { return p.plan().fused_merge; })
      .def_prop_ro("configs",
                   [](const PyPlan& p) {
                     std::vector<std::string> names;
                     for (const KernelConfig& c : p.plan().configs) names.push_back(c.to_string());
                     return names;
                   })
      .def_prop_ro("kernel_specs", &kernel_specs)
      .def("describe", &describe)
      .def(
          "to_json", [](const PyPlan& p, int indent) { return plan_to_json(p.plan(), indent); },
          nb::arg("indent") = 2)
      .def("check", &check_plan)
      .def("run_cpu", &run_cpu, nb::arg("q"), nb::arg("k_cache"), nb::arg("v_cache"),
           nb::arg("out"), nb::arg("lse").none())
      .def("run_gpu", &run_gpu, nb::arg("q"), nb::arg("k_cache"), nb::arg("v_cache"),
           nb::arg("out"), nb::arg("lse").none(), nb::arg("stream"));

  m.def("make_plan", &make, nb::arg("spec"), nb::arg("tables"), nb::arg("options"),
        nb::arg("device"), nb::arg("workspace").none() = nb::none(),
        "Plans `tables` for `spec`: on the host (device < 0) or prepared on CUDA device "
        "`device`. Use canopy.plan().");
}

}  // namespace canopy::python
