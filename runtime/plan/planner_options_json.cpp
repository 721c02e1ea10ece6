// PlannerOptions <-> JSON ("canopy-planner-options/1"): the one form every
// front end (canopy-demo/canopy-inspect flags, Python, the benchmark's C API)
// parses options through, so a key means the same and is checked the same
// everywhere. The coefficients keep their own form (autotune/coefficients_json.cpp).
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "canopy/cost_model.hpp"
#include "canopy/error.hpp"
#include "canopy/kernel_spec.hpp"
#include "canopy/planner.hpp"

namespace canopy {
namespace {

using nlohmann::json;

constexpr const char* kFormat = "canopy-planner-options/1";

// Bounds of the integer fields: wide enough for any sweep, narrow enough that
// the planner's loops (waves doubles up to the bound) stay sane.
constexpr std::int64_t kMaxWaves = 1024;
constexpr std::int64_t kMaxMinSplitTokens = std::int64_t{1} << 20;
constexpr std::int64_t kMaxRowTile = 4096;

constexpr std::array<const char*, 11> kKeys = {
    "format",           "candidates", "row_tiles",    "allow_absorb", "allow_split", "waves",
    "min_split_tokens", "head_packs", "prefix_blind", "fuse_merge",   "coefficients"};

[[noreturn]] void fail(const std::string& message) {
  throw Error(ErrorKind::kInvalidArgument, "planner options: " + message);
}

/// A value as the message shows it: compact JSON, long ones cut.
std::string shown(const json& value) {
  std::string text = value.dump();
  if (text.size() > 60) text = text.substr(0, 60) + "...";
  return text;
}

bool read_bool(const json& value, const char* key) {
  if (!value.is_boolean())
    fail(fmt::format("'{}' must be true or false, got {}", key, shown(value)));
  return value.get<bool>();
}

/// An integer in [lo, hi]; `what` names the key or element ("row_tiles[2]").
int read_int(const json& value, const std::string& what, std::int64_t lo, std::int64_t hi) {
  bool ok = false;
  std::int64_t v = 0;
  if (value.is_number_unsigned()) {
    const std::uint64_t u = value.get<std::uint64_t>();
    ok = u <= static_cast<std::uint64_t>(hi);
    v = ok ? static_cast<std::int64_t>(u) : 0;
  } else if (value.is_number_integer()) {
    v = value.get<std::int64_t>();
    ok = true;
  }
  if (!ok || v < lo || v > hi) {
    fail(fmt::format("{} must be an integer in [{}, {}], got {}", what, lo, hi, shown(value)));
  }
  return static_cast<int>(v);
}

const json& read_array(const json& value, const char* key, const char* of) {
  if (!value.is_array())
    fail(fmt::format("'{}' must be an array of {}, got {}", key, of, shown(value)));
  return value;
}

std::vector<KernelConfig> read_candidates(const json& value) {
  std::vector<KernelConfig> configs;
  const json& list = read_array(value, "candidates", "kernel config strings");
  for (std::size_t i = 0; i < list.size(); ++i) {
    if (!list[i].is_string()) {
      fail(
          fmt::format("candidates[{}] must be a kernel config string such as "
                      "\"mma_q64_kv64_w4_s3\", got {}",
                      i, shown(list[i])));
    }
    try {
      configs.push_back(KernelConfig::parse(list[i].get<std::string>()));
    } catch (const Error& e) {
      fail(fmt::format("candidates[{}]: {}", i, e.what()));
    }
  }
  return configs;
}

std::vector<int> read_row_tiles(const json& value) {
  std::vector<int> tiles;
  const json& list = read_array(value, "row_tiles", "integers");
  for (std::size_t i = 0; i < list.size(); ++i) {
    tiles.push_back(read_int(list[i], fmt::format("row_tiles[{}]", i), 1, kMaxRowTile));
  }
  return tiles;
}

CostModel read_coefficients(const json& value) {
  if (value.is_null()) return CostModel();
  if (!value.is_object()) {
    fail(
        fmt::format("'coefficients' must be null (the defaults) or a canopy-coefficients/1 "
                    "object, got {}",
                    shown(value)));
  }
  try {
    return CostModel(GpuCoefficients::from_json(value.dump()));
  } catch (const Error& e) {
    fail(fmt::format("'coefficients': {}", e.what()));
  }
}

}  // namespace

bool operator==(const PlannerOptions& a, const PlannerOptions& b) {
  return a.cost_model.coefficients() == b.cost_model.coefficients() &&
         a.candidates == b.candidates && a.row_tiles == b.row_tiles &&
         a.allow_absorb == b.allow_absorb && a.allow_split == b.allow_split && a.waves == b.waves &&
         a.min_split_tokens == b.min_split_tokens && a.head_packs == b.head_packs &&
         a.prefix_blind == b.prefix_blind && a.fuse_merge == b.fuse_merge;
}

std::string planner_options_to_json(const PlannerOptions& options, int indent) {
  // Keys in the order a reader expects them, not sorted.
  using ordered = nlohmann::ordered_json;
  ordered candidates = ordered::array();
  for (const KernelConfig& c : options.candidates) candidates.push_back(c.to_string());
  const GpuCoefficients& c = options.cost_model.coefficients();
  ordered j = {
      {"format", kFormat},
      {"candidates", std::move(candidates)},
      {"row_tiles", options.row_tiles},
      {"allow_absorb", options.allow_absorb},
      {"allow_split", options.allow_split},
      {"waves", options.waves},
      {"min_split_tokens", options.min_split_tokens},
      {"head_packs", options.head_packs},
      {"prefix_blind", options.prefix_blind},
      {"fuse_merge", options.fuse_merge},
      {"coefficients", c == GpuCoefficients{} ? ordered(nullptr) : ordered::parse(c.to_json(-1))}};
  return j.dump(indent);
}

PlannerOptions planner_options_from_json(std::string_view text) {
  json j;
  try {
    j = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail(fmt::format("not valid JSON ({})", e.what()));
  }
  if (!j.is_object()) fail(fmt::format("expected a JSON object, got {}", shown(j)));
  for (const auto& [key, value] : j.items()) {
    if (std::find(kKeys.begin(), kKeys.end(), key) == kKeys.end()) {
      std::string known;
      for (const char* k : kKeys) known += fmt::format("{}{}", known.empty() ? "" : ", ", k);
      fail(fmt::format("unknown key '{}' (known: {})", key, known));
    }
  }
  PlannerOptions o;
  if (const auto it = j.find("format"); it != j.end() && *it != kFormat) {
    fail(fmt::format("'format' must be \"{}\", got {}", kFormat, shown(*it)));
  }
  if (const auto it = j.find("candidates"); it != j.end()) o.candidates = read_candidates(*it);
  if (const auto it = j.find("row_tiles"); it != j.end()) o.row_tiles = read_row_tiles(*it);
  if (const auto it = j.find("allow_absorb"); it != j.end()) {
    o.allow_absorb = read_bool(*it, "allow_absorb");
  }
  if (const auto it = j.find("allow_split"); it != j.end()) {
    o.allow_split = read_bool(*it, "allow_split");
  }
  if (const auto it = j.find("waves"); it != j.end())
    o.waves = read_int(*it, "'waves'", 1, kMaxWaves);
  if (const auto it = j.find("min_split_tokens"); it != j.end()) {
    o.min_split_tokens = read_int(*it, "'min_split_tokens'", 1, kMaxMinSplitTokens);
  }
  if (const auto it = j.find("head_packs"); it != j.end())
    o.head_packs = read_bool(*it, "head_packs");
  if (const auto it = j.find("fuse_merge"); it != j.end())
    o.fuse_merge = read_bool(*it, "fuse_merge");
  if (const auto it = j.find("prefix_blind"); it != j.end()) {
    o.prefix_blind = read_bool(*it, "prefix_blind");
  }
  if (const auto it = j.find("coefficients"); it != j.end()) o.cost_model = read_coefficients(*it);
  return o;
}

}  // namespace canopy
