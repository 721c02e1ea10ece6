// GPU reliability (docs/reliability.md), skipped visibly without a GPU:
//   GpuDeterminism  one plan run 100 times, and plans rebuilt from the same
//                   input, give bit-identical outputs;
//   GpuThreads      threads planning and running on their own streams with
//                   one Runtime;
//   GpuDecodeStress 10^4 decode steps with requests arriving, growing one
//                   token a step and finishing, checked against the float64
//                   reference every 100 steps, with host RSS and device
//                   memory reported at the start and the end.
// scripts/device_reliability.sh runs them (and the sanitizers) on the GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "canopy/planner.hpp"
#include "canopy/replan.hpp"
#include "tests/runtime/device/gpu_test_util.hpp"
#include "workloads/workload.hpp"

namespace canopy::test {
namespace {

bool same_bits(const HostResult& a, const HostResult& b) {
  return a.out.size() == b.out.size() && a.lse.size() == b.lse.size() &&
         std::memcmp(a.out.data(), b.out.data(), a.out.size() * sizeof(double)) == 0 &&
         std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(double)) == 0;
}

CUcontext device_ctx() { return driver::device_context(0).context; }

// A shared-prefix batch with splits and merges (so that merge order matters).
HostProblem determinism_problem() {
  workload::Workload w = workload::workload_from_tree("1,4,16|1024,256,40");
  w.spec.with_lse = true;
  return make_problem(w.spec, w.tables, 11);
}

TEST(GpuDeterminism, HundredRunsAndRebuiltPlansAreBitIdentical) {
  CANOPY_REQUIRE_GPU();
  Runtime& rt = shared_runtime();
  const HostProblem problem = determinism_problem();
  const AttentionSpec& spec = problem.spec;
  const DeviceProblem d = upload(problem);
  const HostResult ref = reference(problem, true);
  PlannerOptions split;  // many pieces: partial states merged in a fixed order
  split.min_split_tokens = 32;
  PlannerOptions fused = split;  // the merge fused into persistent launches (issue 14)
  fused.fuse_merge = true;
  fused.candidates = hopper_kernel_configs(spec);
  for (const PlannerOptions& options : {PlannerOptions{}, split, fused}) {
    PreparedPlan plan = rt.plan(spec, problem.tables, options);
    poison_outputs(d, spec);
    rt.run(plan, d.tensors(true));
    const HostResult first = download(d, problem, true);
    const Comparison cmp = compare(first, ref, spec);
    EXPECT_TRUE(cmp.ok()) << cmp.out_error << " " << cmp.lse_error << " " << cmp.non_finite;
    int differing = 0;
    for (int run = 1; run < 100; ++run) {
      poison_outputs(d, spec);
      rt.run(plan, d.tensors(true));
      differing += same_bits(download(d, problem, true), first) ? 0 : 1;
    }
    EXPECT_EQ(differing, 0) << "of 99 runs of one plan differ from the first";
    int rebuilt_differing = 0;
    for (int rebuild = 0; rebuild < 10; ++rebuild) {
      PreparedPlan again = rt.plan(spec, problem.tables, options);
      EXPECT_EQ(plan_to_json(again.plan(), -1), plan_to_json(plan.plan(), -1));
      poison_outputs(d, spec);
      rt.run(again, d.tensors(true));
      rebuilt_differing += same_bits(download(d, problem, true), first) ? 0 : 1;
    }
    EXPECT_EQ(rebuilt_differing, 0) << "of 10 rebuilt plans differ from the first";
    std::printf("[ determin ] %s: %zu items, 100 runs + 10 rebuilt plans, %d differing\n",
                options.fuse_merge                                   ? "fused"
                : options.min_split_tokens == split.min_split_tokens ? "split"
                                                                     : "default",
                plan.plan().items.size(), differing + rebuilt_differing);
  }
}

// Threads sharing one Runtime, each with its own stream, batch and buffers.
TEST(GpuThreads, PlanAndRunOnSeparateStreams) {
  CANOPY_REQUIRE_GPU();
  Runtime& rt = shared_runtime();
  const char* trees[] = {"1,8|512,64", "1,4,16|256,128,40", "32|300", "1,2,2,2|64,64,64,17"};
  constexpr int kThreads = 4, kRounds = 25;
  std::vector<HostProblem> problems;
  std::vector<HostResult> refs;
  std::vector<DeviceProblem> devices;
  for (int t = 0; t < kThreads; ++t) {
    workload::Workload w = workload::workload_from_tree(trees[t]);
    w.spec.with_lse = true;
    problems.push_back(make_problem(w.spec, w.tables, 20 + static_cast<std::uint64_t>(t)));
    refs.push_back(reference(problems.back(), true));
    devices.push_back(upload(problems.back()));
  }
  std::vector<int> failures(kThreads, 0);
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const auto i = static_cast<std::size_t>(t);
      try {
        driver::ScopedContext scope(device_ctx());
        const driver::Api& a = driver::api();
        CUstream stream = nullptr;
        driver::check(a.stream_create(&stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
        for (int r = 0; r < kRounds; ++r) {
          // Plans made and dropped concurrently: kernels loaded, metadata uploaded.
          PreparedPlan plan = rt.plan(problems[i].spec, problems[i].tables);
          rt.run(plan, devices[i].tensors(true), stream);
          driver::check(a.stream_synchronize(stream), "cuStreamSynchronize");
          failures[i] +=
              compare(download(devices[i], problems[i], true), refs[i], problems[i].spec).ok() ? 0
                                                                                               : 1;
        }
        a.stream_destroy(stream);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(errors[static_cast<std::size_t>(t)], "") << "thread " << t;
    EXPECT_EQ(failures[static_cast<std::size_t>(t)], 0) << "thread " << t << ": wrong results";
  }
  std::printf("[ threads  ] %d threads x %d plan+run rounds on their own streams\n", kThreads,
              kRounds);
}

// ---- decode-loop stress -----------------------------------------------------

std::int64_t host_rss_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  return -1;
}

std::size_t device_used_bytes() {
  driver::ScopedContext scope(device_ctx());
  std::size_t free = 0, total = 0;
  driver::check(driver::api().mem_get_info(&free, &total), "cuMemGetInfo");
  return total - free;
}

// Serving-like batches over one pool of KV pages: requests arrive with a
// prompt behind one of two shared system prompts (or none), grow by one token
// a step and finish after a random number of steps; pages are taken from and
// returned to a free list as in a paged KV cache.
class DecodeBatch {
 public:
  DecodeBatch(int page_size, int pool_pages, std::uint64_t seed)
      : page_size_(page_size), rng_(seed) {
    for (int p = pool_pages - 1; p >= 0; --p) free_.push_back(p);
    for (auto& prefix : prefixes_) prefix = take(128 / page_size_);  // 128 shared tokens each
  }

  // One step: finish, grow, arrive. Returns false when the pool ran dry.
  bool step() {
    for (std::size_t i = 0; i < requests_.size();) {
      Request& r = requests_[i];
      if (--r.steps_left <= 0) {
        free_.insert(free_.end(), r.own.begin(), r.own.end());
        requests_[i] = requests_.back();
        requests_.pop_back();
        continue;
      }
      if (!grow(r, 1)) return false;
      ++i;
    }
    const int arrivals = static_cast<int>(rng_() % 3);  // 0..2 a step: about 45 live
    for (int a = 0; a < arrivals && requests_.size() < 48; ++a) {
      Request r;
      r.prefix = static_cast<int>(rng_() % 3) - 1;  // -1: no shared prefix
      r.steps_left = 20 + static_cast<int>(rng_() % 60);
      if (!grow(r, 1 + static_cast<int>(rng_() % 200))) return false;
      requests_.push_back(std::move(r));
    }
    return true;
  }

  BlockTables tables(std::int64_t num_pages) const {
    BlockTables t;
    t.num_pages = num_pages;
    t.indptr.push_back(0);
    for (const Request& r : requests_) {
      if (r.prefix >= 0) {
        const auto& p = prefixes_[static_cast<std::size_t>(r.prefix)];
        t.indices.insert(t.indices.end(), p.begin(), p.end());
      }
      t.indices.insert(t.indices.end(), r.own.begin(), r.own.end());
      t.indptr.push_back(static_cast<std::int32_t>(t.indices.size()));
      t.seq_lens.push_back((r.prefix >= 0 ? 128 : 0) + r.own_tokens);
    }
    return t;
  }
  int size() const { return static_cast<int>(requests_.size()); }

 private:
  struct Request {
    int prefix = -1;
    std::vector<std::int32_t> own;  // pages after the shared prefix
    int own_tokens = 0;
    int steps_left = 0;
  };
  std::vector<std::int32_t> take(int n) {
    std::vector<std::int32_t> pages;
    for (int i = 0; i < n && !free_.empty(); ++i) {
      pages.push_back(free_.back());
      free_.pop_back();
    }
    return pages;
  }
  bool grow(Request& r, int tokens) {
    r.own_tokens += tokens;
    const int needed = (r.own_tokens + page_size_ - 1) / page_size_;
    while (static_cast<int>(r.own.size()) < needed) {
      if (free_.empty()) return false;
      r.own.push_back(free_.back());
      free_.pop_back();
    }
    return true;
  }

  int page_size_;
  std::mt19937_64 rng_;
  std::vector<std::int32_t> free_;
  std::vector<std::int32_t> prefixes_[2];
  std::vector<Request> requests_;
};

// The host half of the stress, without a GPU: the batches stay valid and
// every plan covers them (the CPU executor checks every 500th step).
TEST(DecodeStressHost, PlansCoverEveryStep) {
  AttentionSpec spec;
  spec.num_qo_heads = 8;
  spec.num_kv_heads = 2;
  spec.head_dim = 128;
  spec.page_size = 16;
  DecodeBatch batch(spec.page_size, 2048, 99);
  IncrementalPlanner planner(spec);  // patches steps without arrivals or departures
  int planned = 0, max_batch = 0;
  for (int step = 0; step < 2000; ++step) {
    ASSERT_TRUE(batch.step()) << "the page pool ran dry at step " << step;
    if (batch.size() == 0) continue;
    const BlockTables tables = batch.tables(2048);
    max_batch = std::max(max_batch, tables.batch_size());
    const Plan& plan = planner.plan(tables);
    ++planned;
    if (step % 100 == 99) {
      ASSERT_NO_THROW(check_plan_coverage(plan, tables)) << "step " << step;
    }
    if (step % 500 == 499) {
      const HostProblem p = make_problem(spec, tables, 5);
      const HostResult got = run_plan_cpu(plan, p);
      EXPECT_LT(relative_l2(got.out, run_reference(p, false).out), 1e-9) << "step " << step;
    }
  }
  EXPECT_GT(planned, 1900);
  EXPECT_GE(max_batch, 30);
  EXPECT_GT(planner.patched_plans(), 0) << "no step was planned incrementally";
  std::printf(
      "[ stress   ] host: 2000 steps, %d planned (%lld patched, %lld full), up to %d requests\n",
      planned, static_cast<long long>(planner.patched_plans()),
      static_cast<long long>(planner.full_plans()), max_batch);
}

TEST(GpuDecodeStress, TenThousandChangingSteps) {
  CANOPY_REQUIRE_GPU();
  const char* env = std::getenv("CANOPY_STRESS_STEPS");
  const int steps = env != nullptr ? std::atoi(env) : 10000;
  Runtime& rt = shared_runtime();
  AttentionSpec spec;
  spec.num_qo_heads = 8;
  spec.num_kv_heads = 2;
  spec.head_dim = 128;
  spec.page_size = 16;
  spec.with_lse = true;
  constexpr int kPool = 2048, kMaxBatch = 64;
  // The whole pool's K/V (make_problem's K/V depend on num_pages and the seed
  // only), uploaded once; q and the outputs sized for the largest batch.
  BlockTables pool;
  pool.num_pages = kPool;
  pool.indptr.assign(kMaxBatch + 1, 0);
  pool.seq_lens.assign(kMaxBatch, 1);
  const HostProblem full = make_problem(spec, pool, 5);
  DeviceProblem d = upload(full);

  DecodeBatch batch(spec.page_size, kPool, 99);
  PlannerOptions options;
  options.cost_model = rt.cost_model();  // what Runtime::plan plans with
  IncrementalPlanner planner(spec, options);
  int checks = 0, failures = 0, empty_steps = 0;
  double worst = 0;
  std::int64_t rss_start = 0, items = 0;
  std::size_t device_start = 0;
  for (int step = 0; step < steps; ++step) {
    ASSERT_TRUE(batch.step()) << "the page pool ran dry at step " << step;
    if (step == 100) {  // after warm-up: kernels loaded, allocator settled
      rss_start = host_rss_kib();
      device_start = device_used_bytes();
    }
    if (batch.size() == 0) {
      ++empty_steps;
      continue;
    }
    // Planned incrementally: steps without arrivals or departures patch the
    // last plan, the others plan from scratch (IncrementalPlanner).
    const BlockTables tables = batch.tables(kPool);
    PreparedPlan plan = rt.prepare(planner.plan(tables));
    items += static_cast<std::int64_t>(plan.plan().items.size());
    const bool check = step % 100 == 99;
    HostProblem problem;
    if (check) {
      problem = make_problem(spec, tables, 5);  // same K/V as the pool, this step's q
      const std::vector<std::uint8_t> q = workload::encode(problem.q, spec.q_dtype);
      d.q.upload(q.data(), q.size());
      poison_outputs(d, spec);
    }
    rt.run(plan, d.tensors(true));
    if (check) {
      HostResult got = download(d, full, true);
      got.out.resize(static_cast<std::size_t>(problem.out_elems()));
      got.lse.resize(static_cast<std::size_t>(problem.lse_elems()));
      const Comparison cmp = compare(got, reference(problem, true), spec);
      ++checks;
      worst = std::max({worst, cmp.out_error, cmp.lse_error});
      if (!cmp.ok()) {
        ++failures;
        ADD_FAILURE() << "step " << step << " (" << tables.batch_size() << " requests): out rel-L2 "
                      << cmp.out_error << ", lse " << cmp.lse_error << ", non-finite "
                      << cmp.non_finite;
      }
    } else {
      driver::ScopedContext scope(device_ctx());
      driver::check(driver::api().ctx_synchronize(), "cuCtxSynchronize");
    }
  }
  const std::int64_t rss_end = host_rss_kib();
  const std::size_t device_end = device_used_bytes();
  const double device_growth_mib = (static_cast<double>(device_end) - device_start) / (1 << 20);
  const double rss_growth_mib = static_cast<double>(rss_end - rss_start) / 1024;
  std::printf(
      "[ stress   ] %d steps (%d empty; %lld plans patched, %lld full), %lld items, %d reference "
      "checks, worst rel-L2 %.2e; host RSS %.1f -> %.1f MiB (%+.1f), device used %.1f -> %.1f "
      "MiB (%+.1f)\n",
      steps, empty_steps, static_cast<long long>(planner.patched_plans()),
      static_cast<long long>(planner.full_plans()), static_cast<long long>(items), checks, worst,
      rss_start / 1024.0, rss_end / 1024.0, rss_growth_mib, device_start / 1048576.0,
      device_end / 1048576.0, device_growth_mib);
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(checks, steps / 100);
  // Per-step plans are freed with their PreparedPlan: nothing may pile up.
  EXPECT_LE(device_growth_mib, 8.0) << "device memory grew";
  EXPECT_LE(rss_growth_mib, 32.0) << "host memory grew";
}

}  // namespace
}  // namespace canopy::test
