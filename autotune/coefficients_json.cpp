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

GpuCoefficients GpuCoefficients::from_json(const std::string& text) {
  GpuCoefficients c;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    check(j.value("format", "") == "canopy-coefficients/1", ErrorKind::kInvalidArgument,
          "not a canopy-coefficients/1 document");
    c.name = j.at("name");
    c.num_sms = j.at("num_sms");
    c.arch = Arch::parse(j.at("arch").get<std::string>());
    c.hbm_bytes_per_us = j.at("hbm_bytes_per_us");
    c.l2_bytes_per_us = j.at("l2_bytes_per_us");
    c.tensor_flops_per_us = j.at("tensor_flops_per_us");
    c.launch_overhead_us = j.at("launch_overhead_us");
    c.merge_bytes_per_us = j.at("merge_bytes_per_us");
    c.max_smem_per_block = j.at("max_smem_per_block");
    c.kernels.clear();
    for (const auto& [key, k] : j.at("kernels").items()) {
      c.kernels[key] = {k.at("item_overhead_us"), k.at("flops_per_us"), k.at("bandwidth_fraction")};
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::kInvalidArgument, fmt::format("coefficients JSON: {}", e.what()));
  }
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
