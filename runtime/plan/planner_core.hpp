// The planner's passes, shared by make_plan and IncrementalPlanner. A pass
// prices a tree (tasks, splits, placement, the step's predicted time) and
// emits the winner into a Plan; its working memory lives in a PlannerScratch
// that outlives it, so a warm planner allocates nothing. docs/planner.md.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "autotune/sm_schedule.hpp"
#include "autotune/step_pricing.hpp"
#include "canopy/planner.hpp"
#include "runtime/plan/planner_setup.hpp"
#include "runtime/plan/planner_types.hpp"

namespace canopy::planning {

/// Every vector a pass fills. Kept between passes (thread-local for
/// make_plan, owned by an IncrementalPlanner), so their memory is reused.
struct PlannerScratch {
  std::vector<Task> tasks;
  std::vector<std::int32_t> task_requests;
  std::vector<std::int32_t> kv_pages;  // segments with inherited pages, staged
  std::int32_t page_total = 0;         // pages over all tasks' segments
  std::vector<std::int32_t> chain;     // inherited page chains during the walk
  // Requests in preorder: node n's subtree's are preorder_requests[subtree_begin[n] ..
  // subtree_end[n]).
  std::vector<int> preorder_requests;
  std::vector<std::int32_t> subtree_begin;
  std::vector<std::int32_t> subtree_end;
  std::vector<TaskClass> classes;
  std::vector<ClassRun> class_runs;
  std::vector<int> class_table;  // open addressing: class ids by (variant, readers, tokens)
  std::vector<double> targets;
  std::vector<TaskRun> runs;
  std::vector<std::int32_t> run_of;  // per task: its placement run
  std::vector<char> used_configs;    // per config: some task runs it
  std::vector<std::int32_t> next;    // per request: where its next merge part goes
  std::vector<std::int32_t> fan_in;  // per request: pieces read, then partials merged
  SmSchedule loads;
  CostMemo memo;
  PlannerSetup setup;
};

/// What an incremental re-plan needs to patch an emitted plan when requests
/// grow (runtime/plan/replan.cpp): per task its items, pages and variant.
struct ReplanTask {
  std::int32_t first_item = 0;  // items [first_item, +item_count) of the plan
  std::int32_t item_count = 0;
  std::int32_t page_offset = 0;  // into Plan::kv_pages
  std::int32_t page_count = 0;
  std::int32_t page_capacity = 0;  // entries of kv_pages the segment may grow into (a re-plan's)
  std::int32_t reader = 0;         // its first reader: the segment is that request's pages
  std::int32_t path_page = 0;      // from page path_page of the reader's table
  std::int32_t tokens = 0;
  std::int32_t base_tokens = 0;  // tokens when the plan was made from scratch
  std::int32_t max_tokens = 0;   // the most it may grow to before a full plan (ReplanOptions)
  std::int32_t pieces = 1;
  std::int32_t tile_kv = 0;
  std::uint64_t piece_mask = 0;  // pieces > 1: which hold tokens (0: not computed yet)
  int config = 0;                // index into ReplanState::coefficients
  int row_tile = 0;
  int heads = 1;
  int rows = 0;
  int tiles = 1;
  double item_cost = 0;  // slot-us, as placed
  // An item's cost as a line in its tokens (CostModel::item_us is affine in
  // them), fitted when the task first grows: a patch prices in two flops.
  double cost_base = 0;
  double cost_per_token = -1;  // < 0: not fitted yet
};

struct ReplanState {
  std::vector<ReplanTask> tasks;
  std::vector<std::int32_t> growable_task;  // per request: its task if it may grow alone, else -1
  std::vector<std::int32_t> item_slot;      // per item: its block slot
  std::vector<double> slot_load;            // per block slot, as placed
  std::vector<KernelCoefficients> coefficients;
  autotune::StepPricer pricer;  // the pass's: item costs on its slots, the step time
  std::int64_t merged = 0;      // partial states the merge reads
  int launches = 0;
};

/// One planning pass over a tree: construct, prepare(), then emit() the plan.
/// Its methods live in one file per phase: planner_setup.cpp (the pass's
/// kernels, variants and pricer), planner_decide.cpp (the walk, absorb
/// decisions, tasks), planner_split.cpp (task classes, split candidates),
/// planner_place.cpp (placement, direct tasks, the predicted step and its
/// bounds), planner_emit.cpp (items, merge schedule, replan state).
class Planner {
 public:
  Planner(const AttentionSpec& spec, const PrefixTree& tree, const PlannerOptions& options,
          PlannerScratch& scratch);

  /// Tasks, absorb decisions, splits, direct items and the placement: all
  /// that predicted_us() needs, without writing a plan.
  void prepare() {
    make_tasks();
    price();
  }
  /// prepare() in two steps: the tasks (the walk and absorb decisions), then
  /// the split pricing and placement. In between, lower_bound() bounds
  /// predicted_us() from below and task_configs() counts the kernels the
  /// tasks use (splitting never changes a task's kernel).
  /// `same_tree`: the scratch of a pass over the same tree that already
  /// made its tasks (its requests in preorder are reused).
  void make_tasks(const PlannerScratch* same_tree = nullptr);
  /// For 2g's second pass, whose candidates are `first`'s first kernel alone:
  /// reads `first`'s cost answers (the same variants, questions and model)
  /// instead of asking the model again. No-op unless the variants, block
  /// slots and model agree.
  void borrow_costs(const Planner& first);
  double lower_bound();
  int task_configs() const;
  void price();
  /// The step time the emitted plan will predict (Plan::predicted_us).
  float predicted_us() const { return predicted_us_; }
  /// Partial kernels the plan launches.
  int launched_configs() const { return launched_configs_; }
  /// Writes the prepared plan into `out`, reusing its memory.
  void emit(Plan& out);
  /// After emit(out): what a re-plan needs to patch `out` (see ReplanState).
  void export_state(const Plan& out, ReplanState& state) const;

  const std::vector<KernelConfig>& configs() const { return configs_; }
  const std::vector<Variant>& variants() const { return variants_; }
  const autotune::StepPricer& pricer() const { return pricer_; }
  /// One item of `task` over `tokens` tokens (its row tiles share the KV stream).
  double tile_cost(const Task& task, int tokens) { return tile_cost(task, task.variant, tokens); }
  /// Token bounds of piece `p` of `task`: tile_kv-aligned except the end.
  std::int32_t piece_bound(const Task& task, int p) const {
    if (p == task.pieces) return task.tokens;
    if (p == 0) return 0;
    const int tile_kv = configs_[variants_[task.variant].config].tile_kv;
    const std::int64_t raw = static_cast<std::int64_t>(task.tokens) * p / task.pieces;
    return static_cast<std::int32_t>(raw / tile_kv * tile_kv);
  }

 private:
  // The small pricing helpers every phase calls stay here, inline.
  double item_us(int variant, int rows, int tokens) {
    CostMemo::Entry& e = s_.memo.slot(variant, rows, tokens);
    if (!s_.memo.holds(e, variant, rows, tokens)) {
      double us = 0;
      const CostMemo::Entry* lent = lent_ ? &lent_->slot(variant, rows, tokens) : nullptr;
      if (lent != nullptr && lent_->holds(*lent, variant, rows, tokens)) {
        us = lent->us;
      } else {
        us = model_us(variant, rows, tokens);
      }
      e = {s_.memo.pass(), variant, rows, tokens, variant, us};
    }
    return pricer_.slot_us(e.us);
  }
  double model_us(int variant, int rows, int tokens) const {
    const Variant& v = variants_[variant];
    return model_.item_us(spec_, coefficients_[v.config], v.row_tile, rows, tokens, v.heads);
  }
  double tile_cost(const Task& task, int variant, int tokens) {
    return item_us(variant, task.request_count * group_, tokens) / task.tiles;
  }
  double tile_cost(const TaskClass& c, int variant, int tokens) {
    return item_us(variant, c.request_count * group_, tokens) / c.tiles;
  }
  int head_groups(int variant) const {
    const int heads = variants_[variant].heads;
    return (spec_.num_kv_heads + heads - 1) / heads;
  }
  int class_of(const Task& task, int tiles);
  double cheapest_item(const TaskClass& c);
  // Blocks per (piece, row tile) of a task: its KV heads in packs.
  int head_groups(const Task& task) const {
    const int heads = variants_[task.variant].heads;
    return (spec_.num_kv_heads + heads - 1) / heads;
  }
  std::int64_t task_items(const Task& task) const {
    return std::int64_t{task.pieces} * task.tiles * head_groups(task);
  }
  int config_of(const Task& task) const { return variants_[task.variant].config; }
  std::pair<int, double> best_variant(int rows, int tokens);
  std::pair<int, double> best_variant_memo(int rows, int tokens);
  double cost(int requests, int tokens) {
    return requests == 0 ? 0.0 : best_variant(requests * group_, tokens).second;
  }

  void gather_requests(int node);
  void decide(int node, std::int32_t inherited_begin, std::int32_t inherited_pages,
              std::int32_t inherited_tokens, std::int32_t path_offset);
  void add_task(int node, std::int32_t inherited_begin, std::int32_t inherited_pages,
                std::int32_t tokens, std::int32_t path_offset, const int* readers,
                std::int32_t reader_count);
  void make_classes();
  void split_tasks();
  bool apply_split(double target);
  double makespan();
  double makespan_bound() const;
  void collect_runs();
  void mark_direct_tasks();
  void place();
  struct Cursor {  // where emit_task writes the next item, and its next partial slot
    WorkItem* item;
    std::int64_t slot;
  };
  void emit_items(Plan& out);
  void emit_task(Task& task, const std::int32_t* sm_order, const WorkItem* items_begin,
                 std::int32_t* task_rows, Cursor& out);
  void build_merge_schedule(Plan& out);
  void keep_launched_configs(Plan& out);

  const AttentionSpec& spec_;
  const PrefixTree& tree_;
  const PlannerOptions& opt_;
  const CostModel& model_;
  PlannerScratch& s_;
  const PlannerScratch* order_ = &s_;  // whose preorder_requests the walk reads
  const PlannerSetup& setup_;
  const std::vector<KernelConfig>& configs_;
  const std::vector<KernelCoefficients>& coefficients_;  // per config
  const std::vector<Variant>& variants_;
  const std::vector<int>& unpacked_;   // per variant: the same kernel and row tile, one head
  const autotune::StepPricer pricer_;  // a copy: item_us reads its slot scale on every call
  const int slots_ = 1;                // block slots of the GPU (pricer_.slots())
  int group_ = 1;                      // query heads per KV head (kept: a division)
  double max_whole_cost_ = 0;
  double unsplit_work_ = 0;  // summed item costs of the unsplit tasks, slot-us
  bool any_split_ = false;   // some task is in pieces or unpacked now
  // From prepare(), for emit().
  std::int64_t max_items_ = 0;
  std::int64_t max_rows_ = 0;
  int prefix_variants_ = 0;         // variants of the first kernel, when others follow
  const CostMemo* lent_ = nullptr;  // borrow_costs()
  int last_best_rows_ = -1;         // best_variant's last question and answer
  int last_best_tokens_ = -1;
  std::pair<int, double> last_best_{};
  int launched_configs_ = 0;
  std::int64_t merged_ = 0;   // partial states merged
  int step_launches_ = 0;     // partial launches plus the merge
  bool fused_merge_ = false;  // Plan::fused_merge
  float predicted_us_ = 0;
};

/// make_plan on a tree: one pass, or with the default candidates and a plan
/// that launches both kernels, a second pass with the general kernel alone
/// (the faster prediction is emitted into `out`).
/// `state` (optional): filled for an incremental re-plan of `out`.
void plan_tree(const AttentionSpec& spec, const PrefixTree& tree, const PlannerOptions& options,
               PlannerScratch& first, PlannerScratch& second, Plan& out,
               ReplanState* state = nullptr);

}  // namespace canopy::planning
