// The walk: KV-guided grouping and the absorb (push-down) profit rule turn
// the tree into tasks, each on its cheapest variant (docs/planner.md, 2a-2b).
#include <algorithm>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "runtime/plan/planner_core.hpp"

namespace canopy::planning {

// Cheapest variant for `rows` query rows over `tokens` KV tokens, per KV head.
std::pair<int, double> Planner::best_variant(int rows, int tokens) {
  // Siblings ask for the same shape in a row: the last answer first.
  if (rows == last_best_rows_ && tokens == last_best_tokens_) return last_best_;
  last_best_rows_ = rows;
  last_best_tokens_ = tokens;
  last_best_ = best_variant_memo(rows, tokens);
  return last_best_;
}

std::pair<int, double> Planner::best_variant_memo(int rows, int tokens) {
  CostMemo::Entry& e = s_.memo.slot(-1, rows, tokens);
  if (s_.memo.holds(e, -1, rows, tokens)) return {e.best, e.us};
  if (lent_ != nullptr) {  // 2g's second pass: the first pass's answer for its first kernel
    const CostMemo::Entry& l = lent_->slot(-1, rows, tokens);
    if (lent_->holds(l, -1, rows, tokens) && l.prefix_best >= 0) {
      e = {s_.memo.pass(), -1, rows, tokens, l.prefix_best, l.prefix_us};
      return {e.best, e.us};
    }
  }
  // The model is asked directly: storing every variant's answer would evict
  // the answers asked again (the best variant's is kept, for tile_cost).
  int best = -1;
  double best_us = 0;
  int prefix_best = -1;
  double prefix_us = 0;
  double best_model_us = 0;
  for (int i = 0; i < static_cast<int>(variants_.size()); ++i) {
    const Variant& v = variants_[i];
    if (v.heads == 1 || rows <= v.row_tile) {  // a head pack is one row tile per head
      const double model_us_i = model_us(i, rows, tokens);
      const double us = pricer_.slot_us(model_us_i) / v.heads;
      if (best < 0 || us < best_us) {
        best = i;
        best_us = us;
        best_model_us = model_us_i;
      }
    }
    if (i + 1 == prefix_variants_) {
      prefix_best = best;
      prefix_us = best_us;
    }
  }
  e = {s_.memo.pass(), -1, rows, tokens, best, best_us, prefix_best, prefix_us};
  CostMemo::Entry& b = s_.memo.slot(best, rows, tokens);
  if (&b != &e) b = {s_.memo.pass(), best, rows, tokens, best, best_model_us};
  return {best, best_us};
}

void Planner::borrow_costs(const Planner& first) {
  if (first.prefix_variants_ != static_cast<int>(variants_.size()) ||
      first.pricer_.slots_per_sm() != pricer_.slots_per_sm() ||
      first.model_.coefficients() != model_.coefficients() || !(first.spec_ == spec_)) {
    return;
  }
  for (std::size_t i = 0; i < variants_.size(); ++i) {
    const Variant& a = variants_[i];
    const Variant& b = first.variants_[i];
    if (a.config != 0 || b.config != 0 || a.row_tile != b.row_tile || a.heads != b.heads) return;
  }
  if (configs_.front() != first.configs_.front() ||
      coefficients_.front() != first.coefficients_.front()) {
    return;
  }
  lent_ = &first.s_.memo;
}

// Lists every node's subtree requests as one contiguous range, so a standalone
// task takes its readers without walking or allocating.
void Planner::gather_requests(int node_id) {
  const PrefixTree::Node& node = tree_.nodes[node_id];
  s_.subtree_begin[node_id] = static_cast<std::int32_t>(s_.preorder_requests.size());
  const std::span<const int> requests = tree_.requests(node);
  s_.preorder_requests.insert(s_.preorder_requests.end(), requests.begin(), requests.end());
  for (int c : tree_.children(node)) gather_requests(c);
  s_.subtree_end[node_id] = static_cast<std::int32_t>(s_.preorder_requests.size());
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
    double standalone = cost(node.subtree_requests, seg_tokens) +
                        pricer_.added_partials_us(node.subtree_requests - own);
    double pushed = cost(own, seg_tokens);
    // Siblings usually look alike: the previous child's price is reused.
    int last_requests = -1;
    std::int32_t last_tokens = -1;
    double delta = 0;
    for (int c : tree_.children(node)) {
      const auto& child = tree_.nodes[c];
      if (child.subtree_requests != last_requests || child.num_tokens != last_tokens) {
        last_requests = child.subtree_requests;
        last_tokens = child.num_tokens;
        delta = cost(child.subtree_requests, seg_tokens + child.num_tokens) -
                cost(child.subtree_requests, child.num_tokens);
      }
      pushed += delta;
    }
    push_down = pushed < standalone;
  }
  if (!push_down) {
    const PlannerScratch& order = *order_;
    add_task(node_id, inh_begin, inh_pages, seg_tokens, path_offset,
             order.preorder_requests.data() + order.subtree_begin[node_id],
             order.subtree_end[node_id] - order.subtree_begin[node_id]);
    for (int c : tree_.children(node)) decide(c, 0, 0, 0, node.prefix_tokens + node.num_tokens);
    return;
  }
  if (node.request_count > 0) {
    add_task(node_id, inh_begin, inh_pages, seg_tokens, path_offset, tree_.requests(node).data(),
             node.request_count);
  }
  // The children inherit the whole segment: its page chain goes at the end of
  // the chain buffer while they are walked.
  std::vector<std::int32_t>& chain = s_.chain;
  const std::int32_t seg_begin = static_cast<std::int32_t>(chain.size());
  chain.resize(seg_begin + inh_pages);  // resize first: copying from itself
  std::copy_n(chain.data() + inh_begin, inh_pages, chain.data() + seg_begin);
  const std::span<const std::int32_t> own_pages = tree_.pages_of(node);
  chain.insert(chain.end(), own_pages.begin(), own_pages.end());
  const std::int32_t seg_pages = inh_pages + node.page_count;
  for (int c : tree_.children(node)) decide(c, seg_begin, seg_pages, seg_tokens, path_offset);
  chain.resize(seg_begin);
}

// A task over the inherited chain[inherited_begin ..] followed by the node's
// own pages, read by `readers` (ascending).
void Planner::add_task(int node_id, std::int32_t inh_begin, std::int32_t inh_pages,
                       std::int32_t tokens, std::int32_t path_offset, const int* readers,
                       std::int32_t reader_count) {
  const PrefixTree::Node& node = tree_.nodes[node_id];
  Task task;
  task.node = node_id;
  task.page_offset = s_.page_total;
  task.page_count = inh_pages + node.page_count;
  s_.page_total += task.page_count;
  // A segment of the node's own pages is copied when the plan is written
  // (a losing 2g pass never copies it); one with inherited pages is staged.
  if (inh_pages > 0) {
    task.staged = static_cast<std::int32_t>(s_.kv_pages.size());
    s_.kv_pages.insert(s_.kv_pages.end(), s_.chain.begin() + inh_begin,
                       s_.chain.begin() + inh_begin + inh_pages);
    const std::span<const std::int32_t> own_pages = tree_.pages_of(node);
    s_.kv_pages.insert(s_.kv_pages.end(), own_pages.begin(), own_pages.end());
  }
  task.tokens = tokens;
  task.path_offset = path_offset;
  task.request_begin = static_cast<std::int32_t>(s_.task_requests.size());
  task.request_count = reader_count;
  s_.task_requests.insert(s_.task_requests.end(), readers, readers + reader_count);
  // Preorder lists a subtree's requests ascending whenever requests were
  // numbered in tree order (tables built per branch); otherwise sort them.
  const auto first = s_.task_requests.begin() + task.request_begin;
  if (!std::is_sorted(first, s_.task_requests.end())) std::sort(first, s_.task_requests.end());
  task.variant = best_variant(task.request_count * group_, tokens).first;
  s_.tasks.push_back(task);
}

void Planner::make_tasks(const PlannerScratch* same_tree) {
  s_.tasks.clear();
  s_.task_requests.clear();
  s_.kv_pages.clear();
  s_.page_total = 0;
  s_.chain.clear();
  // The requests in preorder depend on the tree alone: a pass over the same
  // tree may lend its own.
  order_ = same_tree != nullptr ? same_tree : &s_;
  if (same_tree == nullptr) {
    s_.preorder_requests.clear();
    s_.subtree_begin.resize(tree_.nodes.size());
    s_.subtree_end.resize(tree_.nodes.size());
    for (int root : tree_.roots) gather_requests(root);
  }
  for (int root : tree_.roots) decide(root, 0, 0, 0, 0);
  make_classes();
}

int Planner::task_configs() const {
  std::vector<char>& used = s_.used_configs;
  used.assign(configs_.size(), 0);
  int count = 0;
  for (const Task& task : s_.tasks) {
    char& u = used[config_of(task)];
    count += u == 0;
    u = 1;
  }
  return count;
}

}  // namespace canopy::planning
