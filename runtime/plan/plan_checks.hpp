// The index checks every consumer of a Plan needs before it reads memory
// through it: Plan::validate, the CPU executor and check_plan_coverage.
#pragma once

#include <cstdint>
#include <vector>

#include "canopy/plan.hpp"

namespace canopy {

/// Throws Error(kInvalidArgument) naming the entry and its value unless every
/// index of `plan` is in range: heads that group, row ids that fit int32,
/// num_partial_slots no more than the items write, task_rows that are rows of
/// a request's first group of qo heads, each item's kv heads and rows (inside
/// task_rows; at most kMaxItemKvHeads x kMaxItemRows), slots (inside the
/// partial slots) and tokens
/// (begin <= end; a non-empty range inside kv_pages), merge_indptr a
/// non-decreasing CSR index of merge_parts over merge_requests, merged
/// requests in range, every part's slots (all qo heads) inside the partial
/// slots, and no partial slot written by two items. Empty items
/// (token_begin == token_end) pass. Returns the item writing each slot (-1:
/// none). Page ids themselves are not checked: that needs the KV cache size.
std::vector<std::int32_t> check_plan_indices(const Plan& plan);

}  // namespace canopy
