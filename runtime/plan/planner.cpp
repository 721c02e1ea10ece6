// The planner: KV-guided grouping, the absorb (push-down) profit rule, KV
// splitting and longest-first balancing, all priced by one CostModel.
// docs/planner.md walks through an example.
#include "canopy/planner.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <numeric>
#include <span>
#include <vector>

#include "autotune/sm_schedule.hpp"
#include "canopy/error.hpp"
#include "canopy/kernel_spec.hpp"
#include "generator/kernel_families.hpp"
#include "generator/kernel_source.hpp"

namespace canopy {
namespace {

// A KV segment read by one group of requests: pages (ancestors pushed down
// into this node, then the node's own), its tokens and its readers.
struct Task {
  int node = 0;
  std::int32_t page_offset = 0;  // into Plan::kv_pages
  std::int32_t tokens = 0;
  std::int32_t path_offset = 0;    // position of segment token 0 in its requests
  std::int32_t request_begin = 0;  // readers: requests[request_begin .. +request_count)
  std::int32_t request_count = 0;
  int variant = 0;       // index into Planner::variants_: kernel config and row tile
  int tiles = 1;         // row tiles per KV head
  int tile_rows = 1;     // query rows in the fullest tile
  int pieces = 1;        // KV pieces (splits)
  double item_cost = 0;  // one item (one tile, one piece, one KV head), SM-us
  bool direct = false;   // its readers read nothing else: items write the output
  // Set by emit_task: the task's first partial slot and its non-empty pieces.
  std::int32_t first_slot = 0;
  std::int32_t piece_count = 0;
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
};

// Memo of cost-model answers per (variant, rows, tokens): the planner asks for
// the same shapes over and over (sibling leaves usually look alike), and the
// model call is out of line. Direct-mapped, so lookups are O(1); the answers
// are exactly the model's.
class CostMemo {
 public:
  struct Entry {
    int config = -2;  // the variant; -1: the best variant's answer; -2: empty
    int rows = 0;
    int tokens = 0;
    int best = 0;  // for config -1: the best variant
    double us = 0;
    bool is(int c, int r, int t) const { return config == c && rows == r && tokens == t; }
  };
  Entry& slot(int config, int rows, int tokens) {
    std::uint64_t x = (std::uint64_t{static_cast<std::uint32_t>(rows)} << 32 |
                       static_cast<std::uint32_t>(tokens)) *
                          0x9E3779B97F4A7C15ull +
                      static_cast<std::uint32_t>(config);
    x ^= x >> 29;
    return entries_[(x * 0xBF58476D1CE4E5B9ull) >> (64 - kBits)];
  }

 private:
  static constexpr int kBits = 9;
  std::array<Entry, std::size_t{1} << kBits> entries_{};
};

class Planner {
 public:
  Planner(const AttentionSpec& spec, const PrefixTree& tree, const PlannerOptions& options,
          Plan& out)
      : spec_(spec), tree_(tree), opt_(options), model_(options.cost_model), plan_(out) {
    const Arch arch = model_.coefficients().arch;
    if (opt_.candidates.empty()) {
      // Defaults the device cannot take (shared memory) are dropped.
      configs_ = default_kernel_configs(spec);
      std::erase_if(configs_, [&](const KernelConfig& c) {
        return !generator::can_implement(partial_kernel_spec(spec, c, arch), arch).ok() ||
               !model_.fits(spec, c);
      });
    } else {
      // A malformed candidate is an error; one that is well formed but needs
      // more shared memory than this spec and device allow (a large head dim)
      // is skipped, as long as another candidate remains.
      std::string skipped;
      for (const KernelConfig& c : opt_.candidates) {
        const KernelSpec k = partial_kernel_spec(spec, c, arch);
        const generator::Verdict v = generator::can_implement(k, arch);
        if (v.support != generator::Support::kSharedMemory) generator::validate_kernel_spec(k);
        if (v.ok() && model_.fits(spec, c)) {
          configs_.push_back(c);
        } else {
          skipped += fmt::format(" {} ({} bytes)", c.to_string(), CostModel::smem_bytes(spec, c));
        }
      }
      CANOPY_CHECK(!configs_.empty(), ErrorKind::kNotSupported,
                   "no candidate fits {} on {} (max shared memory {} bytes):{}", spec.to_string(),
                   arch.to_string(), model_.coefficients().max_smem_per_block, skipped);
    }
    CANOPY_CHECK(!configs_.empty(), ErrorKind::kNotSupported,
                 "no kernel configuration fits {} on {} (max shared memory {} bytes)",
                 spec.to_string(), arch.to_string(), model_.coefficients().max_smem_per_block);
    for (int c = 0; c < static_cast<int>(configs_.size()); ++c) {
      for (int row_tile :
           generator::family_info(configs_[c].family).row_tiles(spec.head_dim, configs_[c])) {
        const bool allowed = opt_.row_tiles.empty() ||
                             std::find(opt_.row_tiles.begin(), opt_.row_tiles.end(), row_tile) !=
                                 opt_.row_tiles.end();
        if (!allowed) continue;
        const int single = static_cast<int>(variants_.size());
        variants_.push_back({c, row_tile, 1});
        unpacked_.push_back(single);
        const int pack = std::min(
            generator::family_info(configs_[c].family).head_pack(spec, configs_[c], row_tile),
            spec.num_kv_heads);
        if (pack > 1 && opt_.head_packs) {
          variants_.push_back({c, row_tile, pack});
          unpacked_.push_back(single);
        }
      }
    }
    CANOPY_CHECK(!variants_.empty(), ErrorKind::kInvalidArgument,
                 "no candidate kernel runs any of the requested row tiles");
    // Items are placed on block slots, blocks_per_sm of them per SM: an SM
    // reaches its bandwidth and tensor rate only with every slot busy, so an
    // item costs `slot_scale_` times its full-SM time on a slot.
    int per_sm = arch.max_blocks_per_sm();
    for (const KernelConfig& c : configs_) {
      per_sm = std::min(per_sm, generator::blocks_per_sm(partial_kernel_spec(spec, c, arch), arch));
    }
    slot_scale_ = per_sm;
    slots_ = model_.coefficients().num_sms * per_sm;
  }

  void run();

 private:
  double item_us(int variant, int rows, int tokens) {
    CostMemo::Entry& e = memo_.slot(variant, rows, tokens);
    if (!e.is(variant, rows, tokens)) {
      const Variant& v = variants_[variant];
      e = {variant, rows, tokens, variant,
           model_.item_us(spec_, configs_[v.config], v.row_tile, rows, tokens, v.heads)};
    }
    return e.us * slot_scale_;
  }
  int config_of(const Task& task) const { return variants_[task.variant].config; }
  // One of a task's items: its row tiles over the same KV share the cost of
  // streaming it (the first from HBM, its siblings mostly from L2).
  double tile_cost(const Task& task, int tokens) { return tile_cost(task, task.variant, tokens); }
  double tile_cost(const Task& task, int variant, int tokens) {
    return item_us(variant, task.request_count * spec_.group_size(), tokens) / task.tiles;
  }
  // Blocks per (piece, row tile) of a task: its KV heads in packs.
  int head_groups(const Task& task) const {
    const int heads = variants_[task.variant].heads;
    return (spec_.num_kv_heads + heads - 1) / heads;
  }
  std::int64_t task_items(const Task& task) const {
    return std::int64_t{task.pieces} * task.tiles * head_groups(task);
  }
  // Cheapest variant for `rows` query rows over `tokens` KV tokens, per KV head.
  std::pair<int, double> best_variant(int rows, int tokens) {
    if (const CostMemo::Entry& e = memo_.slot(-1, rows, tokens); e.is(-1, rows, tokens)) {
      return {e.best, e.us};
    }
    int best = -1;
    double best_us = 0;
    for (int i = 0; i < static_cast<int>(variants_.size()); ++i) {
      const Variant& v = variants_[i];
      if (v.heads > 1 && rows > v.row_tile) continue;  // a head pack is one row tile per head
      const double us = item_us(i, rows, tokens) / v.heads;
      if (best < 0 || us < best_us) {
        best = i;
        best_us = us;
      }
    }
    memo_.slot(-1, rows, tokens) = {-1, rows, tokens, best, best_us};
    return {best, best_us};
  }
  double cost(int requests, int tokens) {
    return requests == 0 ? 0.0 : best_variant(requests * spec_.group_size(), tokens).second;
  }
  // Per-row merge price of one more partial state, in slot-microseconds (the
  // unit of item costs).
  double partial_us(int requests) const {
    return slot_scale_ * requests * spec_.num_qo_heads * model_.merge_row_us(spec_, 1) /
           spec_.num_kv_heads;
  }

  void gather_requests(int node);
  void decide(int node, std::int32_t inherited_pages_begin, std::int32_t inherited_pages,
              std::int32_t inherited_tokens, std::int32_t path_offset);
  void add_task(int node, std::int32_t inherited_begin, std::int32_t inherited_pages,
                std::int32_t tokens, std::int32_t path_offset, const int* readers,
                std::int32_t reader_count);
  void split_tasks();
  bool apply_split(double target);
  double makespan();
  void collect_runs(bool by_config);
  // Where emit_task writes the next item and the next query row.
  struct Cursor {
    WorkItem* item;
    std::int32_t* row;
  };
  void emit_items();
  void keep_launched_configs();
  void emit_task(Task& task, const std::int32_t* sm_order, Cursor& out);
  void mark_direct_tasks();
  void build_merge_schedule();

  const AttentionSpec& spec_;
  const PrefixTree& tree_;
  const PlannerOptions& opt_;
  const CostModel& model_;
  std::vector<KernelConfig> configs_;
  std::vector<Variant> variants_;
  std::vector<int> unpacked_;      // per variant: the same kernel and row tile, one head per block
  std::vector<int> base_variant_;  // per task: the variant decide() chose
  double slot_scale_ = 1;          // block slots per SM
  int slots_ = 1;                  // block slots of the GPU
  CostMemo memo_;
  std::vector<Task> tasks_;
  std::vector<std::int32_t> task_requests_;
  std::vector<std::int32_t> scratch_pages_;  // inherited page chains during the walk
  // Requests in preorder: node n's subtree's are preorder_requests_[subtree_begin_[n] ..
  // subtree_end_[n]).
  std::vector<int> preorder_requests_;
  std::vector<std::int32_t> subtree_begin_;
  std::vector<std::int32_t> subtree_end_;
  std::vector<double> whole_cost_;  // item cost of each task unsplit
  double max_whole_cost_ = 0;
  bool any_split_ = false;  // some task is in pieces or unpacked now
  std::vector<TaskRun> runs_;
  std::vector<std::int32_t> row_ids_;  // emit_task's per-task row pattern
  std::vector<int> tile_bounds_;       // emit_task's per-task row tiles
  std::vector<std::int32_t> fan_in_;   // per request: pieces read, then partials merged
  SmSchedule loads_;
  Plan& plan_;  // written in place: a reused Plan keeps its vectors' memory
};

// Lists every node's subtree requests as one contiguous range, so a standalone
// task takes its readers without walking or allocating.
void Planner::gather_requests(int node_id) {
  const PrefixTree::Node& node = tree_.nodes[node_id];
  subtree_begin_[node_id] = static_cast<std::int32_t>(preorder_requests_.size());
  const std::span<const int> requests = tree_.requests(node);
  preorder_requests_.insert(preorder_requests_.end(), requests.begin(), requests.end());
  for (int c : tree_.children(node)) gather_requests(c);
  subtree_end_[node_id] = static_cast<std::int32_t>(preorder_requests_.size());
}

// Top-down: node's segment is its inherited pages plus its own. Either it is
// read once by every request below (standalone), or it is pushed down into
// each child (the child absorbs it) when re-reading it there is cheaper than
// a separate pass plus one more partial state to merge per row.
void Planner::decide(int node_id, std::int32_t inh_begin, std::int32_t inh_pages,
                     std::int32_t inh_tokens, std::int32_t path_offset) {
  const PrefixTree::Node& node = tree_.nodes[node_id];
  if (node.subtree_requests == 0) return;
  const std::int32_t seg_tokens = inh_tokens + node.num_tokens;

  bool push_down = false;
  if (opt_.allow_absorb && node.child_count > 0) {
    const int own = node.request_count;
    double standalone =
        cost(node.subtree_requests, seg_tokens) + partial_us(node.subtree_requests - own);
    double pushed = cost(own, seg_tokens);
    for (int c : tree_.children(node)) {
      const auto& child = tree_.nodes[c];
      pushed += cost(child.subtree_requests, seg_tokens + child.num_tokens) -
                cost(child.subtree_requests, child.num_tokens);
    }
    push_down = pushed < standalone;
  }
  if (!push_down) {
    add_task(node_id, inh_begin, inh_pages, seg_tokens, path_offset,
             preorder_requests_.data() + subtree_begin_[node_id],
             subtree_end_[node_id] - subtree_begin_[node_id]);
    for (int c : tree_.children(node)) decide(c, 0, 0, 0, node.prefix_tokens + node.num_tokens);
    return;
  }
  if (node.request_count > 0) {
    add_task(node_id, inh_begin, inh_pages, seg_tokens, path_offset, tree_.requests(node).data(),
             node.request_count);
  }
  // The children inherit the whole segment: its page chain goes at the end of
  // scratch_pages_ while they are walked.
  const std::int32_t seg_begin = static_cast<std::int32_t>(scratch_pages_.size());
  scratch_pages_.resize(seg_begin + inh_pages);  // resize first: copying from itself
  std::copy_n(scratch_pages_.data() + inh_begin, inh_pages, scratch_pages_.data() + seg_begin);
  const std::span<const std::int32_t> own_pages = tree_.pages_of(node);
  scratch_pages_.insert(scratch_pages_.end(), own_pages.begin(), own_pages.end());
  const std::int32_t seg_pages = inh_pages + node.page_count;
  for (int c : tree_.children(node)) decide(c, seg_begin, seg_pages, seg_tokens, path_offset);
  scratch_pages_.resize(seg_begin);
}

// A task over the inherited chain scratch_pages_[inherited_begin ..] followed
// by the node's own pages, read by `readers` (ascending).
void Planner::add_task(int node_id, std::int32_t inh_begin, std::int32_t inh_pages,
                       std::int32_t tokens, std::int32_t path_offset, const int* readers,
                       std::int32_t reader_count) {
  const PrefixTree::Node& node = tree_.nodes[node_id];
  Task task;
  task.node = node_id;
  task.page_offset = static_cast<std::int32_t>(plan_.kv_pages.size());
  plan_.kv_pages.insert(plan_.kv_pages.end(), scratch_pages_.begin() + inh_begin,
                        scratch_pages_.begin() + inh_begin + inh_pages);
  const std::span<const std::int32_t> own_pages = tree_.pages_of(node);
  plan_.kv_pages.insert(plan_.kv_pages.end(), own_pages.begin(), own_pages.end());
  task.tokens = tokens;
  task.path_offset = path_offset;
  task.request_begin = static_cast<std::int32_t>(task_requests_.size());
  task.request_count = reader_count;
  task_requests_.insert(task_requests_.end(), readers, readers + reader_count);
  // Preorder lists a subtree's requests ascending whenever requests were
  // numbered in tree order (tables built per branch); otherwise sort them.
  const auto first = task_requests_.begin() + task.request_begin;
  if (!std::is_sorted(first, task_requests_.end())) std::sort(first, task_requests_.end());
  task.variant = best_variant(task.request_count * spec_.group_size(), tokens).first;
  tasks_.push_back(task);
}

// Per task: its config and tiles, and how many KV pieces it is cut into
// (flattened-tree KV splitting). Items costing more than a share
// total / (num_sms * waves) are cut into pieces of at least min_split_tokens,
// so the longest item does not set the step time. Splitting also adds item
// overheads and partial states, and wave quantization can eat the gain, so
// each candidate share (no split, waves = 1, 2, 4, 8) is priced by placing
// the items on SMs, and the fastest wins (ties: fewer splits).
void Planner::split_tasks() {
  const int group = spec_.group_size();
  const int sms = slots_;
  double total = 0;
  max_whole_cost_ = 0;
  any_split_ = false;
  whole_cost_.resize(tasks_.size());
  base_variant_.resize(tasks_.size());
  for (std::size_t t = 0; t < tasks_.size(); ++t) {
    Task& task = tasks_[t];
    base_variant_[t] = task.variant;
    const int row_tile = variants_[task.variant].row_tile;
    const int rows = task.request_count * group;
    task.tiles = (rows + row_tile - 1) / row_tile;
    task.tile_rows = (rows + task.tiles - 1) / task.tiles;
    task.pieces = 1;
    task.item_cost = tile_cost(task, task.tokens);
    whole_cost_[t] = task.item_cost;
    max_whole_cost_ = std::max(max_whole_cost_, task.item_cost);
    total += task.item_cost * task.tiles * head_groups(task);
  }
  if (!opt_.allow_split) return;
  double best_target = 0;
  double best = -1;  // the unsplit makespan, priced once some candidate differs
  // Candidate shares: the work spread over 1, 2, 4 .. waves of block slots,
  // and the longest item cut in 2, 3 or 4 (many equal tasks just above one
  // wave: halving each fills the slots exactly, where a share of the total
  // would cut them in three and leave a ragged second wave).
  std::vector<double> targets;
  for (int waves = 1; waves <= std::max(1, opt_.waves); waves *= 2) {
    targets.push_back(total / (static_cast<double>(sms) * waves));
  }
  for (int pieces = 2; pieces <= 4; ++pieces) {
    targets.push_back(max_whole_cost_ / pieces * (1 + 1e-9));
  }
  std::sort(targets.begin(), targets.end(), std::greater<>());
  for (const double target : targets) {
    // Same pieces as the candidate priced last: same makespan, same verdict.
    if (!apply_split(target)) continue;
    if (best < 0) {
      apply_split(0);
      best = makespan();
      // Already within 0.1% of perfect balance: splitting only adds work
      // (overheads, merge inputs), so no candidate can win.
      const double merge = best - loads_.max_load();
      if (best <= (total / sms + merge) * 1.001) break;
      apply_split(target);
    }
    const double span = makespan();
    if (span < best * 0.999) {
      best = span;
      best_target = target;
    }
  }
  apply_split(best_target);
}

// Cuts every task costing more than `target` (0: none); returns whether any
// task's pieces or variant changed. A head pack over the target first becomes
// one block per KV head (more items, no more partial states to merge); what
// still exceeds the target is cut into KV pieces.
bool Planner::apply_split(double target) {
  // Nothing exceeds the target: unsplit, which the tasks may already be.
  if ((target <= 0 || target >= max_whole_cost_) && !any_split_) return false;
  bool changed = false;
  any_split_ = false;
  for (std::size_t t = 0; t < tasks_.size(); ++t) {
    Task& task = tasks_[t];
    int pieces = 1;
    int variant = base_variant_[t];
    double item_cost = whole_cost_[t];
    if (target > 0 && item_cost > target && variants_[variant].heads > 1) {
      variant = unpacked_[variant];
      item_cost = tile_cost(task, variant, task.tokens);
    }
    changed |= variant != task.variant;
    any_split_ |= variant != base_variant_[t];
    task.variant = variant;
    if (target > 0 && item_cost > target) {
      const int by_cost = static_cast<int>(std::ceil(item_cost / target));
      const int by_length = task.tokens / std::max(1, opt_.min_split_tokens);
      pieces = std::max(1, std::min(by_cost, by_length));
      if (pieces > 1) {
        // In 64 bits: a task of close to 2^31 tokens overflowed (found by fuzzing).
        const auto piece_tokens =
            static_cast<int>((std::int64_t{task.tokens} + pieces - 1) / pieces);
        item_cost = tile_cost(task, piece_tokens);
      }
    }
    changed |= pieces != task.pieces;
    any_split_ |= pieces > 1;
    task.pieces = pieces;
    task.item_cost = item_cost;
  }
  return changed;
}

// Groups consecutive tasks of equal item cost (and config, if by_config)
// into runs_, in task order.
void Planner::collect_runs(bool by_config) {
  runs_.clear();
  for (int t = 0; t < static_cast<int>(tasks_.size()); ++t) {
    const Task& task = tasks_[t];
    if (!runs_.empty() && runs_.back().cost == task.item_cost &&
        (!by_config || runs_.back().config == config_of(task))) {
      runs_.back().end = t + 1;
    } else {
      runs_.push_back({task.item_cost, config_of(task), t, t + 1});
    }
  }
}

// Predicted step time of the current pieces: LPT placement of every item,
// longest first (ties: task order), plus the merge of all partial slots.
double Planner::makespan() {
  collect_runs(false);
  std::sort(runs_.begin(), runs_.end(), [](const TaskRun& a, const TaskRun& b) {
    return a.cost != b.cost ? a.cost > b.cost : a.begin < b.begin;
  });
  loads_.reset(slots_, false);
  std::int64_t slots = 0;
  for (const TaskRun& run : runs_) {
    // A run's tasks cost the same per item: place all their items at once.
    std::int64_t count = 0;
    for (int t = run.begin; t < run.end; ++t) {
      const Task& task = tasks_[t];
      count += task_items(task);
      slots +=
          std::int64_t{task.pieces} * spec_.num_kv_heads * task.request_count * spec_.group_size();
    }
    loads_.place(run.cost, count);
  }
  return model_.step_us(spec_, loads_.max_load(), slots, 0);
}

// Emits the items: one launch per config, items longest first within it
// (blocks are issued in order), one item per (task, KV piece, KV head, row
// tile); a tile's rows are request-major (a request's group heads together).
// Each run of a task's equal-cost items is placed on the least-loaded SMs
// (longest processing time first), for the predicted per-SM load.
void Planner::emit_items() {
  collect_runs(true);
  // LPT across configs: runs in descending cost regardless of launch order
  // (ties: config, then task order).
  std::sort(runs_.begin(), runs_.end(), [](const TaskRun& a, const TaskRun& b) {
    if (a.cost != b.cost) return a.cost > b.cost;
    return a.config != b.config ? a.config < b.config : a.begin < b.begin;
  });
  loads_.reset(slots_, true);
  std::vector<std::int32_t> run_of(tasks_.size());
  std::int64_t max_items = 0;
  std::int64_t max_rows = 0;
  for (const TaskRun& run : runs_) {
    for (int t = run.begin; t < run.end; ++t) {
      const Task& task = tasks_[t];
      const std::int64_t count = task_items(task);
      run_of[t] = loads_.place(task.item_cost, count);
      max_items += count;
      max_rows +=
          std::int64_t{task.pieces} * spec_.num_kv_heads * task.request_count * spec_.group_size();
    }
  }
  // Partial slots are int32 indices (items, query_rows, merge_indices).
  CANOPY_CHECK(max_rows <= std::numeric_limits<std::int32_t>::max(), ErrorKind::kNotSupported,
               "the plan needs {} partial states, more than the 2^31 - 1 it can index", max_rows);
  // Written through pointers, then trimmed: pieces that come out empty emit nothing.
  plan_.items.resize(max_items);
  plan_.query_rows.resize(max_rows);
  Cursor out{plan_.items.data(), plan_.query_rows.data()};
  // Launch order: by config, then longest first (ties: task order).
  std::sort(runs_.begin(), runs_.end(), [](const TaskRun& a, const TaskRun& b) {
    if (a.config != b.config) return a.config < b.config;
    return a.cost != b.cost ? a.cost > b.cost : a.begin < b.begin;
  });
  for (const TaskRun& run : runs_) {
    const auto item_index = [&] {
      return static_cast<std::int32_t>(out.item - plan_.items.data());
    };
    if (plan_.launches.empty() || plan_.launches.back().config != run.config) {
      plan_.launches.push_back(
          {configs_[run.config].family, run.config, item_index(), item_index()});
    }
    for (int t = run.begin; t < run.end; ++t) emit_task(tasks_[t], loads_.sm_order(run_of[t]), out);
    plan_.launches.back().end = item_index();
  }
  plan_.items.resize(out.item - plan_.items.data());
  plan_.query_rows.resize(out.row - plan_.query_rows.data());
  plan_.sm_load_us = loads_.per_sm();
}

// One task's items, pieces outermost, then KV heads, then row tiles. The rows
// of one (piece, KV head) are thus the task's rows 0 .. rows-1 in consecutive
// slots from first_slot + (piece * KV heads + head) * rows, which the merge
// schedule relies on.
void Planner::emit_task(Task& task, const std::int32_t* sm_order, Cursor& out) {
  const int group = spec_.group_size();
  const int rows = task.request_count * group;
  const Variant& variant = variants_[task.variant];
  const int tile_kv = configs_[variant.config].tile_kv;
  // Row j * group + g is output row reader_j * heads + h * group + g under KV
  // head h: the part without h is the same for every piece and KV head.
  row_ids_.resize(rows);
  const std::int32_t* readers = task_requests_.data() + task.request_begin;
  for (int j = 0, row = 0; j < task.request_count; ++j) {
    for (int g = 0; g < group; ++g) row_ids_[row++] = readers[j] * spec_.num_qo_heads + g;
  }
  tile_bounds_.resize(task.tiles + 1);  // tile i holds rows tile_bounds_[i] .. [i + 1]
  for (int i = 0; i <= task.tiles; ++i) {
    tile_bounds_[i] = static_cast<int>(static_cast<std::int64_t>(rows) * i / task.tiles);
  }
  task.first_slot = static_cast<std::int32_t>(out.row - plan_.query_rows.data());
  task.piece_count = 0;
  int slot_pos = 0;  // item k of the task runs on slot sm_order[k % slots]
  for (int p = 0; p < task.pieces; ++p) {
    // Piece bounds on tile_kv boundaries: all pieces but the last are whole tiles.
    auto bound = [&](int k) {
      if (k == task.pieces) return task.tokens;
      const std::int64_t raw = static_cast<std::int64_t>(task.tokens) * k / task.pieces;
      return static_cast<std::int32_t>(raw / tile_kv * tile_kv);
    };
    const std::int32_t token_begin = bound(p);
    const std::int32_t token_end = bound(p + 1);
    if (token_end <= token_begin) continue;
    ++task.piece_count;
    // KV heads in packs of variant.heads (a pack is one item over its heads'
    // consecutive slot runs; its variant has a single row tile).
    for (int h0 = 0; h0 < spec_.num_kv_heads; h0 += variant.heads) {
      const int heads = std::min(variant.heads, spec_.num_kv_heads - h0);
      const auto row_base = static_cast<std::int32_t>(out.row - plan_.query_rows.data());
      for (int i = 0; i < task.tiles; ++i) {
        const int row_lo = tile_bounds_[i];
        const int row_hi = tile_bounds_[i + 1];
        WorkItem& item = *out.item++;
        item.node = task.node;
        item.config = variant.config;
        item.row_tile = variant.row_tile;
        item.direct = task.direct;
        item.kv_head = h0;
        item.kv_heads = heads;
        item.kv_page_offset = task.page_offset;
        item.token_begin = token_begin;
        item.token_end = token_end;
        item.path_token_offset = task.path_offset;
        item.row_begin = row_base + row_lo;
        item.row_count = row_hi - row_lo;
        item.predicted_us = static_cast<float>(task.item_cost);
        item.sm = sm_order[slot_pos] / static_cast<int>(slot_scale_);
        if (++slot_pos == slots_) slot_pos = 0;
      }
      for (int h = h0; h < h0 + heads; ++h) {
        const std::int32_t head_offset = h * group;
        for (int row = 0; row < rows; ++row) out.row[row] = row_ids_[row] + head_offset;
        out.row += rows;
      }
    }
  }
}

// A request whose path is one task in one piece has a single partial state:
// when every reader of a task is such a request, the task's items write the
// output directly and its rows skip the merge.
void Planner::mark_direct_tasks() {
  std::vector<std::int32_t>& reads = fan_in_;  // tasks' pieces read by each request
  reads.assign(plan_.batch_size, 0);
  for (const Task& task : tasks_) {
    for (int j = 0; j < task.request_count; ++j) {
      reads[task_requests_[task.request_begin + j]] += task.pieces;
    }
  }
  for (Task& task : tasks_) {
    task.direct = task.pieces == 1;
    for (int j = 0; j < task.request_count && task.direct; ++j) {
      task.direct = reads[task_requests_[task.request_begin + j]] == 1;
    }
  }
}

// Each merged row combines its partial slots ordered by KV position along its
// path: a fixed order, so results are bit-reproducible. A request's tasks
// partition its path and decide() creates them top-down, so in task order
// they are already ordered by position, and so are each task's pieces. All
// rows of a request merge the same (task, piece) list, each at its own slot.
// Requests of direct tasks are not merged.
void Planner::build_merge_schedule() {
  const int batch = plan_.batch_size;
  const int heads = spec_.num_qo_heads;
  const int kv_heads = spec_.num_kv_heads;
  const int group = spec_.group_size();
  // Every row of request r merges fan_in[r] slots (0: written directly); its
  // rows' lists are consecutive from next[r].
  std::vector<std::int32_t>& fan_in = fan_in_;
  fan_in.assign(batch, 0);
  for (const Task& task : tasks_) {
    if (task.direct) continue;
    for (int j = 0; j < task.request_count; ++j) {
      fan_in[task_requests_[task.request_begin + j]] += task.piece_count;
    }
  }
  std::vector<std::int32_t>& indptr = plan_.merge_indptr;
  std::vector<std::int32_t>& rows_out = plan_.merge_rows;
  indptr.clear();
  rows_out.clear();
  indptr.push_back(0);
  std::vector<std::int32_t> next(batch);  // where request r's next entry goes (row 0's list)
  std::int32_t start = 0;
  int max_fan_in = 0;
  for (int r = 0; r < batch; ++r) {
    const std::int32_t f = fan_in[r];
    next[r] = start;
    if (f == 0) continue;
    max_fan_in = std::max(max_fan_in, f);
    for (int q = 0; q < heads; ++q) {
      rows_out.push_back(r * heads + q);
      indptr.push_back(start + (q + 1) * f);
    }
    start += heads * f;
  }
  plan_.max_merge_fan_in = max_fan_in;
  // Task by task (path order for every request), each reader's slots go to
  // the next entry of each of its rows: row q's list is f entries apart.
  plan_.merge_indices.resize(start);
  std::int32_t* const indices = plan_.merge_indices.data();
  // Reader j's row for q head q = h * group + g is slot j * group + offset[q]
  // of each piece, offset[q] = h * rows + g (rows: the task's rows per KV head).
  std::vector<std::int32_t> offset(heads);
  int offset_rows = -1;
  for (const Task& task : tasks_) {
    if (task.direct) continue;
    const int rows = task.request_count * group;
    if (rows != offset_rows) {  // siblings usually share it
      for (int q = 0; q < heads; ++q) offset[q] = q / group * rows + q % group;
      offset_rows = rows;
    }
    for (int j = 0; j < task.request_count; ++j) {
      const std::int32_t r = task_requests_[task.request_begin + j];
      const std::int32_t f = fan_in[r];
      for (int p = 0; p < task.piece_count; ++p) {
        std::int32_t* dst = indices + next[r]++;
        const std::int32_t base = task.first_slot + p * kv_heads * rows + j * group;
        for (int q = 0; q < heads; ++q, dst += f) *dst = base + offset[q];
      }
    }
  }
}

// plan.configs lists only configs that launch: the runtime compiles and loads
// every listed config, so an unused candidate would cost a compile for nothing.
void Planner::keep_launched_configs() {
  std::vector<int> remap(configs_.size(), -1);
  plan_.configs.clear();
  for (LaunchStep& g : plan_.launches) {
    if (remap[g.config] < 0) {
      remap[g.config] = static_cast<int>(plan_.configs.size());
      plan_.configs.push_back(configs_[g.config]);
    }
    g.config = remap[g.config];
  }
  for (WorkItem& item : plan_.items) item.config = remap[item.config];
  if (!plan_.merge_rows.empty()) {
    plan_.launches.push_back(
        {KernelFamily::kMergeStates, -1, 0, static_cast<std::int32_t>(plan_.merge_rows.size())});
  }
}

void Planner::run() {
  // A reused Plan keeps its memory: vectors filled by appending are cleared;
  // items, query_rows and the merge arrays are resized and then overwritten
  // entry by entry, so they are not cleared (that would zero-fill them again).
  plan_.kv_pages.clear();
  plan_.launches.clear();
  plan_.configs.clear();
  plan_.spec = spec_;
  plan_.batch_size = tree_.batch_size;
  plan_.tree_depth = tree_.max_depth();
  plan_.num_sms = model_.coefficients().num_sms;
  subtree_begin_.resize(tree_.nodes.size());
  subtree_end_.resize(tree_.nodes.size());
  preorder_requests_.reserve(tree_.batch_size);
  for (int root : tree_.roots) gather_requests(root);
  task_requests_.reserve(2 * static_cast<std::size_t>(tree_.batch_size));
  tasks_.reserve(tree_.nodes.size());
  for (int root : tree_.roots) decide(root, 0, 0, 0, 0);
  split_tasks();
  mark_direct_tasks();
  emit_items();
  build_merge_schedule();
  keep_launched_configs();
  plan_.num_partial_slots = static_cast<std::int64_t>(plan_.query_rows.size());
  const double busiest = *std::max_element(plan_.sm_load_us.begin(), plan_.sm_load_us.end());
  plan_.predicted_us = static_cast<float>(
      model_.step_us(spec_, busiest, static_cast<std::int64_t>(plan_.merge_indices.size()),
                     static_cast<int>(plan_.launches.size())));
}

}  // namespace

std::vector<KernelConfig> shipped_kernel_configs(const AttentionSpec& spec) {
  std::vector<KernelConfig> configs;
  for (const generator::FamilyInfo& f : generator::all_families()) {
    const std::vector<KernelConfig> mine = f.shipped_configs(spec);
    configs.insert(configs.end(), mine.begin(), mine.end());
  }
  return configs;
}

std::vector<KernelConfig> default_kernel_configs(const AttentionSpec& spec) {
  // The tensor-core kernels: the general one runs every item shape, the wide
  // one 128-row tiles of long shared prefixes (plan_tree keeps the second
  // only when its launch pays for itself).
  return generator::family_info(KernelFamily::kMmaAttention).shipped_configs(spec);
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

void plan_tree(const AttentionSpec& spec, const PrefixTree& tree, const PlannerOptions& options,
               Plan& out) {
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
    Planner(spec, without_sharing(tree), options, out).run();
    return;
  }
  Planner(spec, tree, options, out).run();
  // Default kernels: a plan that launches two partial kernels is compared
  // with the general kernel alone (one launch fewer), and the faster kept.
  if (options.candidates.empty() && out.configs.size() > 1) {
    PlannerOptions single = options;
    single.candidates = {default_kernel_configs(spec).front()};
    Plan alone;
    Planner(spec, tree, single, alone).run();
    if (alone.predicted_us < out.predicted_us) out = std::move(alone);
  }
}

}  // namespace

void make_plan(const AttentionSpec& spec, const PrefixTree& tree, const PlannerOptions& options,
               Plan& out) {
  spec.validate();
  plan_tree(spec, tree, options, out);
}

void make_plan(const AttentionSpec& spec, const BlockTables& tables, const PlannerOptions& options,
               Plan& out) {
  spec.validate();
  // The tree borrows the tables' page ids: planning copies them once, into the plan.
  plan_tree(spec, discover_prefix_tree(tables, spec.page_size, TreePages::kBorrowed), options, out);
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
