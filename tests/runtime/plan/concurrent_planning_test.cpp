// The host half of Runtime's thread safety (include/canopy/runtime.hpp):
// make_plan from several threads at once gives exactly the serial plans, and
// one CubinCache shared by threads compiles each kernel once. The device half
// (plan and run on separate streams with one Runtime) is GpuThreads in
// tests/runtime/device/gpu_reliability_test.cpp.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "canopy/planner.hpp"
#include "runtime/jit/cubin_cache.hpp"
#include "workloads/workload.hpp"

namespace canopy {
namespace {

TEST(ConcurrentPlanning, ThreadsGetTheSerialPlans) {
  std::vector<workload::Workload> inputs;
  for (const char* tree : {"1,8|512,64", "1,4,16|256,128,40", "64|300", "1,2,2,2|64,64,64,17"})
    inputs.push_back(workload::workload_from_tree(tree));
  PlannerOptions split;
  split.min_split_tokens = 16;
  std::vector<std::string> serial;
  for (const auto& w : inputs) {
    serial.push_back(plan_to_json(make_plan(w.spec, w.tables), -1));
    serial.push_back(plan_to_json(make_plan(w.spec, w.tables, split), -1));
  }
  constexpr int kThreads = 8, kRounds = 20;
  std::atomic<int> mismatches{0}, plans{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        const std::size_t i = static_cast<std::size_t>(t + r) % inputs.size();
        const auto& w = inputs[i];
        const bool with_split = (t + r) % 2 == 1;
        const Plan p =
            with_split ? make_plan(w.spec, w.tables, split) : make_plan(w.spec, w.tables);
        if (plan_to_json(p, -1) != serial[2 * i + (with_split ? 1 : 0)]) ++mismatches;
        ++plans;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(plans, kThreads * kRounds);
}

TEST(ConcurrentPlanning, OneCubinCacheServesManyThreads) {
  // Runtime::plan from several threads meets here: one cache, different and
  // equal kernels requested at once, each compiled once, one object per spec.
  AttentionSpec a;
  std::vector<KernelSpec> specs;
  for (int fan_in : {2, 3, 4, 5}) specs.push_back(merge_kernel_spec(a, fan_in, kSm90));
  CubinCache cache("off");
  constexpr int kThreads = 8;
  std::vector<std::map<std::string, const CompiledKernel*>> seen(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (std::size_t i = 0; i < specs.size(); ++i) {
        const KernelSpec& k = specs[(i + static_cast<std::size_t>(t)) % specs.size()];
        seen[static_cast<std::size_t>(t)][k.to_string()] = &cache.get(k);
      }
    });
  }
  for (auto& t : threads) t.join();
  // Distinct specs (fan-ins may share a kernel) compile once each.
  EXPECT_EQ(cache.stats().compiles, static_cast<int>(seen[0].size()));
  EXPECT_GE(seen[0].size(), 2u);
  for (int t = 1; t < kThreads; ++t) EXPECT_EQ(seen[static_cast<std::size_t>(t)], seen[0]);
}

}  // namespace
}  // namespace canopy
