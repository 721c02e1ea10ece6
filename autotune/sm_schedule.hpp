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
// merge over every SM there was most of planning.
//
// When the caller expects short runs at ever new costs (`short_runs`), the
// SMs are a binary heap by (load, index) instead: O(log SMs) per item, no
// merge per run. Both give the same placement, the definition's.
class SmSchedule {
 public:
  // record: remember each run's SM order for sm_order (only the final
  // placement needs it; candidate placements only want the makespan).
  void reset(int sms, bool record, bool short_runs = false) {
    sms_ = sms;
    heap_mode_ = short_runs;
    heaviest_ = 0;
    if (heap_mode_) {
      heap_.resize(static_cast<std::size_t>(sms));
      for (int i = 0; i < sms; ++i) heap_[i] = {0.0, i};  // sorted: already a heap
    }
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
    if (heap_mode_) {
      heap_place(cost, rounds, rest);
      return run;
    }
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
    if (heap_mode_) return heaviest_;
    double heaviest = kept_begin_ < kept_end_ ? load_[kept_[kept_end_ - 1]] : 0.0;
    if (grown_end_ > grown_begin_) heaviest = std::max(heaviest, load_[grown_[grown_end_ - 1]]);
    return heaviest;
  }
  std::vector<float> per_sm() const { return {load_.begin(), load_.end()}; }
  void per_sm(std::vector<float>& out) const { out.assign(load_.begin(), load_.end()); }
  double load(int sm) const { return load_[sm]; }

 private:
  bool lighter(int a, int b) const { return load_[a] != load_[b] ? load_[a] < load_[b] : a < b; }

  struct Slot {
    double load;
    int sm;
  };
  static bool lighter_slot(const Slot& a, const Slot& b) {
    return a.load != b.load ? a.load < b.load : a.sm < b.sm;
  }
  // The heap heap_[0, n), lightest on top (hand-written: std::pop_heap
  // through a comparator costs several times more here).
  void sift_down(int n, int i) {
    Slot* const h = heap_.data();
    const Slot x = h[i];
    for (int c = 2 * i + 1; c < n; c = 2 * i + 1) {
      if (c + 1 < n && lighter_slot(h[c + 1], h[c])) ++c;
      if (!lighter_slot(h[c], x)) break;
      h[i] = h[c];
      i = c;
    }
    h[i] = x;
  }
  void sift_up(int i) {
    Slot* const h = heap_.data();
    const Slot x = h[i];
    while (i > 0) {
      const int p = (i - 1) / 2;
      if (!lighter_slot(x, h[p])) break;
      h[i] = h[p];
      i = p;
    }
    h[i] = x;
  }

  void heap_place(double cost, std::int64_t rounds, int rest) {
    if (rounds > 0) {
      if (record_) {
        sorted_ = heap_;
        std::sort(sorted_.begin(), sorted_.end(), lighter_slot);
        for (const Slot& slot : sorted_) snapshots_.push_back(slot.sm);
      }
      const double add = static_cast<double>(rounds) * cost;
      for (Slot& slot : heap_) load_[slot.sm] = slot.load += add;
      heaviest_ += add;  // rounding is monotonic: the heaviest stays heaviest
      for (int i = sms_ / 2 - 1; i >= 0; --i) sift_down(sms_, i);  // rounding may make ties
    }
    // The `rest` lightest, popped to the back in order (the first last), each
    // then one item heavier and back in the heap.
    Slot* const h = heap_.data();
    const int first = sms_ - rest;
    for (int n = sms_; n > first; --n) {
      const Slot top = h[0];
      h[0] = h[n - 1];
      sift_down(n - 1, 0);
      h[n - 1] = top;
    }
    if (record_) {
      for (int i = sms_ - 1; i >= first; --i) snapshots_.push_back(h[i].sm);
    }
    for (int i = first; i < sms_; ++i) {
      Slot& slot = h[i];
      load_[slot.sm] = slot.load += cost;
      heaviest_ = std::max(heaviest_, slot.load);
      sift_up(i);
    }
  }

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
  bool heap_mode_ = false;
  std::vector<Slot> heap_;  // heap mode: the SMs, lightest on top
  std::vector<Slot> sorted_;
  double heaviest_ = 0;  // heap mode: the most loaded SM's load
};

}  // namespace canopy
