// Planning speed: block tables -> prefix tree -> plan, on one CPU core.
// Names encode the workload: BM_Plan/<workload>/batch:<B>/depth:<levels>
// (a fresh Plan each time), BM_PlanReuse/... (planning into one reused Plan),
// BM_Discover/... (tree discovery alone), BM_Replan/... and
// BM_ReplanPatch/... (decode steps through IncrementalPlanner).
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <memory>
#include <string>
#include <vector>

#include "canopy/planner.hpp"
#include "canopy/replan.hpp"
#include "workloads/workload.hpp"

namespace {

using canopy::workload::Workload;

void register_workload(const Workload& w) {
  const auto shape = canopy::workload::TreeShape::parse(w.tree);
  const std::string name = fmt::format("BM_Plan/{}/batch:{}/depth:{}", w.name,
                                       w.tables.batch_size(), shape.nodes_per_level.size());
  benchmark::RegisterBenchmark(name.c_str(), [w](benchmark::State& state) {
    for (auto _ : state) {
      canopy::Plan plan = canopy::make_plan(w.spec, w.tables);
      benchmark::DoNotOptimize(plan.items.data());
    }
    const canopy::Plan plan = canopy::make_plan(w.spec, w.tables);
    state.counters["items"] = static_cast<double>(plan.items.size());
    state.counters["pages"] = static_cast<double>(w.tables.indices.size());
  })->Unit(benchmark::kMicrosecond);
  // A serving engine plans every step into the same Plan: its memory is reused.
  const std::string reuse = fmt::format("BM_PlanReuse/{}/batch:{}/depth:{}", w.name,
                                        w.tables.batch_size(), shape.nodes_per_level.size());
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
std::vector<canopy::BlockTables> decode_steps(const Workload& w, int steps) {
  std::vector<canopy::BlockTables> out{w.tables};
  for (int i = 1; i < steps; ++i) {
    out.push_back(canopy::workload::decode_step(out.back(), w.spec.page_size));
  }
  return out;
}

// BM_Replan/<tree>: IncrementalPlanner over decode steps with the default
// ReplanOptions (a full plan every 16 steps or once a task grew 25%: the
// amortized cost per step). BM_ReplanPatch/<tree>: the patch alone (full
// plans only when a patch is impossible).
void register_replan(const Workload& w, const std::string& tree) {
  constexpr int kSteps = 64;
  const auto steps = std::make_shared<std::vector<canopy::BlockTables>>(decode_steps(w, kSteps));
  for (const bool patch_only : {false, true}) {
    canopy::ReplanOptions replan;
    if (patch_only) {
      replan.full_every = 1 << 30;
      replan.max_growth = 1e9;
    }
    const std::string name = fmt::format(
        "{}/{}/batch:{}", patch_only ? "BM_ReplanPatch" : "BM_Replan", tree, w.tables.batch_size());
    benchmark::RegisterBenchmark(name.c_str(), [w, steps, replan](benchmark::State& state) {
      canopy::IncrementalPlanner planner(w.spec, {}, replan);
      planner.plan((*steps)[0]);
      std::size_t next = 1;
      for (auto _ : state) {
        if (next == steps->size()) {  // back to the first step: not a decode step
          state.PauseTiming();
          planner = canopy::IncrementalPlanner(w.spec, {}, replan);
          planner.plan((*steps)[0]);
          next = 1;
          state.ResumeTiming();
        }
        const canopy::Plan& plan = planner.plan((*steps)[next++]);
        benchmark::DoNotOptimize(plan.items.data());
      }
      state.counters["full"] = static_cast<double>(planner.full_plans());
      state.counters["patched"] = static_cast<double>(planner.patched_plans());
    })->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // The suite's trees, plus B = 1 and B = 64 / 256 / 1024 variants of a
  // 3-level tree (system prompt -> shared document -> per-request tail).
  for (const Workload& w : canopy::workload::load_suite()) register_workload(w);
  for (const char* tree :
       {"1|4096", "1,4,64|2048,1024,256", "1,4,256|2048,1024,256", "1,4,1024|2048,1024,256"}) {
    Workload w = canopy::workload::workload_from_tree(tree);
    w.name = tree;
    register_workload(w);
  }
  // ft-1-4-256's shape (8-token system prompt, 4 documents of 256 tokens, a
  // 32-token tail per request) at B = 1 .. 4096: full plans and decode steps.
  for (const char* tree : {"1,1,1|8,256,32", "1,4,64|8,256,32", "1,4,256|8,256,32",
                           "1,4,1024|8,256,32", "1,4,4096|8,256,32"}) {
    Workload w = canopy::workload::workload_from_tree(tree);
    w.name = tree;
    if (std::string(tree) != "1,4,256|8,256,32") register_workload(w);  // in the suite
    register_replan(w, tree);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
