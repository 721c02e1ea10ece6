// A host application using Canopy through its CMake package or add_subdirectory
// (see CMakeLists.txt beside this file). The README's host-application snippet
// is the block between the "README" markers, checked by scripts/test_consumer.sh.
// Exits 1 if the planned CPU execution disagrees with the float64 reference.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <random>
#include <string>
#include <vector>

#include "canopy/cpu.hpp"
#include "canopy/error.hpp"
#include "canopy/planner.hpp"
#include "canopy/runtime.hpp"

namespace {

std::vector<double> random_values(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

int run() {
  // README begin
  canopy::AttentionSpec spec;  // fp16, NHD, page 16; small heads so the CPU check is quick
  spec.num_qo_heads = 4;
  spec.num_kv_heads = 2;
  spec.head_dim = 64;
  spec.with_lse = true;

  canopy::BlockTables tables;  // per request: page ids (CSR) and sequence length
  tables.indptr = {0, 3, 6, 9};
  tables.indices = {0, 1, 2, 0, 1, 3, 0, 1, 4};  // all three share pages 0 and 1
  tables.seq_lens = {40, 37, 45};
  tables.num_pages = 5;

  // Planning needs no GPU: tree discovery, kernel choice, split and merge schedule.
  const canopy::Plan plan = canopy::make_plan(spec, tables);
  std::printf("%s\n", canopy::plan_to_text(plan).c_str());

  // The CPU executor runs the plan in float64, exactly as the GPU would.
  const std::size_t rows = static_cast<std::size_t>(tables.batch_size()) * spec.num_qo_heads;
  const std::size_t kv_size = static_cast<std::size_t>(tables.num_pages) * spec.page_size *
                              spec.num_kv_heads * spec.head_dim;
  const std::vector<double> q = random_values(rows * spec.head_dim, 1);
  const std::vector<double> k = random_values(kv_size, 2);
  const std::vector<double> v = random_values(kv_size, 3);
  const canopy::HostTensors in{q.data(), k.data(), v.data(), tables.num_pages};
  std::vector<double> out(rows * spec.head_dim), lse(rows);
  std::vector<double> ref_out(out.size()), ref_lse(lse.size());
  canopy::execute_plan_cpu(plan, in, out.data(), lse.data());
  canopy::reference_attention(spec, tables, in, ref_out.data(), ref_lse.data());

  // On a GPU, Runtime::plan does the same planning, compiles and loads the
  // kernels and uploads the plan; Runtime::run then launches it per layer.
  std::string why;
  if (canopy::gpu_available(&why)) {
    canopy::Runtime runtime;
    const canopy::PreparedPlan prepared = runtime.plan(spec, tables);
    std::printf("GPU: %s (%s), plan prepared, workspace %lld bytes\n",
                runtime.device_name().c_str(), runtime.arch().to_string().c_str(),
                static_cast<long long>(prepared.workspace_bytes()));
    // for each layer: runtime.run(prepared, {q, k_cache, v_cache, out, lse}, stream);
  } else {
    std::printf("no GPU: %s\n", why.c_str());
  }
  // README end

  const double out_diff = max_abs_diff(out, ref_out);
  const double lse_diff = max_abs_diff(lse, ref_lse);
  const bool ok = out_diff < 1e-9 && lse_diff < 1e-9;
  std::printf("CPU executor vs float64 reference: max |out diff| %.3g, max |lse diff| %.3g: %s\n",
              out_diff, lse_diff, ok ? "match" : "MISMATCH");
  return ok ? 0 : 1;
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const canopy::Error& e) {
    std::fprintf(stderr, "canopy error (%s): %s\n", canopy::to_string(e.kind()), e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
  }
  return 2;
}
