// Planning speed: block tables -> prefix tree -> plan, on one CPU core.
// Names encode the workload: BM_Plan/<workload>/batch:<B>/depth:<levels>
// (a fresh Plan each time), BM_PlanReuse/... (planning into one reused Plan),
// BM_Discover/... (tree discovery alone), BM_Replan/... and
// BM_ReplanPatch/... (decode steps through IncrementalPlanner).
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "canopy/planner.hpp"
#include "canopy/replan.hpp"
#include "workloads/irregular.hpp"
#include "workloads/workload.hpp"

namespace {

using canopy::workload::Workload;

int levels(const Workload& w) {
  return static_cast<int>(canopy::workload::TreeShape::parse(w.tree).nodes_per_level.size());
}

// The irregular batches benchmarked (workloads/irregular.hpp): B = 150, 300
// and 1024, GQA groups 1-8, page sizes 1-256.
struct IrregularCase {
  int requests;
  std::uint64_t seed;
  int group;
  int page_size;
  bool agent;
};
constexpr IrregularCase kIrregular[] = {
    {150, 1, 5, 16, false},  {300, 2, 4, 16, false},  {300, 3, 7, 16, true},
    {300, 4, 1, 64, false},  {300, 5, 8, 256, false}, {300, 6, 2, 1, false},
    {1024, 7, 4, 16, false}, {1024, 8, 6, 32, false},
};

void register_workload(const Workload& w, int depth) {
  const std::string name =
      fmt::format("BM_Plan/{}/batch:{}/depth:{}", w.name, w.tables.batch_size(), depth);
  benchmark::RegisterBenchmark(name.c_str(), [w](benchmark::State& state) {
    for (auto _ : state) {
      canopy::Plan plan = canopy::make_plan(w.spec, w.tables);
      benchmark::DoNotOptimize(plan.items.data());
    }
    const canopy::Plan plan = canopy::make_plan(w.spec, w.tables);
    state.counters["items"] = static_cast<double>(plan.items.size());
    state.counters["pages"] = static_cast<double>(w.tables.indices.size());
    state.counters["predicted_us"] = plan.predicted_us;  // the plan's quality, before/after
  })->Unit(benchmark::kMicrosecond);
  // A serving engine plans every step into the same Plan: its memory is reused.
  const std::string reuse =
      fmt::format("BM_PlanReuse/{}/batch:{}/depth:{}", w.name, w.tables.batch_size(), depth);
  benchmark::RegisterBenchmark(reuse.c_str(), [w](benchmark::State& state) {
    canopy::Plan plan;
    for (auto _ : state) {
      canopy::make_plan(w.spec, w.tables, {}, plan);
      benchmark::DoNotOptimize(plan.items.data());
    }
  })->Unit(benchmark::kMicrosecond);
  const std::string discover =
      fmt::format("BM_Discover/{}/batch:{}", w.name, w.tables.batch_size());
  benchmark::RegisterBenchmark(discover.c_str(), [w](benchmark::State& state) {
    for (auto _ : state) {
      auto tree = canopy::discover_prefix_tree(w.tables, w.spec.page_size);
      benchmark::DoNotOptimize(tree.nodes.data());
    }
  })->Unit(benchmark::kMicrosecond);
}

// Decoding: `steps` consecutive tables of one workload, each request one
// token longer than in the step before.
std::shared_ptr<const std::vector<canopy::BlockTables>> decode_steps(const Workload& w, int steps) {
  auto out = std::make_shared<std::vector<canopy::BlockTables>>(1, w.tables);
  for (int i = 1; i < steps; ++i) {
    out->push_back(canopy::workload::decode_step(out->back(), w.spec.page_size));
  }
  return out;
}

// IncrementalPlanner over `steps` with the default ReplanOptions (a full plan
// every 16 steps or once a task grew 25%: the amortized cost per step), and
// (names[1]) the patch alone (full plans only when a patch is impossible).
// names[2] (when given): the default options with append-only tables
// (ReplanOptions::append_only_tables).
void register_steps(const Workload& w, const std::string& tree,
                    std::shared_ptr<const std::vector<canopy::BlockTables>> steps,
                    std::array<const char*, 3> names) {
  for (const int mode : {0, 1, 2}) {
    if (names[mode] == nullptr) continue;
    canopy::ReplanOptions replan;
    if (mode == 1) {
      replan.full_every = 1 << 30;
      replan.max_growth = 1e9;
    }
    replan.append_only_tables = mode == 2;
    const std::string name =
        fmt::format("{}/{}/batch:{}", names[mode], tree, w.tables.batch_size());
    benchmark::RegisterBenchmark(name.c_str(), [w, steps, replan](benchmark::State& state) {
      canopy::IncrementalPlanner planner(w.spec, {}, replan);
      planner.plan((*steps)[0]);
      std::size_t next = 1;
      // Per outcome: time and count of the steps (a patched step's cost
      // apart from the full plans that a patch-only run still makes).
      double patch_ns = 0, full_ns = 0;
      std::int64_t patches = 0, fulls = 0;
      for (auto _ : state) {
        if (next == steps->size()) {  // back to the first step: not a decode step
          state.PauseTiming();
          planner = canopy::IncrementalPlanner(w.spec, {}, replan);
          planner.plan((*steps)[0]);
          next = 1;
          state.ResumeTiming();
        }
        const auto start = std::chrono::steady_clock::now();
        const canopy::Plan& plan = planner.plan((*steps)[next++]);
        benchmark::DoNotOptimize(plan.items.data());
        const double ns =
            std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start)
                .count();
        if (planner.last_outcome() == canopy::ReplanOutcome::kFull) {
          full_ns += ns;
          ++fulls;
        } else {
          patch_ns += ns;
          ++patches;
        }
      }
      state.counters["full"] = static_cast<double>(planner.full_plans());
      state.counters["patched"] = static_cast<double>(planner.patched_plans());
      state.counters["patch_us"] = patches > 0 ? patch_ns / patches / 1000 : 0;
      state.counters["full_us"] = fulls > 0 ? full_ns / fulls / 1000 : 0;
      // Staleness: over one pass of the steps, each patched plan's predicted
      // step time against a fresh full plan's (max and mean, in percent).
      canopy::IncrementalPlanner check(w.spec, {}, replan);
      double worst = 0, sum = 0;
      int n = 0;
      for (const canopy::BlockTables& t : *steps) {
        const canopy::Plan& plan = check.plan(t);
        if (check.last_outcome() != canopy::ReplanOutcome::kPatched) continue;
        const double fresh = canopy::make_plan(w.spec, t).predicted_us;
        const double drift = 100 * std::abs(plan.predicted_us / fresh - 1);
        worst = std::max(worst, drift);
        sum += drift;
        ++n;
      }
      state.counters["drift_max_pct"] = worst;
      state.counters["drift_mean_pct"] = n > 0 ? sum / n : 0;
    })->Unit(benchmark::kMicrosecond);
  }
}

// BM_Replan/<tree> and BM_ReplanPatch/<tree>: one token per request and step.
void register_replan(const Workload& w, const std::string& tree) {
  register_steps(w, tree, decode_steps(w, 64), {"BM_Replan", "BM_ReplanPatch", nullptr});
}

// Decode steps of an irregular batch where, at random steps (one in four),
// up to two requests finish and up to two new ones join (a full plan: the
// batch changed), every other step one token per request.
std::shared_ptr<const std::vector<canopy::BlockTables>> churn_steps(const Workload& w, int steps,
                                                                    std::uint64_t seed) {
  auto out = std::make_shared<std::vector<canopy::BlockTables>>(1, w.tables);
  std::uint64_t x = seed;
  for (int i = 1; i < steps; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;  // LCG: the event draws
    const bool churn = (x >> 60) % 4 == 0;
    const int finish = churn ? static_cast<int>((x >> 50) % 3) : 0;
    const int join = churn ? static_cast<int>((x >> 40) % 3) : 0;
    out->push_back(canopy::workload::churn_step(out->back(), w.spec.page_size, x, finish, join));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  // The suite's trees, plus B = 1 and B = 64 / 256 / 1024 variants of a
  // 3-level tree (system prompt -> shared document -> per-request tail).
  for (const Workload& w : canopy::workload::load_suite()) register_workload(w, levels(w));
  for (const char* tree :
       {"1|4096", "1,4,64|2048,1024,256", "1,4,256|2048,1024,256", "1,4,1024|2048,1024,256"}) {
    Workload w = canopy::workload::workload_from_tree(tree);
    w.name = tree;
    register_workload(w, levels(w));
  }
  // ft-1-4-256's shape (8-token system prompt, 4 documents of 256 tokens, a
  // 32-token tail per request) at B = 1 .. 4096: full plans and decode steps.
  for (const char* tree : {"1,1,1|8,256,32", "1,4,64|8,256,32", "1,4,256|8,256,32",
                           "1,4,1024|8,256,32", "1,4,4096|8,256,32"}) {
    Workload w = canopy::workload::workload_from_tree(tree);
    w.name = tree;
    if (std::string(tree) != "1,4,256|8,256,32") register_workload(w, levels(w));  // in the suite
    register_replan(w, tree);
  }
  // Irregular batches (issue 17): every node a different length, several
  // roots, requests at inner nodes, GQA groups and page sizes as drawn here.
  for (const IrregularCase& c : kIrregular) {
    canopy::workload::IrregularOptions o;
    o.requests = c.requests;
    o.group = c.group;
    o.page_size = c.page_size;
    if (c.page_size == 1) {  // a page per token: shorter nodes keep the page ids realistic
      o.root_tokens_max /= 8;
      o.inner_tokens_max /= 8;
      o.leaf_tokens_max /= 8;
    }
    if (c.agent) {  // an agent trace: a few roots, shallow
      o.min_roots = o.max_roots = 4;
      o.min_depth = o.max_depth = 3;
    }
    Workload w = canopy::workload::irregular_workload(c.seed, o);
    w.name = fmt::format("{}-g{}-p{}", w.name, c.group, c.page_size);
    const int depth = canopy::workload::irregular_forest(c.seed, o).depth;
    register_workload(w, depth);
    register_steps(w, w.name, decode_steps(w, 64),
                   {"BM_Replan", "BM_ReplanPatch", "BM_ReplanAppendOnly"});
    register_steps(w, w.name, churn_steps(w, 64, c.seed),
                   {"BM_ReplanChurn", "BM_ReplanChurnPatch", nullptr});
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
