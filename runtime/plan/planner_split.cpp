// KV splitting and unpacking (flattened-tree splitting): tasks grouped into
// classes that price alike, candidate targets priced by placement, the
// fastest applied (docs/planner.md, 2d).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "core/ceil_div.hpp"
#include "runtime/plan/planner_core.hpp"

namespace canopy::planning {

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

}  // namespace canopy::planning
