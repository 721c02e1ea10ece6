// SmSchedule against the definition: each run's items go to the lightest SMs
// by (load, index), whole rounds to all; every snapshot is the lightest-first
// order before its run.
#include "autotune/sm_schedule.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

namespace canopy {
namespace {

struct Naive {
  std::vector<double> load;
  std::vector<int> order() const {
    std::vector<int> o(load.size());
    std::iota(o.begin(), o.end(), 0);
    std::sort(o.begin(), o.end(),
              [&](int a, int b) { return load[a] != load[b] ? load[a] < load[b] : a < b; });
    return o;
  }
};

// Places `count` items of `cost` on both and checks the snapshot and loads.
void place_and_check(SmSchedule& s, Naive& naive, double cost, std::int64_t count) {
  const int sms = static_cast<int>(naive.load.size());
  const std::vector<int> before = naive.order();
  const std::int32_t id = s.place(cost, count);
  const std::int64_t rounds = count / sms;
  const int rest = static_cast<int>(count % sms);
  for (int k = 0; k < (rounds > 0 ? sms : rest); ++k) ASSERT_EQ(s.sm_order(id)[k], before[k]);
  for (double& l : naive.load) l += static_cast<double>(rounds) * cost;
  std::vector<int> after_rounds = naive.order();
  for (int k = 0; k < rest; ++k) naive.load[after_rounds[k]] += cost;
  for (int sm = 0; sm < sms; ++sm) ASSERT_EQ(s.load(sm), naive.load[sm]);
  ASSERT_EQ(s.max_load(), *std::max_element(naive.load.begin(), naive.load.end()));
}

TEST(SmSchedule, MatchesSortingEveryRun) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int sms = 1 + static_cast<int>(rng() % 40);
    SmSchedule s;
    s.reset(sms, true);
    Naive naive{std::vector<double>(sms, 0.0)};
    // Costs that repeat (runs of equal items) and ones that create rounding ties.
    const double costs[] = {3.0, 3.0, 1.0 / 3, 0.1, 0.2, 0.30000000000000004, 7.5, 1e-17};
    for (int run = 0; run < 30; ++run) {
      const double cost = costs[rng() % 8];
      const std::int64_t count = static_cast<std::int64_t>(rng() % (3 * sms));
      const std::vector<int> before = naive.order();
      const std::int32_t id = s.place(cost, count);
      const std::int64_t rounds = count / sms;
      const int rest = static_cast<int>(count % sms);
      for (int k = 0; k < (rounds > 0 ? sms : rest); ++k) {
        ASSERT_EQ(s.sm_order(id)[k], before[k]) << "trial " << trial << " run " << run;
      }
      for (double& l : naive.load) l += static_cast<double>(rounds) * cost;
      std::vector<int> after_rounds = naive.order();
      for (int k = 0; k < rest; ++k) naive.load[after_rounds[k]] += cost;
      for (int sm = 0; sm < sms; ++sm) ASSERT_EQ(s.load(sm), naive.load[sm]);
      ASSERT_EQ(s.max_load(), *std::max_element(naive.load.begin(), naive.load.end()));
    }
  }
}

// Irregular trees: a new cost with nearly every run, falling, mostly short
// runs, for many more runs than there are SMs (the window of kept SMs drifts
// and is compacted).
TEST(SmSchedule, MatchesSortingWithDistinctFallingCosts) {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 60; ++trial) {
    SCOPED_TRACE(trial);
    const int sms = 1 + static_cast<int>(rng() % 300);
    SmSchedule s;
    s.reset(sms, true);
    Naive naive{std::vector<double>(sms, 0.0)};
    double cost = 100;
    for (int run = 0; run < 400; ++run) {
      if (rng() % 5 != 0) cost *= 0.9 + 0.1 * static_cast<double>(rng() % 1000) / 1000;
      const std::int64_t count =
          rng() % 10 == 0 ? static_cast<std::int64_t>(rng() % (2 * sms)) : 1 + rng() % 16;
      place_and_check(s, naive, cost, count);
      if (HasFatalFailure()) return;
    }
  }
}

}  // namespace
}  // namespace canopy
