// canopy.PlannerOptions: canopy::PlannerOptions with kernel configs spelled as
// strings ("mma_q64_kv64_w4_s3") and cost-model coefficients as JSON. Every
// way in (keywords, attribute writes, a dict, JSON) goes through the library's
// one parser, canopy::planner_options_from_json, so values are checked and
// errors worded as for the tools and the benchmark.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "canopy/cost_model.hpp"
#include "canopy/error.hpp"
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
  fuse_merge: persistent launches with the merge fused in (issue 14; off by
    default until validated on a GPU: one block per item and a merge launch).
  coefficients: cost-model coefficients as JSON (GpuCoefficients, as canopy-tune
    writes them); None: the device's own (GPU plans) or H100 datasheet defaults
    (CPU plans).

The same options as one JSON object (canopy-planner-options/1, the form the
tools' --options and the benchmark take): PlannerOptions.from_dict(d) /
from_json(text), options.to_dict() / to_json(); canopy.plan(options=) takes
such a dict too. Values are checked (InvalidArgumentError naming the key).)";

/// `o` through the library's JSON form: the one place options are checked.
PlannerOptions validated(const PlannerOptions& o) {
  return planner_options_from_json(planner_options_to_json(o));
}

/// A setter that checks the whole object after writing one field.
template <class T>
auto checked_setter(T PlannerOptions::*field) {
  return [field](PlannerOptions& o, const T& value) {
    PlannerOptions copy = o;
    copy.*field = value;
    o = validated(copy);
  };
}

std::vector<std::string> candidate_names(const PlannerOptions& o) {
  std::vector<std::string> names;
  for (const KernelConfig& c : o.candidates) names.push_back(c.to_string());
  return names;
}

void set_candidates(PlannerOptions& o, const std::vector<std::string>& names) {
  std::vector<KernelConfig> configs;
  for (const std::string& n : names) configs.push_back(KernelConfig::parse(n));
  PlannerOptions copy = o;
  copy.candidates = std::move(configs);
  o = validated(copy);
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
                  int min_split_tokens, bool head_packs, bool prefix_blind, bool fuse_merge,
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
  o.fuse_merge = fuse_merge;
  set_coefficients(o, coefficients);
  new (self) PlannerOptions(validated(o));
}

/// json.dumps(d) through the library's parser.
PlannerOptions from_dict(nb::handle d) {
  if (!nb::isinstance<nb::dict>(d)) {
    throw Error(ErrorKind::kInvalidArgument, "planner options: expected a dict, got " +
                                                 nb::cast<std::string>(nb::type_name(d.type())));
  }
  std::string text;
  try {
    text = nb::cast<std::string>(nb::module_::import_("json").attr("dumps")(d));
  } catch (const nb::python_error& e) {
    throw Error(ErrorKind::kInvalidArgument,
                std::string("planner options: the dict is not JSON: ") + e.what());
  }
  return planner_options_from_json(text);
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
           nb::arg("prefix_blind") = d.prefix_blind, nb::arg("fuse_merge") = d.fuse_merge,
           nb::arg("coefficients").none() = nb::none())
      .def_prop_rw("candidates", &candidate_names, &set_candidates,
                   "Kernel config names; [] means the defaults for the spec.")
      .def_prop_rw(
          "row_tiles", [](const PlannerOptions& o) { return o.row_tiles; },
          checked_setter(&PlannerOptions::row_tiles))
      .def_prop_rw(
          "allow_absorb", [](const PlannerOptions& o) { return o.allow_absorb; },
          checked_setter(&PlannerOptions::allow_absorb))
      .def_prop_rw(
          "allow_split", [](const PlannerOptions& o) { return o.allow_split; },
          checked_setter(&PlannerOptions::allow_split))
      .def_prop_rw(
          "waves", [](const PlannerOptions& o) { return o.waves; },
          checked_setter(&PlannerOptions::waves))
      .def_prop_rw(
          "min_split_tokens", [](const PlannerOptions& o) { return o.min_split_tokens; },
          checked_setter(&PlannerOptions::min_split_tokens))
      .def_prop_rw(
          "head_packs", [](const PlannerOptions& o) { return o.head_packs; },
          checked_setter(&PlannerOptions::head_packs))
      .def_prop_rw(
          "prefix_blind", [](const PlannerOptions& o) { return o.prefix_blind; },
          checked_setter(&PlannerOptions::prefix_blind))
      .def_prop_rw(
          "fuse_merge", [](const PlannerOptions& o) { return o.fuse_merge; },
          checked_setter(&PlannerOptions::fuse_merge))
      .def_prop_rw("coefficients", &coefficients_json, &set_coefficients,
                   "GpuCoefficients JSON, or None for the defaults.", nb::arg().none())
      .def_static(
          "from_json", [](const std::string& text) { return planner_options_from_json(text); },
          nb::arg("text"),
          "Options from a canopy-planner-options/1 JSON object (keys left out keep their "
          "defaults; unknown keys and bad values raise InvalidArgumentError).")
      .def(
          "to_json",
          [](const PlannerOptions& o, std::optional<int> indent) {
            return planner_options_to_json(o, indent.value_or(-1));
          },
          nb::arg("indent").none() = nb::none(),
          "Every field as a canopy-planner-options/1 JSON object (coefficients null for the "
          "defaults).")
      .def_static("from_dict", &from_dict, nb::arg("options"),
                  "Options from a dict with the JSON form's keys, e.g. {\"prefix_blind\": True, "
                  "\"candidates\": [\"mma_q64_kv64_w4_s3\"]} (coefficients: a dict or None).")
      .def(
          "to_dict",
          [](const PlannerOptions& o) {
            return nb::module_::import_("json").attr("loads")(planner_options_to_json(o));
          },
          "Every field as a dict (to_json, parsed); from_dict(o.to_dict()) == o.")
      .def(
          "__eq__",
          [](const PlannerOptions& a, nb::handle b) {
            return nb::isinstance<PlannerOptions>(b) && a == nb::cast<const PlannerOptions&>(b);
          },
          nb::arg("other").none())
      .def("__repr__", [](const PlannerOptions& o) {
        const nb::str text(planner_options_to_json(o).c_str());
        return "canopy.PlannerOptions.from_json(" + nb::cast<std::string>(nb::repr(text)) + ")";
      });
  m.def(
      "default_coefficients", [] { return GpuCoefficients{}.to_json(); },
      "The built-in cost-model coefficients (H100 SXM datasheet values) as JSON: a "
      "starting point for PlannerOptions(coefficients=...).");
}

}  // namespace canopy::python
