// make_plan: tree discovery, the planning passes (runtime/plan/planner_core)
// and the choice between one partial kernel and two (docs/planner.md, 2g).
#include "canopy/planner.hpp"

#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <vector>

#include "canopy/error.hpp"
#include "families/kernel_families.hpp"
#include "runtime/plan/planner_core.hpp"
#include "runtime/tree/tree_builder.hpp"

namespace canopy {

std::vector<KernelConfig> shipped_kernel_configs(const AttentionSpec& spec) {
  std::vector<KernelConfig> configs;
  for (const families::FamilyInfo& f : families::all_families()) {
    const std::vector<KernelConfig> mine = f.shipped_configs(spec);
    configs.insert(configs.end(), mine.begin(), mine.end());
  }
  return configs;
}

std::vector<KernelConfig> default_kernel_configs(const AttentionSpec& spec) {
  // The tensor-core kernels: the general one runs every item shape, the wide
  // one 128-row tiles of long shared prefixes (plan_tree keeps the second
  // only when its launch pays for itself).
  return families::family_info(KernelFamily::kMmaAttention).shipped_configs(spec);
}

std::vector<KernelConfig> runnable_kernel_configs(const AttentionSpec& spec,
                                                  std::vector<KernelConfig> configs, Arch arch) {
  std::erase_if(configs, [&](const KernelConfig& c) {
    return !families::can_implement(partial_kernel_spec(spec, c, arch)).ok();
  });
  return configs;
}

std::vector<KernelConfig> hopper_kernel_configs(const AttentionSpec& spec) {
  // The general mma kernel stays first: the planner also weighs it alone.
  std::vector<KernelConfig> configs = default_kernel_configs(spec);
  const std::vector<KernelConfig> hopper =
      families::family_info(KernelFamily::kWgmmaAttention).shipped_configs(spec);
  configs.insert(configs.end(), hopper.begin(), hopper.end());
  return configs;
}
namespace {

// The prefix-blind view of a tree: one root per request holding its whole
// path's pages (a tree of its own, owning them).
PrefixTree without_sharing(const PrefixTree& tree) {
  PrefixTree blind;
  blind.page_size = tree.page_size;
  blind.batch_size = tree.batch_size;
  auto pages = std::make_shared<std::vector<std::int32_t>>();
  std::vector<int> path;
  for (int r = 0; r < tree.batch_size; ++r) {
    path.clear();
    for (int n = tree.request_node[r]; n >= 0; n = tree.nodes[n].parent) path.push_back(n);
    PrefixTree::Node root;
    root.page_begin = static_cast<std::int32_t>(pages->size());
    for (auto it = path.rbegin(); it != path.rend(); ++it) {
      const std::span<const std::int32_t> own = tree.pages_of(*it);
      pages->insert(pages->end(), own.begin(), own.end());
      root.num_tokens += tree.nodes[*it].num_tokens;
    }
    root.page_count = static_cast<std::int32_t>(pages->size()) - root.page_begin;
    root.subtree_requests = 1;
    root.request_begin = r;
    root.request_count = 1;
    blind.roots.push_back(r);
    blind.nodes.push_back(root);
    blind.request_ids.push_back(r);
    blind.request_node.push_back(r);
  }
  blind.pages = *pages;
  blind.page_storage = std::move(pages);
  return blind;
}

// What make_plan keeps between calls on one thread: the passes' scratch and
// the discovered tree, so a warm planner allocates only the plan it returns.
struct ThreadWorkspace {
  planning::PlannerScratch passes[2];
  TreeBuilderScratch discovery;
  PrefixTree tree;
};

ThreadWorkspace& thread_workspace() {
  thread_local ThreadWorkspace workspace;
  return workspace;
}

}  // namespace

namespace planning {

void plan_tree(const AttentionSpec& spec, const PrefixTree& tree, const PlannerOptions& options,
               PlannerScratch& first, PlannerScratch& second, Plan& out, ReplanState* state) {
  const auto emit = [&](Planner& winner) {
    winner.emit(out);
    if (state != nullptr) winner.export_state(out, *state);
  };
  CANOPY_CHECK(tree.page_size == spec.page_size, ErrorKind::kInvalidArgument,
               "the tree was built with page_size {} but the spec says {}", tree.page_size,
               spec.page_size);
  check(tree.batch_size >= 1, ErrorKind::kInvalidArgument, "the batch has no requests");
  // Query rows (request * num_qo_heads + head) are int32 indices.
  const std::int64_t rows = std::int64_t{tree.batch_size} * spec.num_qo_heads;
  CANOPY_CHECK(rows <= std::numeric_limits<std::int32_t>::max(), ErrorKind::kNotSupported,
               "{} requests x {} qo heads = {} query rows, more than the 2^31 - 1 a plan indexes",
               tree.batch_size, spec.num_qo_heads, rows);
  if (options.prefix_blind) {
    const PrefixTree blind = without_sharing(tree);
    Planner pass(spec, blind, options, first);
    pass.prepare();
    emit(pass);
    return;
  }
  Planner both(spec, tree, options, first);
  both.make_tasks();
  // A plan that launches several partial kernels is compared with the first
  // candidate alone (the general kernel of the defaults: one launch, every
  // item shape), and the faster kept (ties: several). Both are priced; only
  // the winner is written. The split choice never changes a task's kernel,
  // so the walk already tells whether several kernels launch, and a pass
  // whose lower bound cannot beat the other's prediction is not priced at
  // all (the same verdict, sooner).
  if (both.task_configs() < 2) {
    both.price();
    emit(both);
    return;
  }
  PlannerOptions single = options;
  single.candidates = {both.configs().front()};
  Planner alone(spec, tree, single, second);
  alone.borrow_costs(both);
  alone.make_tasks(&first);
  // predicted_us() is a float: the bounds keep a margin for its rounding.
  constexpr double kMargin = 1 - 1e-6;
  const double both_bound = both.lower_bound() * kMargin;
  const double alone_bound = alone.lower_bound() * kMargin;
  if (alone_bound <= both_bound) {
    alone.price();
    if (both_bound > alone.predicted_us()) {
      emit(alone);
      return;
    }
    both.price();
  } else {
    both.price();
    if (alone_bound >= both.predicted_us()) {
      emit(both);
      return;
    }
    alone.price();
  }
  if (alone.predicted_us() < both.predicted_us()) {
    emit(alone);
  } else {
    emit(both);
  }
}

}  // namespace planning

void make_plan(const AttentionSpec& spec, const PrefixTree& tree, const PlannerOptions& options,
               Plan& out) {
  spec.validate();
  ThreadWorkspace& ws = thread_workspace();
  planning::plan_tree(spec, tree, options, ws.passes[0], ws.passes[1], out);
}

void make_plan(const AttentionSpec& spec, const BlockTables& tables, const PlannerOptions& options,
               Plan& out) {
  spec.validate();
  ThreadWorkspace& ws = thread_workspace();
  // The tree borrows the tables' page ids: planning copies them once, into the plan.
  discover_prefix_tree(tables, spec.page_size, TreePages::kBorrowed, ws.discovery, ws.tree);
  planning::plan_tree(spec, ws.tree, options, ws.passes[0], ws.passes[1], out);
}

Plan make_plan(const AttentionSpec& spec, const PrefixTree& tree, const PlannerOptions& options) {
  Plan plan;
  make_plan(spec, tree, options, plan);
  return plan;
}

Plan make_plan(const AttentionSpec& spec, const BlockTables& tables,
               const PlannerOptions& options) {
  Plan plan;
  make_plan(spec, tables, options, plan);
  return plan;
}

}  // namespace canopy
