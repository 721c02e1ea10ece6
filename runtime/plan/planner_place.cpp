// Placement and the predicted step: items placed longest first on the block
// slots, direct tasks, the step time and the bounds that skip placements
// which cannot win (docs/planner.md, 2d-2g). The step-level formulas are
// the StepPricer's (autotune/step_pricing.hpp).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/ceil_div.hpp"
#include "families/kernel_families.hpp"
#include "runtime/plan/planner_core.hpp"

namespace canopy::planning {

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
  return pricer_.step_us(pricer_.makespan_lower_bound(work, longest), slots, 0);
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
  return pricer_.step_us(s_.loads.max_load(), slots, 0);
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
  fused_merge_ = opt_.fuse_merge;
  for (std::size_t c = 0; c < used.size(); ++c) {
    if (used[c])
      fused_merge_ = fused_merge_ && families::family_info(configs_[c].family).fused_merge;
  }
  // As emit() computes it: the busiest slot's load as stored (float), the
  // merge of every merged partial state, one launch per config plus the merge
  // unless it is fused into them.
  const float busiest = static_cast<float>(s_.loads.max_load());
  merged_ = merged;
  step_launches_ = launched_configs_ + (any_merged && !fused_merge_ ? 1 : 0);
  predicted_us_ = static_cast<float>(pricer_.step_us(busiest, merged_, step_launches_));
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
  double longest = 0;  // the longest item no split candidate can shorten
  for (const TaskClass& c : s_.classes) longest = std::max(longest, cheapest_item(c));
  return pricer_.step_us(pricer_.makespan_lower_bound(unsplit_work_, longest), merged, launches);
}

void Planner::price() {
  split_tasks();
  mark_direct_tasks();
  place();
}

}  // namespace canopy::planning
