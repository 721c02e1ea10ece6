// The data of one planning pass: tasks (KV segments and their readers), the
// variants a task may run as, task classes and runs for split pricing and
// placement, and the memo of cost-model answers (docs/planner.md, 2a-2e).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace canopy::planning {

// A KV segment read by one group of requests: pages (ancestors pushed down
// into this node, then the node's own), its tokens and its readers.
struct Task {
  int node = 0;
  std::int32_t page_offset = 0;  // into the plan's kv_pages
  std::int32_t page_count = 0;
  std::int32_t tokens = 0;
  std::int32_t path_offset = 0;    // position of segment token 0 in its requests
  std::int32_t request_begin = 0;  // readers: task_requests[request_begin .. +request_count)
  std::int32_t request_count = 0;
  int variant = 0;       // index into the variants: kernel config, row tile, heads
  int tiles = 1;         // row tiles per KV head
  int pieces = 1;        // KV pieces (splits)
  int piece_count = 1;   // pieces that hold tokens (piece bounds are tile_kv-aligned)
  double item_cost = 0;  // one item (one tile, one piece, one KV head or pack), slot-us
  bool direct = false;   // its readers read nothing else: items write the output
  // Where emission finds the pages: -1, the node's own (nothing inherited);
  // else an offset into the pass's staged chains (PlannerScratch::kv_pages).
  std::int32_t staged = -1;
  // Set by emission: the task's first partial slot and first item.
  std::int32_t first_slot = 0;
  std::int32_t first_item = 0;
};

// One way to run a task: a kernel (index into the candidate configs), the
// row tile its blocks are shaped for, and how many KV heads one block takes
// (a head pack, for narrow tasks that fit one row tile).
struct Variant {
  int config = 0;
  int row_tile = 0;
  int heads = 1;
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
  std::int64_t items = 0;  // makespan(): the run's items and partial slots
  std::int64_t slots = 0;
};

// Memo of cost-model answers per (variant, rows, tokens): the planner asks for
// the same shapes over and over (sibling leaves usually look alike; on
// irregular trees a parent's question about a child is the child's own).
// Direct-mapped, so lookups are O(1); the answers are exactly the model's.
// Entries carry the pass that wrote them, so a new pass starts empty without
// clearing the table.
class CostMemo {
 public:
  struct Entry {
    std::uint32_t pass = 0;
    int config = 0;  // the variant; -1: the best variant's answer
    int rows = 0;
    int tokens = 0;
    int best = 0;  // for config -1: the best variant
    double us = 0;
    // For config -1 when the candidates' first kernel has variants
    // [0, prefix): the best of those alone, the question of 2g's second pass.
    int prefix_best = -1;
    double prefix_us = 0;
  };
  void new_pass() {
    if (++pass_ == 0) {  // wrapped: old stamps could look current
      std::fill(entries_.begin(), entries_.end(), Entry{});
      pass_ = 1;
    }
  }
  Entry& slot(int config, int rows, int tokens) { return entries_[index(config, rows, tokens)]; }
  const Entry& slot(int config, int rows, int tokens) const {
    return entries_[index(config, rows, tokens)];
  }
  bool holds(const Entry& e, int config, int rows, int tokens) const {
    return e.pass == pass_ && e.config == config && e.rows == rows && e.tokens == tokens;
  }
  std::uint32_t pass() const { return pass_; }

 private:
  // Irregular batches ask about thousands of shapes per pass: 512 entries
  // evicted a node's answers before its children asked again.
  static constexpr int kBits = 12;
  static std::size_t index(int config, int rows, int tokens) {
    std::uint64_t x = (std::uint64_t{static_cast<std::uint32_t>(rows)} << 32 |
                       static_cast<std::uint32_t>(tokens)) *
                          0x9E3779B97F4A7C15ull +
                      static_cast<std::uint32_t>(config);
    x ^= x >> 29;
    return (x * 0xBF58476D1CE4E5B9ull) >> (64 - kBits);
  }
  std::vector<Entry> entries_ = std::vector<Entry>(std::size_t{1} << kBits);
  std::uint32_t pass_ = 0;
};

// Tasks that price alike: the same chosen variant, readers and tokens. Every
// split decision depends on nothing else, so split pricing works on classes
// (sibling leaves usually form one) and writes the outcome back to the tasks.
struct TaskClass {
  int base_variant = 0;
  std::int32_t request_count = 0;
  std::int32_t tokens = 0;
  int tiles = 1;
  int count = 0;          // tasks in the class
  double whole_cost = 0;  // one item unsplit
  // The current candidate's outcome, as Task's fields.
  int variant = 0;
  int pieces = 1;
  double item_cost = 0;
};

// Consecutive tasks [begin, end) of one class.
struct ClassRun {
  int cls = 0;
  int begin = 0;
  int end = 0;
};

}  // namespace canopy::planning
