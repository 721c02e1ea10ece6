// A pass's setup: the candidate kernels (checked against the arch and shared
// memory), their variants (row tiles, head packs) and the step pricer over
// their block slots (docs/planner.md, 2a and 2c).
#include "runtime/plan/planner_setup.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <string>
#include <vector>

#include "canopy/error.hpp"
#include "canopy/kernel_spec.hpp"
#include "families/kernel_families.hpp"
#include "families/occupancy.hpp"
#include "runtime/plan/planner_core.hpp"

namespace canopy::planning {

bool PlannerSetup::matches(const AttentionSpec& s, const PlannerOptions& o) const {
  return valid && spec_key == s && candidates == o.candidates && row_tiles == o.row_tiles &&
         head_packs == o.head_packs && gpu == o.cost_model.coefficients();
}

// The candidate kernels, their variants and the block slots: they depend on
// the spec and the options alone, so a scratch keeps them for the next pass
// with the same ones (make_plan plans twice per call, a server every step).
void PlannerSetup::build(const AttentionSpec& spec, const PlannerOptions& opt) {
  valid = false;
  const CostModel& model = opt.cost_model;
  const Arch arch = model.coefficients().arch;
  configs.clear();
  if (opt.candidates.empty()) {
    // Defaults the device cannot run or take (shared memory) are dropped.
    configs = runnable_kernel_configs(spec, default_kernel_configs(spec), arch);
    std::erase_if(configs, [&](const KernelConfig& c) { return !model.fits(spec, c); });
  } else {
    // A malformed candidate is an error; one that is well formed but needs
    // more shared memory than this spec and device allow (a large head dim)
    // is skipped, as long as another candidate remains.
    std::string skipped;
    for (const KernelConfig& c : opt.candidates) {
      const KernelSpec k = partial_kernel_spec(spec, c, arch);
      const families::Verdict v = families::can_implement(k);
      if (v.support != families::Support::kSharedMemory) families::validate_kernel_spec(k);
      if (v.ok() && model.fits(spec, c)) {
        configs.push_back(c);
      } else {
        skipped += fmt::format(" {} ({} bytes)", c.to_string(), CostModel::smem_bytes(spec, c));
      }
    }
    CANOPY_CHECK(!configs.empty(), ErrorKind::kNotSupported,
                 "no candidate fits {} on {} (max shared memory {} bytes):{}", spec.to_string(),
                 arch.to_string(), model.coefficients().max_smem_per_block, skipped);
  }
  CANOPY_CHECK(!configs.empty(), ErrorKind::kNotSupported,
               "no kernel configuration fits {} on {} (max shared memory {} bytes)",
               spec.to_string(), arch.to_string(), model.coefficients().max_smem_per_block);
  kernels.clear();
  variants.clear();
  unpacked.clear();
  for (int c = 0; c < static_cast<int>(configs.size()); ++c) {
    kernels.push_back(model.coefficients().kernel(configs[c]));
    for (int row_tile :
         families::family_info(configs[c].family).row_tiles(spec.head_dim, configs[c])) {
      const bool allowed =
          opt.row_tiles.empty() ||
          std::find(opt.row_tiles.begin(), opt.row_tiles.end(), row_tile) != opt.row_tiles.end();
      if (!allowed) continue;
      const int single = static_cast<int>(variants.size());
      variants.push_back({c, row_tile, 1});
      unpacked.push_back(single);
      const int pack =
          std::min(families::family_info(configs[c].family).head_pack(spec, configs[c], row_tile),
                   spec.num_kv_heads);
      if (pack > 1 && opt.head_packs) {
        variants.push_back({c, row_tile, pack});
        unpacked.push_back(single);
      }
    }
  }
  CANOPY_CHECK(!variants.empty(), ErrorKind::kInvalidArgument,
               "no candidate kernel runs any of the requested row tiles");
  // Items are placed on block slots, the pricer's slots per SM: an SM
  // reaches its bandwidth and tensor rate only with every slot busy.
  pricer = autotune::StepPricer(spec, model.coefficients(), configs);
  const int per_sm = pricer.slots_per_sm();
  const int slots = pricer.slots();
  slot_sm.resize(slots);
  for (int i = 0; i < slots; ++i) slot_sm[i] = i / per_sm;
  spec_key = spec;
  candidates = opt.candidates;
  row_tiles = opt.row_tiles;
  head_packs = opt.head_packs;
  gpu = model.coefficients();
  valid = true;
}

const PlannerSetup& PlannerSetup::ready(const AttentionSpec& spec, const PlannerOptions& options,
                                        PlannerSetup& setup) {
  if (!setup.matches(spec, options)) setup.build(spec, options);
  return setup;
}

Planner::Planner(const AttentionSpec& spec, const PrefixTree& tree, const PlannerOptions& options,
                 PlannerScratch& scratch)
    : spec_(spec),
      tree_(tree),
      opt_(options),
      model_(options.cost_model),
      s_(scratch),
      setup_(PlannerSetup::ready(spec, options, scratch.setup)),
      configs_(setup_.configs),
      coefficients_(setup_.kernels),
      variants_(setup_.variants),
      unpacked_(setup_.unpacked),
      pricer_(setup_.pricer),
      slots_(pricer_.slots()),
      group_(spec.group_size()) {
  s_.memo.new_pass();
  // With several kernels, each answer also keeps the first kernel's best
  // alone: 2g's second pass asks exactly that (borrow_costs).
  if (configs_.size() > 1) {
    while (prefix_variants_ < static_cast<int>(variants_.size()) &&
           variants_[prefix_variants_].config == 0) {
      ++prefix_variants_;
    }
  }
}

}  // namespace canopy::planning
