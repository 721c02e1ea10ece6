// The planner: KV-guided grouping, the absorb (push-down) profit rule, KV
// splitting and longest-first balancing, all priced by one CostModel.
// docs/planner.md walks through an example.
#include "canopy/planner.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <numeric>
#include <queue>

#include "canopy/error.hpp"

namespace canopy {
namespace {

// A KV segment read by one group of requests: pages (ancestors pushed down
// into this node, then the node's own), its tokens and its readers.
struct Task {
  int node = 0;
  std::int32_t page_offset = 0;  // into Plan::kv_pages
  std::int32_t tokens = 0;
  std::int32_t path_offset = 0;    // position of segment token 0 in its requests
  std::int32_t request_begin = 0;  // readers: requests[request_begin .. +request_count)
  std::int32_t request_count = 0;
  int config = 0;
  int tiles = 1;         // row tiles per KV head
  int tile_rows = 1;     // query rows in the fullest tile
  int pieces = 1;        // KV pieces (splits)
  double item_cost = 0;  // one item (one tile, one piece, one KV head), SM-us
};

// Predicted SM loads for longest-processing-time-first placement. A run of
// `count` equal items goes to the least-loaded SMs: whole rounds to every SM,
// the rest to the lightest ones, so each run costs O(SMs), not O(items log SMs).
class SmLoads {
 public:
  explicit SmLoads(int sms) : order_(sms), load_(sms, 0.0) {
    std::iota(order_.begin(), order_.end(), 0);
    merged_.reserve(sms);
  }
  // Places the run; item k of it runs on sm_of(run, k).
  std::int32_t place(double cost, std::int64_t count) {
    const auto run = static_cast<std::int32_t>(snapshots_.size());
    snapshots_.insert(snapshots_.end(), order_.begin(), order_.end());
    const int sms = static_cast<int>(order_.size());
    const std::int64_t rounds = count / sms;
    const int rest = static_cast<int>(count % sms);
    if (rounds > 0) {
      for (double& l : load_) l += rounds * cost;
    }
    for (int i = 0; i < rest; ++i) load_[order_[i]] += cost;
    // The first `rest` SMs grew by `cost`: merge the two sorted runs back.
    if (rest > 0) {
      auto lighter = [&](int a, int b) {
        return load_[a] != load_[b] ? load_[a] < load_[b] : a < b;
      };
      merged_.clear();
      std::merge(order_.begin(), order_.begin() + rest, order_.begin() + rest, order_.end(),
                 std::back_inserter(merged_), lighter);
      order_.swap(merged_);
    }
    return run;
  }
  std::int32_t sm_of(std::int32_t run, std::int64_t k) const {
    return snapshots_[run + k % static_cast<std::int64_t>(order_.size())];
  }
  double max_load() const { return load_[order_.back()]; }
  std::vector<float> per_sm() const { return {load_.begin(), load_.end()}; }

 private:
  std::vector<int> order_;  // SMs, lightest first
  std::vector<double> load_;
  std::vector<std::int32_t> snapshots_;  // lightest-first order before each run
  std::vector<int> merged_;
};

class Planner {
 public:
  Planner(const AttentionSpec& spec, const PrefixTree& tree, const PlannerOptions& options)
      : spec_(spec), tree_(tree), opt_(options), model_(options.cost_model) {
    configs_ = opt_.candidates.empty() ? default_kernel_configs(spec) : opt_.candidates;
    std::erase_if(configs_, [&](const KernelConfig& c) { return !model_.fits(spec, c); });
    check(!configs_.empty(), ErrorKind::kNotSupported,
          fmt::format("no kernel configuration fits {} (max shared memory {} bytes)",
                      spec.to_string(), model_.coefficients().max_smem_per_block));
  }

  Plan run();

 private:
  // Cheapest config for `rows` query rows over `tokens` KV tokens (one KV head).
  std::pair<int, double> best_config(int rows, int tokens) const {
    int best = 0;
    double best_us = 0;
    for (int i = 0; i < static_cast<int>(configs_.size()); ++i) {
      const double us = model_.item_us(spec_, configs_[i], rows, tokens);
      if (i == 0 || us < best_us) {
        best = i;
        best_us = us;
      }
    }
    return {best, best_us};
  }
  double cost(int requests, int tokens) const {
    return requests == 0 ? 0.0 : best_config(requests * spec_.group_size(), tokens).second;
  }
  // Per-row merge price of one more partial state, in SM-microseconds.
  double partial_us(int requests) const {
    return requests * spec_.num_qo_heads * model_.merge_row_us(spec_, 1) / spec_.num_kv_heads;
  }

  void decide(int node, std::int32_t inherited_pages_begin, std::int32_t inherited_pages,
              std::int32_t inherited_tokens, std::int32_t path_offset);
  void add_task(int node, std::int32_t pages_begin, std::int32_t pages, std::int32_t tokens,
                std::int32_t path_offset, const std::vector<int>& readers);
  void split_tasks();
  void emit_items();
  void build_merge_schedule();

  const AttentionSpec& spec_;
  const PrefixTree& tree_;
  const PlannerOptions& opt_;
  const CostModel& model_;
  std::vector<KernelConfig> configs_;
  std::vector<Task> tasks_;
  std::vector<std::int32_t> task_requests_;
  std::vector<std::int32_t> scratch_pages_;  // inherited page chains during the walk
  Plan plan_;
};

// Top-down: node's segment is its inherited pages plus its own. Either it is
// read once by every request below (standalone), or it is pushed down into
// each child (the child absorbs it) when re-reading it there is cheaper than
// a separate pass plus one more partial state to merge per row.
void Planner::decide(int node_id, std::int32_t inh_begin, std::int32_t inh_pages,
                     std::int32_t inh_tokens, std::int32_t path_offset) {
  const PrefixTree::Node& node = tree_.nodes[node_id];
  if (node.subtree_requests == 0) return;
  const std::int32_t seg_tokens = inh_tokens + node.num_tokens;
  // The segment's page chain lives at the end of scratch_pages_.
  const std::int32_t seg_begin = static_cast<std::int32_t>(scratch_pages_.size());
  scratch_pages_.resize(seg_begin + inh_pages);  // resize first: copying from itself
  std::copy_n(scratch_pages_.data() + inh_begin, inh_pages, scratch_pages_.data() + seg_begin);
  scratch_pages_.insert(scratch_pages_.end(), tree_.pages.begin() + node.page_begin,
                        tree_.pages.begin() + node.page_begin + node.page_count);
  const std::int32_t seg_pages = inh_pages + node.page_count;

  bool push_down = false;
  if (opt_.allow_absorb && !node.children.empty()) {
    const int own = static_cast<int>(node.requests.size());
    double standalone =
        cost(node.subtree_requests, seg_tokens) + partial_us(node.subtree_requests - own);
    double pushed = cost(own, seg_tokens);
    for (int c : node.children) {
      const auto& child = tree_.nodes[c];
      pushed += cost(child.subtree_requests, seg_tokens + child.num_tokens) -
                cost(child.subtree_requests, child.num_tokens);
    }
    push_down = pushed < standalone;
  }
  if (push_down) {
    if (!node.requests.empty()) {
      add_task(node_id, seg_begin, seg_pages, seg_tokens, path_offset, node.requests);
    }
    for (int c : node.children) decide(c, seg_begin, seg_pages, seg_tokens, path_offset);
  } else {
    add_task(node_id, seg_begin, seg_pages, seg_tokens, path_offset,
             tree_.subtree_request_list(node_id));
    for (int c : node.children) decide(c, 0, 0, 0, node.prefix_tokens + node.num_tokens);
  }
  scratch_pages_.resize(seg_begin);
}

void Planner::add_task(int node, std::int32_t pages_begin, std::int32_t pages, std::int32_t tokens,
                       std::int32_t path_offset, const std::vector<int>& readers) {
  Task task;
  task.node = node;
  task.page_offset = static_cast<std::int32_t>(plan_.kv_pages.size());
  plan_.kv_pages.insert(plan_.kv_pages.end(), scratch_pages_.begin() + pages_begin,
                        scratch_pages_.begin() + pages_begin + pages);
  task.tokens = tokens;
  task.path_offset = path_offset;
  task.request_begin = static_cast<std::int32_t>(task_requests_.size());
  task.request_count = static_cast<std::int32_t>(readers.size());
  task_requests_.insert(task_requests_.end(), readers.begin(), readers.end());
  task.config = best_config(task.request_count * spec_.group_size(), tokens).first;
  tasks_.push_back(task);
}

// Per task: its config and tiles, and how many KV pieces it is cut into
// (flattened-tree KV splitting). Items costing more than a share
// total / (num_sms * waves) are cut into pieces of at least min_split_tokens,
// so the longest item does not set the step time. Splitting also adds item
// overheads and partial states, and wave quantization can eat the gain, so
// each candidate share (no split, waves = 1, 2, 4, 8) is priced by placing
// the items on SMs, and the fastest wins (ties: fewer splits).
void Planner::split_tasks() {
  const int group = spec_.group_size();
  const int sms = model_.coefficients().num_sms;
  double total = 0;
  for (Task& task : tasks_) {
    const KernelConfig& tile = configs_[task.config];
    const int rows = task.request_count * group;
    task.tiles = (rows + tile.tile_q - 1) / tile.tile_q;
    task.tile_rows = (rows + task.tiles - 1) / task.tiles;
    task.pieces = 1;
    task.item_cost = model_.item_us(spec_, tile, task.tile_rows, task.tokens);
    total += task.item_cost * task.tiles * spec_.num_kv_heads;
  }
  if (!opt_.allow_split) return;
  const std::vector<Task> whole = tasks_;
  auto apply = [&](double target) {
    for (std::size_t t = 0; t < tasks_.size(); ++t) {
      Task& task = tasks_[t];
      task = whole[t];
      if (target <= 0 || task.item_cost <= target) continue;
      const int by_cost = static_cast<int>(std::ceil(task.item_cost / target));
      const int by_length = task.tokens / std::max(1, opt_.min_split_tokens);
      task.pieces = std::max(1, std::min(by_cost, by_length));
      if (task.pieces > 1) {
        const int piece_tokens = (task.tokens + task.pieces - 1) / task.pieces;
        task.item_cost = model_.item_us(spec_, configs_[task.config], task.tile_rows, piece_tokens);
      }
    }
  };
  auto makespan = [&]() {
    std::vector<int> order(tasks_.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) {
      return tasks_[a].item_cost != tasks_[b].item_cost ? tasks_[a].item_cost > tasks_[b].item_cost
                                                        : a < b;
    });
    SmLoads loads(sms);
    std::int64_t slots = 0;
    for (int t : order) {
      const Task& task = tasks_[t];
      const std::int64_t count = std::int64_t{task.pieces} * task.tiles * spec_.num_kv_heads;
      loads.place(task.item_cost, count);
      slots += count * task.tile_rows;
    }
    return loads.max_load() + slots * model_.merge_row_us(spec_, 1) / sms;
  };
  double best_target = 0;
  double best = makespan();
  for (int waves = 1; waves <= std::max(1, opt_.waves); waves *= 2) {
    const double target = total / (static_cast<double>(sms) * waves);
    apply(target);
    const double span = makespan();
    if (span < best * 0.999) {
      best = span;
      best_target = target;
    }
  }
  apply(best_target);
}

// Emits the items: one launch per config, items longest first within it
// (blocks are issued in order), one item per (task, KV piece, KV head, row
// tile); a tile's rows are request-major (a request's group heads together).
// Each run of a task's equal-cost items is placed on the least-loaded SMs
// (longest processing time first), for the predicted per-SM load.
void Planner::emit_items() {
  std::vector<int> order(tasks_.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    const Task& x = tasks_[a];
    const Task& y = tasks_[b];
    if (x.config != y.config) return x.config < y.config;
    if (x.item_cost != y.item_cost) return x.item_cost > y.item_cost;
    return a < b;
  });
  SmLoads loads(model_.coefficients().num_sms);
  // LPT across configs: runs in descending cost regardless of launch order.
  std::vector<int> by_cost = order;
  std::stable_sort(by_cost.begin(), by_cost.end(),
                   [&](int a, int b) { return tasks_[a].item_cost > tasks_[b].item_cost; });
  std::vector<std::int32_t> run_of(tasks_.size());
  for (int t : by_cost) {
    const Task& task = tasks_[t];
    run_of[t] = loads.place(task.item_cost, task.pieces * spec_.num_kv_heads * task.tiles);
  }
  const int group = spec_.group_size();
  std::int64_t total_items = 0;
  for (const Task& task : tasks_)
    total_items += std::int64_t{task.pieces} * task.tiles * spec_.num_kv_heads;
  plan_.items.reserve(total_items);
  for (int t : order) {
    const Task& task = tasks_[t];
    if (plan_.launches.empty() || plan_.launches.back().config != task.config) {
      const auto begin = static_cast<std::int32_t>(plan_.items.size());
      plan_.launches.push_back({task.config, begin, begin});
    }
    const int rows = task.request_count * group;
    const int tile_kv = configs_[task.config].tile_kv;
    std::int64_t item_in_run = 0;
    for (int p = 0; p < task.pieces; ++p) {
      // Piece bounds on tile_kv boundaries: all pieces but the last are whole tiles.
      auto bound = [&](int k) {
        if (k == task.pieces) return task.tokens;
        const std::int64_t raw = static_cast<std::int64_t>(task.tokens) * k / task.pieces;
        return static_cast<std::int32_t>(raw / tile_kv * tile_kv);
      };
      const std::int32_t token_begin = bound(p);
      const std::int32_t token_end = bound(p + 1);
      if (token_end <= token_begin) continue;
      for (int h = 0; h < spec_.num_kv_heads; ++h) {
        for (int i = 0; i < task.tiles; ++i) {
          const int row_lo = static_cast<int>(static_cast<std::int64_t>(rows) * i / task.tiles);
          const int row_hi =
              static_cast<int>(static_cast<std::int64_t>(rows) * (i + 1) / task.tiles);
          WorkItem item;
          item.node = task.node;
          item.config = task.config;
          item.kv_head = h;
          item.kv_page_offset = task.page_offset;
          item.token_begin = token_begin;
          item.token_end = token_end;
          item.path_token_offset = task.path_offset;
          item.row_begin = static_cast<std::int32_t>(plan_.query_rows.size());
          item.row_count = row_hi - row_lo;
          item.predicted_us = static_cast<float>(task.item_cost);
          item.sm = loads.sm_of(run_of[t], item_in_run++);
          for (int row = row_lo; row < row_hi; ++row) {
            const int request = task_requests_[task.request_begin + row / group];
            plan_.query_rows.push_back(request * spec_.num_qo_heads + h * group + row % group);
          }
          plan_.items.push_back(item);
        }
      }
    }
    plan_.launches.back().item_end = static_cast<std::int32_t>(plan_.items.size());
  }
  plan_.sm_load_us = loads.per_sm();
}

// Each output row merges its partial slots ordered by KV position along its
// path: a fixed order, so results are bit-reproducible.
void Planner::build_merge_schedule() {
  const std::int64_t rows = static_cast<std::int64_t>(plan_.batch_size) * spec_.num_qo_heads;
  std::vector<std::int32_t>& indptr = plan_.merge_indptr;
  indptr.assign(rows + 1, 0);
  for (std::int32_t row : plan_.query_rows) ++indptr[row + 1];
  for (std::int64_t r = 0; r < rows; ++r) indptr[r + 1] += indptr[r];
  plan_.merge_indices.assign(plan_.query_rows.size(), 0);
  std::vector<std::int32_t> fill(indptr.begin(), indptr.end() - 1);
  for (const WorkItem& it : plan_.items) {
    for (int i = 0; i < it.row_count; ++i) {
      const std::int32_t slot = it.row_begin + i;
      plan_.merge_indices[fill[plan_.query_rows[slot]]++] = slot;
    }
  }
  // Sort each row's slots by KV position; fan-ins are small (tree depth x splits).
  std::vector<std::int32_t> position(plan_.query_rows.size());
  for (const WorkItem& it : plan_.items) {
    for (int i = 0; i < it.row_count; ++i) {
      position[it.row_begin + i] = it.path_token_offset + it.token_begin;
    }
  }
  plan_.max_merge_fan_in = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    auto first = plan_.merge_indices.begin() + indptr[r];
    auto last = plan_.merge_indices.begin() + indptr[r + 1];
    std::sort(first, last, [&](std::int32_t a, std::int32_t b) {
      return position[a] != position[b] ? position[a] < position[b] : a < b;
    });
    plan_.max_merge_fan_in =
        std::max(plan_.max_merge_fan_in, static_cast<int>(indptr[r + 1] - indptr[r]));
  }
}

Plan Planner::run() {
  plan_.spec = spec_;
  plan_.batch_size = tree_.batch_size;
  plan_.tree_depth = tree_.max_depth();
  plan_.configs = configs_;
  plan_.num_sms = model_.coefficients().num_sms;
  for (int root : tree_.roots) decide(root, 0, 0, 0, 0);
  split_tasks();
  emit_items();
  build_merge_schedule();
  plan_.num_partial_slots = static_cast<std::int64_t>(plan_.query_rows.size());
  const double busiest = *std::max_element(plan_.sm_load_us.begin(), plan_.sm_load_us.end());
  const double merge =
      static_cast<double>(plan_.num_partial_slots) * model_.merge_row_us(spec_, 1) / plan_.num_sms;
  plan_.predicted_us =
      static_cast<float>(busiest + merge + model_.launch_us() * (plan_.launches.size() + 1));
  return std::move(plan_);
}

}  // namespace

std::vector<KernelConfig> default_kernel_configs(const AttentionSpec& spec) {
  // Few shapes, chosen per node by the cost model: 16 rows for a leaf's GQA
  // group, 64 for wide shared prefixes, 32 between them.
  const int tile_kv = spec.head_dim > 128 ? 32 : 64;
  std::vector<KernelConfig> configs;
  for (int tile_q : {16, 32, 64}) configs.push_back({tile_q, tile_kv, 4, 2});
  return configs;
}

Plan make_plan(const AttentionSpec& spec, const PrefixTree& tree, const PlannerOptions& options) {
  spec.validate();
  check(tree.page_size == spec.page_size, ErrorKind::kInvalidArgument,
        fmt::format("the tree was built with page_size {} but the spec says {}", tree.page_size,
                    spec.page_size));
  check(tree.batch_size >= 1, ErrorKind::kInvalidArgument, "the batch has no requests");
  return Planner(spec, tree, options).run();
}

Plan make_plan(const AttentionSpec& spec, const BlockTables& tables,
               const PlannerOptions& options) {
  spec.validate();
  return make_plan(spec, discover_prefix_tree(tables, spec.page_size), options);
}

}  // namespace canopy
