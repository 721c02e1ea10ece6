// IncrementalPlanner: patch the last plan when every request only grew
// (include/canopy/replan.hpp says when; docs/planner.md, section 5).
#include "canopy/replan.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "canopy/error.hpp"
#include "core/ceil_div.hpp"
#include "runtime/plan/planner_core.hpp"
#include "runtime/tree/tree_builder.hpp"

namespace canopy {
namespace {

std::int32_t pages_for(std::int32_t tokens, int page_size) {
  return static_cast<std::int32_t>(ceil_div(tokens, page_size));
}

// Planner::piece_bound for a task of `tokens` in `pieces`.
std::int32_t piece_bound(std::int32_t tokens, int pieces, int tile_kv, int p) {
  if (p == pieces) return tokens;
  const std::int64_t raw = static_cast<std::int64_t>(tokens) * p / pieces;
  return static_cast<std::int32_t>(raw / tile_kv * tile_kv);
}

// Whether piece p holds tokens, as a bit mask over the pieces (a task has at
// most a few dozen pieces; more than 64 never patch).
std::uint64_t nonempty_pieces(std::int32_t tokens, int pieces, int tile_kv) {
  std::uint64_t mask = 0;
  for (int p = 0; p < pieces; ++p) {
    if (piece_bound(tokens, pieces, tile_kv, p + 1) > piece_bound(tokens, pieces, tile_kv, p)) {
      mask |= std::uint64_t{1} << p;
    }
  }
  return mask;
}

// The used pages of the last step, per request, for the next step's
// comparison: the first and last used page of each request, and with
// `all`, every used page. Each request's pages lie in a segment with room to
// grow by an eighth: a decode step appends the grown requests' new pages,
// O(new pages), where a copy of the tables would be O(all pages) (their
// layout shifts whenever a request takes a page). A segment that runs out
// of room moves to the end; the list is compacted once the unread entries
// pass a quarter of the live ones.
struct UsedPages {
  bool all = true;
  std::vector<std::int32_t> first, last;  // per request
  std::vector<std::int32_t> pages;        // with `all`
  std::vector<std::int64_t> offset;       // per request
  std::vector<std::int32_t> count;        // used pages per request
  std::vector<std::int32_t> capacity;
  std::vector<std::int32_t> lens;  // seq_lens
  std::int64_t num_pages = 0;
  std::int64_t live = 0;

  int batch_size() const { return static_cast<int>(lens.size()); }
  const std::int32_t* row(int r) const { return pages.data() + offset[r]; }

  void assign(const BlockTables& t, int page_size, bool keep_all) {
    all = keep_all;
    const int batch = t.batch_size();
    lens = t.seq_lens;
    num_pages = t.num_pages;
    first.resize(batch);
    last.resize(batch);
    count.resize(batch);
    for (int r = 0; r < batch; ++r) {
      count[r] = pages_for(t.seq_lens[r], page_size);
      first[r] = t.indices[t.indptr[r]];
      last[r] = t.indices[t.indptr[r] + count[r] - 1];
    }
    if (!all) return;
    offset.resize(batch);
    capacity.resize(batch);
    std::int64_t at = 0;
    live = 0;
    for (int r = 0; r < batch; ++r) {
      offset[r] = at;
      capacity[r] = count[r] + std::max<std::int32_t>(2, count[r] / 8);
      at += capacity[r];
      live += count[r];
    }
    pages.resize(static_cast<std::size_t>(at));
    for (int r = 0; r < batch; ++r) {
      std::copy_n(t.indices.data() + t.indptr[r], count[r], pages.data() + offset[r]);
    }
  }

  // Request r now uses `used` pages of its row in t (it used count[r]).
  void grow(const BlockTables& t, int r, std::int32_t used) {
    const std::int32_t* src = t.indices.data() + t.indptr[r];
    last[r] = src[used - 1];
    if (all) {
      if (used > capacity[r]) {
        const std::int32_t room = used + std::max<std::int32_t>(2, used / 8);
        const auto at = static_cast<std::int64_t>(pages.size());
        pages.resize(pages.size() + room);
        std::copy_n(pages.data() + offset[r], count[r], pages.data() + at);
        offset[r] = at;
        capacity[r] = room;
      }
      std::copy(src + count[r], src + used, pages.data() + offset[r] + count[r]);
      live += used - count[r];
    }
    count[r] = used;
  }

  void compact_if_sparse() {
    if (!all || static_cast<std::int64_t>(pages.size()) <= 2 * live + 64) return;
    std::vector<std::int32_t> tight;
    tight.reserve(static_cast<std::size_t>(live + live / 8));
    for (int r = 0; r < batch_size(); ++r) {
      const auto at = static_cast<std::int64_t>(tight.size());
      tight.insert(tight.end(), pages.begin() + offset[r], pages.begin() + offset[r] + count[r]);
      offset[r] = at;
      capacity[r] = count[r];
    }
    pages.swap(tight);
  }
};

}  // namespace

struct IncrementalPlanner::Impl {
  AttentionSpec spec;
  PlannerOptions options;
  ReplanOptions replan;
  Plan plan;
  bool have_plan = false;
  UsedPages last;  // the used pages and lengths `plan` was made for
  planning::ReplanState state;
  planning::PlannerScratch first, second;
  TreeBuilderScratch discovery;
  PrefixTree tree;
  int steps_since_full = 0;
  ReplanOutcome outcome = ReplanOutcome::kFull;
  std::string reason;
  std::int64_t full_plans = 0;
  std::int64_t patched_plans = 0;
  std::vector<std::int32_t> grown;  // requests that grew this step

  const Plan& full(const BlockTables& tables, std::string why);
  bool try_patch(const BlockTables& tables, std::string& why);
  double item_cost(planning::ReplanTask& t);
  bool tables_valid(const BlockTables& tables) const;
  void remember(const BlockTables& tables);
  void patch_task(planning::ReplanTask& t, std::int32_t tokens);
  void rebuild_pages(const BlockTables& tables);
  void grow_pages(const BlockTables& tables, planning::ReplanTask& t, std::int32_t pages);
  void set_page_offset(planning::ReplanTask& t, std::int32_t offset);
  std::int64_t live_pages = 0;  // pages the tasks' segments hold (kv_pages has more when patched)
};

const Plan& IncrementalPlanner::Impl::full(const BlockTables& tables, std::string why) {
  have_plan = false;  // a throw below leaves no plan to patch
  discover_prefix_tree(tables, spec.page_size, TreePages::kBorrowed, discovery, tree);
  planning::plan_tree(spec, tree, options, first, second, plan, &state);
  last.assign(tables, spec.page_size, !replan.append_only_tables);
  live_pages = static_cast<std::int64_t>(plan.kv_pages.size());
  for (planning::ReplanTask& t : state.tasks) {
    t.page_capacity = t.page_count;
    // Patched until it grows past max_growth or min_growth_tokens, whichever allows more.
    const double limit = t.base_tokens + std::max(t.base_tokens * replan.max_growth,
                                                  static_cast<double>(replan.min_growth_tokens));
    t.max_tokens = static_cast<std::int32_t>(
        std::min(limit, static_cast<double>(std::numeric_limits<std::int32_t>::max())));
  }
  have_plan = true;
  steps_since_full = 0;
  outcome = ReplanOutcome::kFull;
  reason = std::move(why);
  ++full_plans;
  return plan;
}

double IncrementalPlanner::Impl::item_cost(planning::ReplanTask& t) {
  const std::int32_t tokens = t.pieces > 1 ? (t.tokens + t.pieces - 1) / t.pieces : t.tokens;
  if (t.cost_per_token < 0) {
    // CostModel::item_us is affine in the tokens (per-tile overheads plus
    // bytes or flops per token; CostModel.ItemCostIsAffineInTokens checks it):
    // two prices give the line, and every later step prices in two flops.
    const auto price = [&](int n) {
      return state.pricer.slot_us(options.cost_model.item_us(spec, state.coefficients[t.config],
                                                             t.row_tile, t.rows, n, t.heads)) /
             t.tiles;
    };
    constexpr int kSpan = 1 << 16;
    t.cost_base = price(0);
    t.cost_per_token = std::max(0.0, (price(kSpan) - t.cost_base) / kSpan);
  }
  return t.cost_base + t.cost_per_token * tokens;
}

// The task now holds `tokens`: its items' KV ranges, costs and slot loads.
void IncrementalPlanner::Impl::patch_task(planning::ReplanTask& t, std::int32_t tokens) {
  t.tokens = tokens;
  const double cost = item_cost(t);
  const double delta = cost - t.item_cost;
  t.item_cost = cost;
  WorkItem* item = plan.items.data() + t.first_item;
  if (t.pieces == 1) {  // the usual leaf: every item reads all its tokens
    for (int k = 0; k < t.item_count; ++k) {
      item[k].token_end = tokens;
      item[k].predicted_us = static_cast<float>(cost);
      state.slot_load[state.item_slot[t.first_item + k]] += delta;
    }
    return;
  }
  // try_patch checked that the same pieces hold tokens (piece_mask).
  const int per_piece = t.item_count / std::max(1, std::popcount(t.piece_mask));
  int k = 0;
  for (int p = 0; p < t.pieces; ++p) {
    const std::int32_t begin = piece_bound(tokens, t.pieces, t.tile_kv, p);
    const std::int32_t end = piece_bound(tokens, t.pieces, t.tile_kv, p + 1);
    if (end <= begin) continue;
    for (int i = 0; i < per_piece; ++i, ++k) {
      item[k].token_begin = begin;
      item[k].token_end = end;
      item[k].predicted_us = static_cast<float>(cost);
      state.slot_load[state.item_slot[t.first_item + k]] += delta;
    }
  }
}

// Every task's segment again, from the new tables, in task order (the
// layout a full plan writes: no spare room, no holes).
void IncrementalPlanner::Impl::rebuild_pages(const BlockTables& tables) {
  std::int32_t total = 0;
  for (const planning::ReplanTask& t : state.tasks) total += t.page_count;
  plan.kv_pages.resize(total);
  std::int32_t offset = 0;
  for (planning::ReplanTask& t : state.tasks) {
    const std::int32_t* src = tables.indices.data() + tables.indptr[t.reader] + t.path_page;
    std::copy_n(src, t.page_count, plan.kv_pages.data() + offset);
    set_page_offset(t, offset);
    t.page_capacity = t.page_count;
    offset += t.page_count;
  }
  live_pages = total;
}

void IncrementalPlanner::Impl::set_page_offset(planning::ReplanTask& t, std::int32_t offset) {
  if (t.page_offset == offset) return;
  t.page_offset = offset;
  for (int k = 0; k < t.item_count; ++k) plan.items[t.first_item + k].kv_page_offset = offset;
}

// A grown task of `pages` pages (it had t.page_count): its new pages written
// in place when its segment has room, else the segment moved to the end of
// kv_pages with room to grow (the old place stays, unread). O(the task's
// pages); the page list is compacted (rebuild_pages) once the unread entries
// outnumber a quarter of the live ones, so it stays O(pages) amortized.
void IncrementalPlanner::Impl::grow_pages(const BlockTables& tables, planning::ReplanTask& t,
                                          std::int32_t pages) {
  const std::int32_t* src = tables.indices.data() + tables.indptr[t.reader] + t.path_page;
  live_pages += pages - t.page_count;
  if (pages <= t.page_capacity) {
    std::copy(src + t.page_count, src + pages, plan.kv_pages.data() + t.page_offset + t.page_count);
  } else {
    // Room for as many pages again as it grew by, at least two.
    const std::int32_t capacity = pages + std::max<std::int32_t>(2, pages - t.page_count);
    const auto offset = static_cast<std::int32_t>(plan.kv_pages.size());
    // Spare entries repeat the last page: every entry stays a valid page id.
    plan.kv_pages.resize(plan.kv_pages.size() + capacity, src[pages - 1]);
    std::copy_n(src, pages, plan.kv_pages.data() + offset);
    set_page_offset(t, offset);
    t.page_capacity = capacity;
  }
  t.page_count = pages;
}

// BlockTables::validate for tables whose used pages of the last step were
// just found unchanged: the structure, and the range of pages past them.
// Anything odd returns false, and the full plan's validate() names it.
bool IncrementalPlanner::Impl::tables_valid(const BlockTables& tables) const {
  const int batch = tables.batch_size();
  if (tables.indptr.size() != static_cast<std::size_t>(batch) + 1 || tables.indptr[0] != 0 ||
      static_cast<std::size_t>(tables.indptr[batch]) != tables.indices.size() ||
      tables.num_pages < last.num_pages) {
    return false;
  }
  const int page_size = spec.page_size;
  for (int r = 0; r < batch; ++r) {
    const std::int32_t len = tables.seq_lens[r];
    const std::int32_t held = tables.indptr[r + 1] - tables.indptr[r];
    // pages_for(len) > held, without a division per request.
    if (len < 1 || held < 0 || len > static_cast<std::int64_t>(held) * page_size) return false;
  }
  return true;
}

// The tables of this step, for the next one's comparison: only the lengths
// and the grown requests' newly used pages change.
void IncrementalPlanner::Impl::remember(const BlockTables& tables) {
  bool appended = false;
  for (const std::int32_t r : grown) {
    const std::int32_t used = pages_for(tables.seq_lens[r], spec.page_size);
    if (used == last.count[r]) continue;  // the same pages: nothing to keep
    last.grow(tables, r, used);
    appended = true;
  }
  if (appended) last.compact_if_sparse();
  last.lens = tables.seq_lens;
  last.num_pages = tables.num_pages;
}

// Checks every condition first (nothing is changed unless the patch is
// made), then applies it. `why` says what failed.
bool IncrementalPlanner::Impl::try_patch(const BlockTables& tables, std::string& why) {
  const int batch = tables.batch_size();
  if (batch != last.batch_size()) {
    why = fmt::format("the batch changed from {} to {} requests", last.batch_size(), batch);
    return false;
  }
  if (steps_since_full + 1 >= replan.full_every) {
    why = fmt::format("{} steps since the last full plan", steps_since_full + 1);
    return false;
  }
  if (!tables_valid(tables)) {
    why = "the tables need a full check";
    return false;
  }
  const int page_size = spec.page_size;
  grown.clear();
  const std::int32_t* lens_before = last.lens.data();
  const std::int32_t* lens_now = tables.seq_lens.data();
  for (int r = 0; r < batch; ++r) {
    const std::int32_t before = lens_before[r];
    const std::int32_t now = lens_now[r];
    if (now < before) {
      why = fmt::format("request {} shrank from {} to {} tokens", r, before, now);
      return false;
    }
    const std::int32_t used = last.count[r];  // pages_for(before), kept from the last step
    const std::int32_t* held = tables.indices.data() + tables.indptr[r];
    // With append-only tables only the first and the last used page (the
    // one a copy-on-write would remap) are compared; else every used page.
    if (held[0] != last.first[r] || held[used - 1] != last.last[r] ||
        (last.all && std::memcmp(held, last.row(r), sizeof(std::int32_t) * used) != 0)) {
      why = fmt::format("request {}'s pages changed", r);
      return false;
    }
    if (now == before) continue;
    // Pages newly used must be in range (the rest were checked before).
    const std::int32_t* fresh = tables.indices.data() + tables.indptr[r];
    for (std::int32_t i = used; i < pages_for(now, page_size); ++i) {
      if (fresh[i] < 0 || fresh[i] >= tables.num_pages) {
        why = fmt::format("request {} has a page id out of range", r);
        return false;
      }
    }
    const std::int32_t t = state.growable_task[r];
    if (t < 0) {
      why = fmt::format("request {} grew but does not end alone at a leaf", r);
      return false;
    }
    const planning::ReplanTask& task = state.tasks[t];
    const std::int32_t tokens = task.tokens + (now - before);
    if (tokens > task.max_tokens) {
      why = fmt::format("request {}'s task grew from {} to {} tokens since the last full plan", r,
                        task.base_tokens, tokens);
      return false;
    }
    if (task.pieces > 1) {
      if (task.pieces > 64) {
        why = fmt::format("request {}'s task has {} KV pieces", r, task.pieces);
        return false;
      }
      planning::ReplanTask& split = state.tasks[t];
      if (split.piece_mask == 0) {  // the pieces holding tokens now (a split task has some)
        split.piece_mask = nonempty_pieces(split.tokens, split.pieces, split.tile_kv);
      }
      if (nonempty_pieces(tokens, split.pieces, split.tile_kv) != split.piece_mask) {
        why = fmt::format("request {}'s KV pieces change", r);
        return false;
      }
    }
    grown.push_back(r);
  }
  if (grown.empty()) {
    outcome = ReplanOutcome::kUnchanged;
  } else {
    for (const std::int32_t r : grown) {
      planning::ReplanTask& task = state.tasks[state.growable_task[r]];
      patch_task(task, task.tokens + (tables.seq_lens[r] - last.lens[r]));
      const std::int32_t pages = pages_for(task.tokens, page_size);
      if (pages != task.page_count) grow_pages(tables, task, pages);
    }
    if (static_cast<std::int64_t>(plan.kv_pages.size()) > live_pages + live_pages / 4 + 64) {
      rebuild_pages(tables);
    }
    double busiest = 0;
    for (std::size_t i = 0; i < state.slot_load.size(); ++i) {
      plan.sm_load_us[i] = static_cast<float>(state.slot_load[i]);
      busiest = std::max(busiest, state.slot_load[i]);
    }
    plan.predicted_us = static_cast<float>(
        state.pricer.step_us(static_cast<float>(busiest), state.merged, state.launches));
    outcome = ReplanOutcome::kPatched;
    ++patched_plans;
  }
  remember(tables);
  ++steps_since_full;
  reason.clear();
  return true;
}

IncrementalPlanner::IncrementalPlanner(const AttentionSpec& spec, PlannerOptions options,
                                       ReplanOptions replan)
    : impl_(std::make_unique<Impl>()) {
  spec.validate();
  CANOPY_CHECK(replan.full_every >= 1, ErrorKind::kInvalidArgument,
               "ReplanOptions::full_every ({}) must be at least 1", replan.full_every);
  CANOPY_CHECK(replan.max_growth >= 0, ErrorKind::kInvalidArgument,
               "ReplanOptions::max_growth ({}) must be >= 0", replan.max_growth);
  CANOPY_CHECK(replan.min_growth_tokens >= 0, ErrorKind::kInvalidArgument,
               "ReplanOptions::min_growth_tokens ({}) must be >= 0", replan.min_growth_tokens);
  impl_->spec = spec;
  impl_->options = std::move(options);
  impl_->replan = replan;
}

IncrementalPlanner::~IncrementalPlanner() = default;
IncrementalPlanner::IncrementalPlanner(IncrementalPlanner&&) noexcept = default;
IncrementalPlanner& IncrementalPlanner::operator=(IncrementalPlanner&&) noexcept = default;

const Plan& IncrementalPlanner::plan(const BlockTables& tables) {
  Impl& m = *impl_;
  if (!m.have_plan) return m.full(tables, "no previous plan");
  std::string why;
  if (m.try_patch(tables, why)) return m.plan;
  return m.full(tables, std::move(why));
}

const Plan& IncrementalPlanner::last_plan() const { return impl_->plan; }
ReplanOutcome IncrementalPlanner::last_outcome() const { return impl_->outcome; }
const std::string& IncrementalPlanner::last_reason() const { return impl_->reason; }
std::int64_t IncrementalPlanner::full_plans() const { return impl_->full_plans; }
std::int64_t IncrementalPlanner::patched_plans() const { return impl_->patched_plans; }

}  // namespace canopy
