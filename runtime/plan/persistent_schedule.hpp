// How a step runs as persistent launches with the merge fused in: for each
// partial launch, one queue of items per block slot (balanced by the items'
// predicted times), and for each item the (merged request, KV head) groups its
// rows count into, so that the item completing a group merges it in place
// (templates: item_queue.cuh). Derived from a Plan and the block slots of the
// GPU; the runtime uploads it, the CPU tests replay it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "canopy/plan.hpp"

namespace canopy {

/// One (merged request, KV head) group an item writes rows of
/// (canopy_abi::DeviceMergeTouch): the item adds `rows` to the group's
/// counter; whoever brings it to `target` (the group's partial states times
/// the GQA group) merges the group's output rows.
struct MergeTouch {
  std::int32_t entry = 0;  ///< index into Plan::merge_requests
  std::int32_t kv_head = 0;
  std::int32_t rows = 0;
  std::int32_t target = 0;
  bool operator==(const MergeTouch&) const = default;
};

struct PersistentSchedule {
  /// Per Plan::launches entry (partial launches only; the merge launch, if
  /// any, is dropped): its blocks are queues [first_queue, first_queue + blocks).
  struct Launch {
    std::int32_t plan_launch = 0;  ///< index into Plan::launches
    std::int32_t first_queue = 0;
    std::int32_t blocks = 0;
  };
  std::vector<Launch> launches;
  /// Queue q holds the plan's items queue[queue_indptr[q] .. queue_indptr[q + 1]).
  std::vector<std::int32_t> queue;
  std::vector<std::int32_t> queue_indptr;
  /// Item i counts into touches[item_touch_indptr[i] .. item_touch_indptr[i + 1]);
  /// empty for direct items and when the plan has no merge.
  std::vector<MergeTouch> touches;
  std::vector<std::int32_t> item_touch_indptr;
  /// Counters the fused merge needs: merged requests x KV heads (int32, in
  /// the workspace: PlanLayout::merge_counters).
  std::int64_t counters = 0;
};

/// `slots_per_launch[k]`: block slots the GPU has for the kernel of
/// plan.launches[k] (SMs x resident blocks; ignored for a merge launch). A
/// launch gets min(items, slots) blocks; items go, in launch order (longest
/// first), to the least-loaded queue by predicted time (ties: lowest queue).
/// Deterministic. Throws Error(kInvalidArgument) on a size mismatch.
PersistentSchedule make_persistent_schedule(const Plan& plan,
                                            std::span<const int> slots_per_launch);

}  // namespace canopy
