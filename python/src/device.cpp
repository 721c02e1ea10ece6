// canopy.gpu_available, canopy.device_info: what the driver reports, no GPU work.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <string>

#include "bindings.hpp"
#include "canopy/runtime.hpp"
#include "canopy/tuning.hpp"
#include "runtimes.hpp"

namespace nb = nanobind;

namespace canopy::python {

void bind_device(nb::module_& m) {
  m.def(
      "gpu_available", [] { return gpu_available(nullptr); },
      "True when libcuda.so.1 loads and reports at least one GPU. Never raises.");
  m.def(
      "gpu_unavailable_reason",
      [] {
        std::string why;
        return gpu_available(&why) ? std::string() : why;
      },
      "Why GPU work is unavailable ('' when a GPU is available).");
  m.def(
      "device_info",
      [](int device) {
        Runtime& rt = runtime_for(device);
        const GpuCoefficients& c = rt.cost_model().coefficients();
        nb::dict d;
        d["device"] = device;
        d["name"] = rt.device_name();
        d["arch"] = rt.arch().to_string();
        d["num_sms"] = c.num_sms;
        d["max_smem_per_block"] = c.max_smem_per_block;
        d["hbm_bytes_per_us"] = c.hbm_bytes_per_us;
        return d;
      },
      nb::arg("device") = 0,
      "The GPU Canopy plans for: name, arch, SMs, shared memory per block, the "
      "bandwidth the cost model assumes. Raises NoDeviceError without a GPU.");
  m.def(
      "tuning_status",
      [](int device) {
        const TuningStatus& s = runtime_for(device).tuning_status();
        nb::dict d;
        d["device"] = s.device;
        d["tuned"] = s.tuned;
        d["database"] = s.database;
        d["message"] = s.message;
        d["searched"] = s.searched;
        d["refused"] = s.refused;
        d["coefficients"] = runtime_for(device).cost_model().coefficients().to_json(-1);
        return d;
      },
      nb::arg("device") = 0,
      "Which tuning database (docs/tuning.md) the device's cost model came from: "
      "tuned, database, message (what is used and why), the search path, each refused "
      "database with its reason, and the coefficients as canopy-coefficients/1 JSON. "
      "Raises NoDeviceError without a GPU.");
  m.def(
      "tuning_search_path", [](const std::string& path) { return tuning_search_path(path); },
      nb::arg("path") = "", "Where tuning databases are looked for, in order (no GPU needed).");
}

}  // namespace canopy::python
