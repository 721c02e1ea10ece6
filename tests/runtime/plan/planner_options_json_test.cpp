// PlannerOptions <-> JSON ("canopy-planner-options/1"): round trips over edge
// and random options, partial objects, and every malformed input rejected
// naming the key and the value.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "canopy/cost_model.hpp"
#include "canopy/error.hpp"
#include "canopy/planner.hpp"
#include "tests/test_data.hpp"

namespace canopy {
namespace {

using test::expect_error;

GpuCoefficients tuned() {
  GpuCoefficients c;
  c.name = "NVIDIA H200 \"tuned\"";
  c.num_sms = 132;
  c.arch = kSm90a;
  c.hbm_bytes_per_us = 4.5e6 + 1.0 / 3.0;  // not short in decimal
  c.tensor_flops_per_us = 7.9e8;
  c.kernels["mma_q64_kv64_w4_s3"] = {0.75, 2.1e8, 0.875};
  return c;
}

PlannerOptions round_trip(const PlannerOptions& o, int indent = -1) {
  return planner_options_from_json(planner_options_to_json(o, indent));
}

TEST(PlannerOptionsJson, DefaultsRoundTripAndEmptyObjectIsDefaults) {
  const PlannerOptions d;
  EXPECT_TRUE(round_trip(d) == d);
  EXPECT_TRUE(planner_options_from_json("{}") == d);
  EXPECT_TRUE(planner_options_from_json(" { } ") == d);
  const nlohmann::json j = nlohmann::json::parse(planner_options_to_json(d));
  EXPECT_EQ(j.at("format"), "canopy-planner-options/1");
  EXPECT_TRUE(j.at("coefficients").is_null());  // defaults: a Runtime uses its device's
  EXPECT_EQ(j.at("candidates"), nlohmann::json::array());
  EXPECT_EQ(j.at("waves"), 8);
  EXPECT_EQ(j.at("min_split_tokens"), 256);
  EXPECT_EQ(j.at("fuse_merge"), false);
  EXPECT_EQ(j.size(), 11u);  // every field of PlannerOptions, and the format
}

TEST(PlannerOptionsJson, EveryFieldRoundTrips) {
  PlannerOptions o;
  o.cost_model = CostModel(tuned());
  o.candidates = {KernelConfig::parse("mma_q128_kv32_w4_s3"),
                  KernelConfig::parse("fma_q16_kv64_w4_s2")};
  o.row_tiles = {16, 64, 4096};
  o.allow_absorb = false;
  o.allow_split = false;
  o.waves = 1024;
  o.min_split_tokens = 1 << 20;
  o.head_packs = false;
  o.prefix_blind = true;
  for (int indent : {-1, 0, 2}) {
    const PlannerOptions back = round_trip(o, indent);
    EXPECT_TRUE(back == o) << planner_options_to_json(o, 2);
    EXPECT_EQ(back.cost_model.coefficients().hbm_bytes_per_us, tuned().hbm_bytes_per_us);
  }
  // Each field on its own differs from the defaults and survives.
  EXPECT_FALSE(o == PlannerOptions{});
  PlannerOptions one;
  one.waves = 1;
  EXPECT_FALSE(one == PlannerOptions{});
  EXPECT_TRUE(round_trip(one) == one);
}

TEST(PlannerOptionsJson, RandomOptionsRoundTrip) {
  std::mt19937 rng(7);
  const std::vector<std::string> configs = {
      "mma_q64_kv64_w4_s3", "mma_q128_kv32_w4_s3", "mma_q128_kv64_w8_s3", "fma_q16_kv64_w4_s2",
      "mma_q48_kv64_w4_s3"};  // parses; the planner refuses it
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  for (int i = 0; i < 200; ++i) {
    PlannerOptions o;
    for (int k = pick(4); k > 0; --k) o.candidates.push_back(KernelConfig::parse(configs[pick(5)]));
    for (int k = pick(4); k > 0; --k) o.row_tiles.push_back(1 + pick(4096));
    o.allow_absorb = pick(2) == 0;
    o.allow_split = pick(2) == 0;
    o.waves = 1 + pick(1024);
    o.min_split_tokens = 1 + pick(1 << 20);
    o.head_packs = pick(2) == 0;
    o.prefix_blind = pick(2) == 0;
    o.fuse_merge = pick(2) == 0;
    if (pick(2) == 0) {
      GpuCoefficients c = tuned();
      c.num_sms = 1 + pick(200);
      c.launch_overhead_us = std::uniform_real_distribution<double>(0, 10)(rng);
      c.kernels["mma"] = {std::uniform_real_distribution<double>(0, 3)(rng), 0, 0.5};
      o.cost_model = CostModel(c);
    }
    const std::string text = planner_options_to_json(o);
    const PlannerOptions back = planner_options_from_json(text);
    ASSERT_TRUE(back == o) << text;
    ASSERT_EQ(planner_options_to_json(back), text);
  }
}

TEST(PlannerOptionsJson, PartialObjectsKeepTheOtherDefaults) {
  const PlannerOptions o = planner_options_from_json(
      R"({"prefix_blind": true, "row_tiles": [16], "candidates": ["mma_q64_kv64_w4_s3"]})");
  EXPECT_TRUE(o.prefix_blind);
  EXPECT_EQ(o.row_tiles, std::vector<int>{16});
  ASSERT_EQ(o.candidates.size(), 1u);
  EXPECT_EQ(o.candidates[0].to_string(), "mma_q64_kv64_w4_s3");
  EXPECT_TRUE(o.allow_absorb && o.allow_split && o.head_packs);
  EXPECT_EQ(o.waves, 8);
  EXPECT_EQ(o.cost_model.coefficients(), GpuCoefficients{});
  EXPECT_EQ(planner_options_from_json(R"({"coefficients": null})").cost_model.coefficients(),
            GpuCoefficients{});
  const std::string coefficients = tuned().to_json();
  const PlannerOptions c = planner_options_from_json(
      R"({"format": "canopy-planner-options/1", "coefficients": )" + coefficients + "}");
  EXPECT_EQ(c.cost_model.coefficients(), tuned());
}

TEST(PlannerOptionsJson, BadInputNamesTheKeyAndValue) {
  const auto bad = [](const std::string& text, std::initializer_list<std::string> needles) {
    return expect_error([&] { planner_options_from_json(text); }, ErrorKind::kInvalidArgument,
                        needles);
  };
  EXPECT_EQ(bad("{not json", {"planner options: not valid JSON"}), "");
  EXPECT_EQ(bad("", {"planner options: not valid JSON"}), "");
  EXPECT_EQ(bad("[1, 2]", {"planner options: expected a JSON object, got [1,2]"}), "");
  EXPECT_EQ(bad(R"({"wave": 2})", {"unknown key 'wave'", "known: format, candidates", "waves"}),
            "");
  EXPECT_EQ(bad(R"({"format": "canopy-plan/1"})",
                {"'format' must be \"canopy-planner-options/1\", got \"canopy-plan/1\""}),
            "");
  EXPECT_EQ(bad(R"({"allow_absorb": 1})", {"'allow_absorb' must be true or false, got 1"}), "");
  EXPECT_EQ(bad(R"({"allow_split": "no"})", {"'allow_split' must be true or false, got \"no\""}),
            "");
  EXPECT_EQ(bad(R"({"head_packs": null})", {"'head_packs' must be true or false, got null"}), "");
  EXPECT_EQ(bad(R"({"prefix_blind": []})", {"'prefix_blind' must be true or false, got []"}), "");
  EXPECT_EQ(bad(R"({"fuse_merge": 0})", {"'fuse_merge' must be true or false, got 0"}), "");
  EXPECT_EQ(bad(R"({"waves": 0})", {"'waves' must be an integer in [1, 1024], got 0"}), "");
  EXPECT_EQ(bad(R"({"waves": 2.5})", {"'waves' must be an integer in [1, 1024], got 2.5"}), "");
  EXPECT_EQ(bad(R"({"waves": 1e300})", {"'waves' must be an integer in [1, 1024]"}), "");
  EXPECT_EQ(bad(R"({"waves": 18446744073709551615})",
                {"'waves' must be an integer in [1, 1024], got 18446744073709551615"}),
            "");
  EXPECT_EQ(bad(R"({"min_split_tokens": -1})",
                {"'min_split_tokens' must be an integer in [1, 1048576], got -1"}),
            "");
  EXPECT_EQ(bad(R"({"min_split_tokens": "256"})", {"'min_split_tokens' must be an integer"}), "");
  EXPECT_EQ(bad(R"({"row_tiles": 16})", {"'row_tiles' must be an array of integers, got 16"}), "");
  EXPECT_EQ(
      bad(R"({"row_tiles": [16, 0]})", {"row_tiles[1] must be an integer in [1, 4096], got 0"}),
      "");
  EXPECT_EQ(bad(R"({"row_tiles": [16, "64"]})", {"row_tiles[1] must be an integer", "\"64\""}), "");
  EXPECT_EQ(bad(R"({"candidates": "mma_q64_kv64_w4_s3"})",
                {"'candidates' must be an array of kernel config strings"}),
            "");
  EXPECT_EQ(bad(R"({"candidates": [64]})",
                {"candidates[0] must be a kernel config string such as \"mma_q64_kv64_w4_s3\", "
                 "got 64"}),
            "");
  EXPECT_EQ(bad(R"({"candidates": ["mma_q64_kv64_w4_s3", "mma_q64_kv64"]})",
                {"candidates[1]: kernel config 'mma_q64_kv64' is not of the form"}),
            "");
  EXPECT_EQ(bad(R"({"candidates": ["mma_q064_kv64_w4_s3"]})",
                {"candidates[0]", "did you mean 'mma_q64_kv64_w4_s3'"}),
            "");
  EXPECT_EQ(bad(R"({"coefficients": "{}"})",
                {"'coefficients' must be null (the defaults) or a canopy-coefficients/1 object, "
                 "got \"{}\""}),
            "");
  EXPECT_EQ(bad(R"({"coefficients": {"num_sms": 7}})",
                {"planner options: 'coefficients': not a canopy-coefficients/1 document"}),
            "");
  nlohmann::json j = nlohmann::json::parse(tuned().to_json());
  j["num_sms"] = 0;
  EXPECT_EQ(bad(R"({"coefficients": )" + j.dump() + "}",
                {"'coefficients': coefficients JSON: num_sms must be > 0, got 0"}),
            "");
  // Long values are cut in the message.
  EXPECT_EQ(bad(R"({"waves": ")" + std::string(200, 'x') + "\"}", {"xxxx..."}), "");
}

}  // namespace
}  // namespace canopy
