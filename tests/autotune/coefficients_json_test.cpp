// GpuCoefficients <-> JSON ("canopy-coefficients/1"): round trip, and
// malformed documents rejected naming the field.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "canopy/cost_model.hpp"
#include "canopy/error.hpp"
#include "tests/test_data.hpp"

namespace canopy {
namespace {

using test::expect_error;

GpuCoefficients measured() {
  GpuCoefficients c;
  c.name = "NVIDIA H200 (tuned)";
  c.num_sms = 132;
  c.arch = kSm90a;
  c.hbm_bytes_per_us = 4.5e6;
  c.l2_bytes_per_us = 9.25e6;
  c.tensor_flops_per_us = 7.9e8;
  c.launch_overhead_us = 2.5;
  c.merge_bytes_per_us = 3.1e6;
  c.max_smem_per_block = 232448;
  c.kernels["mma_q64_kv64_w4_s3"] = {0.75, 2.1e8, 0.875};
  c.kernels["fma"] = {2.0, 0, 0.5};  // flops 0: the GPU's tensor rate
  return c;
}

/// The JSON of measured() with `edit` applied to it.
std::string edited(void (*edit)(nlohmann::json&)) {
  nlohmann::json j = nlohmann::json::parse(measured().to_json());
  edit(j);
  return j.dump();
}

TEST(CoefficientsJson, RoundTripIsExact) {
  for (const GpuCoefficients& c : {GpuCoefficients{}, measured()}) {
    const std::string text = c.to_json();
    const GpuCoefficients back = GpuCoefficients::from_json(text);
    EXPECT_EQ(back, c) << text;
    EXPECT_EQ(back.to_json(), text);
    EXPECT_EQ(GpuCoefficients::from_json(c.to_json(0)), c);
  }
  const nlohmann::json j = nlohmann::json::parse(measured().to_json());
  EXPECT_EQ(j.at("format"), "canopy-coefficients/1");
  EXPECT_EQ(j.at("arch"), "sm_90a");
  EXPECT_EQ(j.at("kernels").at("mma_q64_kv64_w4_s3").at("bandwidth_fraction"), 0.875);
}

TEST(CoefficientsJson, KernelsReplaceTheDefaults) {
  // A document's kernel table is the whole table: a built-in entry it omits
  // is gone, so the wide config is priced by its family's entry.
  const GpuCoefficients back = GpuCoefficients::from_json(edited([](nlohmann::json& j) {
    j["kernels"] = {
        {"mma",
         {{"item_overhead_us", 1.25}, {"flops_per_us", 2.0e8}, {"bandwidth_fraction", 0.8}}}};
  }));
  ASSERT_EQ(back.kernels.size(), 1u);
  EXPECT_EQ(back.kernel(KernelConfig::parse("mma_q128_kv32_w4_s3")),
            (KernelCoefficients{1.25, 2.0e8, 0.8}));
  EXPECT_EQ(back.kernel(KernelConfig::parse("fma_q16_kv64_w4_s2")), KernelCoefficients{});
}

TEST(CoefficientsJson, RejectsMalformedDocumentsNamingTheField) {
  const ErrorKind bad = ErrorKind::kInvalidArgument;
  EXPECT_EQ(
      expect_error([] { GpuCoefficients::from_json("not json"); }, bad, {"coefficients JSON"}), "");
  EXPECT_EQ(
      expect_error(
          [] {
            GpuCoefficients::from_json(edited([](nlohmann::json& j) { j["format"] = "x/1"; }));
          },
          bad, {"canopy-coefficients/1"}),
      "");
  EXPECT_EQ(expect_error(
                [] {
                  GpuCoefficients::from_json(
                      edited([](nlohmann::json& j) { j.erase("l2_bytes_per_us"); }));
                },
                bad, {"l2_bytes_per_us"}),
            "");
  EXPECT_EQ(expect_error(
                [] {
                  GpuCoefficients::from_json(
                      edited([](nlohmann::json& j) { j["kernels"]["fma"].erase("flops_per_us"); }));
                },
                bad, {"flops_per_us"}),
            "");
  EXPECT_EQ(
      expect_error(
          [] { GpuCoefficients::from_json(edited([](nlohmann::json& j) { j["arch"] = "sm_x"; })); },
          bad, {"sm_x"}),
      "");
  // A field of the wrong type is rejected too, naming the field.
  EXPECT_EQ(
      expect_error(
          [] {
            GpuCoefficients::from_json(edited([](nlohmann::json& j) { j["num_sms"] = "132"; }));
          },
          bad, {"coefficients JSON", "num_sms"}),
      "");
  EXPECT_EQ(expect_error(
                [] {
                  GpuCoefficients::from_json(edited(
                      [](nlohmann::json& j) { j["kernels"]["mma"]["bandwidth_fraction"] = "x"; }));
                },
                bad, {"kernels.mma.bandwidth_fraction"}),
            "");
  EXPECT_EQ(expect_error(
                [] {
                  GpuCoefficients::from_json(
                      edited([](nlohmann::json& j) { j["launch_overhead_us"] = -1.0; }));
                },
                bad, {"launch_overhead_us", ">= 0"}),
            "");
}

TEST(CoefficientsJson, RejectsNonPositiveRatesNamingTheField) {
  const ErrorKind bad = ErrorKind::kInvalidArgument;
  EXPECT_EQ(
      expect_error(
          [] { GpuCoefficients::from_json(edited([](nlohmann::json& j) { j["num_sms"] = 0; })); },
          bad, {"num_sms", "> 0"}),
      "");
  EXPECT_EQ(expect_error(
                [] {
                  GpuCoefficients::from_json(
                      edited([](nlohmann::json& j) { j["hbm_bytes_per_us"] = -3.0e6; }));
                },
                bad, {"hbm_bytes_per_us", "> 0"}),
            "");
  EXPECT_EQ(expect_error(
                [] {
                  GpuCoefficients::from_json(
                      edited([](nlohmann::json& j) { j["tensor_flops_per_us"] = 0; }));
                },
                bad, {"tensor_flops_per_us"}),
            "");
  EXPECT_EQ(expect_error(
                [] {
                  GpuCoefficients::from_json(
                      edited([](nlohmann::json& j) { j["max_smem_per_block"] = -1; }));
                },
                bad, {"max_smem_per_block"}),
            "");
  EXPECT_EQ(expect_error(
                [] {
                  GpuCoefficients::from_json(edited([](nlohmann::json& j) {
                    j["kernels"]["mma_q64_kv64_w4_s3"]["bandwidth_fraction"] = -0.5;
                  }));
                },
                bad, {"mma_q64_kv64_w4_s3", "bandwidth_fraction"}),
            "");
  EXPECT_EQ(expect_error(
                [] {
                  GpuCoefficients::from_json(edited(
                      [](nlohmann::json& j) { j["kernels"]["fma"]["item_overhead_us"] = -1.0; }));
                },
                bad, {"'fma'", "item_overhead_us"}),
            "");
}

}  // namespace
}  // namespace canopy
