// canopy.PlannerOptions: canopy::PlannerOptions with kernel configs spelled as
// strings ("mma_q64_kv64_w4_s3") and cost-model coefficients as JSON.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <new>
#include <optional>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "canopy/cost_model.hpp"
#include "canopy/planner.hpp"

namespace nb = nanobind;

namespace canopy::python {
namespace {

constexpr const char* kOptionsDoc =
    R"(How the planner may plan (canopy::PlannerOptions; docs/planner.md).

Args:
  candidates: kernel configs the planner may use, e.g. ["mma_q64_kv64_w4_s3",
    "mma_q128_kv32_w4_s3"]; empty: the default configs for the spec.
  row_tiles: row tiles items may get (empty: every tile the candidates run).
  allow_absorb: let children absorb a parent's KV (profit rule).
  allow_split: split long KV ranges to fill the GPU.
  waves: splitting tries 1, 2, 4 .. up to this many items per SM.
  min_split_tokens: never split a range into pieces shorter than this.
  head_packs: let narrow items take several KV heads per block.
  prefix_blind: plan every request alone, as if nothing were shared (the ablation).
  coefficients: cost-model coefficients as JSON (GpuCoefficients, as canopy-tune
    writes them); None: the device's own (GPU plans) or H100 datasheet defaults
    (CPU plans).)";

std::vector<std::string> candidate_names(const PlannerOptions& o) {
  std::vector<std::string> names;
  for (const KernelConfig& c : o.candidates) names.push_back(c.to_string());
  return names;
}

void set_candidates(PlannerOptions& o, const std::vector<std::string>& names) {
  std::vector<KernelConfig> configs;
  for (const std::string& n : names) configs.push_back(KernelConfig::parse(n));
  o.candidates = std::move(configs);
}

std::optional<std::string> coefficients_json(const PlannerOptions& o) {
  if (o.cost_model.coefficients() == GpuCoefficients{}) return std::nullopt;
  return o.cost_model.coefficients().to_json();
}

void set_coefficients(PlannerOptions& o, const std::optional<std::string>& json) {
  o.cost_model = json ? CostModel(GpuCoefficients::from_json(*json)) : CostModel();
}

void init_options(PlannerOptions* self, const std::vector<std::string>& candidates,
                  const std::vector<int>& row_tiles, bool allow_absorb, bool allow_split, int waves,
                  int min_split_tokens, bool head_packs, bool prefix_blind,
                  const std::optional<std::string>& coefficients) {
  PlannerOptions o;
  set_candidates(o, candidates);
  o.row_tiles = row_tiles;
  o.allow_absorb = allow_absorb;
  o.allow_split = allow_split;
  o.waves = waves;
  o.min_split_tokens = min_split_tokens;
  o.head_packs = head_packs;
  o.prefix_blind = prefix_blind;
  set_coefficients(o, coefficients);
  new (self) PlannerOptions(std::move(o));
}

}  // namespace

void bind_options(nb::module_& m) {
  const PlannerOptions d;
  nb::class_<PlannerOptions>(m, "PlannerOptions", kOptionsDoc)
      .def("__init__", &init_options, nb::kw_only(),
           nb::arg("candidates") = std::vector<std::string>{},
           nb::arg("row_tiles") = std::vector<int>{}, nb::arg("allow_absorb") = d.allow_absorb,
           nb::arg("allow_split") = d.allow_split, nb::arg("waves") = d.waves,
           nb::arg("min_split_tokens") = d.min_split_tokens, nb::arg("head_packs") = d.head_packs,
           nb::arg("prefix_blind") = d.prefix_blind, nb::arg("coefficients").none() = nb::none())
      .def_prop_rw("candidates", &candidate_names, &set_candidates,
                   "Kernel config names; [] means the defaults for the spec.")
      .def_rw("row_tiles", &PlannerOptions::row_tiles)
      .def_rw("allow_absorb", &PlannerOptions::allow_absorb)
      .def_rw("allow_split", &PlannerOptions::allow_split)
      .def_rw("waves", &PlannerOptions::waves)
      .def_rw("min_split_tokens", &PlannerOptions::min_split_tokens)
      .def_rw("head_packs", &PlannerOptions::head_packs)
      .def_rw("prefix_blind", &PlannerOptions::prefix_blind)
      .def_prop_rw("coefficients", &coefficients_json, &set_coefficients,
                   "GpuCoefficients JSON, or None for the defaults.", nb::arg().none());
  m.def(
      "default_coefficients", [] { return GpuCoefficients{}.to_json(); },
      "The built-in cost-model coefficients (H100 SXM datasheet values) as JSON: a "
      "starting point for PlannerOptions(coefficients=...).");
}

}  // namespace canopy::python
