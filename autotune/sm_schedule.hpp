// Step-level pricing: where the planner's items land on the SMs. A step's
// time is its busiest SM's load (CostModel::step_us adds the merge and the
// launches), so placement is part of the cost model.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace canopy {

// Predicted SM loads for longest-processing-time-first placement. A run of
// `count` equal items goes to the least-loaded SMs: whole rounds to every SM,
// the rest to the lightest ones.
//
// The SMs are ordered lightest first by (load, index), a total order, so the
// order is unique. It is kept lazily as two sorted queues: `kept`, SMs not
// grown since the item cost last changed, and `grown`, the SMs that got an
// item of the current cost, in the order they got it. Runs of equal items
// arrive lightest SMs first, so a grown SM is never lighter than one grown
// before it (up to ties that rounding creates, fixed on insertion): the
// lightest SM is at the front of one of the two queues, and placing `n`
// items costs O(n), not a search and a shift over every SM. A new cost, or
// whole rounds, merges the queues back into one: `kept` lives in a window of
// a buffer three times the SMs, and each grown SM is put in place by a binary
// search and a block move of the kept SMs heavier than it. Irregular trees
// change the cost with nearly every task of a few items; an element-wise
// merge over every SM there was most of planning. (A binary heap of SMs,
// tried for that case, measured 2.3x slower than these queues.)
class SmSchedule {
 public:
  // record: remember each run's SM order for sm_order (only the final
  // placement needs it; candidate placements only want the makespan).
  void reset(int sms, bool record) {
    sms_ = sms;
    kept_.resize(3 * static_cast<std::size_t>(sms));
    std::iota(kept_.begin(), kept_.begin() + sms, 0);
    kept_begin_ = 0;
    kept_end_ = sms;
    grown_.resize(2 * static_cast<std::size_t>(sms));
    grown_begin_ = grown_end_ = 0;
    load_.assign(sms, 0.0);
    snapshots_.clear();
    record_ = record;
  }
  // Places the run; item k of it runs on sm_order(run)[k % SMs].
  std::int32_t place(double cost, std::int64_t count) {
    const auto run = static_cast<std::int32_t>(snapshots_.size());
    // Most runs are shorter than a round: no division for them.
    const std::int64_t rounds = count < sms_ ? 0 : count / sms_;
    const int rest = static_cast<int>(count - rounds * sms_);
    if (rounds > 0 || (grown_end_ > grown_begin_ && cost != grown_cost_)) flush();
    if (rounds > 0) {
      if (record_) {
        snapshots_.insert(snapshots_.end(), kept_.begin() + kept_begin_, kept_.begin() + kept_end_);
      }
      add_to_all(rounds * cost);
    }
    if (rest > 0) add_to_lightest(rest, cost);
    return run;
  }
  const std::int32_t* sm_order(std::int32_t run) const { return snapshots_.data() + run; }
  double max_load() const {
    double heaviest = kept_begin_ < kept_end_ ? load_[kept_[kept_end_ - 1]] : 0.0;
    if (grown_end_ > grown_begin_) heaviest = std::max(heaviest, load_[grown_[grown_end_ - 1]]);
    return heaviest;
  }
  std::vector<float> per_sm() const { return {load_.begin(), load_.end()}; }
  void per_sm(std::vector<float>& out) const { out.assign(load_.begin(), load_.end()); }
  double load(int sm) const { return load_[sm]; }

 private:
  bool lighter(int a, int b) const { return load_[a] != load_[b] ? load_[a] < load_[b] : a < b; }

  // Merges the grown SMs back among the kept ones, from the back: kept_
  // [kept_begin_, kept_end_) then holds all SMs, sorted.
  void flush() {
    const int grown = grown_end_ - grown_begin_;
    if (grown > 0) {
      if (kept_end_ + grown > static_cast<int>(kept_.size())) {  // compact to the start
        std::copy(kept_.begin() + kept_begin_, kept_.begin() + kept_end_, kept_.begin());
        kept_end_ -= kept_begin_;
        kept_begin_ = 0;
      }
      // Heaviest grown SM first: the kept SMs heavier than it move up as one
      // block (each kept SM moves once, by the grown SMs still to place).
      int* const k = kept_.data();
      int i = kept_end_;  // kept_[kept_begin_, i) not yet moved
      int w = kept_end_ + grown;
      for (int j = grown_end_ - 1; j >= grown_begin_; --j) {
        const int sm = grown_[j];
        int lo = kept_begin_;
        int hi = i;
        while (lo < hi) {  // the first kept SM heavier than sm
          const int mid = (lo + hi) / 2;
          if (lighter(sm, k[mid])) {
            hi = mid;
          } else {
            lo = mid + 1;
          }
        }
        w -= i - lo;
        std::copy_backward(k + lo, k + i, k + w + (i - lo));
        k[--w] = sm;
        i = lo;
      }
      kept_end_ += grown;
    }
    grown_begin_ = grown_end_ = 0;
  }

  void add_to_all(double add) {
    for (double& l : load_) l += add;
    // Rounding can turn two different loads equal; restore the index order
    // of such ties (nearly sorted: insertion sort is linear).
    int* w = kept_.data() + kept_begin_;
    for (int i = 1; i < sms_; ++i) {
      const int sm = w[i];
      int j = i;
      for (; j > 0 && lighter(sm, w[j - 1]); --j) w[j] = w[j - 1];
      w[j] = sm;
    }
  }

  // The n (< SMs) lightest SMs each take one item: taken off the fronts of
  // the two queues, then appended to `grown` in the same order.
  void add_to_lightest(int n, double cost) {
    grown_cost_ = cost;
    taken_.resize(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      const bool from_grown =
          grown_begin_ < grown_end_ &&
          (kept_begin_ == kept_end_ || lighter(grown_[grown_begin_], kept_[kept_begin_]));
      taken_[i] = from_grown ? grown_[grown_begin_++] : kept_[kept_begin_++];
    }
    if (record_) snapshots_.insert(snapshots_.end(), taken_.begin(), taken_.end());
    if (grown_end_ + n > static_cast<int>(grown_.size())) {  // compact to the start
      std::copy(grown_.begin() + grown_begin_, grown_.begin() + grown_end_, grown_.begin());
      grown_end_ -= grown_begin_;
      grown_begin_ = 0;
    }
    for (int i = 0; i < n; ++i) {
      const int sm = taken_[i];
      load_[sm] += cost;
      // Loads taken in order grow in order; only a tie that rounding made
      // can put a higher index first.
      int j = grown_end_++;
      for (; j > grown_begin_ && lighter(sm, grown_[j - 1]); --j) grown_[j] = grown_[j - 1];
      grown_[j] = sm;
    }
  }

  int sms_ = 0;
  // kept_[kept_begin_ .. kept_end_): SMs not grown at grown_cost_, lightest first.
  std::vector<int> kept_;
  int kept_begin_ = 0;
  int kept_end_ = 0;
  std::vector<int> grown_;  // grown_[grown_begin_ .. grown_end_): grown SMs, lightest first
  int grown_begin_ = 0;
  int grown_end_ = 0;
  double grown_cost_ = 0;
  std::vector<double> load_;
  std::vector<std::int32_t> snapshots_;  // lightest-first order before each run
  std::vector<int> taken_;               // add_to_lightest's SMs
  bool record_ = false;
};

}  // namespace canopy
