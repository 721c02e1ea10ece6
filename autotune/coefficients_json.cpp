// GpuCoefficients <-> JSON ("canopy-coefficients/1"): the form a tuning
// database stores per GPU, so canopy-tune only has to fill the numbers in.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "canopy/cost_model.hpp"
#include "canopy/error.hpp"

namespace canopy {

std::string GpuCoefficients::to_json(int indent) const {
  nlohmann::json j;
  j["format"] = "canopy-coefficients/1";
  j["name"] = name;
  j["num_sms"] = num_sms;
  j["arch"] = arch.to_string();
  j["hbm_bytes_per_us"] = hbm_bytes_per_us;
  j["l2_bytes_per_us"] = l2_bytes_per_us;
  j["tensor_flops_per_us"] = tensor_flops_per_us;
  j["launch_overhead_us"] = launch_overhead_us;
  j["merge_bytes_per_us"] = merge_bytes_per_us;
  j["max_smem_per_block"] = max_smem_per_block;
  j["kernels"] = nlohmann::json::object();
  for (const auto& [key, k] : kernels) {
    j["kernels"][key] = {{"item_overhead_us", k.item_overhead_us},
                         {"flops_per_us", k.flops_per_us},
                         {"bandwidth_fraction", k.bandwidth_fraction}};
  }
  return j.dump(indent);
}

namespace {

// j[field] as T; a missing or mistyped field is an error naming it.
template <class T>
T field(const nlohmann::json& j, const std::string& name, const std::string& where) {
  try {
    return j.at(name).get<T>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("coefficients JSON: {}{}: {}", where, name, e.what()));
  }
}

}  // namespace

GpuCoefficients GpuCoefficients::from_json(const std::string& text) {
  GpuCoefficients c;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::kInvalidArgument, fmt::format("coefficients JSON: {}", e.what()));
  }
  // (j.value() would throw json's own exception for a format that is not a string.)
  check(j.is_object() && j.contains("format") && j["format"] == "canopy-coefficients/1",
        ErrorKind::kInvalidArgument, "not a canopy-coefficients/1 document");
  c.name = field<std::string>(j, "name", "");
  c.num_sms = field<int>(j, "num_sms", "");
  c.arch = Arch::parse(field<std::string>(j, "arch", ""));
  c.hbm_bytes_per_us = field<double>(j, "hbm_bytes_per_us", "");
  c.l2_bytes_per_us = field<double>(j, "l2_bytes_per_us", "");
  c.tensor_flops_per_us = field<double>(j, "tensor_flops_per_us", "");
  c.launch_overhead_us = field<double>(j, "launch_overhead_us", "");
  c.merge_bytes_per_us = field<double>(j, "merge_bytes_per_us", "");
  c.max_smem_per_block = field<int>(j, "max_smem_per_block", "");
  c.kernels.clear();
  const nlohmann::json kernels = field<nlohmann::json>(j, "kernels", "");
  check(kernels.is_object(), ErrorKind::kInvalidArgument,
        "coefficients JSON: kernels must be an object keyed by config or family");
  for (const auto& [key, k] : kernels.items()) {
    const std::string where = fmt::format("kernels.{}.", key);
    c.kernels[key] = {field<double>(k, "item_overhead_us", where),
                      field<double>(k, "flops_per_us", where),
                      field<double>(k, "bandwidth_fraction", where)};
  }
  CANOPY_CHECK(c.launch_overhead_us >= 0, ErrorKind::kInvalidArgument,
               "coefficients JSON: launch_overhead_us must be >= 0, got {}", c.launch_overhead_us);
  auto positive = [](double v, const char* field) {
    CANOPY_CHECK(v > 0, ErrorKind::kInvalidArgument, "coefficients JSON: {} must be > 0, got {}",
                 field, v);
  };
  positive(c.num_sms, "num_sms");
  positive(c.hbm_bytes_per_us, "hbm_bytes_per_us");
  positive(c.l2_bytes_per_us, "l2_bytes_per_us");
  positive(c.tensor_flops_per_us, "tensor_flops_per_us");
  positive(c.merge_bytes_per_us, "merge_bytes_per_us");
  positive(c.max_smem_per_block, "max_smem_per_block");
  for (const auto& [key, k] : c.kernels) {
    CANOPY_CHECK(k.item_overhead_us >= 0 && k.flops_per_us >= 0 && k.bandwidth_fraction > 0 &&
                     k.bandwidth_fraction <= 1.5,
                 ErrorKind::kInvalidArgument,
                 "coefficients JSON: kernel '{}' needs item_overhead_us >= 0, flops_per_us >= 0 "
                 "and bandwidth_fraction in (0, 1.5]",
                 key);
  }
  return c;
}

}  // namespace canopy
