// check_plan_coverage: proves that a plan computes exactly the attention the
// block tables ask for. Tables and plan indices are checked first
// (BlockTables::validate, check_plan_indices). Every (request, qo head) row must have its KV tokens
// [0, seq_len) tiled by work-item rows without gaps or overlaps; every item row
// must read the request's own page and slot for each token (the KV head of
// its qo head's group holds by construction: Plan::query_row); and every
// partial slot must be merged exactly once, into its own output row.
//
// Cost: O(slots log slots) for the tiling (intervals, not token bitmaps) plus
// one page comparison per (item, distinct request, page).
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "canopy/cpu.hpp"
#include "canopy/error.hpp"
#include "runtime/plan/plan_checks.hpp"

namespace canopy {

namespace {

[[noreturn]] void fail(const std::string& message) {
  throw Error(ErrorKind::kInvalidArgument, "plan coverage: " + message);
}

std::string where(int request, int head) {
  return "request " + std::to_string(request) + ", qo head " + std::to_string(head);
}

std::string item_name(std::size_t i) { return "item " + std::to_string(i); }

struct Interval {
  std::int32_t begin;  // request token positions [begin, end)
  std::int32_t end;
  std::int32_t item;
};

}  // namespace

void check_plan_coverage(const Plan& plan, const BlockTables& tables) {
  const AttentionSpec& spec = plan.spec;
  spec.validate();
  const int batch = tables.batch_size();
  const int hq = spec.num_qo_heads;
  const std::int64_t ps = spec.page_size;

  if (plan.batch_size != batch)
    fail("plan is for " + std::to_string(plan.batch_size) + " requests, tables hold " +
         std::to_string(batch));
  tables.validate(spec.page_size);
  // Indices in range, one writer per slot (the item writing each, -1: none).
  const std::vector<std::int32_t> slot_item = check_plan_indices(plan);

  const std::int64_t rows = static_cast<std::int64_t>(batch) * hq;
  const std::int64_t slots = plan.num_partial_slots;
  // The output row of every written slot (-1: none), from the compact rows.
  std::vector<std::int32_t> slot_row(static_cast<std::size_t>(slots), -1);
  for (const WorkItem& it : plan.items) {
    for (int h = 0; h < it.kv_heads; ++h) {
      for (int k = 0; k < it.row_count; ++k) {
        slot_row[static_cast<std::size_t>(it.row_begin + h * it.row_count + k)] =
            plan.query_row(it, h, k);
      }
    }
  }

  // Pass 1: per item, kv heads and pages; count one interval per item row.
  std::vector<std::int32_t> row_count(static_cast<std::size_t>(rows) + 1, 0);
  std::vector<std::int32_t> seen(static_cast<std::size_t>(batch), -1);  // last item per request
  for (std::size_t i = 0; i < plan.items.size(); ++i) {
    const WorkItem& it = plan.items[i];
    if (it.path_token_offset < 0)
      fail(item_name(i) + ": path_token_offset " + std::to_string(it.path_token_offset));

    for (std::int32_t s = it.row_begin; s < it.row_begin + it.slot_count(); ++s) {
      // Its qo head is in the group of the slot's KV head by construction (query_row).
      const std::int32_t row = slot_row[static_cast<std::size_t>(s)];
      const int r = row / hq, h = row % hq;
      if (it.token_end > it.token_begin) ++row_count[static_cast<std::size_t>(row)];
      if (it.token_end == it.token_begin ||
          seen[static_cast<std::size_t>(r)] == static_cast<int>(i))
        continue;
      seen[static_cast<std::size_t>(r)] = static_cast<std::int32_t>(i);

      // Pages of this request under the item, one comparison per page.
      const std::int64_t len = tables.seq_lens[static_cast<std::size_t>(r)];
      const std::int64_t p_end = std::int64_t{it.path_token_offset} + it.token_end;
      if (p_end > len)
        fail(where(r, h) + ", KV token " +
             std::to_string(std::max<std::int64_t>(len, it.path_token_offset + it.token_begin)) +
             ": " + item_name(i) + " reads past seq_len " + std::to_string(len) +
             " (covers positions up to " + std::to_string(p_end) + ")");
      const std::int32_t* table = tables.indices.data() + tables.indptr[r];
      for (std::int64_t t = it.token_begin; t < it.token_end;) {
        const std::int64_t p = it.path_token_offset + t;
        const std::int32_t seg_page =
            plan.kv_pages[static_cast<std::size_t>(it.kv_page_offset + t / ps)];
        const std::int32_t req_page = table[p / ps];
        if (seg_page != req_page || t % ps != p % ps)
          fail(where(r, h) + ", KV token " + std::to_string(p) + ": " + item_name(i) +
               " reads page " + std::to_string(seg_page) + " slot " + std::to_string(t % ps) +
               ", the request's table has page " + std::to_string(req_page) + " slot " +
               std::to_string(p % ps));
        t = (t / ps + 1) * ps;  // next page (slots are aligned, checked above)
      }
    }
  }

  // Pass 2: tile each row's KV positions with its intervals.
  std::vector<std::int32_t> start(static_cast<std::size_t>(rows) + 1, 0);
  for (std::int64_t row = 0; row < rows; ++row)
    start[static_cast<std::size_t>(row + 1)] =
        start[static_cast<std::size_t>(row)] + row_count[static_cast<std::size_t>(row)];
  std::vector<Interval> intervals(static_cast<std::size_t>(start.back()));
  std::vector<std::int32_t> fill(start.begin(), start.end() - 1);
  for (std::size_t i = 0; i < plan.items.size(); ++i) {
    const WorkItem& it = plan.items[i];
    if (it.token_end == it.token_begin) continue;
    for (std::int32_t s = it.row_begin; s < it.row_begin + it.slot_count(); ++s) {
      const std::int32_t row = slot_row[static_cast<std::size_t>(s)];
      intervals[static_cast<std::size_t>(fill[static_cast<std::size_t>(row)]++)] = {
          it.path_token_offset + it.token_begin, it.path_token_offset + it.token_end,
          static_cast<std::int32_t>(i)};
    }
  }
  for (std::int64_t row = 0; row < rows; ++row) {
    const int r = static_cast<int>(row / hq), h = static_cast<int>(row % hq);
    auto b = intervals.begin() + start[static_cast<std::size_t>(row)];
    auto e = intervals.begin() + start[static_cast<std::size_t>(row + 1)];
    std::sort(b, e, [](const Interval& x, const Interval& y) {
      return x.begin != y.begin ? x.begin < y.begin : x.item < y.item;
    });
    std::int32_t next = 0;
    std::int32_t prev_item = -1;
    for (auto iv = b; iv != e; ++iv) {
      if (iv->begin > next)
        fail(where(r, h) + ", KV token " + std::to_string(next) + ": not covered by any item");
      if (iv->begin < next)
        fail(where(r, h) + ", KV token " + std::to_string(iv->begin) + ": covered twice (" +
             item_name(static_cast<std::size_t>(prev_item)) + " and " +
             item_name(static_cast<std::size_t>(iv->item)) + ")");
      next = iv->end;
      prev_item = iv->item;
    }
    const std::int32_t len = tables.seq_lens[static_cast<std::size_t>(r)];
    if (next < len)
      fail(where(r, h) + ", KV token " + std::to_string(next) +
           ": not covered by any item (seq_len " + std::to_string(len) + ")");
  }

  // Pass 3: every output row is written once: by its only item when that item
  // is direct, else by one merge entry that merges each of its slots once.
  const std::size_t merged_requests = plan.merge_requests.size();
  if (plan.merge_indptr.size() != merged_requests + 1 || plan.merge_indptr[0] != 0 ||
      static_cast<std::size_t>(plan.merge_indptr.back()) != plan.merge_parts.size())
    fail("merge_indptr is not a CSR index over " + std::to_string(merged_requests) +
         " merged requests of merge_parts (" + std::to_string(plan.merge_parts.size()) + ")");
  std::vector<std::uint8_t> written(static_cast<std::size_t>(rows), 0);
  std::vector<std::uint8_t> merged(static_cast<std::size_t>(slots), 0);
  for (std::size_t i = 0; i < plan.items.size(); ++i) {
    const WorkItem& it = plan.items[i];
    if (!it.direct) continue;
    for (std::int32_t s = it.row_begin; s < it.row_begin + it.slot_count(); ++s) {
      const std::int32_t row = slot_row[static_cast<std::size_t>(s)];
      const int r = row / hq, h = row % hq;
      if (start[static_cast<std::size_t>(row) + 1] - start[static_cast<std::size_t>(row)] != 1)
        fail(where(r, h) + ": " + item_name(i) +
             " writes the output directly but the row has other partial states");
      if (written[static_cast<std::size_t>(row)]++) fail(where(r, h) + ": written twice");
      merged[static_cast<std::size_t>(s)] = 1;
    }
  }
  for (std::size_t m = 0; m < merged_requests; ++m) {
    const std::int32_t r = plan.merge_requests[m];
    if (r < 0 || r >= batch) fail("merged request " + std::to_string(r) + " out of range");
    const std::int32_t b = plan.merge_indptr[m];
    const std::int32_t e = plan.merge_indptr[m + 1];
    for (int h = 0; h < hq; ++h) {
      const std::int32_t row = r * hq + h;
      if (written[static_cast<std::size_t>(row)]++) fail(where(r, h) + ": written twice");
      if (e < b) fail(where(r, h) + ": merge_indptr decreases");
      if (e == b) fail(where(r, h) + ": no partial states to merge");
      for (std::int32_t j = b; j < e; ++j) {
        const std::int32_t s = plan.merge_slot(plan.merge_parts[static_cast<std::size_t>(j)], h);
        if (slot_item[static_cast<std::size_t>(s)] < 0)
          fail(where(r, h) + ": merges partial slot " + std::to_string(s) +
               " which no item writes");
        if (slot_row[static_cast<std::size_t>(s)] != row)
          fail(where(r, h) + ": merges partial slot " + std::to_string(s) +
               " which belongs to row " + std::to_string(slot_row[static_cast<std::size_t>(s)]));
        if (merged[static_cast<std::size_t>(s)]++)
          fail(where(r, h) + ": merges partial slot " + std::to_string(s) + " twice");
      }
    }
  }
  for (std::int64_t row = 0; row < rows; ++row) {
    if (!written[static_cast<std::size_t>(row)])
      fail(where(static_cast<int>(row / hq), static_cast<int>(row % hq)) +
           ": output row never written (no direct item, no merge entry)");
  }
  for (std::int64_t s = 0; s < slots; ++s) {
    if (!merged[static_cast<std::size_t>(s)] && slot_item[static_cast<std::size_t>(s)] >= 0) {
      const std::int32_t row = slot_row[static_cast<std::size_t>(s)];
      const auto& it = plan.items[static_cast<std::size_t>(slot_item[static_cast<std::size_t>(s)])];
      if (it.token_end > it.token_begin)
        fail(where(row / hq, row % hq) + ": partial slot " + std::to_string(s) + " of " +
             item_name(static_cast<std::size_t>(slot_item[static_cast<std::size_t>(s)])) +
             " is never merged");
    }
  }
}

}  // namespace canopy
