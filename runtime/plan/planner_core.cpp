// The planner: KV-guided grouping, the absorb (push-down) profit rule, KV
// splitting and longest-first balancing, all priced by one CostModel.
// docs/planner.md walks through an example.
#include "runtime/plan/planner_core.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "canopy/error.hpp"
#include "canopy/kernel_spec.hpp"
#include "core/ceil_div.hpp"
#include "families/kernel_families.hpp"
#include "families/occupancy.hpp"

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
    // Defaults the device cannot take (shared memory) are dropped.
    configs = default_kernel_configs(spec);
    std::erase_if(configs, [&](const KernelConfig& c) {
      return !families::can_implement(partial_kernel_spec(spec, c, arch)).ok() ||
             !model.fits(spec, c);
    });
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
  // Items are placed on block slots, blocks_per_sm of them per SM: an SM
  // reaches its bandwidth and tensor rate only with every slot busy, so an
  // item costs `slot_scale` times its full-SM time on a slot.
  int per_sm = arch.max_blocks_per_sm();
  for (const KernelConfig& c : configs) {
    per_sm = std::min(per_sm, families::blocks_per_sm(partial_kernel_spec(spec, c, arch), arch));
  }
  slot_scale = per_sm;
  slots = model.coefficients().num_sms * per_sm;
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
      slot_scale_(setup_.slot_scale),
      slots_(setup_.slots),
      group_(spec.group_size()) {
  s_.memo.new_pass();
}

double Planner::item_us(int variant, int rows, int tokens) {
  CostMemo::Entry& e = s_.memo.slot(variant, rows, tokens);
  if (!s_.memo.holds(e, variant, rows, tokens)) {
    const Variant& v = variants_[variant];
    e = {s_.memo.pass(),
         variant,
         rows,
         tokens,
         variant,
         model_.item_us(spec_, coefficients_[v.config], v.row_tile, rows, tokens, v.heads)};
  }
  return e.us * slot_scale_;
}

// Cheapest variant for `rows` query rows over `tokens` KV tokens, per KV head.
std::pair<int, double> Planner::best_variant(int rows, int tokens) {
  // Siblings ask for the same shape in a row: the last answer first.
  if (rows == last_best_rows_ && tokens == last_best_tokens_) return last_best_;
  last_best_rows_ = rows;
  last_best_tokens_ = tokens;
  last_best_ = best_variant_memo(rows, tokens);
  return last_best_;
}

std::pair<int, double> Planner::best_variant_memo(int rows, int tokens) {
  if (const CostMemo::Entry& e = s_.memo.slot(-1, rows, tokens);
      s_.memo.holds(e, -1, rows, tokens)) {
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
  s_.memo.slot(-1, rows, tokens) = {s_.memo.pass(), -1, rows, tokens, best, best_us};
  return {best, best_us};
}

// Per-row merge price of one more partial state, in slot-microseconds (the
// unit of item costs).
double Planner::partial_us(int requests) const {
  return slot_scale_ * requests * spec_.num_qo_heads * model_.merge_row_us(spec_, 1) /
         spec_.num_kv_heads;
}

std::int32_t Planner::piece_bound(const Task& task, int p) const {
  if (p == task.pieces) return task.tokens;
  if (p == 0) return 0;
  const int tile_kv = configs_[variants_[task.variant].config].tile_kv;
  const std::int64_t raw = static_cast<std::int64_t>(task.tokens) * p / task.pieces;
  return static_cast<std::int32_t>(raw / tile_kv * tile_kv);
}

// Lists every node's subtree requests as one contiguous range, so a standalone
// task takes its readers without walking or allocating.
void Planner::gather_requests(int node_id) {
  const PrefixTree::Node& node = tree_.nodes[node_id];
  s_.subtree_begin[node_id] = static_cast<std::int32_t>(s_.preorder_requests.size());
  const std::span<const int> requests = tree_.requests(node);
  s_.preorder_requests.insert(s_.preorder_requests.end(), requests.begin(), requests.end());
  for (int c : tree_.children(node)) gather_requests(c);
  s_.subtree_end[node_id] = static_cast<std::int32_t>(s_.preorder_requests.size());
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
    // Siblings usually look alike: the previous child's price is reused.
    int last_requests = -1;
    std::int32_t last_tokens = -1;
    double delta = 0;
    for (int c : tree_.children(node)) {
      const auto& child = tree_.nodes[c];
      if (child.subtree_requests != last_requests || child.num_tokens != last_tokens) {
        last_requests = child.subtree_requests;
        last_tokens = child.num_tokens;
        delta = cost(child.subtree_requests, seg_tokens + child.num_tokens) -
                cost(child.subtree_requests, child.num_tokens);
      }
      pushed += delta;
    }
    push_down = pushed < standalone;
  }
  if (!push_down) {
    const PlannerScratch& order = *order_;
    add_task(node_id, inh_begin, inh_pages, seg_tokens, path_offset,
             order.preorder_requests.data() + order.subtree_begin[node_id],
             order.subtree_end[node_id] - order.subtree_begin[node_id]);
    for (int c : tree_.children(node)) decide(c, 0, 0, 0, node.prefix_tokens + node.num_tokens);
    return;
  }
  if (node.request_count > 0) {
    add_task(node_id, inh_begin, inh_pages, seg_tokens, path_offset, tree_.requests(node).data(),
             node.request_count);
  }
  // The children inherit the whole segment: its page chain goes at the end of
  // the chain buffer while they are walked.
  std::vector<std::int32_t>& chain = s_.chain;
  const std::int32_t seg_begin = static_cast<std::int32_t>(chain.size());
  chain.resize(seg_begin + inh_pages);  // resize first: copying from itself
  std::copy_n(chain.data() + inh_begin, inh_pages, chain.data() + seg_begin);
  const std::span<const std::int32_t> own_pages = tree_.pages_of(node);
  chain.insert(chain.end(), own_pages.begin(), own_pages.end());
  const std::int32_t seg_pages = inh_pages + node.page_count;
  for (int c : tree_.children(node)) decide(c, seg_begin, seg_pages, seg_tokens, path_offset);
  chain.resize(seg_begin);
}

// A task over the inherited chain[inherited_begin ..] followed by the node's
// own pages, read by `readers` (ascending).
void Planner::add_task(int node_id, std::int32_t inh_begin, std::int32_t inh_pages,
                       std::int32_t tokens, std::int32_t path_offset, const int* readers,
                       std::int32_t reader_count) {
  const PrefixTree::Node& node = tree_.nodes[node_id];
  Task task;
  task.node = node_id;
  task.page_offset = s_.page_total;
  task.page_count = inh_pages + node.page_count;
  s_.page_total += task.page_count;
  // A segment of the node's own pages is copied when the plan is written
  // (a losing 2g pass never copies it); one with inherited pages is staged.
  if (inh_pages > 0) {
    task.staged = static_cast<std::int32_t>(s_.kv_pages.size());
    s_.kv_pages.insert(s_.kv_pages.end(), s_.chain.begin() + inh_begin,
                       s_.chain.begin() + inh_begin + inh_pages);
    const std::span<const std::int32_t> own_pages = tree_.pages_of(node);
    s_.kv_pages.insert(s_.kv_pages.end(), own_pages.begin(), own_pages.end());
  }
  task.tokens = tokens;
  task.path_offset = path_offset;
  task.request_begin = static_cast<std::int32_t>(s_.task_requests.size());
  task.request_count = reader_count;
  s_.task_requests.insert(s_.task_requests.end(), readers, readers + reader_count);
  // Preorder lists a subtree's requests ascending whenever requests were
  // numbered in tree order (tables built per branch); otherwise sort them.
  const auto first = s_.task_requests.begin() + task.request_begin;
  if (!std::is_sorted(first, s_.task_requests.end())) std::sort(first, s_.task_requests.end());
  task.variant = best_variant(task.request_count * group_, tokens).first;
  s_.tasks.push_back(task);
}

// The class of a task (see TaskClass), added if new. Siblings are usually
// consecutive and alike, so the previous task's class is tried first.
int Planner::class_of(const Task& task, int tiles) {
  std::vector<TaskClass>& classes = s_.classes;
  const auto same = [&](int c) {
    const TaskClass& k = classes[c];
    return k.base_variant == task.variant && k.request_count == task.request_count &&
           k.tokens == task.tokens;
  };
  if (!s_.class_runs.empty() && same(s_.class_runs.back().cls)) return s_.class_runs.back().cls;
  std::vector<int>& table = s_.class_table;
  const std::size_t mask = table.size() - 1;
  std::uint64_t h = (std::uint64_t{static_cast<std::uint32_t>(task.tokens)} << 32 |
                     static_cast<std::uint32_t>(task.request_count)) *
                        0x9E3779B97F4A7C15ull +
                    static_cast<std::uint32_t>(task.variant);
  for (std::size_t i = (h ^ (h >> 29)) & mask;; i = (i + 1) & mask) {
    if (table[i] < 0) {
      table[i] = static_cast<int>(classes.size());
      TaskClass& k = classes.emplace_back();
      k.base_variant = k.variant = task.variant;
      k.request_count = task.request_count;
      k.tokens = task.tokens;
      k.tiles = tiles;
      k.whole_cost = k.item_cost = tile_cost(k, k.variant, k.tokens);
      return table[i];
    }
    if (same(table[i])) return table[i];
  }
}

// Per task: its config and tiles, and how many KV pieces it is cut into
// (flattened-tree KV splitting). Items costing more than a share
// total / (num_sms * waves) are cut into pieces of at least min_split_tokens,
// so the longest item does not set the step time. Splitting also adds item
// overheads and partial states, and wave quantization can eat the gain, so
// each candidate share (no split, waves = 1, 2, 4, 8) is priced by placing
// the items on SMs, and the fastest wins (ties: fewer splits). Candidates are
// applied and priced per task class; the winner is written to the tasks.
void Planner::make_classes() {
  const int group = group_;
  double total = 0;
  max_whole_cost_ = 0;
  any_split_ = false;
  std::vector<Task>& tasks = s_.tasks;
  s_.classes.clear();
  s_.class_runs.clear();
  std::size_t capacity = 16;
  while (capacity < 2 * tasks.size()) capacity *= 2;
  s_.class_table.assign(capacity, -1);
  for (int t = 0; t < static_cast<int>(tasks.size()); ++t) {
    Task& task = tasks[t];
    const int row_tile = variants_[task.variant].row_tile;
    const int rows = task.request_count * group;
    task.tiles = static_cast<int>(ceil_div(rows, row_tile));
    task.pieces = 1;
    const int cls = class_of(task, task.tiles);
    ++s_.classes[cls].count;
    if (!s_.class_runs.empty() && s_.class_runs.back().cls == cls) {
      s_.class_runs.back().end = t + 1;
    } else {
      s_.class_runs.push_back({cls, t, t + 1});
    }
    task.item_cost = s_.classes[cls].whole_cost;
    max_whole_cost_ = std::max(max_whole_cost_, task.item_cost);
    total += task.item_cost * task.tiles * head_groups(task);
  }
  unsplit_work_ = total;
}

void Planner::split_tasks() {
  const int sms = slots_;
  const double total = unsplit_work_;
  std::vector<Task>& tasks = s_.tasks;
  if (opt_.allow_split) {
    double best_target = 0;
    double best = -1;  // the unsplit makespan, priced once some candidate differs
    // Candidate shares: the work spread over 1, 2, 4 .. waves of block slots,
    // and the longest item cut in 2, 3 or 4 (many equal tasks just above one
    // wave: halving each fills the slots exactly, where a share of the total
    // would cut them in three and leave a ragged second wave).
    std::vector<double>& targets = s_.targets;
    targets.clear();
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
        const double merge = best - s_.loads.max_load();
        if (best <= (total / sms + merge) * 1.001) break;
        apply_split(target);
      }
      // A candidate whose lower bound cannot beat the best is not placed:
      // the verdict is the same, at O(classes) instead of a placement.
      if (makespan_bound() * (1 - 1e-9) >= best * 0.999) continue;
      const double span = makespan();
      if (span < best * 0.999) {
        best = span;
        best_target = target;
      }
    }
    apply_split(best_target);
  }
  for (const ClassRun& run : s_.class_runs) {
    const TaskClass& c = s_.classes[run.cls];
    for (int t = run.begin; t < run.end; ++t) {
      tasks[t].variant = c.variant;
      tasks[t].pieces = c.pieces;
      tasks[t].item_cost = c.item_cost;
    }
  }
}

// Cuts every task class costing more than `target` (0: none); returns whether
// any class's pieces or variant changed. A head pack over the target first
// becomes one block per KV head (more items, no more partial states to
// merge); what still exceeds the target is cut into KV pieces.
bool Planner::apply_split(double target) {
  // Nothing exceeds the target: unsplit, which the tasks may already be.
  if ((target <= 0 || target >= max_whole_cost_) && !any_split_) return false;
  bool changed = false;
  any_split_ = false;
  for (TaskClass& c : s_.classes) {
    int pieces = 1;
    int variant = c.base_variant;
    double item_cost = c.whole_cost;
    if (target > 0 && item_cost > target && variants_[variant].heads > 1) {
      variant = unpacked_[variant];
      item_cost = tile_cost(c, variant, c.tokens);
    }
    changed |= variant != c.variant;
    any_split_ |= variant != c.base_variant;
    c.variant = variant;
    if (target > 0 && item_cost > target) {
      const int by_cost = static_cast<int>(std::ceil(item_cost / target));
      const int by_length = c.tokens / std::max(1, opt_.min_split_tokens);
      pieces = std::max(1, std::min(by_cost, by_length));
      if (pieces > 1) {
        const auto piece_tokens = static_cast<int>(ceil_div(c.tokens, pieces));
        item_cost = tile_cost(c, variant, piece_tokens);
      }
    }
    changed |= pieces != c.pieces;
    any_split_ |= pieces > 1;
    c.pieces = pieces;
    c.item_cost = item_cost;
  }
  return changed;
}

// Groups consecutive tasks of equal item cost and config into runs, in task
// order (emission's placement).
void Planner::collect_runs() {
  std::vector<TaskRun>& runs = s_.runs;
  runs.clear();
  for (int t = 0; t < static_cast<int>(s_.tasks.size()); ++t) {
    const Task& task = s_.tasks[t];
    if (!runs.empty() && runs.back().cost == task.item_cost &&
        runs.back().config == config_of(task)) {
      runs.back().end = t + 1;
    } else {
      runs.push_back({task.item_cost, config_of(task), t, t + 1});
    }
  }
}

// A lower bound of makespan(): no slot is lighter than the average of all
// items' costs nor than the longest item.
double Planner::makespan_bound() const {
  const int group = group_;
  double work = 0;
  double longest = 0;
  std::int64_t slots = 0;
  for (const TaskClass& c : s_.classes) {
    const double items = double{1} * c.count * c.pieces * c.tiles * head_groups(c.variant);
    work += items * c.item_cost;
    longest = std::max(longest, c.item_cost);
    slots += std::int64_t{c.count} * c.pieces * spec_.num_kv_heads * c.request_count * group;
  }
  return model_.step_us(spec_, std::max(work / slots_, longest), slots, 0);
}

// Predicted step time of the current pieces: LPT placement of every item,
// longest first (ties: task order), plus the merge of all partial slots. Runs
// are consecutive tasks of equal item cost, gathered from the class runs.
double Planner::makespan() {
  const int group = group_;
  std::vector<TaskRun>& runs = s_.runs;
  runs.clear();
  for (const ClassRun& cr : s_.class_runs) {
    const TaskClass& c = s_.classes[cr.cls];
    const std::int64_t n = cr.end - cr.begin;
    if (runs.empty() || runs.back().cost != c.item_cost) {
      runs.push_back({c.item_cost, 0, cr.begin, cr.end, 0, 0});
    }
    TaskRun& run = runs.back();
    run.end = cr.end;
    run.items += n * c.pieces * c.tiles * head_groups(c.variant);
    run.slots += n * c.pieces * spec_.num_kv_heads * c.request_count * group;
  }
  std::sort(runs.begin(), runs.end(), [](const TaskRun& a, const TaskRun& b) {
    return a.cost != b.cost ? a.cost > b.cost : a.begin < b.begin;
  });
  s_.loads.reset(slots_, false);
  std::int64_t slots = 0;
  for (const TaskRun& run : runs) {
    // A run's tasks cost the same per item: place all their items at once.
    s_.loads.place(run.cost, run.items);
    slots += run.slots;
  }
  return model_.step_us(spec_, s_.loads.max_load(), slots, 0);
}

// A request whose path is one task in one piece has a single partial state:
// when every reader of a task is such a request, the task's items write the
// output directly and its rows skip the merge.
void Planner::mark_direct_tasks() {
  std::vector<std::int32_t>& reads = s_.fan_in;  // tasks' pieces read by each request
  reads.assign(tree_.batch_size, 0);
  for (const Task& task : s_.tasks) {
    for (int j = 0; j < task.request_count; ++j) {
      reads[s_.task_requests[task.request_begin + j]] += task.pieces;
    }
  }
  for (Task& task : s_.tasks) {
    task.direct = task.pieces == 1;
    for (int j = 0; j < task.request_count && task.direct; ++j) {
      task.direct = reads[s_.task_requests[task.request_begin + j]] == 1;
    }
  }
}

// The final placement, in launch-independent LPT order: runs in descending
// cost (ties: config, then task order). Each task's run of equal items goes to
// the least-loaded slots. Also counts what emission writes and what the step
// will cost.
void Planner::place() {
  collect_runs();
  std::sort(s_.runs.begin(), s_.runs.end(), [](const TaskRun& a, const TaskRun& b) {
    if (a.cost != b.cost) return a.cost > b.cost;
    return a.config != b.config ? a.config < b.config : a.begin < b.begin;
  });
  s_.loads.reset(slots_, true);
  s_.run_of.resize(s_.tasks.size());
  max_items_ = 0;
  max_rows_ = 0;
  std::int64_t merged = 0;
  bool any_merged = false;
  std::vector<char> used(configs_.size(), 0);
  for (const TaskRun& run : s_.runs) {
    used[run.config] = 1;
    for (int t = run.begin; t < run.end; ++t) {
      Task& task = s_.tasks[t];
      const std::int64_t count = task_items(task);
      s_.run_of[t] = s_.loads.place(task.item_cost, count);
      max_items_ += count;
      max_rows_ += std::int64_t{task.pieces} * spec_.num_kv_heads * task.request_count * group_;
      task.piece_count = 1;  // one piece holds all tokens (at least one)
      if (task.pieces > 1) {
        task.piece_count = 0;
        for (int p = 0; p < task.pieces; ++p) {
          task.piece_count += piece_bound(task, p + 1) > piece_bound(task, p);
        }
      }
      if (!task.direct) {
        any_merged = true;
        merged += std::int64_t{task.piece_count} * task.request_count * spec_.num_qo_heads;
      }
    }
  }
  launched_configs_ = static_cast<int>(std::count(used.begin(), used.end(), 1));
  // As emit() computes it: the busiest slot's load as stored (float), the
  // merge of every merged partial state, one launch per config plus the merge.
  const float busiest = static_cast<float>(s_.loads.max_load());
  merged_ = merged;
  step_launches_ = launched_configs_ + (any_merged ? 1 : 0);
  predicted_us_ = static_cast<float>(model_.step_us(spec_, busiest, merged_, step_launches_));
}

void Planner::make_tasks(const PlannerScratch* same_tree) {
  s_.tasks.clear();
  s_.task_requests.clear();
  s_.kv_pages.clear();
  s_.page_total = 0;
  s_.chain.clear();
  // The requests in preorder depend on the tree alone: a pass over the same
  // tree may lend its own.
  order_ = same_tree != nullptr ? same_tree : &s_;
  if (same_tree == nullptr) {
    s_.preorder_requests.clear();
    s_.subtree_begin.resize(tree_.nodes.size());
    s_.subtree_end.resize(tree_.nodes.size());
    for (int root : tree_.roots) gather_requests(root);
  }
  for (int root : tree_.roots) decide(root, 0, 0, 0, 0);
  make_classes();
}

int Planner::task_configs() const {
  std::vector<char>& used = s_.used_configs;
  used.assign(configs_.size(), 0);
  int count = 0;
  for (const Task& task : s_.tasks) {
    char& u = used[config_of(task)];
    count += u == 0;
    u = 1;
  }
  return count;
}

// The cheapest item a class can have under any split candidate: its variant
// or the unpacked one, over the shortest piece min_split_tokens allows (an
// item's cost grows with its tokens).
double Planner::cheapest_item(const TaskClass& c) {
  if (!opt_.allow_split) return c.whole_cost;
  const int most_pieces = std::max(1, c.tokens / std::max(1, opt_.min_split_tokens));
  const auto tokens = static_cast<int>(ceil_div(c.tokens, most_pieces));
  double cheapest = tile_cost(c, c.base_variant, tokens);
  if (variants_[c.base_variant].heads > 1) {
    cheapest = std::min(cheapest, tile_cost(c, unpacked_[c.base_variant], tokens));
  }
  return std::min(cheapest, c.whole_cost);
}

// Splitting only adds work (item overheads, unpacked heads), partial states
// to merge and launches, so the unsplit tasks bound every candidate from
// below: the busiest slot carries at least the average load, and at least
// the item no candidate can make cheaper than cheapest_item().
double Planner::lower_bound() {
  std::vector<std::int32_t>& reads = s_.fan_in;  // tasks read by each request
  reads.assign(tree_.batch_size, 0);
  for (const Task& task : s_.tasks) {
    for (int j = 0; j < task.request_count; ++j) ++reads[s_.task_requests[task.request_begin + j]];
  }
  std::int64_t merged = 0;
  for (const Task& task : s_.tasks) {
    bool direct = true;
    for (int j = 0; j < task.request_count && direct; ++j) {
      direct = reads[s_.task_requests[task.request_begin + j]] == 1;
    }
    if (!direct) merged += std::int64_t{task.request_count} * spec_.num_qo_heads;
  }
  const int launches = task_configs() + (merged > 0 ? 1 : 0);
  double busiest = unsplit_work_ / slots_;
  for (const TaskClass& c : s_.classes) busiest = std::max(busiest, cheapest_item(c));
  return model_.step_us(spec_, busiest, merged, launches);
}

void Planner::price() {
  split_tasks();
  mark_direct_tasks();
  place();
}

// Emits the items: one launch per config, items longest first within it
// (blocks are issued in order), one item per (task, KV piece, KV head, row
// tile); a tile's rows are request-major (a request's group heads together).
// A task's rows are written once, under KV head 0 (Plan::task_rows, at
// task.request_begin * group: task_requests' order), not per piece, KV head
// and row tile; each item points at its first (WorkItem).
void Planner::emit_items(Plan& out) {
  // Partial slots are int32 indices (items, merge parts).
  CANOPY_CHECK(max_rows_ <= std::numeric_limits<std::int32_t>::max(), ErrorKind::kNotSupported,
               "the plan needs {} partial states, more than the 2^31 - 1 it can index", max_rows_);
  // Written through pointers, then trimmed: pieces that come out empty emit nothing.
  out.items.resize(max_items_);
  out.task_rows.resize(s_.task_requests.size() * group_);
  WorkItem* const items = out.items.data();
  Cursor cursor{items, 0};
  // Launch order: by config, then longest first (ties: task order).
  std::sort(s_.runs.begin(), s_.runs.end(), [](const TaskRun& a, const TaskRun& b) {
    if (a.config != b.config) return a.config < b.config;
    return a.cost != b.cost ? a.cost > b.cost : a.begin < b.begin;
  });
  for (const TaskRun& run : s_.runs) {
    const auto item_index = [&] { return static_cast<std::int32_t>(cursor.item - items); };
    if (out.launches.empty() || out.launches.back().config != run.config) {
      out.launches.push_back({configs_[run.config].family, run.config, item_index(), item_index()});
    }
    for (int t = run.begin; t < run.end; ++t) {
      emit_task(s_.tasks[t], s_.loads.sm_order(s_.run_of[t]), items, out.task_rows.data(), cursor);
    }
    out.launches.back().end = item_index();
  }
  out.items.resize(cursor.item - items);
  out.num_partial_slots = cursor.slot;
  s_.loads.per_sm(out.sm_load_us);
}

// One task's items, pieces outermost, then KV heads, then row tiles. The rows
// of one (piece, KV head) are thus the task's rows 0 .. rows-1 in consecutive
// slots from first_slot + (piece * KV heads + head) * rows, which the merge
// schedule relies on.
void Planner::emit_task(Task& task, const std::int32_t* sm_order, const WorkItem* items_begin,
                        std::int32_t* task_rows, Cursor& out) {
  const int group = group_;
  const int heads_qo = spec_.num_qo_heads;
  const int rows = task.request_count * group;
  // Row j * group + g under KV head 0 is output row reader_j * qo heads + g.
  const std::int32_t first_row = task.request_begin * group;
  const std::int32_t* readers = s_.task_requests.data() + task.request_begin;
  std::int32_t* const row_out = task_rows + first_row;
  for (int j = 0; j < task.request_count; ++j) {
    for (int g = 0; g < group; ++g) row_out[j * group + g] = readers[j] * heads_qo + g;
  }
  const Variant& variant = variants_[task.variant];
  task.first_slot = static_cast<std::int32_t>(out.slot);
  task.first_item = static_cast<std::int32_t>(out.item - items_begin);
  WorkItem proto;
  proto.node = task.node;
  proto.config = variant.config;
  proto.row_tile = variant.row_tile;
  proto.direct = task.direct;
  proto.kv_page_offset = task.page_offset;
  proto.path_token_offset = task.path_offset;
  proto.predicted_us = static_cast<float>(task.item_cost);
  proto.task_row_begin = first_row;
  int slot_pos = 0;  // item k of the task runs on slot sm_order[k % slots]
  const std::int32_t* const slot_sm = setup_.slot_sm.data();
  // Local cursors: stores through `out` would be reloaded after every item.
  WorkItem* item_out = out.item;
  std::int64_t slot = out.slot;
  const int tiles = task.tiles;
  for (int p = 0; p < task.pieces; ++p) {
    proto.token_begin = task.pieces == 1 ? 0 : piece_bound(task, p);
    proto.token_end = task.pieces == 1 ? task.tokens : piece_bound(task, p + 1);
    if (proto.token_end <= proto.token_begin) continue;
    // KV heads in packs of variant.heads (a pack is one item over its heads'
    // consecutive slot runs; its variant has a single row tile).
    for (int h0 = 0; h0 < spec_.num_kv_heads; h0 += variant.heads) {
      const int heads = std::min(variant.heads, spec_.num_kv_heads - h0);
      proto.kv_head = h0;
      proto.kv_heads = heads;
      if (tiles == 1) {  // the usual case: all rows, without a division
        WorkItem& item = *item_out++;
        item = proto;
        item.row_begin = static_cast<std::int32_t>(slot);
        item.row_count = rows;
        item.sm = slot_sm[sm_order[slot_pos]];
        if (++slot_pos == slots_) slot_pos = 0;
      } else {
        // Row tile i holds rows rows * i / tiles .. rows * (i + 1) / tiles.
        int row_lo = 0;
        for (int i = 0; i < tiles; ++i) {
          const auto row_hi = static_cast<int>(static_cast<std::int64_t>(rows) * (i + 1) / tiles);
          WorkItem& item = *item_out++;
          item = proto;
          item.row_begin = static_cast<std::int32_t>(slot + row_lo);
          item.row_count = row_hi - row_lo;
          item.task_row_begin = first_row + row_lo;
          item.sm = slot_sm[sm_order[slot_pos]];
          if (++slot_pos == slots_) slot_pos = 0;
          row_lo = row_hi;
        }
      }
      slot += std::int64_t{heads} * rows;
    }
  }
  out.item = item_out;
  out.slot = slot;
}

// Each merged row combines its partial slots ordered by KV position along its
// path: a fixed order, so results are bit-reproducible. A request's tasks
// partition its path and decide() creates them top-down, so in task order
// they are already ordered by position, and so are each task's pieces. All
// rows of a request merge the same (task, piece) list, each at its own slot:
// one MergePart per (request, partial) holds them all (qo head h * group + g
// of request j of a task reads slot first_slot + (piece * KV heads + h) *
// rows + j * group + g). Requests of direct tasks are not merged.
void Planner::build_merge_schedule(Plan& out) {
  const int batch = tree_.batch_size;
  const int kv_heads = spec_.num_kv_heads;
  const int group = group_;
  // Request r merges fan_in[r] partials (0: written directly).
  std::vector<std::int32_t>& fan_in = s_.fan_in;
  fan_in.assign(batch, 0);
  for (const Task& task : s_.tasks) {
    if (task.direct) continue;
    for (int j = 0; j < task.request_count; ++j) {
      fan_in[s_.task_requests[task.request_begin + j]] += task.piece_count;
    }
  }
  std::int32_t merged = 0;
  std::int32_t parts = 0;
  int max_fan_in = 0;
  std::vector<std::int32_t>& next = s_.next;  // per request: where its next part goes
  next.resize(batch);
  for (int r = 0; r < batch; ++r) {
    next[r] = parts;
    parts += fan_in[r];
    merged += fan_in[r] != 0;
    max_fan_in = std::max(max_fan_in, fan_in[r]);
  }
  out.max_merge_fan_in = max_fan_in;
  out.merge_requests.resize(merged);
  out.merge_indptr.resize(merged + std::size_t{1});
  out.merge_parts.resize(parts);
  std::int32_t* __restrict requests = out.merge_requests.data();
  std::int32_t* __restrict indptr = out.merge_indptr.data();
  *indptr++ = 0;
  for (int r = 0; r < batch; ++r) {
    if (fan_in[r] == 0) continue;
    *requests++ = r;
    *indptr++ = next[r] + fan_in[r];
  }
  MergePart* const part = out.merge_parts.data();
  for (const Task& task : s_.tasks) {
    if (task.direct) continue;
    const std::int32_t rows = task.request_count * group;
    const std::int32_t piece_stride = kv_heads * rows;
    const std::int32_t* readers = s_.task_requests.data() + task.request_begin;
    for (int j = 0; j < task.request_count; ++j) {
      std::int32_t& at = next[readers[j]];
      const std::int32_t slot = task.first_slot + j * group;
      for (int p = 0; p < task.piece_count; ++p) part[at++] = {slot + p * piece_stride, rows};
    }
  }
}

// plan.configs lists only configs that launch: the runtime compiles and loads
// every listed config, so an unused candidate would cost a compile for nothing.
void Planner::keep_launched_configs(Plan& out) {
  std::vector<int> remap(configs_.size(), -1);
  out.configs.clear();
  for (LaunchStep& g : out.launches) {
    if (remap[g.config] < 0) {
      remap[g.config] = static_cast<int>(out.configs.size());
      out.configs.push_back(configs_[g.config]);
    }
    g.config = remap[g.config];
  }
  for (WorkItem& item : out.items) item.config = remap[item.config];
  if (!out.merge_requests.empty()) {
    out.launches.push_back(
        {KernelFamily::kMergeStates, -1, 0, static_cast<std::int32_t>(out.merge_entries())});
  }
}

void Planner::emit(Plan& out) {
  // A reused Plan keeps its memory: vectors filled by appending are cleared;
  // items and the merge arrays are resized and then overwritten
  // entry by entry, so they are not cleared (that would zero-fill them again).
  out.launches.clear();
  out.configs.clear();
  out.spec = spec_;
  out.batch_size = tree_.batch_size;
  out.tree_depth = tree_.max_depth();
  out.num_sms = model_.coefficients().num_sms;
  out.kv_pages.resize(s_.page_total);
  for (const Task& task : s_.tasks) {
    const std::int32_t* from = task.staged >= 0
                                   ? s_.kv_pages.data() + task.staged
                                   : tree_.pages.data() + tree_.nodes[task.node].page_begin;
    std::copy_n(from, task.page_count, out.kv_pages.data() + task.page_offset);
  }
  emit_items(out);
  build_merge_schedule(out);
  keep_launched_configs(out);
  out.predicted_us = predicted_us_;
}

}  // namespace canopy::planning

namespace canopy::planning {

// A request may grow (its next decode tokens) without changing the tree when
// it ends alone at a leaf whose first element stays distinct from its
// siblings': a one-page leaf whose page is partly filled changes that
// element's fill as it grows, so no sibling may start with the same page.
// In a prefix-blind plan every request is its own task.
void Planner::export_state(const Plan& out, ReplanState& state) const {
  state.tasks.clear();
  state.growable_task.assign(tree_.batch_size, -1);
  state.coefficients.clear();
  state.coefficients = coefficients_;
  state.slot_scale = slot_scale_;
  state.merged = merged_;
  state.launches = step_launches_;
  state.item_slot.resize(out.items.size());
  state.slot_load.resize(slots_);
  for (int i = 0; i < slots_; ++i) state.slot_load[i] = s_.loads.load(i);
  const int group = group_;
  for (int t = 0; t < static_cast<int>(s_.tasks.size()); ++t) {
    const Task& task = s_.tasks[t];
    const Variant& v = variants_[task.variant];
    ReplanTask& rt = state.tasks.emplace_back();
    rt.first_item = task.first_item;
    rt.item_count = task.piece_count * task.tiles * head_groups(task);
    rt.page_offset = task.page_offset;
    rt.page_count = task.page_count;
    rt.reader = s_.task_requests[task.request_begin];
    rt.path_page = task.path_offset / tree_.page_size;
    rt.tokens = rt.base_tokens = task.tokens;
    rt.pieces = task.pieces;
    rt.tile_kv = configs_[v.config].tile_kv;
    rt.config = v.config;
    rt.row_tile = v.row_tile;
    rt.heads = v.heads;
    rt.rows = task.request_count * group;
    rt.tiles = task.tiles;
    rt.item_cost = task.item_cost;
    const std::int32_t* order = s_.loads.sm_order(s_.run_of[t]);
    for (int k = 0; k < rt.item_count; ++k) state.item_slot[rt.first_item + k] = order[k % slots_];
    if (task.request_count != 1) continue;
    const PrefixTree::Node& node = tree_.nodes[task.node];
    if (!opt_.prefix_blind) {
      if (node.child_count != 0 || node.request_count != 1) continue;
      if (node.page_count == 1 && node.num_tokens < tree_.page_size) {
        const std::span<const int> siblings =
            node.parent >= 0 ? tree_.children(node.parent) : std::span<const int>(tree_.roots);
        const std::int32_t first = tree_.pages_of(node)[0];
        bool clash = false;
        for (int sib : siblings) clash |= sib != task.node && tree_.pages_of(sib)[0] == first;
        if (clash) continue;
      }
    }
    state.growable_task[rt.reader] = t;
  }
}

}  // namespace canopy::planning
