// Every kernel the planner can choose compiles with NVRTC for sm_80 and sm_90
// and exports its kernel name. docs/kernels.md lists the set and its timing.
// CANOPY_TEST_FULL_COMPILE=1 compiles the whole cross product (soft cap and
// mixed dtypes for every config) instead of the CI subset.
#include <gtest/gtest.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "canopy/kernel_spec.hpp"
#include "canopy/planner.hpp"
#include "generator/kernel_source.hpp"
#include "runtime/elf_symbols.hpp"
#include "runtime/nvrtc_compiler.hpp"

namespace canopy {
namespace {

/// CPU time of the calling thread: NVRTC compiles on it, so this is the
/// compile cost without the noise of other processes sharing the cores.
double thread_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) * 1e-6;
}

bool full_cross_product() {
  const char* v = std::getenv("CANOPY_TEST_FULL_COMPILE");
  return v != nullptr && std::string(v) == "1";
}

std::vector<KernelSpec> partial_specs(int arch) {
  std::vector<KernelSpec> specs;
  for (int head_dim : {64, 128, 256}) {
    for (DType dtype : {DType::kF16, DType::kBF16}) {
      for (KvLayout layout : {KvLayout::kNHD, KvLayout::kHND}) {
        AttentionSpec a;
        a.head_dim = head_dim;
        a.q_dtype = a.kv_dtype = a.o_dtype = dtype;
        a.kv_layout = layout;
        for (const KernelConfig& c : default_kernel_configs(a)) {
          specs.push_back(partial_kernel_spec(a, c, arch));
          if (full_cross_product()) {
            AttentionSpec capped = a;
            capped.logits_soft_cap = 30;
            specs.push_back(partial_kernel_spec(capped, c, arch));
          }
        }
      }
    }
  }
  // Variants on a subset: soft cap, mixed dtypes, the other pipeline depths and tiles.
  AttentionSpec a;
  a.logits_soft_cap = 50;
  specs.push_back(partial_kernel_spec(a, {16, 64, 4, 2}, arch));
  a.head_dim = 256;
  a.q_dtype = DType::kBF16;
  a.kv_layout = KvLayout::kHND;
  specs.push_back(partial_kernel_spec(a, {32, 32, 4, 2}, arch));
  AttentionSpec mixed;
  mixed.q_dtype = DType::kF16;
  mixed.kv_dtype = DType::kBF16;
  specs.push_back(partial_kernel_spec(mixed, {16, 64, 4, 1}, arch));
  specs.push_back(partial_kernel_spec(mixed, {64, 32, 4, 1}, arch));
  mixed.head_dim = 64;
  specs.push_back(partial_kernel_spec(mixed, {32, 64, 8, 3}, arch));
  return specs;
}

std::vector<KernelSpec> merge_specs(int arch) {
  std::vector<KernelSpec> specs;
  int n = 0;
  for (int fan_in : {0, 1, 2, 4, 8, 16}) {
    AttentionSpec a;
    a.with_lse = n++ % 2 == 1;
    specs.push_back(merge_kernel_spec(a, fan_in, arch));
  }
  for (DType o : {DType::kBF16, DType::kF32}) {
    for (int head_dim : {64, 256}) {
      AttentionSpec a;
      a.o_dtype = o;
      a.head_dim = head_dim;
      a.with_lse = head_dim == 64;
      specs.push_back(merge_kernel_spec(a, head_dim == 64 ? 0 : 8, arch));
    }
  }
  return specs;
}

/// Compiles `specs` on two threads (CI has two cores); checks each cubin.
void compile_all(const std::vector<KernelSpec>& specs, const char* label) {
  std::atomic<std::size_t> next{0};
  std::mutex mutex;
  std::vector<std::string> failures;
  std::vector<double> times;
  double cpu_ms = 0;
  const auto start = std::chrono::steady_clock::now();
  auto worker = [&] {
    for (std::size_t i; (i = next++) < specs.size();) {
      const KernelSpec& k = specs[i];
      try {
        const double cpu_start = thread_cpu_ms();
        const NvrtcResult r = nvrtc_compile(generator::generate_kernel_source(k), k.kernel_name(),
                                            k.to_string(), k.arch);
        const std::vector<std::string> names = elf_function_names(r.binary);
        const double cpu = thread_cpu_ms() - cpu_start;
        std::lock_guard lock(mutex);
        times.push_back(r.compile_ms);
        cpu_ms += cpu;
        if (std::find(names.begin(), names.end(), k.kernel_name()) == names.end()) {
          failures.push_back(k.to_string() + ": cubin does not export " + k.kernel_name());
        }
      } catch (const std::exception& e) {
        std::lock_guard lock(mutex);
        failures.push_back(k.to_string() + ": " + e.what());
      }
    }
  };
  std::thread a(worker), b(worker);
  a.join();
  b.join();
  const double wall_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (const std::string& f : failures) ADD_FAILURE() << f;
  std::sort(times.begin(), times.end());
  double sum = 0;
  for (double t : times) sum += t;
  if (!times.empty()) {
    std::printf(
        "[ compile  ] %s: %zu kernels in %.1f s on 2 threads; per kernel mean %.0f ms, "
        "median %.0f ms, max %.0f ms (wall); mean CPU %.0f ms\n",
        label, times.size(), wall_s, sum / static_cast<double>(times.size()),
        times[times.size() / 2], times.back(), cpu_ms / static_cast<double>(times.size()));
  }
}

class KernelCompile : public ::testing::TestWithParam<int> {};

TEST_P(KernelCompile, PartialAttentionKernels) {
  compile_all(partial_specs(GetParam()), ("partial sm_" + std::to_string(GetParam())).c_str());
}

TEST_P(KernelCompile, MergeKernels) {
  compile_all(merge_specs(GetParam()), ("merge sm_" + std::to_string(GetParam())).c_str());
}

INSTANTIATE_TEST_SUITE_P(Arch, KernelCompile, ::testing::Values(80, 90),
                         [](const auto& arch) { return "sm" + std::to_string(arch.param); });

}  // namespace
}  // namespace canopy
