// Plan: everything the planner decides for one decode step, as plain data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "canopy/batch.hpp"
#include "canopy/kernel_spec.hpp"
#include "canopy/spec.hpp"

namespace canopy {

/// One thread block's job: attention of `row_count` query rows (all in one GQA
/// group, so they share KV head `kv_head`) over tokens [token_begin, token_end)
/// of a KV segment. A segment is a run of whole pages kv_pages[kv_page_offset..]
/// (a tree node's pages, preceded by any ancestors it absorbed); segment token
/// t is page kv_pages[kv_page_offset + t / page_size], slot t % page_size, and
/// sits at position path_token_offset + t of every request in its rows.
/// The item writes one partial state (output row, log-sum-exp) per query row
/// into partial slots row_begin .. row_begin + row_count - 1.
struct WorkItem {
  std::int32_t node = 0;    ///< deepest tree node of the segment
  std::int32_t config = 0;  ///< index into Plan::configs
  std::int32_t kv_head = 0;
  std::int32_t kv_page_offset = 0;     ///< into Plan::kv_pages
  std::int32_t token_begin = 0;        ///< segment-relative, inclusive
  std::int32_t token_end = 0;          ///< segment-relative, exclusive
  std::int32_t path_token_offset = 0;  ///< segment token 0's position in its requests
  std::int32_t row_begin = 0;          ///< into Plan::query_rows; also the first partial slot
  std::int32_t row_count = 0;
  float predicted_us = 0;  ///< the cost model's estimate
  std::int32_t sm = 0;     ///< SM the balancer assigned (for inspection)
};

/// One kernel launch of the plan: items [item_begin, item_end) run config `config`.
struct LaunchGroup {
  std::int32_t config = 0;
  std::int32_t item_begin = 0;
  std::int32_t item_end = 0;
};

/// A plan is computed once per decode step and reused by every layer.
struct Plan {
  AttentionSpec spec;
  int batch_size = 0;
  int tree_depth = 0;  ///< max nodes on a root-to-leaf path
  std::vector<KernelConfig> configs;
  std::vector<WorkItem> items;  ///< grouped by config; longest first within a group
  std::vector<LaunchGroup> launches;
  std::vector<std::int32_t> query_rows;  ///< row id = request * num_qo_heads + qo_head
  std::vector<std::int32_t> kv_pages;    ///< concatenated segment page lists
  /// Merge schedule, CSR over output rows (request * num_qo_heads + qo_head):
  /// row combines partial slots merge_indices[merge_indptr[row] ..
  /// merge_indptr[row+1]) in that order (fixed order: deterministic results).
  std::vector<std::int32_t> merge_indptr;
  std::vector<std::int32_t> merge_indices;
  int max_merge_fan_in = 0;
  std::int64_t num_partial_slots = 0;  ///< == query_rows.size()
  std::vector<float> sm_load_us;       ///< predicted busy time per SM
  float predicted_us = 0;              ///< max over SMs plus launch and merge costs
  int num_sms = 0;

  /// Device workspace: partial outputs (float32, [slots, head_dim]) and their
  /// log-sum-exps (float32, [slots]), 256-byte aligned.
  std::int64_t workspace_bytes() const;
  std::int64_t partial_lse_offset() const;  ///< byte offset of the lse array in the workspace
  /// Throws Error(kInvalidArgument / kNotSupported) if the spec is invalid or
  /// the plan is internally inconsistent (an index out of range, a slot
  /// written twice, an empty item, launches not tiling the items).
  void validate() const;
};

/// Throws Error(kInvalidArgument) unless every (request, qo head, KV token)
/// of `tables` is covered by exactly one work item row, with the right page,
/// and every partial state is merged once, into its own row.
void check_plan_coverage(const Plan& plan, const BlockTables& tables);

std::string plan_to_text(const Plan& plan);
std::string plan_to_json(const Plan& plan, int indent = 2);
Plan plan_from_json(const std::string& text);

}  // namespace canopy
