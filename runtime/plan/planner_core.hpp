// The planner's passes, shared by make_plan and IncrementalPlanner. A pass
// prices a tree (tasks, splits, placement, the step's predicted time) and
// emits the winner into a Plan; its working memory lives in a PlannerScratch
// that outlives it, so a warm planner allocates nothing. docs/planner.md.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "autotune/sm_schedule.hpp"
#include "canopy/planner.hpp"

namespace canopy::planning {

// A KV segment read by one group of requests: pages (ancestors pushed down
// into this node, then the node's own), its tokens and its readers.
struct Task {
  int node = 0;
  std::int32_t page_offset = 0;  // into the plan's kv_pages
  std::int32_t page_count = 0;
  std::int32_t tokens = 0;
  std::int32_t path_offset = 0;    // position of segment token 0 in its requests
  std::int32_t request_begin = 0;  // readers: task_requests[request_begin .. +request_count)
  std::int32_t request_count = 0;
  int variant = 0;       // index into the variants: kernel config, row tile, heads
  int tiles = 1;         // row tiles per KV head
  int pieces = 1;        // KV pieces (splits)
  int piece_count = 1;   // pieces that hold tokens (piece bounds are tile_kv-aligned)
  double item_cost = 0;  // one item (one tile, one piece, one KV head or pack), slot-us
  bool direct = false;   // its readers read nothing else: items write the output
  // Where emission finds the pages: -1, the node's own (nothing inherited);
  // else an offset into the pass's staged chains (PlannerScratch::kv_pages).
  std::int32_t staged = -1;
  // Set by emission: the task's first partial slot and first item.
  std::int32_t first_slot = 0;
  std::int32_t first_item = 0;
};

// One way to run a task: a kernel (index into the candidate configs), the
// row tile its blocks are shaped for, and how many KV heads one block takes
// (a head pack, for narrow tasks that fit one row tile).
struct Variant {
  int config = 0;
  int row_tile = 0;
  int heads = 1;
};

// Tasks [begin, end) (consecutive, so in task order) sharing one item cost and
// config. Sorting runs instead of tasks gives the same order as sorting the
// tasks with ties broken by task index, at a fraction of the cost: the leaves
// of one level usually form a single run.
struct TaskRun {
  double cost = 0;
  int config = 0;
  int begin = 0;
  int end = 0;
  std::int64_t items = 0;  // makespan(): the run's items and partial slots
  std::int64_t slots = 0;
};

// Memo of cost-model answers per (variant, rows, tokens): the planner asks for
// the same shapes over and over (sibling leaves usually look alike).
// Direct-mapped, so lookups are O(1); the answers are exactly the model's.
// Entries carry the pass that wrote them, so a new pass starts empty without
// clearing the table.
class CostMemo {
 public:
  struct Entry {
    std::uint32_t pass = 0;
    int config = 0;  // the variant; -1: the best variant's answer
    int rows = 0;
    int tokens = 0;
    int best = 0;  // for config -1: the best variant
    double us = 0;
  };
  void new_pass() {
    if (++pass_ == 0) {  // wrapped: old stamps could look current
      entries_.fill({});
      pass_ = 1;
    }
  }
  Entry& slot(int config, int rows, int tokens) {
    std::uint64_t x = (std::uint64_t{static_cast<std::uint32_t>(rows)} << 32 |
                       static_cast<std::uint32_t>(tokens)) *
                          0x9E3779B97F4A7C15ull +
                      static_cast<std::uint32_t>(config);
    x ^= x >> 29;
    return entries_[(x * 0xBF58476D1CE4E5B9ull) >> (64 - kBits)];
  }
  bool holds(const Entry& e, int config, int rows, int tokens) const {
    return e.pass == pass_ && e.config == config && e.rows == rows && e.tokens == tokens;
  }
  std::uint32_t pass() const { return pass_; }

 private:
  static constexpr int kBits = 9;
  std::array<Entry, std::size_t{1} << kBits> entries_{};
  std::uint32_t pass_ = 0;
};

// Tasks that price alike: the same chosen variant, readers and tokens. Every
// split decision depends on nothing else, so split pricing works on classes
// (sibling leaves usually form one) and writes the outcome back to the tasks.
struct TaskClass {
  int base_variant = 0;
  std::int32_t request_count = 0;
  std::int32_t tokens = 0;
  int tiles = 1;
  int count = 0;          // tasks in the class
  double whole_cost = 0;  // one item unsplit
  // The current candidate's outcome, as Task's fields.
  int variant = 0;
  int pieces = 1;
  double item_cost = 0;
};

// Consecutive tasks [begin, end) of one class.
struct ClassRun {
  int cls = 0;
  int begin = 0;
  int end = 0;
};

/// What a pass derives from the spec and the options alone (candidate
/// kernels, variants, block slots), kept for the next pass with the same ones.
struct PlannerSetup {
  std::vector<KernelConfig> configs;
  std::vector<KernelCoefficients> kernels;  // per config
  std::vector<Variant> variants;
  std::vector<int> unpacked;  // per variant: the same kernel and row tile, one head per block
  double slot_scale = 1;
  int slots = 1;
  std::vector<std::int32_t> slot_sm;  // per block slot: its SM
  /// `setup`, rebuilt unless it was built for this spec and these options.
  static const PlannerSetup& ready(const AttentionSpec& spec, const PlannerOptions& options,
                                   PlannerSetup& setup);

 private:
  bool matches(const AttentionSpec& spec, const PlannerOptions& options) const;
  void build(const AttentionSpec& spec, const PlannerOptions& options);
  // What it was built for.
  bool valid = false;
  AttentionSpec spec_key;
  std::vector<KernelConfig> candidates;
  std::vector<int> row_tiles;
  bool head_packs = true;
  GpuCoefficients gpu;
};

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
  std::int32_t reader = 0;     // its first reader: the segment is that request's pages
  std::int32_t path_page = 0;  // from page path_page of the reader's table
  std::int32_t tokens = 0;
  std::int32_t base_tokens = 0;  // tokens when the plan was made from scratch
  std::int32_t pieces = 1;
  std::int32_t tile_kv = 0;
  int config = 0;  // index into ReplanState::coefficients
  int row_tile = 0;
  int heads = 1;
  int rows = 0;
  int tiles = 1;
  double item_cost = 0;  // slot-us, as placed
};

struct ReplanState {
  std::vector<ReplanTask> tasks;
  std::vector<std::int32_t> growable_task;  // per request: its task if it may grow alone, else -1
  std::vector<std::int32_t> item_slot;      // per item: its block slot
  std::vector<double> slot_load;            // per block slot, as placed
  std::vector<KernelCoefficients> coefficients;
  double slot_scale = 1;
  std::int64_t merged = 0;  // partial states the merge reads
  int launches = 0;
};

/// One planning pass over a tree: construct, prepare(), then emit() the plan.
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
  int slots() const { return slots_; }
  double slot_scale() const { return slot_scale_; }
  /// One item of `task` over `tokens` tokens (its row tiles share the KV stream).
  double tile_cost(const Task& task, int tokens) { return tile_cost(task, task.variant, tokens); }
  /// Token bounds of piece `p` of `task`: tile_kv-aligned except the end.
  std::int32_t piece_bound(const Task& task, int p) const;

 private:
  double item_us(int variant, int rows, int tokens);
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
  double partial_us(int requests) const;

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
  const std::vector<int>& unpacked_;  // per variant: the same kernel and row tile, one head
  double slot_scale_ = 1;             // block slots per SM
  int slots_ = 1;                     // block slots of the GPU
  int group_ = 1;                     // query heads per KV head (kept: a division)
  double max_whole_cost_ = 0;
  double unsplit_work_ = 0;  // summed item costs of the unsplit tasks, slot-us
  bool any_split_ = false;   // some task is in pieces or unpacked now
  // From prepare(), for emit().
  std::int64_t max_items_ = 0;
  std::int64_t max_rows_ = 0;
  int last_best_rows_ = -1;  // best_variant's last question and answer
  int last_best_tokens_ = -1;
  std::pair<int, double> last_best_{};
  int launched_configs_ = 0;
  std::int64_t merged_ = 0;  // partial states merged
  int step_launches_ = 0;    // partial launches plus the merge
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
