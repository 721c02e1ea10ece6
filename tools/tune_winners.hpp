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
#include "canopy/plan.hpp"
#include "canopy/planner.hpp"
#include "canopy/spec.hpp"
#include "canopy/tuning.hpp"

namespace canopy::tune {

struct Alternative {
  std::string name;  ///< e.g. "no-split"
  PlannerOptions options;
  /// Priced with the device's built-in coefficients instead of the
  /// database's ("builtin-defaults": what the planner did before tuning).
  bool builtin_coefficients = false;
};

/// What canopy-tune times for a batch: the defaults first, then the built-in
/// defaults (the same options priced with the built-in coefficients: a
/// database must never make a class slower than no database), then the
/// choices the cost model is least sure of, one change each (no splitting,
/// at most two waves, no absorbing, no head packs), and on sm_90 the wgmma
/// kernels, the fused persistent launches, and both. Options without
/// coefficients: the database's (or the built-in ones) are added when they
/// plan.
inline std::vector<Alternative> planner_alternatives(const AttentionSpec& spec, const Arch& arch);

/// Measured step times per shape class and alternative, summed over the
/// class's batches; the winners from them.
class WinnerBook {
 public:
  void add(const std::string& shape_class, const Alternative& alternative, double us);
  /// Per class: the baseline is the faster of "defaults" and, when timed,
  /// "builtin-defaults" (the same options under the built-in coefficients:
  /// either is the planner's default plan, so the faster one is taken with no
  /// margin, and a database never makes a class slower than no database).
  /// Another alternative wins when it beats the baseline by more than
  /// `min_gain` (a fraction, e.g. 0.03: timing noise must not move a class
  /// off its defaults). Only alternatives timed on every batch of the class
  /// compete; a class whose defaults were not timed on all of them is left
  /// out.
  std::map<std::string, ShapeWinner> winners(double min_gain) const;
  /// The classes' lines for the tool's summary: class, batches, defaults,
  /// winner and gain.
  std::string summary(const std::map<std::string, ShapeWinner>& winners) const;

 private:
  struct Timed {
    std::string name;
    std::string options_json;
    bool builtin_coefficients = false;
    double total_us = 0;
    int batches = 0;
  };
  std::map<std::string, std::map<std::string, Timed>> timed_;  // class -> alternative
  std::map<std::string, int> batches_;                         // class -> batches timed
};

inline std::vector<Alternative> planner_alternatives(const AttentionSpec& spec, const Arch& arch) {
  std::vector<Alternative> out;
  out.push_back({"defaults", {}});
  out.push_back({"builtin-defaults", {}, true});
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

/// Whether two plans do the same work (configs, items in order, launches,
/// tables, merge), whatever the coefficients that priced them predicted.
inline bool same_work(Plan a, Plan b) {
  for (Plan* p : {&a, &b}) {
    p->predicted_us = 0;
    p->sm_load_us.clear();
    for (WorkItem& item : p->items) item.predicted_us = 0;
  }
  return plan_to_json(a, -1) == plan_to_json(b, -1);
}

inline void WinnerBook::add(const std::string& shape_class, const Alternative& alternative,
                            double us) {
  Timed& t = timed_[shape_class][alternative.name];
  if (t.batches == 0) {
    t.name = alternative.name;
    t.options_json = planner_options_to_json(alternative.options);
    t.builtin_coefficients = alternative.builtin_coefficients;
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
    const Timed* base = &defaults->second;
    if (const auto builtin = alternatives.find("builtin-defaults");
        builtin != alternatives.end() && builtin->second.batches == batches &&
        builtin->second.total_us < base->total_us) {
      base = &builtin->second;
    }
    const Timed* best = base;
    for (const auto& [name, t] : alternatives) {
      if (t.batches == batches && t.total_us < best->total_us) best = &t;
    }
    // Within noise of the baseline: keep the baseline.
    if (best->total_us >= base->total_us * (1 - min_gain)) best = base;
    out[cls] = {best->options_json, best->total_us / batches, defaults->second.total_us / batches,
                best->builtin_coefficients, best->name};
  }
  return out;
}

inline std::string WinnerBook::summary(const std::map<std::string, ShapeWinner>& winners) const {
  std::string s;
  for (const auto& [cls, w] : winners) {
    s += fmt::format("  {}  ({} batches): defaults {:.1f} us, {} {:.1f} us ({:+.1f}%)\n", cls,
                     batches_.at(cls), w.default_us, w.alternative, w.measured_us,
                     100 * (w.measured_us / w.default_us - 1));
  }
  return s;
}

}  // namespace canopy::tune
