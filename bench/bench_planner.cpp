// Planning speed: block tables -> prefix tree -> plan, on one CPU core.
// Names encode the workload: BM_Plan/<workload>/batch:<B>/depth:<levels>
// (a fresh Plan each time), BM_PlanReuse/... (planning into one reused Plan),
// BM_Discover/... (tree discovery alone).
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include "canopy/planner.hpp"
#include "workload.hpp"

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
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
