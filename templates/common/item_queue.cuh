// Which items a thread block runs, and the merge fused into the partial
// kernels. A plain kernel (S::kPersistent false) runs one item per block
// (items[item_begin + blockIdx.x]) and has none of the code below compiled
// in; a persistent kernel's launch (its second parameter, FusedParams) gives
// each block slot of the GPU a queue of items, so a step is one launch per
// kernel config whatever its item count.
//
// Fused merge (FusedParams::merge_touches set): an item that wrote partial
// rows of merged requests counts them into each (merged request, KV head)
// group it touched. The block whose count completes a group merges that
// group's output rows once its queue is done, reading the partial states
// back (from L2: they were written within the launch), in the plan's fixed
// part order, with the merge kernel's arithmetic: no float atomics,
// bit-identical from run to run. It then resets the group's counter, so every
// counter is 0 again when the launch ends (no memset between steps;
// graph-capturable).
#pragma once

#include "device_common.cuh"
#include "kernel_abi.cuh"
#include "merge_states.cuh"

namespace canopy_dev {

/// Positions [begin, end) of this block's items in its queue.
struct ItemRange {
  int begin;
  int end;
};

template <class S>
__device__ __forceinline__ ItemRange block_items(const canopy_abi::PartialParams& p,
                                                 const canopy_abi::FusedParams& f) {
  if (!S::kPersistent || f.queue_indptr == nullptr) {
    const int i = p.item_begin + static_cast<int>(blockIdx.x);
    return {i, i + 1};
  }
  return {f.queue_indptr[blockIdx.x], f.queue_indptr[blockIdx.x + 1]};
}

/// The plan's index of the item at queue position i.
template <class S>
__device__ __forceinline__ int queue_item(const canopy_abi::FusedParams& f, int i) {
  return !S::kPersistent || f.queue_indptr == nullptr ? i : f.queue[i];
}

/// Barrier among `threads` threads of the block: __syncthreads when they are
/// all of it, else named barrier `id`.
__device__ __forceinline__ void sync_threads_of(int id, int threads) {
  if (threads == static_cast<int>(blockDim.x)) {
    __syncthreads();
  } else {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
  }
}

/// Phase 1 of the fused merge, after item `item` wrote its rows (every one
/// of the `threads` threads, thread index `tid`, has stored what it wrote):
/// counts them into their merge groups. The touch `t` that completes a group
/// marks the group's counter -(t + 1): its block merges the group in phase 2.
/// Cheap on purpose (a fence, a barrier, a few atomics): it runs between
/// items, where the attention code's registers are still to be reused.
template <class S>
__device__ __forceinline__ void count_finished_rows(const canopy_abi::PartialParams& p,
                                                    const canopy_abi::FusedParams& f, int item,
                                                    int tid, int threads, int barrier_id) {
  if (!S::kPersistent || f.merge_touches == nullptr) return;
  const int begin = f.item_touch_indptr[item];
  const int end = f.item_touch_indptr[item + 1];
  if (begin == end) return;  // a direct item (block-uniform)
  __threadfence();           // this thread's partial states, visible before any count
  sync_threads_of(barrier_id, threads);
  for (int t = begin + tid; t < end; t += threads) {
    const canopy_abi::DeviceMergeTouch touch = f.merge_touches[t];
    int* counter = f.merge_counters + touch.entry * p.num_kv_heads + touch.kv_head;
    // No other item counts into the group once it is complete.
    if (atomicAdd(counter, touch.rows) + touch.rows == touch.target) atomicExch(counter, -(t + 1));
  }
}

/// Phase 2, once the block's queue is done: merges the groups its items'
/// touches completed (a warp per output row), in the plan's part order, and
/// leaves their counters at 0 for the next launch. Runs after the item loop,
/// so its registers never compete with the attention code's. `scratch`:
/// shared memory for 1 + threads ints that nothing else uses any more.
template <class S>
__device__ __forceinline__ void merge_completed_groups(const canopy_abi::PartialParams& p,
                                                       const canopy_abi::FusedParams& f,
                                                       ItemRange range, int tid, int threads,
                                                       int barrier_id, int* scratch) {
  if (!S::kPersistent || f.merge_touches == nullptr) return;
  const int warps = threads / 32;
  for (int i = range.begin; i < range.end; ++i) {
    const int item = queue_item<S>(f, i);
    const int begin = f.item_touch_indptr[item];
    const int end = f.item_touch_indptr[item + 1];
    for (int base = begin; base < end; base += threads) {  // block-uniform
      if (tid == 0) scratch[0] = 0;
      sync_threads_of(barrier_id, threads);
      const int t = base + tid;
      if (t < end) {
        const canopy_abi::DeviceMergeTouch touch = f.merge_touches[t];
        int* counter = f.merge_counters + touch.entry * p.num_kv_heads + touch.kv_head;
        if (atomicAdd(counter, 0) == -(t + 1)) scratch[1 + atomicAdd(scratch, 1)] = t;
      }
      sync_threads_of(barrier_id, threads);
      const int won = scratch[0];
      if (won > 0) {
        __threadfence();  // the other items' partial states (fenced before they counted)
        // A warp merges kGroupRows rows of a group at once (merge_group_rows).
        constexpr int kGroupRows = 4;
        const int chunks = (p.group + kGroupRows - 1) / kGroupRows;
        for (int u = tid / 32; u < won * chunks; u += warps) {
          const canopy_abi::DeviceMergeTouch touch = f.merge_touches[scratch[1 + u / chunks]];
          const int in_group0 = (u % chunks) * kGroupRows;
          const int first = f.merge_indptr[touch.entry];
          merge_group_rows<S::kHeadDim, kGroupRows>(
              p.partial_o, p.partial_lse, f.merge_parts + first,
              f.merge_indptr[touch.entry + 1] - first, touch.kv_head, in_group0, p.group,
              static_cast<long long>(f.merge_requests[touch.entry]) * p.num_qo_heads +
                  touch.kv_head * p.group + in_group0,
              p.out, p.out_dtype, p.lse);
        }
        sync_threads_of(barrier_id, threads);  // every row merged before the counters reset
        if (tid < won) {
          const canopy_abi::DeviceMergeTouch touch = f.merge_touches[scratch[1 + tid]];
          f.merge_counters[touch.entry * p.num_kv_heads + touch.kv_head] = 0;
        }
      }
      sync_threads_of(barrier_id, threads);  // scratch is reused
    }
  }
}

}  // namespace canopy_dev
