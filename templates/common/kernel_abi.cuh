// Kernel ABI: the parameter blocks and the device work-item record, shared by
// the generated kernels (compiled by NVRTC) and the host runtime (g++), so the
// two can never disagree. Plain C++17, no CUDA headers.
#pragma once

namespace canopy_abi {

/// Element type codes of the generated kernels (CanopySpec::kQDtype etc.,
/// PartialParams::out_dtype); the host's families::dtype_code maps DType here.
enum DTypeCode : int { kDtF16 = 0, kDtBF16 = 1, kDtF32 = 2 };

/// DeviceWorkItem::flags bits.
enum : int {
  /// Every row of the item has this item as its only partial state: the
  /// kernel writes the final output row (and lse) itself, the merge skips it.
  kItemDirectOutput = 1,
  /// Bits 8..15: KV heads in the item (0 or 1: one). A head pack covers KV
  /// heads kv_head .. kv_head + n - 1 of one narrow task; head i's rows are
  /// slots row_begin + i * row_count .. + row_count - 1.
  kItemHeadShift = 8,
  kItemHeadMask = 0xff << 8,
};

/// One WorkItem on the device: 9 int32, see canopy::WorkItem for meanings.
struct DeviceWorkItem {
  int kv_page_offset;  // into kv_pages
  int token_begin;     // segment-relative, inclusive
  int token_end;       // segment-relative, exclusive
  int kv_head;
  int row_begin;       // the first partial slot
  int row_count;       // <= row_tile
  int row_tile;        // rows the block is shaped for this item (a multiple of 16 for mma)
  int flags;           // kItem* bits
  int task_row_begin;  // into task_rows: row 0's output row under KV head 0
};
static_assert(sizeof(DeviceWorkItem) == 36, "DeviceWorkItem must stay 9 int32");

/// One partial state of a merged request (canopy::MergePart): qo head q's
/// slot is slot + (q / group) * head_stride + q % group.
struct DeviceMergePart {
  int slot;
  int head_stride;
};
static_assert(sizeof(DeviceMergePart) == 8, "DeviceMergePart must stay 2 int32");

/// One (merged request, KV head) group an item writes rows of, for the fused
/// merge (canopy::MergeTouch): the item adds `rows` to the group's counter;
/// the item that brings it to `target` (the group's partial states times the
/// GQA group) merges the group's output rows.
struct DeviceMergeTouch {
  int entry;  // index into merge_requests
  int kv_head;
  int rows;
  int target;
};
static_assert(sizeof(DeviceMergeTouch) == 16, "DeviceMergeTouch must stay 4 int32");

/// Partial attention over items[item_begin + blockIdx.x]; one thread block per item.
///   q          [batch, num_qo_heads, head_dim]             q dtype
///   k/v_cache  paged, layout and dtype from the KernelSpec
///   partial_o  [num_partial_slots, head_dim] float32 (normalised: o / l)
///   partial_lse[num_partial_slots] float32, natural log: m + log(l)
///   task_rows  output rows of each task's rows under KV head 0 (query_row())
///   out, lse   the final output (o dtype out_dtype) and lse (null: none),
///              written only by kItemDirectOutput items
struct PartialParams {
  const void* q;
  const void* k_cache;
  const void* v_cache;
  float* partial_o;
  float* partial_lse;
  const DeviceWorkItem* items;
  const int* task_rows;
  const int* kv_pages;
  void* out;
  float* lse;
  int item_begin;
  int num_qo_heads;
  int num_kv_heads;
  int group;  // num_qo_heads / num_kv_heads
  int page_size;
  int page_shift;  // log2(page_size) when it is a power of two, else -1
  int out_dtype;   // DTypeCode of out
  float sm_scale;
  float soft_cap;  // used only when the spec has soft_cap
};
// The plain kernels' parameter block stays at most 128 bytes: one more
// pointer pair and nvcc/NVRTC compile v1's mma body into code a quarter
// slower on small steps (perf-notes v2.4: the epilogue no longer specialized,
// 5x the branches). What persistent launches add is a second parameter.
static_assert(sizeof(PartialParams) <= 128, "PartialParams must stay within 128 bytes");

/// The second parameter of a persistent kernel (KernelSpec::persistent).
/// Block b runs the items queue[queue_indptr[b] .. queue_indptr[b + 1])
/// (plan indices). Fused merge (merge_touches set): item i counts its rows
/// into the groups merge_touches[item_touch_indptr[i] .. item_touch_indptr[i +
/// 1]); merge_counters holds one int per (merged request, KV head), 0 between
/// launches; the merge schedule is MergeParams'.
struct FusedParams {
  const int* queue;
  const int* queue_indptr;
  const DeviceMergeTouch* merge_touches;
  const int* item_touch_indptr;
  int* merge_counters;
  const int* merge_requests;
  const int* merge_indptr;
  const DeviceMergePart* merge_parts;
};

/// Merge: entry e is request r = merge_requests[e / num_qo_heads], qo head
/// q = e % num_qo_heads; it combines the partial states
/// merge_parts[merge_indptr[e / num_qo_heads] .. + 1), each at its slot for q,
/// in order into output row r * num_qo_heads + q; requests written directly by
/// their only item are not listed.
///   out [batch * num_qo_heads, head_dim] o dtype; lse [batch * num_qo_heads] float32 (only
///   with_lse)
struct MergeParams {
  const float* partial_o;
  const float* partial_lse;
  const int* merge_requests;
  const int* merge_indptr;
  const DeviceMergePart* merge_parts;
  void* out;
  float* lse;
  int num_rows;  // merge entries: merge_requests times num_qo_heads
  int num_qo_heads;
  int group;
};

}  // namespace canopy_abi
