// Plan consistency: the shared index checks (check_plan_indices) and
// Plan::validate, which adds what only a planner-made plan promises.
#include "runtime/plan/plan_checks.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "canopy/error.hpp"
#include "families/kernel_families.hpp"

namespace canopy {

std::vector<std::int32_t> check_plan_indices(const Plan& plan) {
  const AttentionSpec& spec = plan.spec;
  CANOPY_CHECK(plan.batch_size >= 0, ErrorKind::kInvalidArgument, "plan: batch_size is {}",
               plan.batch_size);
  // Row ids are request * num_qo_heads + qo_head: the heads must make a group.
  CANOPY_CHECK(spec.num_kv_heads >= 1 && spec.num_qo_heads >= spec.num_kv_heads &&
                   spec.num_qo_heads % spec.num_kv_heads == 0,
               ErrorKind::kInvalidArgument, "plan: {} qo heads do not group over {} KV heads",
               spec.num_qo_heads, spec.num_kv_heads);
  const int group = plan.group();
  CANOPY_CHECK(
      std::int64_t{plan.batch_size} * spec.num_qo_heads <= std::numeric_limits<std::int32_t>::max(),
      ErrorKind::kInvalidArgument, "plan: {} requests x {} qo heads overflow a row id",
      plan.batch_size, spec.num_qo_heads);
  // Every slot is some item's (the planner allocates them item by item), so
  // the items bound the slot count before anything is sized by it: at most
  // kMaxItemKvHeads x kMaxItemRows per item.
  std::int64_t written = 0;
  for (std::size_t i = 0; i < plan.items.size(); ++i) {
    const WorkItem& it = plan.items[i];
    CANOPY_CHECK(it.kv_heads >= 1 && it.kv_heads <= kMaxItemKvHeads && it.row_count >= 0 &&
                     it.row_count <= kMaxItemRows,
                 ErrorKind::kInvalidArgument,
                 "plan: item {}: {} KV heads of {} rows, the format allows 1..{} of 0..{}", i,
                 it.kv_heads, it.row_count, kMaxItemKvHeads, kMaxItemRows);
    // Its rows under KV head 0: task_rows[task_row_begin ..], row_count of them.
    CANOPY_CHECK(it.task_row_begin >= 0 && std::int64_t{it.task_row_begin} + it.row_count <=
                                               static_cast<std::int64_t>(plan.task_rows.size()),
                 ErrorKind::kInvalidArgument,
                 "plan: item {}: rows [{}, +{}) run past task_rows ({} entries)", i,
                 it.task_row_begin, it.row_count, plan.task_rows.size());
    written += std::int64_t{it.kv_heads} * it.row_count;
  }
  const std::int64_t slots = plan.num_partial_slots;
  CANOPY_CHECK(slots >= 0 && slots <= written, ErrorKind::kInvalidArgument,
               "plan: num_partial_slots is {}, but the items write {} slots", slots, written);
  // A task row is some request's qo head g < group: shifted by the item's KV
  // head (kv_head + h) * group, it stays that request's.
  for (std::size_t j = 0; j < plan.task_rows.size(); ++j) {
    const std::int32_t row = plan.task_rows[j];
    CANOPY_CHECK(
        row >= 0 && row / spec.num_qo_heads < plan.batch_size && row % spec.num_qo_heads < group,
        ErrorKind::kInvalidArgument,
        "plan: task_rows[{}] is {}: not a row of a request's first {} qo heads ({} "
        "requests)",
        j, row, group, plan.batch_size);
  }
  const std::int64_t ps = spec.page_size;
  std::vector<std::int32_t> writer(static_cast<std::size_t>(slots), -1);
  for (std::size_t i = 0; i < plan.items.size(); ++i) {
    const WorkItem& it = plan.items[i];
    CANOPY_CHECK(it.kv_heads >= 1 && it.kv_head >= 0 &&
                     std::int64_t{it.kv_head} + it.kv_heads <= spec.num_kv_heads,
                 ErrorKind::kInvalidArgument,
                 "plan: item {}: kv heads [{}, +{}) out of range [0, {})", i, it.kv_head,
                 it.kv_heads, spec.num_kv_heads);
    CANOPY_CHECK(it.row_begin >= 0 && it.row_count >= 0 &&
                     std::int64_t{it.row_begin} + std::int64_t{it.kv_heads} * it.row_count <= slots,
                 ErrorKind::kInvalidArgument,
                 "plan: item {}: rows [{}, +{} x {} heads) outside the {} partial slots", i,
                 it.row_begin, it.row_count, it.kv_heads, slots);
    CANOPY_CHECK(it.token_begin >= 0 && it.token_begin <= it.token_end, ErrorKind::kInvalidArgument,
                 "plan: item {}: bad token range [{}, {})", i, it.token_begin, it.token_end);
    if (it.token_end > it.token_begin) {
      const std::int64_t last = std::int64_t{it.kv_page_offset} + (it.token_end - 1) / ps;
      CANOPY_CHECK(it.kv_page_offset >= 0 && last < static_cast<std::int64_t>(plan.kv_pages.size()),
                   ErrorKind::kInvalidArgument,
                   "plan: item {}: tokens [{}, {}) from page offset {} run past kv_pages ({} "
                   "entries)",
                   i, it.token_begin, it.token_end, it.kv_page_offset, plan.kv_pages.size());
    }
    // Items run concurrently: each partial slot has one writer.
    for (std::int32_t s = it.row_begin; s < it.row_begin + it.slot_count(); ++s) {
      std::int32_t& w = writer[static_cast<std::size_t>(s)];
      CANOPY_CHECK(w < 0, ErrorKind::kInvalidArgument,
                   "plan: item {}: partial slot {} is also written by item {}", i, s, w);
      w = static_cast<std::int32_t>(i);
    }
  }
  // The merge: a CSR index over merged requests into their partial states.
  const std::size_t merged = plan.merge_requests.size();
  CANOPY_CHECK(plan.merge_indptr.size() == merged + 1, ErrorKind::kInvalidArgument,
               "plan: merge_indptr has {} entries, expected merge_requests + 1 = {}",
               plan.merge_indptr.size(), merged + 1);
  CANOPY_CHECK(plan.merge_indptr[0] == 0 &&
                   static_cast<std::size_t>(plan.merge_indptr.back()) == plan.merge_parts.size(),
               ErrorKind::kInvalidArgument,
               "plan: merge_indptr runs from {} to {}, expected 0 to merge_parts' {} entries",
               plan.merge_indptr[0], plan.merge_indptr.back(), plan.merge_parts.size());
  for (std::size_t e = 0; e < merged; ++e) {
    CANOPY_CHECK(plan.merge_indptr[e] <= plan.merge_indptr[e + 1], ErrorKind::kInvalidArgument,
                 "plan: merge_indptr decreases at entry {}", e);
    CANOPY_CHECK(plan.merge_requests[e] >= 0 && plan.merge_requests[e] < plan.batch_size,
                 ErrorKind::kInvalidArgument,
                 "plan: merge_requests[{}] is {}, out of range [0, {})", e, plan.merge_requests[e],
                 plan.batch_size);
  }
  // A part's slots for qo heads 0 .. num_qo_heads - 1 run from slot to
  // slot + (kv heads - 1) * head_stride + group - 1.
  const std::int64_t kv_span = spec.num_kv_heads - 1;
  for (std::size_t j = 0; j < plan.merge_parts.size(); ++j) {
    const MergePart& m = plan.merge_parts[j];
    CANOPY_CHECK(
        m.slot >= 0 && m.head_stride >= 0 && m.slot + kv_span * m.head_stride + group - 1 < slots,
        ErrorKind::kInvalidArgument,
        "plan: merge_parts[{}] (slot {}, head stride {}) reaches past the {} partial "
        "slots",
        j, m.slot, m.head_stride, slots);
  }
  return writer;
}

void Plan::validate() const {
  spec.validate();
  check_plan_indices(*this);
  // What the planner promises beyond valid indices: every item reads tokens
  // with a row tile and head pack its kernel runs, every output row is written
  // exactly once (by a direct item or one merge entry), and the launches
  // tile the items by config, then merge.
  for (const KernelConfig& c : configs) {
    CANOPY_CHECK(families::is_partial_family(c.family), ErrorKind::kInvalidArgument,
                 "plan: config {} is not a partial-attention kernel", c.to_string());
  }
  const std::int64_t rows = static_cast<std::int64_t>(batch_size) * spec.num_qo_heads;
  std::vector<std::uint8_t> writers(static_cast<std::size_t>(rows), 0);
  auto write_row = [&](std::int32_t row) {
    CANOPY_CHECK(writers[static_cast<std::size_t>(row)]++ == 0, ErrorKind::kInvalidArgument,
                 "plan: output row {} has more than one writer", row);
  };
  for (std::size_t i = 0; i < items.size(); ++i) {
    const WorkItem& it = items[i];
    CANOPY_CHECK(it.config >= 0 && it.config < static_cast<int>(configs.size()),
                 ErrorKind::kInvalidArgument, "plan: item {} has config {} of {}", i, it.config,
                 configs.size());
    const KernelConfig& c = configs[it.config];
    const families::FamilyInfo& family = families::family_info(c.family);
    const std::vector<int> tiles = family.row_tiles(spec.head_dim, c);
    CANOPY_CHECK(std::find(tiles.begin(), tiles.end(), it.row_tile) != tiles.end(),
                 ErrorKind::kInvalidArgument,
                 "plan: item {} has row tile {}, which kernel {} does not run", i, it.row_tile,
                 c.to_string());
    CANOPY_CHECK(it.row_count >= 1 && it.row_count <= it.row_tile, ErrorKind::kInvalidArgument,
                 "plan: item {} has {} rows, its row tile {} allows 1..{}", i, it.row_count,
                 it.row_tile, it.row_tile);
    CANOPY_CHECK(it.kv_heads == 1 || it.kv_heads <= family.head_pack(spec, c, it.row_tile),
                 ErrorKind::kInvalidArgument,
                 "plan: item {} packs {} KV heads; kernel {} packs at most {} at row tile {}", i,
                 it.kv_heads, c.to_string(), family.head_pack(spec, c, it.row_tile), it.row_tile);
    CANOPY_CHECK(it.token_end > it.token_begin, ErrorKind::kInvalidArgument,
                 "plan: item {} reads no tokens ([{}, {}))", i, it.token_begin, it.token_end);
    if (it.direct) {
      for (int h = 0; h < it.kv_heads; ++h) {
        for (int k = 0; k < it.row_count; ++k) write_row(query_row(it, h, k));
      }
    }
  }
  for (std::size_t e = 0; e < merge_requests.size(); ++e) {
    const std::int32_t row0 = merge_requests[e] * spec.num_qo_heads;
    for (int q = 0; q < spec.num_qo_heads; ++q) write_row(row0 + q);
    CANOPY_CHECK(merge_indptr[e + 1] > merge_indptr[e], ErrorKind::kInvalidArgument,
                 "plan: merged request {} ({}) has no partial states", e, merge_requests[e]);
  }
  for (std::int64_t row = 0; row < rows; ++row) {
    CANOPY_CHECK(writers[static_cast<std::size_t>(row)] != 0, ErrorKind::kInvalidArgument,
                 "plan: output row {} is never written", row);
  }
  // The schedule: partial launches tile the items in order; then one merge
  // launch over every merge entry, if there are any.
  std::int32_t expected = 0;
  bool merged = false;
  for (const LaunchStep& g : launches) {
    CANOPY_CHECK(!merged, ErrorKind::kInvalidArgument, "plan: the merge must be the last launch");
    if (g.family == KernelFamily::kMergeStates) {
      CANOPY_CHECK(g.config == -1 && g.begin == 0 && g.end == merge_entries(),
                   ErrorKind::kInvalidArgument,
                   "plan: the merge launch must cover merge entries [0, {}), got [{}, {})",
                   merge_entries(), g.begin, g.end);
      merged = true;
      continue;
    }
    CANOPY_CHECK(g.config >= 0 && g.config < static_cast<int>(configs.size()) &&
                     configs[g.config].family == g.family,
                 ErrorKind::kInvalidArgument, "plan: a launch of family {} names config {}",
                 to_string(g.family), g.config);
    CANOPY_CHECK(
        g.begin == expected && g.end > g.begin && g.end <= static_cast<std::int32_t>(items.size()),
        ErrorKind::kInvalidArgument, "plan: partial launches must tile the items, got [{}, {})",
        g.begin, g.end);
    for (std::int32_t i = g.begin; i < g.end; ++i) {
      CANOPY_CHECK(items[i].config == g.config, ErrorKind::kInvalidArgument,
                   "plan: item {} not in its launch", i);
    }
    expected = g.end;
  }
  CANOPY_CHECK(expected == static_cast<std::int32_t>(items.size()), ErrorKind::kInvalidArgument,
               "plan: items outside launches");
  CANOPY_CHECK(merged == !merge_requests.empty(), ErrorKind::kInvalidArgument,
               "plan: a merge launch iff there are merge entries");
}

}  // namespace canopy
