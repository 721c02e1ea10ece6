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
// The SMs are kept sorted lightest first (load, then index) in a window that
// slides through a larger buffer: the `rest` lightest SMs are popped off the
// front and re-inserted from the back, where grown SMs usually belong (items
// come longest first, so loads stay within one item of each other). A run
// thus costs O(min(count, SMs)) searches over short distances, not O(SMs).
class SmSchedule {
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
  void per_sm(std::vector<float>& out) const { out.assign(load_.begin(), load_.end()); }
  double load(int sm) const { return load_[sm]; }

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
    int* const grown = window();  // stays put: insertions and merges write past it
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
    if (n > kInsertAtMost) {
      merge_back(grown, n, w, kept);
      return;
    }
    for (int i = 0, size = kept; i < n; ++i, ++size) {
      const int sm = grown[i];
      int* const at = std::partition_point(w, w + size, [&](int o) { return lighter(o, sm); });
      std::copy_backward(at, w + size, w + size + 1);
      *at = sm;
    }
  }

  // The grown SMs stay sorted among themselves (up to ties that rounding
  // creates), and the kept ones lighter than the lightest grown one stay in
  // front: one merge of the grown SMs with the rest of the kept ones,
  // O(n + moved), places them all. The order by (load, index) is total, so
  // the window is the one n separate insertions would give.
  void merge_back(int* grown, int n, int* w, int kept) {
    for (int i = 1; i < n; ++i) {  // restore ties' index order (nearly sorted)
      const int sm = grown[i];
      int j = i;
      for (; j > 0 && lighter(sm, grown[j - 1]); --j) grown[j] = grown[j - 1];
      grown[j] = sm;
    }
    const int first = grown[0];
    int* const from = std::partition_point(w, w + kept, [&](int o) { return lighter(o, first); });
    merged_.resize(static_cast<std::size_t>(sms_));
    int* const end = std::merge(grown, grown + n, from, w + kept, merged_.data(),
                                [this](int a, int b) { return lighter(a, b); });
    std::copy(merged_.data(), end, from);
  }

  static constexpr int kInsertAtMost = 2;  // fewer grown SMs are inserted one by one
  static constexpr int kSlide = 16;        // buffer size in windows: a slide back per 15 SMs' worth
  int sms_ = 0;
  std::vector<int> buffer_;  // window() = buffer_[head_ .. head_ + sms_): SMs, lightest first
  int head_ = 0;
  std::vector<double> load_;
  std::vector<std::int32_t> snapshots_;  // lightest-first order before each run
  std::vector<int> merged_;              // merge_back's output
  bool record_ = false;
};

}  // namespace canopy
