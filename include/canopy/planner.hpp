// The planner: PrefixTree + AttentionSpec -> Plan. Documented in docs/planner.md.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "canopy/batch.hpp"
#include "canopy/cost_model.hpp"
#include "canopy/plan.hpp"
#include "canopy/tree.hpp"

namespace canopy {

struct PlannerOptions {
  CostModel cost_model;  ///< also gives num_sms and arch
  /// Kernels the planner may use; empty: default_kernel_configs(spec). A
  /// malformed config throws; one needing more shared memory than the spec and
  /// device allow is skipped while another remains.
  std::vector<KernelConfig> candidates;
  /// Row tiles the planner may give items (empty: every tile the candidates
  /// run). For sweeps and tests that pin one warp arrangement.
  std::vector<int> row_tiles;
  bool allow_absorb = true;  ///< let children absorb a parent's KV (profit rule)
  bool allow_split = true;   ///< split long KV ranges to fill the GPU
  int waves = 8;  ///< splitting tries 1, 2, 4 .. up to this many items per SM and keeps the fastest
  int min_split_tokens = 256;  ///< never split a range into pieces shorter than this
  /// Let narrow items take several KV heads per block (head packs) where the
  /// kernel family supports it.
  bool head_packs = true;
  /// Plan each request alone over its whole KV, as if nothing were shared
  /// (split-KV decode): the ablation for prefix-aware planning.
  bool prefix_blind = false;
  /// Run the step as persistent launches (a queue of items per block slot)
  /// with the merge fused into them: the item that completes a merged row
  /// merges it, so the step needs no merge launch (Plan::fused_merge). Takes
  /// effect when every kernel the plan launches supports it (mma, wgmma; not
  /// the FMA reference). Off by default until its GPU validation (issue 14):
  /// v1's launches, one block per item and a separate merge kernel.
  bool fuse_merge = false;
};

/// Field by field; cost models compare their coefficients.
bool operator==(const PlannerOptions& a, const PlannerOptions& b);

/// PlannerOptions as one JSON object ("canopy-planner-options/1", docs/planner.md):
/// every field, candidates as KernelConfig strings, "coefficients" null for the
/// default coefficients (GpuCoefficients{}: a Runtime then plans with its
/// device's) or a canopy-coefficients/1 object. `indent` < 0: one line.
std::string planner_options_to_json(const PlannerOptions& options, int indent = -1);
/// The inverse, and the one parser of options for every front end (tools,
/// Python, the benchmark's C API). Keys may be left out (their defaults
/// apply); an unknown key, a wrong type or a value out of range throws
/// Error(kInvalidArgument) naming the key (and the element) and the value.
PlannerOptions planner_options_from_json(std::string_view text);

/// The configs the planner chooses among by default (PlannerOptions::candidates empty).
std::vector<KernelConfig> default_kernel_configs(const AttentionSpec& spec);
/// Every tensor-core config the planner can weigh on Hopper: the defaults,
/// then the wgmma family's (dropped where the arch lacks them). The v2
/// candidates of issue 14, opt-in until validated on the GPU.
std::vector<KernelConfig> hopper_kernel_configs(const AttentionSpec& spec);
/// Every shipped partial-attention config of every family (compiled in CI;
/// any of them may be offered as candidates).
std::vector<KernelConfig> shipped_kernel_configs(const AttentionSpec& spec);
/// The configs of `configs` whose kernels a GPU of `arch` runs, each checked
/// for the target it compiles for there (partial_kernel_spec: sm_90 ->
/// sm_90a for an arch-specific family such as wgmma) and against the arch's
/// shared-memory limit; a device's own limit is CostModel::fits. The
/// planner's candidates, canopy-tune's grid and Python's prewarm filter with
/// it.
std::vector<KernelConfig> runnable_kernel_configs(const AttentionSpec& spec,
                                                  std::vector<KernelConfig> configs, Arch arch);

/// Deterministic: the same inputs give the same plan.
Plan make_plan(const AttentionSpec& spec, const PrefixTree& tree,
               const PlannerOptions& options = {});
/// The same, planning into `out` and reusing its memory: a serving engine that
/// plans every decode step into one Plan allocates nothing once warm.
void make_plan(const AttentionSpec& spec, const PrefixTree& tree, const PlannerOptions& options,
               Plan& out);
/// discover_prefix_tree + make_plan.
Plan make_plan(const AttentionSpec& spec, const BlockTables& tables,
               const PlannerOptions& options = {});

void make_plan(const AttentionSpec& spec, const BlockTables& tables, const PlannerOptions& options,
               Plan& out);

}  // namespace canopy
