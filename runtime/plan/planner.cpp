// The planner: KV-guided grouping, the absorb (push-down) profit rule, KV
// splitting and longest-first balancing, all priced by one CostModel.
// docs/planner.md walks through an example.
#include "canopy/planner.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

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
  // Set by emit_task: the task's first partial slot and its non-empty pieces.
  std::int32_t first_slot = 0;
  std::int32_t piece_count = 0;
};

// Tasks [begin, end) (consecutive, so in task order) sharing one item cost and
// config. Sorting runs instead of tasks gives the same order as sorting the
// tasks with ties broken by task index, at a fraction of the cost: the leaves
// of one level usually form a single run.
struct TaskRun {
  double cost = 0;
  int config = 0;
  int begin = 0;
  int end = 0;
};

// Predicted SM loads for longest-processing-time-first placement. A run of
// `count` equal items goes to the least-loaded SMs: whole rounds to every SM,
// the rest to the lightest ones.
//
// The SMs are kept sorted lightest first (load, then index) in a window that
// slides through a larger buffer: the `rest` lightest SMs are popped off the
// front and re-inserted from the back, where grown SMs usually belong (items
// come longest first, so loads stay within one item of each other). A run
// thus costs O(min(count, SMs)) searches over short distances, not O(SMs).
class SmLoads {
 public:
  // record: remember each run's SM order for sm_order (only the final
  // placement needs it; candidate placements only want the makespan).
  void reset(int sms, bool record) {
    sms_ = sms;
    buffer_.resize(kSlide * static_cast<std::size_t>(sms));
    head_ = 0;
    std::iota(buffer_.begin(), buffer_.begin() + sms, 0);
    load_.assign(sms, 0.0);
    snapshots_.clear();
    record_ = record;
  }
  // Places the run; item k of it runs on sm_order(run)[k % SMs].
  std::int32_t place(double cost, std::int64_t count) {
    const auto run = static_cast<std::int32_t>(snapshots_.size());
    const std::int64_t rounds = count / sms_;
    const int rest = static_cast<int>(count % sms_);
    if (record_) {
      const int used = rounds > 0 ? sms_ : rest;  // positions k % SMs that occur
      snapshots_.insert(snapshots_.end(), window(), window() + used);
    }
    if (rounds > 0) add_to_all(rounds * cost);
    if (rest > 0) add_to_lightest(rest, cost);
    return run;
  }
  const std::int32_t* sm_order(std::int32_t run) const { return snapshots_.data() + run; }
  double max_load() const { return load_[window()[sms_ - 1]]; }
  std::vector<float> per_sm() const { return {load_.begin(), load_.end()}; }

 private:
  int* window() { return buffer_.data() + head_; }
  const int* window() const { return buffer_.data() + head_; }
  bool lighter(int a, int b) const { return load_[a] != load_[b] ? load_[a] < load_[b] : a < b; }

  void add_to_all(double add) {
    for (double& l : load_) l += add;
    // Rounding can turn two different loads equal; restore the index order
    // of such ties (nearly sorted: insertion sort is linear).
    int* w = window();
    for (int i = 1; i < sms_; ++i) {
      const int sm = w[i];
      int j = i;
      for (; j > 0 && lighter(sm, w[j - 1]); --j) w[j] = w[j - 1];
      w[j] = sm;
    }
  }

  void add_to_lightest(int n, double cost) {
    if (head_ + sms_ + n > static_cast<int>(buffer_.size())) {  // slide back to the start
      std::copy(window(), window() + sms_, buffer_.data());
      head_ = 0;
    }
    int* const grown = window();  // stays intact: insertions only touch the back
    for (int i = 0; i < n; ++i) load_[grown[i]] += cost;
    head_ += n;
    int* const w = window();
    const int kept = sms_ - n;
    // The usual case: the grown SMs, still in order, are all heavier than the
    // others and just move to the back.
    bool to_back = kept == 0 || lighter(w[kept - 1], grown[0]);
    for (int i = 0; to_back && i + 1 < n; ++i) to_back = lighter(grown[i], grown[i + 1]);
    if (to_back) {
      for (int i = 0; i < n; ++i) w[kept + i] = grown[i];
      return;
    }
    int size = kept;
    for (int i = 0; i < n; ++i) {
      const int sm = grown[i];
      const int at = insertion_point(w, size, sm);
      std::copy_backward(w + at, w + size, w + size + 1);
      w[at] = sm;
      ++size;
    }
  }

  // Position of `sm` in the sorted w[0 .. size): galloping from the back.
  int insertion_point(const int* w, int size, int sm) const {
    int hi = size;  // w[hi ..) are heavier than sm
    int step = 1;
    while (hi > 0 && lighter(sm, w[hi - 1])) {
      const int lo = std::max(0, hi - step);
      if (!lighter(sm, w[lo])) {
        // w[lo] <= sm < w[hi - 1]: the answer is in (lo, hi - 1].
        return static_cast<int>(
            std::partition_point(w + lo + 1, w + hi - 1, [&](int o) { return lighter(o, sm); }) -
            w);
      }
      hi = lo;
      step *= 2;
    }
    return hi;
  }

  static constexpr int kSlide = 16;  // buffer size in windows: a slide back per 15 SMs' worth
  int sms_ = 0;
  std::vector<int> buffer_;  // window() = buffer_[head_ .. head_ + sms_): SMs, lightest first
  int head_ = 0;
  std::vector<double> load_;
  std::vector<std::int32_t> snapshots_;  // lightest-first order before each run
  bool record_ = false;
};

// Memo of cost-model answers per (config, rows, tokens): the planner asks for
// the same shapes over and over (sibling leaves usually look alike), and the
// model call is out of line. Direct-mapped, so lookups are O(1); the answers
// are exactly the model's.
class CostMemo {
 public:
  struct Entry {
    int config = -2;  // -1: the best config's answer; -2: empty
    int rows = 0;
    int tokens = 0;
    int best = 0;  // for config -1: the best config
    double us = 0;
    bool is(int c, int r, int t) const { return config == c && rows == r && tokens == t; }
  };
  Entry& slot(int config, int rows, int tokens) {
    std::uint64_t x = (std::uint64_t{static_cast<std::uint32_t>(rows)} << 32 |
                       static_cast<std::uint32_t>(tokens)) *
                          0x9E3779B97F4A7C15ull +
                      static_cast<std::uint32_t>(config);
    x ^= x >> 29;
    return entries_[(x * 0xBF58476D1CE4E5B9ull) >> (64 - kBits)];
  }

 private:
  static constexpr int kBits = 9;
  std::array<Entry, std::size_t{1} << kBits> entries_{};
};

class Planner {
 public:
  Planner(const AttentionSpec& spec, const PrefixTree& tree, const PlannerOptions& options,
          Plan& out)
      : spec_(spec), tree_(tree), opt_(options), model_(options.cost_model), plan_(out) {
    configs_ = opt_.candidates.empty() ? default_kernel_configs(spec) : opt_.candidates;
    std::erase_if(configs_, [&](const KernelConfig& c) { return !model_.fits(spec, c); });
    CANOPY_CHECK(!configs_.empty(), ErrorKind::kNotSupported,
                 "no kernel configuration fits {} (max shared memory {} bytes)", spec.to_string(),
                 model_.coefficients().max_smem_per_block);
  }

  void run();

 private:
  double item_us(int config, int rows, int tokens) {
    CostMemo::Entry& e = memo_.slot(config, rows, tokens);
    if (!e.is(config, rows, tokens)) {
      e = {config, rows, tokens, config, model_.item_us(spec_, configs_[config], rows, tokens)};
    }
    return e.us;
  }
  // Cheapest config for `rows` query rows over `tokens` KV tokens (one KV head).
  std::pair<int, double> best_config(int rows, int tokens) {
    if (const CostMemo::Entry& e = memo_.slot(-1, rows, tokens); e.is(-1, rows, tokens)) {
      return {e.best, e.us};
    }
    int best = 0;
    double best_us = 0;
    for (int i = 0; i < static_cast<int>(configs_.size()); ++i) {
      const double us = item_us(i, rows, tokens);
      if (i == 0 || us < best_us) {
        best = i;
        best_us = us;
      }
    }
    memo_.slot(-1, rows, tokens) = {-1, rows, tokens, best, best_us};
    return {best, best_us};
  }
  double cost(int requests, int tokens) {
    return requests == 0 ? 0.0 : best_config(requests * spec_.group_size(), tokens).second;
  }
  // Per-row merge price of one more partial state, in SM-microseconds.
  double partial_us(int requests) const {
    return requests * spec_.num_qo_heads * model_.merge_row_us(spec_, 1) / spec_.num_kv_heads;
  }

  void gather_requests(int node);
  void decide(int node, std::int32_t inherited_pages_begin, std::int32_t inherited_pages,
              std::int32_t inherited_tokens, std::int32_t path_offset);
  void add_task(int node, std::int32_t inherited_begin, std::int32_t inherited_pages,
                std::int32_t tokens, std::int32_t path_offset, const int* readers,
                std::int32_t reader_count);
  void split_tasks();
  bool apply_split(double target);
  double makespan();
  void collect_runs(bool by_config);
  // Where emit_task writes the next item and the next query row.
  struct Cursor {
    WorkItem* item;
    std::int32_t* row;
  };
  void emit_items();
  void keep_launched_configs();
  void emit_task(Task& task, const std::int32_t* sm_order, Cursor& out);
  void build_merge_schedule();

  const AttentionSpec& spec_;
  const PrefixTree& tree_;
  const PlannerOptions& opt_;
  const CostModel& model_;
  std::vector<KernelConfig> configs_;
  CostMemo memo_;
  std::vector<Task> tasks_;
  std::vector<std::int32_t> task_requests_;
  std::vector<std::int32_t> scratch_pages_;  // inherited page chains during the walk
  // Requests in preorder: node n's subtree's are preorder_requests_[subtree_begin_[n] ..
  // subtree_end_[n]).
  std::vector<int> preorder_requests_;
  std::vector<std::int32_t> subtree_begin_;
  std::vector<std::int32_t> subtree_end_;
  std::vector<double> whole_cost_;  // item cost of each task unsplit
  double max_whole_cost_ = 0;
  bool any_split_ = false;  // some task is in pieces now
  std::vector<TaskRun> runs_;
  std::vector<std::int32_t> row_ids_;  // emit_task's per-task row pattern
  std::vector<int> tile_bounds_;       // emit_task's per-task row tiles
  SmLoads loads_;
  Plan& plan_;  // written in place: a reused Plan keeps its vectors' memory
};

// Lists every node's subtree requests as one contiguous range, so a standalone
// task takes its readers without walking or allocating.
void Planner::gather_requests(int node_id) {
  const PrefixTree::Node& node = tree_.nodes[node_id];
  subtree_begin_[node_id] = static_cast<std::int32_t>(preorder_requests_.size());
  const std::span<const int> requests = tree_.requests(node);
  preorder_requests_.insert(preorder_requests_.end(), requests.begin(), requests.end());
  for (int c : tree_.children(node)) gather_requests(c);
  subtree_end_[node_id] = static_cast<std::int32_t>(preorder_requests_.size());
}

// Top-down: node's segment is its inherited pages plus its own. Either it is
// read once by every request below (standalone), or it is pushed down into
// each child (the child absorbs it) when re-reading it there is cheaper than
// a separate pass plus one more partial state to merge per row.
void Planner::decide(int node_id, std::int32_t inh_begin, std::int32_t inh_pages,
                     std::int32_t inh_tokens, std::int32_t path_offset) {
  const PrefixTree::Node& node = tree_.nodes[node_id];
  if (node.subtree_requests == 0) return;
  const std::int32_t seg_tokens = inh_tokens + node.num_tokens;

  bool push_down = false;
  if (opt_.allow_absorb && node.child_count > 0) {
    const int own = node.request_count;
    double standalone =
        cost(node.subtree_requests, seg_tokens) + partial_us(node.subtree_requests - own);
    double pushed = cost(own, seg_tokens);
    for (int c : tree_.children(node)) {
      const auto& child = tree_.nodes[c];
      pushed += cost(child.subtree_requests, seg_tokens + child.num_tokens) -
                cost(child.subtree_requests, child.num_tokens);
    }
    push_down = pushed < standalone;
  }
  if (!push_down) {
    add_task(node_id, inh_begin, inh_pages, seg_tokens, path_offset,
             preorder_requests_.data() + subtree_begin_[node_id],
             subtree_end_[node_id] - subtree_begin_[node_id]);
    for (int c : tree_.children(node)) decide(c, 0, 0, 0, node.prefix_tokens + node.num_tokens);
    return;
  }
  if (node.request_count > 0) {
    add_task(node_id, inh_begin, inh_pages, seg_tokens, path_offset, tree_.requests(node).data(),
             node.request_count);
  }
  // The children inherit the whole segment: its page chain goes at the end of
  // scratch_pages_ while they are walked.
  const std::int32_t seg_begin = static_cast<std::int32_t>(scratch_pages_.size());
  scratch_pages_.resize(seg_begin + inh_pages);  // resize first: copying from itself
  std::copy_n(scratch_pages_.data() + inh_begin, inh_pages, scratch_pages_.data() + seg_begin);
  const std::span<const std::int32_t> own_pages = tree_.pages_of(node);
  scratch_pages_.insert(scratch_pages_.end(), own_pages.begin(), own_pages.end());
  const std::int32_t seg_pages = inh_pages + node.page_count;
  for (int c : tree_.children(node)) decide(c, seg_begin, seg_pages, seg_tokens, path_offset);
  scratch_pages_.resize(seg_begin);
}

// A task over the inherited chain scratch_pages_[inherited_begin ..] followed
// by the node's own pages, read by `readers` (ascending).
void Planner::add_task(int node_id, std::int32_t inh_begin, std::int32_t inh_pages,
                       std::int32_t tokens, std::int32_t path_offset, const int* readers,
                       std::int32_t reader_count) {
  const PrefixTree::Node& node = tree_.nodes[node_id];
  Task task;
  task.node = node_id;
  task.page_offset = static_cast<std::int32_t>(plan_.kv_pages.size());
  plan_.kv_pages.insert(plan_.kv_pages.end(), scratch_pages_.begin() + inh_begin,
                        scratch_pages_.begin() + inh_begin + inh_pages);
  const std::span<const std::int32_t> own_pages = tree_.pages_of(node);
  plan_.kv_pages.insert(plan_.kv_pages.end(), own_pages.begin(), own_pages.end());
  task.tokens = tokens;
  task.path_offset = path_offset;
  task.request_begin = static_cast<std::int32_t>(task_requests_.size());
  task.request_count = reader_count;
  task_requests_.insert(task_requests_.end(), readers, readers + reader_count);
  // Preorder lists a subtree's requests ascending whenever requests were
  // numbered in tree order (tables built per branch); otherwise sort them.
  const auto first = task_requests_.begin() + task.request_begin;
  if (!std::is_sorted(first, task_requests_.end())) std::sort(first, task_requests_.end());
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
  max_whole_cost_ = 0;
  any_split_ = false;
  whole_cost_.resize(tasks_.size());
  for (std::size_t t = 0; t < tasks_.size(); ++t) {
    Task& task = tasks_[t];
    const KernelConfig& tile = configs_[task.config];
    const int rows = task.request_count * group;
    task.tiles = (rows + tile.tile_q - 1) / tile.tile_q;
    task.tile_rows = (rows + task.tiles - 1) / task.tiles;
    task.pieces = 1;
    task.item_cost = item_us(task.config, task.tile_rows, task.tokens);
    whole_cost_[t] = task.item_cost;
    max_whole_cost_ = std::max(max_whole_cost_, task.item_cost);
    total += task.item_cost * task.tiles * spec_.num_kv_heads;
  }
  if (!opt_.allow_split) return;
  double best_target = 0;
  double best = -1;  // the unsplit makespan, priced once some candidate differs
  for (int waves = 1; waves <= std::max(1, opt_.waves); waves *= 2) {
    const double target = total / (static_cast<double>(sms) * waves);
    // Same pieces as the candidate priced last: same makespan, same verdict.
    if (!apply_split(target)) continue;
    if (best < 0) {
      apply_split(0);
      best = makespan();
      // Already within 0.1% of perfect balance: splitting only adds work
      // (overheads, merge inputs), so no candidate can win.
      const double merge = best - loads_.max_load();
      if (best <= (total / sms + merge) * 1.001) break;
      apply_split(target);
    }
    const double span = makespan();
    if (span < best * 0.999) {
      best = span;
      best_target = target;
    }
  }
  apply_split(best_target);
}

// Cuts every task costing more than `target` (0: none); returns whether any
// task's piece count changed.
bool Planner::apply_split(double target) {
  // Nothing exceeds the target: unsplit, which the tasks may already be.
  if ((target <= 0 || target >= max_whole_cost_) && !any_split_) return false;
  bool changed = false;
  any_split_ = false;
  for (std::size_t t = 0; t < tasks_.size(); ++t) {
    Task& task = tasks_[t];
    int pieces = 1;
    double item_cost = whole_cost_[t];
    if (target > 0 && item_cost > target) {
      const int by_cost = static_cast<int>(std::ceil(item_cost / target));
      const int by_length = task.tokens / std::max(1, opt_.min_split_tokens);
      pieces = std::max(1, std::min(by_cost, by_length));
      if (pieces > 1) {
        const int piece_tokens = (task.tokens + pieces - 1) / pieces;
        item_cost = item_us(task.config, task.tile_rows, piece_tokens);
      }
    }
    changed |= pieces != task.pieces;
    any_split_ |= pieces > 1;
    task.pieces = pieces;
    task.item_cost = item_cost;
  }
  return changed;
}

// Groups consecutive tasks of equal item cost (and config, if by_config)
// into runs_, in task order.
void Planner::collect_runs(bool by_config) {
  runs_.clear();
  for (int t = 0; t < static_cast<int>(tasks_.size()); ++t) {
    const Task& task = tasks_[t];
    if (!runs_.empty() && runs_.back().cost == task.item_cost &&
        (!by_config || runs_.back().config == task.config)) {
      runs_.back().end = t + 1;
    } else {
      runs_.push_back({task.item_cost, task.config, t, t + 1});
    }
  }
}

// Predicted step time of the current pieces: LPT placement of every item,
// longest first (ties: task order), plus the merge of all partial slots.
double Planner::makespan() {
  const int sms = model_.coefficients().num_sms;
  collect_runs(false);
  std::sort(runs_.begin(), runs_.end(), [](const TaskRun& a, const TaskRun& b) {
    return a.cost != b.cost ? a.cost > b.cost : a.begin < b.begin;
  });
  loads_.reset(sms, false);
  std::int64_t slots = 0;
  for (const TaskRun& run : runs_) {
    // A run's tasks cost the same per item: place all their items at once.
    std::int64_t count = 0;
    for (int t = run.begin; t < run.end; ++t) {
      const Task& task = tasks_[t];
      const std::int64_t items = std::int64_t{task.pieces} * task.tiles * spec_.num_kv_heads;
      count += items;
      slots += items * task.tile_rows;
    }
    loads_.place(run.cost, count);
  }
  return loads_.max_load() + slots * model_.merge_row_us(spec_, 1) / sms;
}

// Emits the items: one launch per config, items longest first within it
// (blocks are issued in order), one item per (task, KV piece, KV head, row
// tile); a tile's rows are request-major (a request's group heads together).
// Each run of a task's equal-cost items is placed on the least-loaded SMs
// (longest processing time first), for the predicted per-SM load.
void Planner::emit_items() {
  collect_runs(true);
  // LPT across configs: runs in descending cost regardless of launch order
  // (ties: config, then task order).
  std::sort(runs_.begin(), runs_.end(), [](const TaskRun& a, const TaskRun& b) {
    if (a.cost != b.cost) return a.cost > b.cost;
    return a.config != b.config ? a.config < b.config : a.begin < b.begin;
  });
  loads_.reset(model_.coefficients().num_sms, true);
  std::vector<std::int32_t> run_of(tasks_.size());
  std::int64_t max_items = 0;
  std::int64_t max_rows = 0;
  for (const TaskRun& run : runs_) {
    for (int t = run.begin; t < run.end; ++t) {
      const Task& task = tasks_[t];
      const std::int64_t count = std::int64_t{task.pieces} * task.tiles * spec_.num_kv_heads;
      run_of[t] = loads_.place(task.item_cost, count);
      max_items += count;
      max_rows +=
          std::int64_t{task.pieces} * spec_.num_kv_heads * task.request_count * spec_.group_size();
    }
  }
  // Written through pointers, then trimmed: pieces that come out empty emit nothing.
  plan_.items.resize(max_items);
  plan_.query_rows.resize(max_rows);
  Cursor out{plan_.items.data(), plan_.query_rows.data()};
  // Launch order: by config, then longest first (ties: task order).
  std::sort(runs_.begin(), runs_.end(), [](const TaskRun& a, const TaskRun& b) {
    if (a.config != b.config) return a.config < b.config;
    return a.cost != b.cost ? a.cost > b.cost : a.begin < b.begin;
  });
  for (const TaskRun& run : runs_) {
    const auto item_index = [&] {
      return static_cast<std::int32_t>(out.item - plan_.items.data());
    };
    if (plan_.launches.empty() || plan_.launches.back().config != run.config) {
      plan_.launches.push_back({run.config, item_index(), item_index()});
    }
    for (int t = run.begin; t < run.end; ++t) emit_task(tasks_[t], loads_.sm_order(run_of[t]), out);
    plan_.launches.back().item_end = item_index();
  }
  plan_.items.resize(out.item - plan_.items.data());
  plan_.query_rows.resize(out.row - plan_.query_rows.data());
  plan_.sm_load_us = loads_.per_sm();
}

// One task's items, pieces outermost, then KV heads, then row tiles. The rows
// of one (piece, KV head) are thus the task's rows 0 .. rows-1 in consecutive
// slots from first_slot + (piece * KV heads + head) * rows, which the merge
// schedule relies on.
void Planner::emit_task(Task& task, const std::int32_t* sm_order, Cursor& out) {
  const int group = spec_.group_size();
  const int sms = model_.coefficients().num_sms;
  const int rows = task.request_count * group;
  const int tile_kv = configs_[task.config].tile_kv;
  // Row j * group + g is output row reader_j * heads + h * group + g under KV
  // head h: the part without h is the same for every piece and KV head.
  row_ids_.resize(rows);
  const std::int32_t* readers = task_requests_.data() + task.request_begin;
  for (int j = 0, row = 0; j < task.request_count; ++j) {
    for (int g = 0; g < group; ++g) row_ids_[row++] = readers[j] * spec_.num_qo_heads + g;
  }
  tile_bounds_.resize(task.tiles + 1);  // tile i holds rows tile_bounds_[i] .. [i + 1]
  for (int i = 0; i <= task.tiles; ++i) {
    tile_bounds_[i] = static_cast<int>(static_cast<std::int64_t>(rows) * i / task.tiles);
  }
  task.first_slot = static_cast<std::int32_t>(out.row - plan_.query_rows.data());
  task.piece_count = 0;
  int sm_pos = 0;  // item k of the task runs on sm_order[k % sms]
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
    ++task.piece_count;
    for (int h = 0; h < spec_.num_kv_heads; ++h) {
      const auto row_base = static_cast<std::int32_t>(out.row - plan_.query_rows.data());
      for (int i = 0; i < task.tiles; ++i) {
        const int row_lo = tile_bounds_[i];
        const int row_hi = tile_bounds_[i + 1];
        WorkItem& item = *out.item++;
        item.node = task.node;
        item.config = task.config;
        item.kv_head = h;
        item.kv_page_offset = task.page_offset;
        item.token_begin = token_begin;
        item.token_end = token_end;
        item.path_token_offset = task.path_offset;
        item.row_begin = row_base + row_lo;
        item.row_count = row_hi - row_lo;
        item.predicted_us = static_cast<float>(task.item_cost);
        item.sm = sm_order[sm_pos];
        if (++sm_pos == sms) sm_pos = 0;
      }
      const std::int32_t head_offset = h * group;
      for (int row = 0; row < rows; ++row) out.row[row] = row_ids_[row] + head_offset;
      out.row += rows;
    }
  }
}

// Each output row merges its partial slots ordered by KV position along its
// path: a fixed order, so results are bit-reproducible. A request's tasks
// partition its path and decide() creates them top-down, so in task order
// they are already ordered by position, and so are each task's pieces. All
// rows of a request merge the same (task, piece) list, each at its own slot.
void Planner::build_merge_schedule() {
  const int batch = plan_.batch_size;
  const int heads = spec_.num_qo_heads;
  const int kv_heads = spec_.num_kv_heads;
  const int group = spec_.group_size();
  // Every row of request r merges fan_in[r] slots; its rows' lists are
  // consecutive from start[r].
  std::vector<std::int32_t> fan_in(batch, 0);
  for (const Task& task : tasks_) {
    for (int j = 0; j < task.request_count; ++j) {
      fan_in[task_requests_[task.request_begin + j]] += task.piece_count;
    }
  }
  std::vector<std::int32_t>& indptr = plan_.merge_indptr;
  indptr.resize(static_cast<std::size_t>(batch) * heads + 1);
  std::vector<std::int32_t> next(batch);  // where request r's next entry goes (row 0's list)
  std::int32_t* row_ptr = indptr.data();
  std::int32_t start = 0;
  int max_fan_in = 0;
  for (int r = 0; r < batch; ++r) {
    const std::int32_t f = fan_in[r];
    max_fan_in = std::max(max_fan_in, f);
    next[r] = start;
    for (int q = 0; q < heads; ++q) *row_ptr++ = start + q * f;
    start += heads * f;
  }
  *row_ptr = start;
  plan_.max_merge_fan_in = max_fan_in;
  // Task by task (path order for every request), each reader's slots go to
  // the next entry of each of its rows: row q's list is f entries apart.
  plan_.merge_indices.resize(plan_.query_rows.size());
  std::int32_t* const indices = plan_.merge_indices.data();
  // Reader j's row for q head q = h * group + g is slot j * group + offset[q]
  // of each piece, offset[q] = h * rows + g (rows: the task's rows per KV head).
  std::vector<std::int32_t> offset(heads);
  int offset_rows = -1;
  for (const Task& task : tasks_) {
    const int rows = task.request_count * group;
    if (rows != offset_rows) {  // siblings usually share it
      for (int q = 0; q < heads; ++q) offset[q] = q / group * rows + q % group;
      offset_rows = rows;
    }
    for (int j = 0; j < task.request_count; ++j) {
      const std::int32_t r = task_requests_[task.request_begin + j];
      const std::int32_t f = fan_in[r];
      for (int p = 0; p < task.piece_count; ++p) {
        std::int32_t* dst = indices + next[r]++;
        const std::int32_t base = task.first_slot + p * kv_heads * rows + j * group;
        for (int q = 0; q < heads; ++q, dst += f) *dst = base + offset[q];
      }
    }
  }
}

// plan.configs lists only configs that launch: the runtime compiles and loads
// every listed config, so an unused candidate would cost a compile for nothing.
void Planner::keep_launched_configs() {
  std::vector<int> remap(configs_.size(), -1);
  plan_.configs.clear();
  for (LaunchGroup& g : plan_.launches) {
    if (remap[g.config] < 0) {
      remap[g.config] = static_cast<int>(plan_.configs.size());
      plan_.configs.push_back(configs_[g.config]);
    }
    g.config = remap[g.config];
  }
  for (WorkItem& item : plan_.items) item.config = remap[item.config];
}

void Planner::run() {
  // A reused Plan keeps its memory: vectors filled by appending are cleared;
  // items, query_rows and the merge arrays are resized and then overwritten
  // entry by entry, so they are not cleared (that would zero-fill them again).
  plan_.kv_pages.clear();
  plan_.launches.clear();
  plan_.configs.clear();
  plan_.spec = spec_;
  plan_.batch_size = tree_.batch_size;
  plan_.tree_depth = tree_.max_depth();
  plan_.num_sms = model_.coefficients().num_sms;
  subtree_begin_.resize(tree_.nodes.size());
  subtree_end_.resize(tree_.nodes.size());
  preorder_requests_.reserve(tree_.batch_size);
  for (int root : tree_.roots) gather_requests(root);
  task_requests_.reserve(2 * static_cast<std::size_t>(tree_.batch_size));
  tasks_.reserve(tree_.nodes.size());
  for (int root : tree_.roots) decide(root, 0, 0, 0, 0);
  split_tasks();
  emit_items();
  build_merge_schedule();
  keep_launched_configs();
  plan_.num_partial_slots = static_cast<std::int64_t>(plan_.query_rows.size());
  const double busiest = *std::max_element(plan_.sm_load_us.begin(), plan_.sm_load_us.end());
  const double merge =
      static_cast<double>(plan_.num_partial_slots) * model_.merge_row_us(spec_, 1) / plan_.num_sms;
  plan_.predicted_us =
      static_cast<float>(busiest + merge + model_.launch_us() * (plan_.launches.size() + 1));
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

namespace {

void plan_tree(const AttentionSpec& spec, const PrefixTree& tree, const PlannerOptions& options,
               Plan& out) {
  CANOPY_CHECK(tree.page_size == spec.page_size, ErrorKind::kInvalidArgument,
               "the tree was built with page_size {} but the spec says {}", tree.page_size,
               spec.page_size);
  check(tree.batch_size >= 1, ErrorKind::kInvalidArgument, "the batch has no requests");
  Planner(spec, tree, options, out).run();
}

}  // namespace

void make_plan(const AttentionSpec& spec, const PrefixTree& tree, const PlannerOptions& options,
               Plan& out) {
  spec.validate();
  plan_tree(spec, tree, options, out);
}

void make_plan(const AttentionSpec& spec, const BlockTables& tables, const PlannerOptions& options,
               Plan& out) {
  spec.validate();
  // The tree borrows the tables' page ids: planning copies them once, into the plan.
  plan_tree(spec, discover_prefix_tree(tables, spec.page_size, TreePages::kBorrowed), options, out);
}

Plan make_plan(const AttentionSpec& spec, const PrefixTree& tree, const PlannerOptions& options) {
  Plan plan;
  make_plan(spec, tree, options, plan);
  return plan;
}

Plan make_plan(const AttentionSpec& spec, const BlockTables& tables,
               const PlannerOptions& options) {
  Plan plan;
  make_plan(spec, tables, options, plan);
  return plan;
}

}  // namespace canopy
