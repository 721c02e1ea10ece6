// Runs a Plan on the host in float64, exactly as the GPU kernels do: every
// work item writes one normalised partial state (o / l, m + log l) per query
// row, then every output row merges its partial slots in the plan's order.
// Items are independent (disjoint slots) and each is computed sequentially, so
// running them on several threads gives bit-identical results.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "canopy/cpu.hpp"
#include "canopy/error.hpp"
#include "cpu/parallel.hpp"
#include "runtime/plan/plan_checks.hpp"

namespace canopy {

namespace {

using cpu::dot;
using cpu::parallel_for;

/// Every page id the items read lies in the KV cache the tensors hold.
void check_pages(const Plan& plan, std::int64_t num_pages) {
  const std::int64_t ps = plan.spec.page_size;
  for (std::size_t i = 0; i < plan.items.size(); ++i) {
    const WorkItem& it = plan.items[i];
    if (it.token_end == it.token_begin) continue;
    const std::int64_t first = it.kv_page_offset + it.token_begin / ps;
    const std::int64_t last = it.kv_page_offset + (it.token_end - 1) / ps;
    for (std::int64_t p = first; p <= last; ++p) {
      const std::int32_t page = plan.kv_pages[static_cast<std::size_t>(p)];
      CANOPY_CHECK(page >= 0 && page < num_pages, ErrorKind::kInvalidArgument,
                   "plan item {}: page id {} out of range [0, {})", i, page, num_pages);
    }
  }
}

}  // namespace

void execute_plan_cpu(const Plan& plan, const HostTensors& in, double* out, double* lse) {
  const AttentionSpec& spec = plan.spec;
  spec.validate();
  if (!(in.q != nullptr && in.k != nullptr && in.v != nullptr && out != nullptr))
    throw Error(ErrorKind::kInvalidArgument, "execute_plan_cpu: null q, k, v or out");
  // A corrupt plan throws here instead of reading out of range.
  check_plan_indices(plan);
  check_pages(plan, in.num_pages);

  const int d = spec.head_dim;
  const int ps = spec.page_size;
  const double scale = spec.effective_sm_scale();
  const double cap = spec.logits_soft_cap;
  const double neg_inf = -std::numeric_limits<double>::infinity();

  const auto slots = static_cast<std::size_t>(plan.num_partial_slots);
  std::vector<double> part_o(slots * static_cast<std::size_t>(d), 0.0);
  std::vector<double> part_lse(slots, neg_inf);

  // Partial attention. Each query row's state depends only on its own item, so
  // the work is cut into tasks of up to kRowBlock rows of one item and run on
  // several threads; every row is computed sequentially, in token order.
  constexpr int kRowBlock = 16;
  // A head pack is one item over several KV heads: each head's rows are a
  // run of row_count slots, computed like an item of its own.
  struct Task {
    std::int32_t item;
    std::int32_t head;  // offset from the item's first KV head
    std::int32_t row0;
  };
  std::vector<Task> tasks;
  for (std::size_t i = 0; i < plan.items.size(); ++i)
    for (std::int32_t h = 0; h < plan.items[i].kv_heads; ++h)
      for (std::int32_t r0 = 0; r0 < plan.items[i].row_count; r0 += kRowBlock)
        tasks.push_back({static_cast<std::int32_t>(i), h, r0});

  parallel_for(static_cast<std::int64_t>(tasks.size()), [&](std::int64_t idx) {
    const Task task = tasks[static_cast<std::size_t>(idx)];
    const WorkItem& it = plan.items[static_cast<std::size_t>(task.item)];
    const int kv_head = it.kv_head + task.head;
    const int rows = std::min(kRowBlock, it.row_count - task.row0);
    const int tokens = it.token_end - it.token_begin;
    const std::int64_t slot0 =
        std::int64_t{it.row_begin} + std::int64_t{task.head} * it.row_count + task.row0;
    double* o_base = part_o.data() + static_cast<std::size_t>(slot0) * d;
    double* lse_base = part_lse.data() + slot0;
    std::fill(o_base, o_base + static_cast<std::size_t>(rows) * d, 0.0);
    if (tokens == 0) {  // empty range: the identity of the merge
      std::fill(lse_base, lse_base + rows, neg_inf);
      return;
    }
    std::int32_t row_ids[kRowBlock];
    for (int i = 0; i < rows; ++i) row_ids[i] = plan.query_row(it, task.head, task.row0 + i);
    std::vector<double> scores(static_cast<std::size_t>(rows) * tokens);
    for (int t = 0; t < tokens; ++t) {
      const int st = it.token_begin + t;
      const std::int32_t page =
          plan.kv_pages[static_cast<std::size_t>(it.kv_page_offset + st / ps)];
      const double* k = in.k + kv_offset(spec, page, st % ps, kv_head);
      for (int i = 0; i < rows; ++i) {
        const double* q = in.q + static_cast<std::int64_t>(row_ids[i]) * d;
        double s = dot(q, k, d) * scale;
        if (cap > 0) s = cap * std::tanh(s / cap);
        scores[static_cast<std::size_t>(i) * tokens + t] = s;
      }
    }
    double inv_l[kRowBlock];
    for (int i = 0; i < rows; ++i) {
      double* si = scores.data() + static_cast<std::size_t>(i) * tokens;
      const double m = *std::max_element(si, si + tokens);
      double l = 0;
      for (int t = 0; t < tokens; ++t) {
        si[t] = std::exp(si[t] - m);
        l += si[t];
      }
      inv_l[i] = 1.0 / l;
      lse_base[i] = m + std::log(l);
    }
    for (int t = 0; t < tokens; ++t) {
      const int st = it.token_begin + t;
      const std::int32_t page =
          plan.kv_pages[static_cast<std::size_t>(it.kv_page_offset + st / ps)];
      const double* v = in.v + kv_offset(spec, page, st % ps, kv_head);
      for (int i = 0; i < rows; ++i) {
        const double p = scores[static_cast<std::size_t>(i) * tokens + t];
        double* o = o_base + static_cast<std::size_t>(i) * d;
        for (int j = 0; j < d; ++j) o[j] += p * v[j];
      }
    }
    for (int i = 0; i < rows; ++i) {
      double* o = o_base + static_cast<std::size_t>(i) * d;
      for (int j = 0; j < d; ++j) o[j] *= inv_l[i];
    }
  });

  // Direct items' rows are final as they stand (normalised, with their lse).
  for (const WorkItem& it : plan.items) {
    if (!it.direct) continue;
    for (std::int32_t s = it.row_begin; s < it.row_begin + it.slot_count(); ++s) {
      const std::int32_t h = (s - it.row_begin) / it.row_count;
      const std::int64_t row = plan.query_row(it, h, s - it.row_begin - h * it.row_count);
      std::copy_n(part_o.data() + static_cast<std::size_t>(s) * d, d, out + row * d);
      if (lse != nullptr) lse[row] = part_lse[static_cast<std::size_t>(s)];
    }
  }
  // Merge: every qo head of a merged request combines its partial slots in
  // the plan's order.
  const int hq = spec.num_qo_heads;
  for (std::size_t m_i = 0; m_i < plan.merge_requests.size(); ++m_i) {
    const std::int32_t b = plan.merge_indptr[m_i];
    const std::int32_t e = plan.merge_indptr[m_i + 1];
    for (int h = 0; h < hq; ++h) {
      const std::int64_t row = std::int64_t{plan.merge_requests[m_i]} * hq + h;
      auto slot = [&](std::int32_t j) {
        return static_cast<std::size_t>(plan.merge_slot(plan.merge_parts[j], h));
      };
      double m = neg_inf;
      for (std::int32_t j = b; j < e; ++j) m = std::max(m, part_lse[slot(j)]);
      double* o = out + row * d;
      std::fill(o, o + d, 0.0);
      if (m == neg_inf) {  // nothing attended (cannot happen for a covering plan)
        if (lse != nullptr) lse[row] = neg_inf;
        continue;
      }
      double sum = 0;
      for (std::int32_t j = b; j < e; ++j) {
        const std::size_t s = slot(j);
        const double w = std::exp(part_lse[s] - m);
        sum += w;
        const double* po = part_o.data() + s * d;
        for (int i = 0; i < d; ++i) o[i] += w * po[i];
      }
      const double inv = 1.0 / sum;
      for (int i = 0; i < d; ++i) o[i] *= inv;
      if (lse != nullptr) lse[row] = m + std::log(sum);
    }
  }
}

}  // namespace canopy
