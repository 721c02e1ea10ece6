// canopy-tune --workloads: the planner's alternatives for a batch, and the
// winner per shape class from their measured times (docs/tuning.md, "Shape
// classes and recorded winners"). Header-only: CMake builds each tool from
// exactly tools/<name>.cpp; the timing itself is in tune_measure.hpp.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "canopy/arch.hpp"
#include "canopy/planner.hpp"
#include "canopy/spec.hpp"
#include "canopy/tuning.hpp"

namespace canopy::tune {

struct Alternative {
  std::string name;  ///< e.g. "no-split"
  PlannerOptions options;
};

/// What canopy-tune times for a batch: the defaults first, then the
/// choices the cost model is least sure of, one change each (no splitting,
/// at most two waves, no absorbing, no head packs), and on sm_90 the wgmma
/// kernels, the fused persistent launches, and both. Options without
/// coefficients: the database's are added when they plan.
inline std::vector<Alternative> planner_alternatives(const AttentionSpec& spec, const Arch& arch);

/// Measured step times per shape class and alternative, summed over the
/// class's batches; the winners from them.
class WinnerBook {
 public:
  void add(const std::string& shape_class, const Alternative& alternative, double us);
  /// Per class: the alternative with the least total time, when it beats the
  /// defaults' ("defaults") by more than `min_gain` (a fraction, e.g. 0.03:
  /// timing noise must not move a class off the defaults); else the
  /// defaults. Only alternatives timed on every batch of the class compete;
  /// a class whose defaults were not timed on all of them is left out.
  std::map<std::string, ShapeWinner> winners(double min_gain) const;
  /// The classes' lines for the tool's summary: class, batches, defaults,
  /// winner and gain.
  std::string summary(const std::map<std::string, ShapeWinner>& winners) const;

 private:
  struct Timed {
    std::string name;
    std::string options_json;
    double total_us = 0;
    int batches = 0;
  };
  std::map<std::string, std::map<std::string, Timed>> timed_;  // class -> alternative
  std::map<std::string, int> batches_;                         // class -> batches timed
};

inline std::vector<Alternative> planner_alternatives(const AttentionSpec& spec, const Arch& arch) {
  std::vector<Alternative> out;
  out.push_back({"defaults", {}});
  PlannerOptions o;
  o.allow_split = false;
  out.push_back({"no-split", o});
  o = {};
  o.waves = 2;
  out.push_back({"waves-2", o});
  o = {};
  o.allow_absorb = false;
  out.push_back({"no-absorb", o});
  o = {};
  o.head_packs = false;
  out.push_back({"no-head-packs", o});
  if (arch.major >= 9) {
    const std::vector<KernelConfig> hopper = hopper_kernel_configs(spec);
    if (hopper.size() > default_kernel_configs(spec).size()) {
      o = {};
      o.candidates = hopper;
      out.push_back({"wgmma", o});
      o.fuse_merge = true;
      out.push_back({"wgmma-fused", o});
    }
    o = {};
    o.fuse_merge = true;
    out.push_back({"fused", o});
  }
  return out;
}

inline void WinnerBook::add(const std::string& shape_class, const Alternative& alternative,
                            double us) {
  Timed& t = timed_[shape_class][alternative.name];
  if (t.batches == 0) {
    t.name = alternative.name;
    t.options_json = planner_options_to_json(alternative.options);
  }
  t.total_us += us;
  ++t.batches;
  batches_[shape_class] = std::max(batches_[shape_class], t.batches);
}

inline std::map<std::string, ShapeWinner> WinnerBook::winners(double min_gain) const {
  std::map<std::string, ShapeWinner> out;
  for (const auto& [cls, alternatives] : timed_) {
    const int batches = batches_.at(cls);
    const auto defaults = alternatives.find("defaults");
    if (defaults == alternatives.end() || defaults->second.batches != batches) continue;
    const Timed* best = &defaults->second;
    for (const auto& [name, t] : alternatives) {
      if (t.batches == batches && t.total_us < best->total_us) best = &t;
    }
    // Within noise of the defaults: keep the defaults.
    if (best->total_us >= defaults->second.total_us * (1 - min_gain)) best = &defaults->second;
    out[cls] = {best->options_json, best->total_us / batches, defaults->second.total_us / batches};
  }
  return out;
}

inline std::string WinnerBook::summary(const std::map<std::string, ShapeWinner>& winners) const {
  std::string s;
  for (const auto& [cls, w] : winners) {
    std::string name = "defaults";
    for (const auto& [n, t] : timed_.at(cls)) {
      if (t.options_json == w.options_json) name = n;
    }
    s += fmt::format("  {}  ({} batches): defaults {:.1f} us, {} {:.1f} us ({:+.1f}%)\n", cls,
                     batches_.at(cls), w.default_us, name, w.measured_us,
                     100 * (w.measured_us / w.default_us - 1));
  }
  return s;
}

}  // namespace canopy::tune
