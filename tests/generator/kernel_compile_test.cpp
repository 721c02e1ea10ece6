// Every kernel the planner can choose compiles with NVRTC for sm_80 and sm_90
// devices (the persistent forms for a sample of specs) (each family's kernel_arch there: sm_90a for
// an arch-specific one), exports its kernel name, keeps to the registers its family's
// __launch_bounds__ allow (so the planner's block slots hold) and spills
// nothing. docs/kernels.md lists the set and its timing.
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
#include "families/kernel_families.hpp"
#include "families/occupancy.hpp"
#include "generator/kernel_source.hpp"
#include "runtime/jit/cubin_resources.hpp"
#include "runtime/jit/elf_reader.hpp"
#include "runtime/jit/nvrtc_compiler.hpp"

namespace canopy {

void PrintTo(const Arch& arch, std::ostream* os) { *os << arch.to_string(); }

namespace {

/// CPU time of the calling thread: NVRTC compiles on it, so this is the
/// compile cost without the noise of other processes sharing the cores.
double thread_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) * 1e-6;
}

/// Every partial-attention kernel shipped for a device of `arch`: head dim x q dtype x KV
/// dtype x layout x soft cap x every shipped config of every family (the
/// registry's rows) that the arch can implement.
/// (partial_kernel_spec normalises o dtype and lse away: the kernel writes
/// float32 partial states, and direct rows in the run-time output dtype.)
std::vector<KernelSpec> partial_specs(Arch arch) {
  std::vector<KernelSpec> specs;
  for (int head_dim : {64, 128, 256}) {
    for (DType q : {DType::kF16, DType::kBF16}) {
      for (DType kv : {DType::kF16, DType::kBF16}) {
        for (KvLayout layout : {KvLayout::kNHD, KvLayout::kHND}) {
          for (double soft_cap : {0.0, 30.0}) {
            AttentionSpec a;
            a.head_dim = head_dim;
            a.q_dtype = q;
            a.kv_dtype = kv;
            a.kv_layout = layout;
            a.logits_soft_cap = soft_cap;
            for (const KernelConfig& c : shipped_kernel_configs(a)) {
              // k.arch = families::kernel_arch(c.family, arch): the target it compiles for.
              const KernelSpec k = partial_kernel_spec(a, c, arch);
              if (families::can_implement(k).ok()) specs.push_back(k);
            }
          }
        }
      }
    }
  }
  return specs;
}

/// The persistent form (KernelSpec::persistent: the item queue and the fused
/// merge) of every shipped config of the families that have one, per head
/// dim, at fp16 NHD and at bf16 HND with a soft cap: plans with fuse_merge
/// launch them. The other dtype and layout mixes change the same code paths
/// as in the plain forms above, which compile them all.
std::vector<KernelSpec> persistent_specs(Arch arch) {
  std::vector<KernelSpec> specs;
  for (int head_dim : {64, 128, 256}) {
    for (bool mixed : {false, true}) {
      AttentionSpec a;
      a.head_dim = head_dim;
      a.q_dtype = a.kv_dtype = mixed ? DType::kBF16 : DType::kF16;
      a.kv_layout = mixed ? KvLayout::kHND : KvLayout::kNHD;
      a.logits_soft_cap = mixed ? 30.0 : 0.0;
      for (const KernelConfig& c : shipped_kernel_configs(a)) {
        if (!families::family_info(c.family).fused_merge) continue;
        const KernelSpec k = partial_kernel_spec(a, c, arch, /*persistent=*/true);
        if (families::can_implement(k).ok()) specs.push_back(k);
      }
    }
  }
  return specs;
}

/// Every merge kernel: head dim x output dtype x lse x fan-in (the planner's
/// max fan-in rounds up to 1, 2, 4, 8, 16, or 0 = the general loop).
std::vector<KernelSpec> merge_specs(Arch arch) {
  std::vector<KernelSpec> specs;
  for (int head_dim : {64, 128, 256}) {
    for (DType o : {DType::kF16, DType::kBF16, DType::kF32}) {
      for (bool lse : {false, true}) {
        for (int fan_in : {0, 1, 2, 4, 8, 16}) {
          AttentionSpec a;
          a.head_dim = head_dim;
          a.o_dtype = o;
          a.with_lse = lse;
          specs.push_back(merge_kernel_spec(a, fan_in, arch));
        }
      }
    }
  }
  return specs;
}

/// "" when the compiled kernel reaches the occupancy the registry plans by
/// registers (its family's __launch_bounds__ held) without spilling;
/// otherwise what is wrong (tests/families/family_registers_test.cpp says why).
std::string resource_problem(const KernelSpec& k, const std::vector<char>& cubin) {
  for (const KernelResources& r : cubin_resources(cubin)) {
    if (r.name != k.kernel_name()) continue;
    const int threads = families::kernel_threads(k);
    const families::Occupancy real =
        families::occupancy(k.arch, threads, r.registers, families::kernel_smem_bytes(k),
                            static_cast<std::int64_t>(r.static_smem));
    const families::Occupancy planned = families::occupancy(k, k.arch);
    if (r.registers <= 0 || real.by_registers < planned.by_registers) {
      return "uses " + std::to_string(r.registers) +
             " registers: " + std::to_string(real.by_registers) +
             " blocks per SM by registers, the registry plans " +
             std::to_string(planned.by_registers);
    }
    if (r.frame_bytes != 0) {
      return "has a " + std::to_string(r.frame_bytes) +
             "-byte stack frame (spills or local arrays)";
    }
    return "";
  }
  return "cubin has no resources for " + k.kernel_name();
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
        const std::string problem = resource_problem(k, r.binary);
        std::lock_guard lock(mutex);
        times.push_back(r.compile_ms);
        cpu_ms += cpu;
        if (std::find(names.begin(), names.end(), k.kernel_name()) == names.end()) {
          failures.push_back(k.to_string() + ": cubin does not export " + k.kernel_name());
        }
        if (!problem.empty()) failures.push_back(k.to_string() + ": " + problem);
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

class KernelCompile : public ::testing::TestWithParam<Arch> {};

TEST_P(KernelCompile, PartialAttentionKernels) {
  compile_all(partial_specs(GetParam()), ("partial " + GetParam().to_string()).c_str());
}

TEST_P(KernelCompile, PersistentKernels) {
  const std::vector<KernelSpec> specs = persistent_specs(GetParam());
  ASSERT_FALSE(specs.empty());
  compile_all(specs, ("persistent " + GetParam().to_string()).c_str());
}

TEST_P(KernelCompile, MergeKernels) {
  compile_all(merge_specs(GetParam()), ("merge " + GetParam().to_string()).c_str());
}

INSTANTIATE_TEST_SUITE_P(Arch, KernelCompile, ::testing::Values(kSm80, kSm90),
                         [](const auto& arch) { return "sm" + arch.param.id(); });

}  // namespace
}  // namespace canopy
