// Plan consistency: the shared index checks (check_plan_indices) and
// Plan::validate, which adds what only a planner-made plan promises.
#include "runtime/plan/plan_checks.hpp"

#include <fmt/format.h>

#include "canopy/error.hpp"

namespace canopy {

std::vector<std::int32_t> check_plan_indices(const Plan& plan) {
  const AttentionSpec& spec = plan.spec;
  const std::int64_t rows = static_cast<std::int64_t>(plan.batch_size) * spec.num_qo_heads;
  const std::int64_t slots = static_cast<std::int64_t>(plan.query_rows.size());
  CANOPY_CHECK(plan.batch_size >= 0, ErrorKind::kInvalidArgument, "plan: batch_size is {}",
               plan.batch_size);
  CANOPY_CHECK(plan.num_partial_slots == slots, ErrorKind::kInvalidArgument,
               "plan: num_partial_slots is {} but query_rows has {} entries",
               plan.num_partial_slots, slots);
  for (std::int64_t s = 0; s < slots; ++s) {
    const std::int32_t row = plan.query_rows[static_cast<std::size_t>(s)];
    CANOPY_CHECK(row >= 0 && row < rows, ErrorKind::kInvalidArgument,
                 "plan: query_rows[{}] is {}, out of range [0, {})", s, row, rows);
  }
  const std::int64_t ps = spec.page_size;
  std::vector<std::int32_t> writer(static_cast<std::size_t>(slots), -1);
  for (std::size_t i = 0; i < plan.items.size(); ++i) {
    const WorkItem& it = plan.items[i];
    CANOPY_CHECK(it.kv_head >= 0 && it.kv_head < spec.num_kv_heads, ErrorKind::kInvalidArgument,
                 "plan: item {}: kv_head {} out of range [0, {})", i, it.kv_head,
                 spec.num_kv_heads);
    CANOPY_CHECK(it.row_begin >= 0 && it.row_count >= 0 &&
                     std::int64_t{it.row_begin} + it.row_count <= slots,
                 ErrorKind::kInvalidArgument,
                 "plan: item {}: rows [{}, +{}) outside the {} partial slots", i, it.row_begin,
                 it.row_count, slots);
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
    for (std::int32_t s = it.row_begin; s < it.row_begin + it.row_count; ++s) {
      std::int32_t& w = writer[static_cast<std::size_t>(s)];
      CANOPY_CHECK(w < 0, ErrorKind::kInvalidArgument,
                   "plan: item {}: partial slot {} is also written by item {}", i, s, w);
      w = static_cast<std::int32_t>(i);
    }
  }
  CANOPY_CHECK(static_cast<std::int64_t>(plan.merge_indptr.size()) == rows + 1,
               ErrorKind::kInvalidArgument,
               "plan: merge_indptr has {} entries, expected batch * num_qo_heads + 1 = {}",
               plan.merge_indptr.size(), rows + 1);
  CANOPY_CHECK(plan.merge_indptr[0] == 0 &&
                   static_cast<std::size_t>(plan.merge_indptr.back()) == plan.merge_indices.size(),
               ErrorKind::kInvalidArgument,
               "plan: merge_indptr runs from {} to {}, expected 0 to merge_indices' {} entries",
               plan.merge_indptr[0], plan.merge_indptr.back(), plan.merge_indices.size());
  for (std::int64_t r = 0; r < rows; ++r) {
    CANOPY_CHECK(plan.merge_indptr[static_cast<std::size_t>(r)] <=
                     plan.merge_indptr[static_cast<std::size_t>(r + 1)],
                 ErrorKind::kInvalidArgument, "plan: merge_indptr decreases at row {}", r);
  }
  for (std::size_t j = 0; j < plan.merge_indices.size(); ++j) {
    const std::int32_t s = plan.merge_indices[j];
    CANOPY_CHECK(s >= 0 && s < slots, ErrorKind::kInvalidArgument,
                 "plan: merge_indices[{}] is {}, out of range [0, {})", j, s, slots);
  }
  return writer;
}

void Plan::validate() const {
  spec.validate();
  check_plan_indices(*this);
  // What the planner promises beyond valid indices: every item reads tokens,
  // fits its config's tile, and the launches tile the items by config.
  for (std::size_t i = 0; i < items.size(); ++i) {
    const WorkItem& it = items[i];
    CANOPY_CHECK(it.config >= 0 && it.config < static_cast<int>(configs.size()),
                 ErrorKind::kInvalidArgument, "plan: item {} has config {} of {}", i, it.config,
                 configs.size());
    CANOPY_CHECK(it.row_count >= 1 && it.row_count <= configs[it.config].tile_q,
                 ErrorKind::kInvalidArgument, "plan: item {} has {} rows, tile_q {} allows 1..{}",
                 i, it.row_count, configs[it.config].tile_q, configs[it.config].tile_q);
    CANOPY_CHECK(it.token_end > it.token_begin, ErrorKind::kInvalidArgument,
                 "plan: item {} reads no tokens ([{}, {}))", i, it.token_begin, it.token_end);
  }
  std::int32_t expected = 0;
  for (const LaunchGroup& g : launches) {
    CANOPY_CHECK(g.item_begin == expected && g.item_end >= g.item_begin &&
                     g.item_end <= static_cast<std::int32_t>(items.size()),
                 ErrorKind::kInvalidArgument,
                 "plan: launch groups must tile the items, got [{}, {})", g.item_begin, g.item_end);
    for (std::int32_t i = g.item_begin; i < g.item_end; ++i) {
      CANOPY_CHECK(items[i].config == g.config, ErrorKind::kInvalidArgument,
                   "plan: item {} not in its group", i);
    }
    expected = g.item_end;
  }
  CANOPY_CHECK(expected == static_cast<std::int32_t>(items.size()), ErrorKind::kInvalidArgument,
               "plan: items outside launches");
}

}  // namespace canopy
