// Queues and fused-merge groups of a plan (runtime/plan/persistent_schedule.hpp).
#include "runtime/plan/persistent_schedule.hpp"

#include <algorithm>
#include <functional>
#include <queue>
#include <utility>

#include "canopy/error.hpp"

namespace canopy {
namespace {

// Items of one launch onto `blocks` queues: longest-processing-time first, as
// the planner placed them, so the busiest queue stays near the planner's
// busiest block slot. Appends the queues to `s`.
void fill_queues(const Plan& plan, const LaunchStep& launch, int blocks, PersistentSchedule& s) {
  using Load = std::pair<double, std::int32_t>;  // (predicted us, queue)
  std::priority_queue<Load, std::vector<Load>, std::greater<>> lightest;
  for (std::int32_t b = 0; b < blocks; ++b) lightest.push({0.0, b});
  std::vector<std::vector<std::int32_t>> queues(static_cast<std::size_t>(blocks));
  for (std::int32_t i = launch.begin; i < launch.end; ++i) {
    auto [load, b] = lightest.top();
    lightest.pop();
    queues[static_cast<std::size_t>(b)].push_back(i);
    // An item of no predicted cost still takes its turn (ties go round).
    lightest.push({load + std::max(plan.items[static_cast<std::size_t>(i)].predicted_us, 1e-6f), b});
  }
  for (const std::vector<std::int32_t>& q : queues) {
    s.queue.insert(s.queue.end(), q.begin(), q.end());
    s.queue_indptr.push_back(static_cast<std::int32_t>(s.queue.size()));
  }
}

// Each item's rows per (merged request, KV head): rows of one request are
// consecutive (a task's rows are request-major), so a run of equal requests
// is one touch.
void fill_touches(const Plan& plan, PersistentSchedule& s) {
  const int heads_qo = plan.spec.num_qo_heads;
  const int group = plan.group();
  std::vector<std::int32_t> entry_of(static_cast<std::size_t>(plan.batch_size), -1);
  for (std::size_t e = 0; e < plan.merge_requests.size(); ++e) {
    entry_of[static_cast<std::size_t>(plan.merge_requests[e])] = static_cast<std::int32_t>(e);
  }
  s.item_touch_indptr.assign(1, 0);
  s.item_touch_indptr.reserve(plan.items.size() + 1);
  for (const WorkItem& it : plan.items) {
    if (!it.direct && !plan.merge_requests.empty()) {
      for (int h = 0; h < it.kv_heads; ++h) {
        MergeTouch run;
        run.entry = -1;
        for (int r = 0; r < it.row_count; ++r) {
          const std::int32_t entry =
              entry_of[static_cast<std::size_t>(plan.query_row(it, h, r) / heads_qo)];
          if (entry != run.entry) {
            if (run.entry >= 0) s.touches.push_back(run);
            run.entry = entry;
            run.kv_head = it.kv_head + h;
            run.rows = 0;
            run.target = entry >= 0 ? (plan.merge_indptr[static_cast<std::size_t>(entry) + 1] -
                                       plan.merge_indptr[static_cast<std::size_t>(entry)]) *
                                          group
                                    : 0;
          }
          ++run.rows;
        }
        if (run.entry >= 0) s.touches.push_back(run);
      }
    }
    s.item_touch_indptr.push_back(static_cast<std::int32_t>(s.touches.size()));
  }
}

}  // namespace

PersistentSchedule make_persistent_schedule(const Plan& plan,
                                            std::span<const int> slots_per_launch) {
  CANOPY_CHECK(slots_per_launch.size() == plan.launches.size(), ErrorKind::kInvalidArgument,
               "make_persistent_schedule: {} slot counts for {} launches", slots_per_launch.size(),
               plan.launches.size());
  PersistentSchedule s;
  s.queue_indptr.assign(1, 0);
  s.queue.reserve(plan.items.size());
  for (std::size_t k = 0; k < plan.launches.size(); ++k) {
    const LaunchStep& launch = plan.launches[k];
    if (launch.family == KernelFamily::kMergeStates || launch.end <= launch.begin) continue;
    CANOPY_CHECK(slots_per_launch[k] > 0, ErrorKind::kInvalidArgument,
                 "make_persistent_schedule: launch {} has {} block slots", k,
                 slots_per_launch[k]);
    const int blocks = std::min(slots_per_launch[k], launch.end - launch.begin);
    s.launches.push_back({static_cast<std::int32_t>(k),
                          static_cast<std::int32_t>(s.queue_indptr.size()) - 1, blocks});
    fill_queues(plan, launch, blocks, s);
  }
  fill_touches(plan, s);
  s.counters = static_cast<std::int64_t>(plan.merge_requests.size()) * plan.spec.num_kv_heads;
  return s;
}

}  // namespace canopy
