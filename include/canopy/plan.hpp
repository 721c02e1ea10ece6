// Plan: everything the planner decides for one decode step, as plain data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "canopy/batch.hpp"
#include "canopy/kernel_spec.hpp"
#include "canopy/spec.hpp"

namespace canopy {

/// Format limits of one work item: KV heads of a head pack (8 bits of the
/// device record's flags) and rows per KV head (row tiles are at most 256).
inline constexpr int kMaxItemKvHeads = 255;
inline constexpr int kMaxItemRows = 1024;

/// One thread block's job: attention of `row_count` query rows (all in one GQA
/// group, so they share KV head `kv_head`; a head pack does the same for
/// `kv_heads` consecutive KV heads, one warp each) over tokens [token_begin, token_end)
/// of a KV segment. A segment is a run of whole pages kv_pages[kv_page_offset..]
/// (a tree node's pages, preceded by any ancestors it absorbed); segment token
/// t is page kv_pages[kv_page_offset + t / page_size], slot t % page_size, and
/// sits at position path_token_offset + t of every request in its rows.
/// The item writes one partial state (output row, log-sum-exp) per query row
/// into partial slots row_begin .. row_begin + row_count - 1.
///
/// Rows are stored compactly (Plan::query_row): a task's rows are its requests
/// times the GQA group, request-major, the same for every KV head and KV piece
/// of the task, so the plan stores them once per task, as output rows under
/// KV head 0 (Plan::task_rows), and an item points at its first. Row i of KV
/// head kv_head + h is output row task_rows[task_row_begin + i] + (kv_head + h)
/// * group, where group = num_qo_heads / num_kv_heads.
struct WorkItem {
  std::int32_t node = 0;      ///< deepest tree node of the segment
  std::int32_t config = 0;    ///< index into Plan::configs: the kernel that runs it
  std::int32_t row_tile = 0;  ///< rows the block is shaped for (>= row_count)
  std::int32_t kv_head = 0;   ///< the first KV head
  std::int32_t kv_heads = 1;  ///< KV heads kv_head .. kv_head + kv_heads - 1 (> 1: a head pack)
  std::int32_t kv_page_offset = 0;     ///< into Plan::kv_pages
  std::int32_t token_begin = 0;        ///< segment-relative, inclusive
  std::int32_t token_end = 0;          ///< segment-relative, exclusive
  std::int32_t path_token_offset = 0;  ///< segment token 0's position in its requests
  std::int32_t row_begin = 0;          ///< the first partial slot
  std::int32_t row_count = 0;          ///< rows per KV head
  std::int32_t task_row_begin = 0;     ///< into Plan::task_rows: row 0 under KV head 0
  /// Partial slots row_begin .. row_begin + slot_count() - 1: KV head
  /// kv_head + i owns the i-th run of row_count slots.
  std::int32_t slot_count() const { return kv_heads * row_count; }
  /// Every row of the item has this item as its only partial state: the
  /// kernel writes the output rows (and lse) itself and the merge skips them.
  bool direct = false;
  float predicted_us = 0;  ///< the cost model's estimate
  std::int32_t sm = 0;     ///< SM the balancer assigned (for inspection)
};

/// One partial state of a merged request: qo head q's is partial slot
/// slot + (q / group) * head_stride + q % group.
struct MergePart {
  std::int32_t slot = 0;         ///< the slot of qo head 0
  std::int32_t head_stride = 0;  ///< slots between one KV head's rows and the next's
  bool operator==(const MergePart&) const = default;
};

/// One kernel launch of a step. Partial launches run items [begin, end) with
/// kernel Plan::configs[config]; the merge launch (config -1) combines merge
/// entries [begin, end) (see Plan::merge_requests). Launches run in order on one
/// stream; the merge, when present, is last.
struct LaunchStep {
  KernelFamily family = KernelFamily::kMmaAttention;
  std::int32_t config = 0;
  std::int32_t begin = 0;
  std::int32_t end = 0;
  bool operator==(const LaunchStep&) const = default;
};

/// Where a plan's device data lives, in bytes: the metadata (one upload, 256-byte
/// aligned sections) and the workspace (partial states). One object owns the
/// arithmetic so the runtime, the tools and the tests agree.
struct PlanLayout {
  std::int64_t items = 0;  ///< canopy_abi::DeviceWorkItem[items]
  std::int64_t task_rows = 0;
  std::int64_t kv_pages = 0;
  std::int64_t merge_requests = 0;
  std::int64_t merge_indptr = 0;
  std::int64_t merge_parts = 0;  ///< canopy_abi::DeviceMergePart[merge_parts]
  std::int64_t metadata_bytes = 0;
  std::int64_t partial_o = 0;    ///< float32 [num_partial_slots][head_dim], in the workspace
  std::int64_t partial_lse = 0;  ///< float32 [num_partial_slots], in the workspace
  /// int32 [merged requests][num_kv_heads], in the workspace, for a fused
  /// merge (0 bytes otherwise): zeroed when a plan is prepared, and back to 0
  /// at the end of every launch.
  std::int64_t merge_counters = 0;
  std::int64_t workspace_bytes = 0;
};

/// A plan is computed once per decode step and reused by every layer.
struct Plan {
  AttentionSpec spec;
  int batch_size = 0;
  int tree_depth = 0;                 ///< max nodes on a root-to-leaf path
  std::vector<KernelConfig> configs;  ///< the partial kernels the step launches
  std::vector<WorkItem> items;        ///< grouped by config; longest first within a group
  std::vector<LaunchStep> launches;   ///< the launch schedule, in order
  /// The step runs as persistent launches with the merge fused in
  /// (PlannerOptions::fuse_merge, and every config's family supports it):
  /// each partial launch is one block per block slot walking a queue of
  /// items, and the item completing a merged row merges it; the merge launch
  /// of `launches` then runs inside them and is not launched.
  bool fused_merge = false;
  /// Per task, its rows under KV head 0: request * num_qo_heads + g for its
  /// requests (ascending) and g < group, request-major (see WorkItem).
  std::vector<std::int32_t> task_rows;
  std::vector<std::int32_t> kv_pages;  ///< concatenated segment page lists
  /// Merge schedule, CSR over merged requests: every qo head q of request
  /// merge_requests[i] combines, in that order (fixed: deterministic results),
  /// the partial states merge_parts[merge_indptr[i] .. merge_indptr[i+1]),
  /// each at its slot for q (MergePart). Merge entry e is request
  /// merge_requests[e / num_qo_heads], qo head e % num_qo_heads. Requests of
  /// direct items are not listed.
  std::vector<std::int32_t> merge_requests;
  std::vector<std::int32_t> merge_indptr;
  std::vector<MergePart> merge_parts;
  int max_merge_fan_in = 0;
  std::int64_t num_partial_slots = 0;  ///< slots written by the items
  std::vector<float> sm_load_us;  ///< predicted busy time per block slot (SMs x resident blocks)
  float predicted_us = 0;         ///< max over SMs plus launch and merge costs
  int num_sms = 0;

  /// Query heads per KV head (0 for a spec without KV heads).
  int group() const { return spec.num_kv_heads > 0 ? spec.num_qo_heads / spec.num_kv_heads : 0; }
  /// Output row (request * num_qo_heads + qo head) of row i of KV head
  /// it.kv_head + head; the indices must be valid (check_plan_indices).
  std::int32_t query_row(const WorkItem& it, int head, int i) const {
    return task_rows[static_cast<std::size_t>(it.task_row_begin + i)] +
           (it.kv_head + head) * group();
  }
  /// Kernel launches Runtime::run issues for the step: one per partial
  /// launch with items, plus the merge launch unless it is fused.
  int device_launches() const;
  /// Merge entries: one per (merged request, qo head).
  std::int64_t merge_entries() const {
    return static_cast<std::int64_t>(merge_requests.size()) * spec.num_qo_heads;
  }
  /// Partial slot of qo head q in a merge part.
  std::int32_t merge_slot(const MergePart& part, int q) const {
    const int g = group();
    return part.slot + (q / g) * part.head_stride + q % g;
  }

  /// Device metadata and workspace layout (partial outputs, float32
  /// [slots, head_dim], and their log-sum-exps, float32 [slots]), 256-byte aligned.
  PlanLayout layout() const;
  std::int64_t workspace_bytes() const { return layout().workspace_bytes; }
  /// Throws Error(kInvalidArgument / kNotSupported) if the spec is invalid or
  /// the plan is internally inconsistent (an index out of range, a slot
  /// written twice, an empty item, launches not tiling the items).
  void validate() const;
};

/// The kernels a device of arch `arch` runs for `plan`: one partial kernel
/// per config (in Plan::configs order), then the merge when some row is
/// merged outside the partial kernels (not Plan::fused_merge). What
/// Runtime::prepare compiles, the tools list and the benchmark prewarms.
std::vector<KernelSpec> plan_kernel_specs(const Plan& plan, Arch arch);

/// Throws Error(kInvalidArgument) unless every (request, qo head, KV token)
/// of `tables` is covered by exactly one work item row, with the right page,
/// and every partial state is merged once, into its own row.
void check_plan_coverage(const Plan& plan, const BlockTables& tables);

std::string plan_to_text(const Plan& plan);
std::string plan_to_json(const Plan& plan, int indent = 2);
Plan plan_from_json(const std::string& text);

}  // namespace canopy
