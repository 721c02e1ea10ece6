// Emission: the prepared pass written into a Plan (items in launch order,
// task rows, the merge schedule, the launch schedule) and the state an
// incremental re-plan patches (docs/planner.md, 2e-2f).
#include <algorithm>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "canopy/error.hpp"
#include "runtime/plan/planner_core.hpp"

namespace canopy::planning {

// Emits the items: one launch per config, items longest first within it
// (blocks are issued in order), one item per (task, KV piece, KV head, row
// tile); a tile's rows are request-major (a request's group heads together).
// A task's rows are written once, under KV head 0 (Plan::task_rows, at
// task.request_begin * group: task_requests' order), not per piece, KV head
// and row tile; each item points at its first (WorkItem).
void Planner::emit_items(Plan& out) {
  // Partial slots are int32 indices (items, merge parts).
  CANOPY_CHECK(max_rows_ <= std::numeric_limits<std::int32_t>::max(), ErrorKind::kNotSupported,
               "the plan needs {} partial states, more than the 2^31 - 1 it can index", max_rows_);
  // Written through pointers, then trimmed: pieces that come out empty emit nothing.
  out.items.resize(max_items_);
  out.task_rows.resize(s_.task_requests.size() * group_);
  WorkItem* const items = out.items.data();
  Cursor cursor{items, 0};
  // Launch order: by config, then longest first (ties: task order).
  std::sort(s_.runs.begin(), s_.runs.end(), [](const TaskRun& a, const TaskRun& b) {
    if (a.config != b.config) return a.config < b.config;
    return a.cost != b.cost ? a.cost > b.cost : a.begin < b.begin;
  });
  for (const TaskRun& run : s_.runs) {
    const auto item_index = [&] { return static_cast<std::int32_t>(cursor.item - items); };
    if (out.launches.empty() || out.launches.back().config != run.config) {
      out.launches.push_back({configs_[run.config].family, run.config, item_index(), item_index()});
    }
    for (int t = run.begin; t < run.end; ++t) {
      emit_task(s_.tasks[t], s_.loads.sm_order(s_.run_of[t]), items, out.task_rows.data(), cursor);
    }
    out.launches.back().end = item_index();
  }
  out.items.resize(cursor.item - items);
  out.num_partial_slots = cursor.slot;
  s_.loads.per_sm(out.sm_load_us);
}

// One task's items, pieces outermost, then KV heads, then row tiles. The rows
// of one (piece, KV head) are thus the task's rows 0 .. rows-1 in consecutive
// slots from first_slot + (piece * KV heads + head) * rows, which the merge
// schedule relies on.
void Planner::emit_task(Task& task, const std::int32_t* sm_order, const WorkItem* items_begin,
                        std::int32_t* task_rows, Cursor& out) {
  const int group = group_;
  const int heads_qo = spec_.num_qo_heads;
  const int rows = task.request_count * group;
  // Row j * group + g under KV head 0 is output row reader_j * qo heads + g.
  const std::int32_t first_row = task.request_begin * group;
  const std::int32_t* readers = s_.task_requests.data() + task.request_begin;
  std::int32_t* const row_out = task_rows + first_row;
  for (int j = 0; j < task.request_count; ++j) {
    for (int g = 0; g < group; ++g) row_out[j * group + g] = readers[j] * heads_qo + g;
  }
  const Variant& variant = variants_[task.variant];
  task.first_slot = static_cast<std::int32_t>(out.slot);
  task.first_item = static_cast<std::int32_t>(out.item - items_begin);
  WorkItem proto;
  proto.node = task.node;
  proto.config = variant.config;
  proto.row_tile = variant.row_tile;
  proto.direct = task.direct;
  proto.kv_page_offset = task.page_offset;
  proto.path_token_offset = task.path_offset;
  proto.predicted_us = static_cast<float>(task.item_cost);
  proto.task_row_begin = first_row;
  int slot_pos = 0;  // item k of the task runs on slot sm_order[k % slots]
  const std::int32_t* const slot_sm = setup_.slot_sm.data();
  // Local cursors: stores through `out` would be reloaded after every item.
  WorkItem* item_out = out.item;
  std::int64_t slot = out.slot;
  const int tiles = task.tiles;
  for (int p = 0; p < task.pieces; ++p) {
    proto.token_begin = task.pieces == 1 ? 0 : piece_bound(task, p);
    proto.token_end = task.pieces == 1 ? task.tokens : piece_bound(task, p + 1);
    if (proto.token_end <= proto.token_begin) continue;
    // KV heads in packs of variant.heads (a pack is one item over its heads'
    // consecutive slot runs; its variant has a single row tile).
    for (int h0 = 0; h0 < spec_.num_kv_heads; h0 += variant.heads) {
      const int heads = std::min(variant.heads, spec_.num_kv_heads - h0);
      proto.kv_head = h0;
      proto.kv_heads = heads;
      if (tiles == 1) {  // the usual case: all rows, without a division
        WorkItem& item = *item_out++;
        item = proto;
        item.row_begin = static_cast<std::int32_t>(slot);
        item.row_count = rows;
        item.sm = slot_sm[sm_order[slot_pos]];
        if (++slot_pos == slots_) slot_pos = 0;
      } else {
        // Row tile i holds rows rows * i / tiles .. rows * (i + 1) / tiles.
        int row_lo = 0;
        for (int i = 0; i < tiles; ++i) {
          const auto row_hi = static_cast<int>(static_cast<std::int64_t>(rows) * (i + 1) / tiles);
          WorkItem& item = *item_out++;
          item = proto;
          item.row_begin = static_cast<std::int32_t>(slot + row_lo);
          item.row_count = row_hi - row_lo;
          item.task_row_begin = first_row + row_lo;
          item.sm = slot_sm[sm_order[slot_pos]];
          if (++slot_pos == slots_) slot_pos = 0;
          row_lo = row_hi;
        }
      }
      slot += std::int64_t{heads} * rows;
    }
  }
  out.item = item_out;
  out.slot = slot;
}

// Each merged row combines its partial slots ordered by KV position along its
// path: a fixed order, so results are bit-reproducible. A request's tasks
// partition its path and decide() creates them top-down, so in task order
// they are already ordered by position, and so are each task's pieces. All
// rows of a request merge the same (task, piece) list, each at its own slot:
// one MergePart per (request, partial) holds them all (qo head h * group + g
// of request j of a task reads slot first_slot + (piece * KV heads + h) *
// rows + j * group + g). Requests of direct tasks are not merged.
void Planner::build_merge_schedule(Plan& out) {
  const int batch = tree_.batch_size;
  const int kv_heads = spec_.num_kv_heads;
  const int group = group_;
  // Request r merges fan_in[r] partials (0: written directly).
  std::vector<std::int32_t>& fan_in = s_.fan_in;
  fan_in.assign(batch, 0);
  for (const Task& task : s_.tasks) {
    if (task.direct) continue;
    for (int j = 0; j < task.request_count; ++j) {
      fan_in[s_.task_requests[task.request_begin + j]] += task.piece_count;
    }
  }
  std::int32_t merged = 0;
  std::int32_t parts = 0;
  int max_fan_in = 0;
  std::vector<std::int32_t>& next = s_.next;  // per request: where its next part goes
  next.resize(batch);
  for (int r = 0; r < batch; ++r) {
    next[r] = parts;
    parts += fan_in[r];
    merged += fan_in[r] != 0;
    max_fan_in = std::max(max_fan_in, fan_in[r]);
  }
  out.max_merge_fan_in = max_fan_in;
  out.merge_requests.resize(merged);
  out.merge_indptr.resize(merged + std::size_t{1});
  out.merge_parts.resize(parts);
  std::int32_t* __restrict requests = out.merge_requests.data();
  std::int32_t* __restrict indptr = out.merge_indptr.data();
  *indptr++ = 0;
  for (int r = 0; r < batch; ++r) {
    if (fan_in[r] == 0) continue;
    *requests++ = r;
    *indptr++ = next[r] + fan_in[r];
  }
  MergePart* const part = out.merge_parts.data();
  for (const Task& task : s_.tasks) {
    if (task.direct) continue;
    const std::int32_t rows = task.request_count * group;
    const std::int32_t piece_stride = kv_heads * rows;
    const std::int32_t* readers = s_.task_requests.data() + task.request_begin;
    for (int j = 0; j < task.request_count; ++j) {
      std::int32_t& at = next[readers[j]];
      const std::int32_t slot = task.first_slot + j * group;
      for (int p = 0; p < task.piece_count; ++p) part[at++] = {slot + p * piece_stride, rows};
    }
  }
}

// plan.configs lists only configs that launch: the runtime compiles and loads
// every listed config, so an unused candidate would cost a compile for nothing.
void Planner::keep_launched_configs(Plan& out) {
  std::vector<int> remap(configs_.size(), -1);
  out.configs.clear();
  for (LaunchStep& g : out.launches) {
    if (remap[g.config] < 0) {
      remap[g.config] = static_cast<int>(out.configs.size());
      out.configs.push_back(configs_[g.config]);
    }
    g.config = remap[g.config];
  }
  for (WorkItem& item : out.items) item.config = remap[item.config];
  if (!out.merge_requests.empty()) {
    out.launches.push_back(
        {KernelFamily::kMergeStates, -1, 0, static_cast<std::int32_t>(out.merge_entries())});
  }
}

void Planner::emit(Plan& out) {
  // A reused Plan keeps its memory: vectors filled by appending are cleared;
  // items and the merge arrays are resized and then overwritten
  // entry by entry, so they are not cleared (that would zero-fill them again).
  out.launches.clear();
  out.configs.clear();
  out.spec = spec_;
  out.batch_size = tree_.batch_size;
  out.tree_depth = tree_.max_depth();
  out.num_sms = model_.coefficients().num_sms;
  out.kv_pages.resize(s_.page_total);
  for (const Task& task : s_.tasks) {
    const std::int32_t* from = task.staged >= 0
                                   ? s_.kv_pages.data() + task.staged
                                   : tree_.pages.data() + tree_.nodes[task.node].page_begin;
    std::copy_n(from, task.page_count, out.kv_pages.data() + task.page_offset);
  }
  emit_items(out);
  build_merge_schedule(out);
  keep_launched_configs(out);
  out.predicted_us = predicted_us_;
  out.fused_merge = fused_merge_;
}

// A request may grow (its next decode tokens) without changing the tree when
// it ends alone at a leaf whose first element stays distinct from its
// siblings': a one-page leaf whose page is partly filled changes that
// element's fill as it grows, so no sibling may start with the same page.
// In a prefix-blind plan every request is its own task.
void Planner::export_state(const Plan& out, ReplanState& state) const {
  state.tasks.clear();
  state.growable_task.assign(tree_.batch_size, -1);
  state.coefficients.clear();
  state.coefficients = coefficients_;
  state.pricer = pricer_;
  state.merged = merged_;
  state.launches = step_launches_;
  state.item_slot.resize(out.items.size());
  state.slot_load.resize(slots_);
  for (int i = 0; i < slots_; ++i) state.slot_load[i] = s_.loads.load(i);
  const int group = group_;
  for (int t = 0; t < static_cast<int>(s_.tasks.size()); ++t) {
    const Task& task = s_.tasks[t];
    const Variant& v = variants_[task.variant];
    ReplanTask& rt = state.tasks.emplace_back();
    rt.first_item = task.first_item;
    rt.item_count = task.piece_count * task.tiles * head_groups(task);
    rt.page_offset = task.page_offset;
    rt.page_count = task.page_count;
    rt.reader = s_.task_requests[task.request_begin];
    rt.path_page = task.path_offset / tree_.page_size;
    rt.tokens = rt.base_tokens = task.tokens;
    rt.pieces = task.pieces;
    rt.tile_kv = configs_[v.config].tile_kv;
    rt.config = v.config;
    rt.row_tile = v.row_tile;
    rt.heads = v.heads;
    rt.rows = task.request_count * group;
    rt.tiles = task.tiles;
    rt.item_cost = task.item_cost;
    const std::int32_t* order = s_.loads.sm_order(s_.run_of[t]);
    for (int k = 0; k < rt.item_count; ++k) state.item_slot[rt.first_item + k] = order[k % slots_];
    if (task.request_count != 1) continue;
    const PrefixTree::Node& node = tree_.nodes[task.node];
    if (!opt_.prefix_blind) {
      if (node.child_count != 0 || node.request_count != 1) continue;
      if (node.page_count == 1 && node.num_tokens < tree_.page_size) {
        const std::span<const int> siblings =
            node.parent >= 0 ? tree_.children(node.parent) : std::span<const int>(tree_.roots);
        const std::int32_t first = tree_.pages_of(node)[0];
        bool clash = false;
        for (int sib : siblings) clash |= sib != task.node && tree_.pages_of(sib)[0] == first;
        if (clash) continue;
      }
    }
    state.growable_task[rt.reader] = t;
  }
}

}  // namespace canopy::planning
