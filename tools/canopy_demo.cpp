// canopy-demo: one workload end to end. With a GPU: plan, compile, load, run,
// check against the float64 reference and time it. Without one: plan, compile
// every kernel with NVRTC (sm_90) and check the CPU executor instead.
//
// Exit codes: 0 success, 1 Canopy error or failed check, 2 bad command line.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "canopy/cpu.hpp"
#include "canopy/error.hpp"
#include "canopy/kernel_spec.hpp"
#include "canopy/plan.hpp"
#include "canopy/planner.hpp"
#include "canopy/runtime.hpp"
#include "canopy/tree.hpp"
#include "cli_args.hpp"
#include "runtime/jit/cubin_cache.hpp"
#include "workloads/problem.hpp"
#include "workloads/workload.hpp"

// The GPU path drives the CUDA driver through runtime/device/driver.hpp, which needs
// cuda.h; a build whose include path lacks it still runs the CPU path.
#if __has_include(<cuda.h>)
#include "runtime/device/driver.hpp"
#define CANOPY_DEMO_GPU 1
#else
#define CANOPY_DEMO_GPU 0
#endif

namespace {

using canopy::cli::Args;
using canopy::cli::Option;
using canopy::cli::UsageError;
using Clock = std::chrono::steady_clock;

constexpr const char* kProgram = "canopy-demo";
constexpr const char* kDefaultWorkload = "two-level-3";
constexpr double kFloorBytesPerSecond = 3.0e12;  // H100 SXM HBM3, the floor's yardstick

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::vector<Option> demo_options() {
  std::vector<Option> o = canopy::cli::workload_options();
  o.push_back({"--iters", "N", "timed runs on the GPU; the median is reported (default 20)"});
  o.push_back({"--warmup", "N", "untimed runs first (default 3)"});
  o.push_back({"--no-flush", "", "do not flush L2 between timed runs"});
  o.push_back({"--lse", "", "also compute and check the log-sum-exp"});
  o.push_back({"--soft-cap", "X", "logits soft cap (default 0: none)"});
  o.push_back({"--seed", "N", "seed of the random inputs (default 1)"});
  o.push_back({"--cpu", "", "run the CPU executor even when a GPU is present"});
  o.push_back({"--no-check", "", "skip the float64 reference (large workloads)"});
  o.push_back({"--cache-dir", "DIR", "cubin cache directory, 'off' for none"});
  for (const Option& p : canopy::cli::planner_options()) o.push_back(p);
  return o;
}

std::string demo_help() {
  return fmt::format(
      "usage: canopy-demo [--workload NAME | --tree STR | --batch FILE] [options]\n"
      "\n"
      "Runs one decode-attention step end to end (default workload: {}).\n"
      "With a GPU: plans, compiles and loads the kernels, runs them on random\n"
      "inputs, checks the output against the float64 reference (relative L2 <\n"
      "2e-3 fp16, 1e-2 bf16) and reports the median time, the effective bandwidth\n"
      "on unique KV bytes and the floor (unique bytes / 3.0 TB/s).\n"
      "Without a GPU: plans, compiles every kernel with NVRTC for sm_90 and checks\n"
      "the CPU executor against the reference on a workload scaled to CPU size.\n"
      "\n"
      "options:\n{}"
      "\nexamples:\n"
      "  canopy-demo\n"
      "  canopy-demo --workload sys-16k-x128 --iters 50\n"
      "  canopy-demo --tree '1,8,128|4096,512,64' --dtype bf16 --layout HND\n"
      "\nExit codes: 0 success, 1 error or failed check, 2 bad command line.\n",
      kDefaultWorkload, canopy::cli::format_options(demo_options()));
}

// ---------------------------------------------------------------------------
// Inputs: random values on a grid every dtype holds exactly (as tests/test_data
// does), so the GPU and the float64 reference see the same numbers.

/// Refuses inputs that would not fit in host memory instead of dying in new.
void check_host_memory(double bytes, const std::string& what) {
  const double phys =
      static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGESIZE));
  if (phys > 0 && bytes > 0.75 * phys) {
    throw canopy::Error(canopy::ErrorKind::kInvalidArgument,
                        fmt::format("{} need {:.1f} GiB of host memory; this machine has {:.1f} "
                                    "GiB (try a smaller workload)",
                                    what, bytes / 1073741824.0, phys / 1073741824.0));
  }
}

/// Random inputs exact in the spec's dtypes (workloads/problem.hpp, as the tests use).
canopy::workload::HostProblem make_inputs(const canopy::AttentionSpec& spec,
                                          const canopy::BlockTables& tables, std::uint64_t seed) {
  const double q = static_cast<double>(tables.batch_size()) * spec.num_qo_heads * spec.head_dim;
  const double kv =
      static_cast<double>(tables.num_pages) * spec.page_size * spec.num_kv_heads * spec.head_dim;
  check_host_memory((q * 2 + kv * 2) * 10.0, "the inputs (float64 host copies)");
  return canopy::workload::make_problem(spec, tables, seed);
}

using canopy::workload::relative_l2;

double tolerance(canopy::DType o_dtype) { return o_dtype == canopy::DType::kBF16 ? 1e-2 : 2e-3; }

struct Check {
  double out_error = 0;
  double lse_error = 0;
  double limit = 0;
  bool ok() const { return out_error < limit && lse_error < limit; }
};

/// Compares and prints one line; returns the comparison.
Check compare_and_print(const std::vector<double>& out, const std::vector<double>& lse,
                        const std::vector<double>& ref_out, const std::vector<double>& ref_lse,
                        const canopy::AttentionSpec& spec, const std::string& what) {
  Check c;
  c.limit = tolerance(spec.o_dtype);
  c.out_error = relative_l2(out, ref_out);
  if (!ref_lse.empty()) c.lse_error = relative_l2(lse, ref_lse);
  std::cout << fmt::format(
      "check        {} vs float64 reference: out rel-L2 {:.3e}{} (limit {:.0e}) {}\n", what,
      c.out_error, ref_lse.empty() ? "" : fmt::format(", lse rel-L2 {:.3e}", c.lse_error), c.limit,
      c.ok() ? "PASS" : "FAIL");
  return c;
}

void print_workload(const canopy::workload::Workload& w, std::int64_t unique_pages,
                    double unique_bytes) {
  std::int64_t tokens = 0;
  for (int len : w.tables.seq_lens) tokens += len;
  std::cout << fmt::format(
      "workload     {}{}{}\n", w.name,
      w.tree.empty() || w.tree == w.name ? "" : fmt::format(" (tree {})", w.tree),
      w.model.empty() ? "" : fmt::format(", model {}", w.model));
  std::cout << fmt::format("spec         {}\n", w.spec.to_string());
  std::cout << fmt::format(
      "batch        {} requests, {} KV tokens in all, {} unique pages = {:.2f} MiB of K+V\n",
      w.tables.batch_size(), tokens, unique_pages, unique_bytes / 1048576.0);
}

void print_plan_summary(const canopy::Plan& plan, const canopy::PrefixTree& tree) {
  std::cout << fmt::format("tree         {} nodes, {} roots, depth {}\n", tree.nodes.size(),
                           tree.roots.size(), tree.max_depth());
  std::string launches;
  for (const canopy::LaunchStep& g : plan.launches) {
    const bool merge = g.family == canopy::KernelFamily::kMergeStates;
    launches += fmt::format("{}{} x{}", launches.empty() ? "" : ", ",
                            merge ? "merge" : plan.configs[g.config].to_string(), g.end - g.begin);
  }
  std::cout << fmt::format(
      "plan         {} work items, {} launches ({}{}); {} partial states, {} merged rows, max "
      "fan-in {}; predicted {:.2f} us on {} SMs\n",
      plan.items.size(), plan.device_launches(), launches,
      plan.fused_merge ? ", the merge fused into the partial launches" : "", plan.num_partial_slots,
      plan.merge_entries(), plan.max_merge_fan_in, plan.predicted_us, plan.num_sms);
}

// ---------------------------------------------------------------------------
// Without a GPU: NVRTC for sm_90 and the CPU executor.

/// `headline`: why the CPU runs, printed first.
int run_cpu(const Args& args, canopy::workload::Workload w, const std::string& headline) {
  std::cout << headline << "\n";
  const canopy::workload::Workload small = canopy::workload::scaled_for_cpu(w);
  if (small.tree != w.tree) {
    std::cout << fmt::format(
        "scaled       for the float64 CPU executor: tree {} -> {} (tokens per level x{:.3f})\n",
        w.tree, small.tree,
        static_cast<double>(canopy::workload::TreeShape::parse(small.tree).path_tokens()) /
            static_cast<double>(canopy::workload::TreeShape::parse(w.tree).path_tokens()));
    w = small;
  }
  const canopy::PrefixTree tree = canopy::discover_prefix_tree(w.tables, w.spec.page_size);
  const std::int64_t unique_pages = canopy::cli::unique_kv_pages(w.tables, w.spec.page_size);
  print_workload(w, unique_pages, canopy::cli::unique_kv_bytes(w.spec, unique_pages));

  auto t0 = Clock::now();
  // H100 datasheet coefficients (132 SMs, sm_90) unless --coefficients
  const canopy::PlannerOptions options = canopy::cli::parse_planner_options(args);
  const canopy::Plan plan = canopy::make_plan(w.spec, tree, options);
  const double plan_ms = ms_since(t0);
  print_plan_summary(plan, tree);
  std::cout << fmt::format("planned      in {:.2f} ms ({})\n", plan_ms,
                           options.cost_model.coefficients().name);

  canopy::CubinCache cache(args.get("--cache-dir", ""));
  const canopy::Arch arch = options.cost_model.coefficients().arch;
  for (const canopy::KernelSpec& spec : canopy::plan_kernel_specs(plan, arch)) {
    t0 = Clock::now();
    const canopy::CompiledKernel& k = cache.get(spec);
    std::cout << fmt::format("kernel       {}: {} bytes of {} cubin, {}\n", k.spec.to_string(),
                             k.cubin.size(), arch.to_string(),
                             k.from_disk
                                 ? fmt::format("from the cache ({:.0f} ms)", ms_since(t0))
                                 : fmt::format("compiled by NVRTC in {:.0f} ms", k.compile_ms));
  }
  std::cout << fmt::format("cubin cache  {}\n", cache.dir().empty() ? "memory only" : cache.dir());

  const canopy::workload::HostProblem in = make_inputs(
      w.spec, w.tables, static_cast<std::uint64_t>(args.get_int("--seed", 1, 0, 1LL << 62)));
  const canopy::HostTensors tensors = in.tensors();
  const std::size_t rows = static_cast<std::size_t>(w.tables.batch_size()) *
                           static_cast<std::size_t>(w.spec.num_qo_heads);
  std::vector<double> out(rows * static_cast<std::size_t>(w.spec.head_dim));
  std::vector<double> lse(w.spec.with_lse ? rows : 0);
  t0 = Clock::now();
  canopy::execute_plan_cpu(plan, tensors, out.data(), w.spec.with_lse ? lse.data() : nullptr);
  std::cout << fmt::format(
      "cpu executor {:.1f} ms (float64, runs the plan's work items and merges)\n", ms_since(t0));
  if (args.has("--no-check")) {
    std::cout << "check        skipped (--no-check)\n";
    return 0;
  }
  std::vector<double> ref_out(out.size());
  std::vector<double> ref_lse(lse.size());
  t0 = Clock::now();
  canopy::reference_attention(w.spec, w.tables, tensors, ref_out.data(),
                              w.spec.with_lse ? ref_lse.data() : nullptr);
  std::cout << fmt::format("reference    {:.1f} ms (float64, per request, no tree)\n",
                           ms_since(t0));
  const Check c = compare_and_print(out, lse, ref_out, ref_lse, w.spec, "CPU executor");
  return c.ok() ? 0 : 1;
}

// ---------------------------------------------------------------------------
// With a GPU.

#if CANOPY_DEMO_GPU

/// One cuMemAlloc'ed block in the device's primary context.
class DeviceMemory {
 public:
  DeviceMemory(CUcontext ctx, std::size_t bytes, const char* what) : ctx_(ctx), bytes_(bytes) {
    canopy::driver::ScopedContext scope(ctx_);
    canopy::driver::check(canopy::driver::api().mem_alloc(&ptr_, std::max<std::size_t>(bytes, 1)),
                          fmt::format("cuMemAlloc({} bytes for {})", bytes, what));
  }
  ~DeviceMemory() {
    if (ptr_ != 0) {
      canopy::driver::ScopedContext scope(ctx_);
      canopy::driver::api().mem_free(ptr_);
    }
  }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  CUdeviceptr get() const { return ptr_; }
  std::size_t size() const { return bytes_; }

 private:
  CUcontext ctx_;
  CUdeviceptr ptr_ = 0;
  std::size_t bytes_;
};

using canopy::workload::encode;

/// CUDA events on the legacy stream.
class Event {
 public:
  Event() {
    canopy::driver::check(canopy::driver::api().event_create(&e_, CU_EVENT_DEFAULT),
                          "cuEventCreate");
  }
  ~Event() { canopy::driver::api().event_destroy(e_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record() {
    canopy::driver::check(canopy::driver::api().event_record(e_, nullptr), "cuEventRecord");
  }
  float ms_since(const Event& start) const {
    const canopy::driver::Api& a = canopy::driver::api();
    canopy::driver::check(a.event_synchronize(e_), "cuEventSynchronize");
    float ms = 0;
    canopy::driver::check(a.event_elapsed_time(&ms, start.e_, e_), "cuEventElapsedTime");
    return ms;
  }

 private:
  CUevent e_ = nullptr;
};

int run_gpu(const Args& args, const canopy::workload::Workload& w) {
  namespace drv = canopy::driver;
  const int iters = static_cast<int>(args.get_int("--iters", 20, 1, 100000));
  const int warmup = static_cast<int>(args.get_int("--warmup", 3, 0, 100000));
  const std::uint64_t seed = static_cast<std::uint64_t>(args.get_int("--seed", 1, 0, 1LL << 62));
  const canopy::AttentionSpec& spec = w.spec;

  canopy::RuntimeOptions ro;
  ro.cache_dir = args.get("--cache-dir", "");
  canopy::Runtime rt(ro);
  const drv::DeviceContext& dev = drv::device_context(ro.device);
  std::cout << fmt::format("device       {} ({}, {} SMs, {:.0f} GiB), driver CUDA {}.{}\n",
                           rt.device_name(), rt.arch().to_string(), dev.num_sms,
                           static_cast<double>(dev.total_mem) / 1073741824.0,
                           drv::api().driver_version / 1000, drv::api().driver_version % 1000 / 10);

  const canopy::PrefixTree tree = canopy::discover_prefix_tree(w.tables, spec.page_size);
  const std::int64_t unique_pages = canopy::cli::unique_kv_pages(w.tables, spec.page_size);
  const double unique_bytes = canopy::cli::unique_kv_bytes(spec, unique_pages);
  print_workload(w, unique_pages, unique_bytes);

  auto t0 = Clock::now();
  const canopy::PlannerOptions options = canopy::cli::parse_planner_options(args);
  const canopy::PreparedPlan prepared = rt.plan(spec, tree, options);
  const double prepare_ms = ms_since(t0);
  const canopy::CubinCacheStats stats = canopy::detail::cubin_cache_stats(rt);
  print_plan_summary(prepared.plan(), tree);
  std::cout << fmt::format(
      "prepared     in {:.0f} ms: plan, {} kernels ({} compiled by NVRTC, {} from the disk cache), "
      "load, metadata upload\n",
      prepare_ms, prepared.plan().configs.size() + 1, stats.compiles, stats.disk_hits);

  // Inputs on the device.
  t0 = Clock::now();
  const canopy::workload::HostProblem in = make_inputs(spec, w.tables, seed);
  const std::vector<std::uint8_t> q = encode(in.q, spec.q_dtype);
  const std::vector<std::uint8_t> k = encode(in.k, spec.kv_dtype);
  const std::vector<std::uint8_t> v = encode(in.v, spec.kv_dtype);
  const std::size_t rows =
      static_cast<std::size_t>(w.tables.batch_size()) * static_cast<std::size_t>(spec.num_qo_heads);
  const std::size_t out_elems = rows * static_cast<std::size_t>(spec.head_dim);
  const std::size_t o_bytes = static_cast<std::size_t>(canopy::dtype_bytes(spec.o_dtype));
  DeviceMemory d_q(dev.context, q.size(), "q");
  DeviceMemory d_k(dev.context, k.size(), "k_cache");
  DeviceMemory d_v(dev.context, v.size(), "v_cache");
  DeviceMemory d_out(dev.context, out_elems * o_bytes, "out");
  DeviceMemory d_lse(dev.context, spec.with_lse ? rows * 4 : 0, "lse");
  {
    drv::ScopedContext scope(dev.context);
    const drv::Api& a = drv::api();
    drv::check(a.memcpy_htod(d_q.get(), q.data(), q.size()), "cuMemcpyHtoD(q)");
    drv::check(a.memcpy_htod(d_k.get(), k.data(), k.size()), "cuMemcpyHtoD(k)");
    drv::check(a.memcpy_htod(d_v.get(), v.data(), v.size()), "cuMemcpyHtoD(v)");
    drv::check(a.memset_d8(d_out.get(), 0xff, d_out.size()), "cuMemsetD8(out)");  // NaN
  }
  std::cout << fmt::format("inputs       random, uploaded {:.1f} MiB in {:.0f} ms (seed {})\n",
                           static_cast<double>(q.size() + k.size() + v.size()) / 1048576.0,
                           ms_since(t0), seed);
  canopy::DeviceTensors t;
  t.q = d_q.get();
  t.k_cache = d_k.get();
  t.v_cache = d_v.get();
  t.out = d_out.get();
  t.lse = spec.with_lse ? d_lse.get() : 0;

  drv::ScopedContext scope(dev.context);
  const drv::Api& a = drv::api();

  // One run, checked.
  int status = 0;
  rt.run(prepared, t);
  drv::check(a.ctx_synchronize(), "cuCtxSynchronize after the first run");
  if (args.has("--no-check")) {
    std::cout << "check        skipped (--no-check)\n";
  } else {
    std::vector<std::uint8_t> out_bytes(out_elems * o_bytes);
    std::vector<std::uint8_t> lse_bytes(spec.with_lse ? rows * 4 : 0);
    drv::check(a.memcpy_dtoh(out_bytes.data(), d_out.get(), out_bytes.size()), "cuMemcpyDtoH(out)");
    if (spec.with_lse) {
      drv::check(a.memcpy_dtoh(lse_bytes.data(), d_lse.get(), lse_bytes.size()),
                 "cuMemcpyDtoH(lse)");
    }
    const std::vector<double> out =
        canopy::workload::decode(out_bytes.data(), out_elems, spec.o_dtype);
    const std::vector<double> lse =
        canopy::workload::decode(lse_bytes.data(), spec.with_lse ? rows : 0, canopy::DType::kF32);
    std::vector<double> ref_out(out_elems), ref_lse(lse.size());
    t0 = Clock::now();
    canopy::reference_attention(spec, w.tables, in.tensors(), ref_out.data(),
                                spec.with_lse ? ref_lse.data() : nullptr);
    const double ref_ms = ms_since(t0);
    const Check c = compare_and_print(out, lse, ref_out, ref_lse, spec, "GPU");
    std::cout << fmt::format("reference    {:.0f} ms (float64 on the host)\n", ref_ms);
    status = c.ok() ? 0 : 1;
  }

  // Timing: warm-up, then each run between two events; L2 flushed before each.
  const bool flush = !args.has("--no-flush");
  DeviceMemory scratch(dev.context, flush ? std::size_t{256} << 20 : 0, "L2 flush buffer");
  for (int i = 0; i < warmup; ++i) rt.run(prepared, t);
  std::vector<float> times;
  Event start, stop;
  for (int i = 0; i < iters; ++i) {
    if (flush)
      drv::check(a.memset_d32(scratch.get(), static_cast<unsigned>(i), scratch.size() / 4),
                 "cuMemsetD32(L2 flush)");
    start.record();
    rt.run(prepared, t);
    stop.record();
    times.push_back(stop.ms_since(start));
  }
  drv::check(a.ctx_synchronize(), "cuCtxSynchronize after timing");
  std::sort(times.begin(), times.end());
  const double median_us =
      1000.0 * (times.size() % 2 == 1
                    ? times[times.size() / 2]
                    : 0.5 * (times[times.size() / 2 - 1] + times[times.size() / 2]));
  const double floor_us = unique_bytes / kFloorBytesPerSecond * 1e6;
  std::cout << fmt::format(
      "time         median {:.2f} us over {} runs (min {:.2f}, max {:.2f}){}; plan predicted "
      "{:.2f} us\n",
      median_us, iters, times.front() * 1000.0, times.back() * 1000.0,
      flush ? ", L2 flushed before each" : "", prepared.plan().predicted_us);
  std::cout << fmt::format(
      "bandwidth    {:.2f} TB/s effective on {:.2f} MiB of unique K+V; floor {:.2f} us at 3.0 TB/s "
      "({:.0f}% of the floor's speed)\n",
      unique_bytes / (median_us * 1e-6) / 1e12, unique_bytes / 1048576.0, floor_us,
      100.0 * floor_us / median_us);
  if (status != 0) std::cout << "result       CHECK FAILED\n";
  return status;
}

#endif  // CANOPY_DEMO_GPU

int run(const std::vector<std::string>& argv) {
  const Args args = Args::parse(argv, demo_options());
  if (args.help()) {
    std::cout << demo_help();
    return 0;
  }
  // Validate every option before any slow step.
  args.get_int("--iters", 20, 1, 100000);
  args.get_int("--warmup", 3, 0, 100000);
  args.get_int("--seed", 1, 0, 1LL << 62);
  const double soft_cap = args.get_double("--soft-cap", 0.0, 0.0, 1e6);
  canopy::workload::Workload w = canopy::cli::select_workload(args, kDefaultWorkload);
  w.spec.with_lse = args.has("--lse");
  w.spec.logits_soft_cap = soft_cap;
  w.spec.validate();

  std::string why;
  if (args.has("--cpu")) {
    return run_cpu(args, w, "--cpu given: running the CPU executor (the GPU, if any, is not used)");
  }
  if (!canopy::gpu_available(&why)) {
    return run_cpu(args, w, fmt::format("no GPU found: {}; ran the CPU executor instead", why));
  }
#if CANOPY_DEMO_GPU
  return run_gpu(args, w);
#else
  return run_cpu(
      args, w,
      fmt::format("GPU present ({}) but this canopy-demo was built without cuda.h on "
                  "its include path, so it cannot drive it; ran the CPU executor instead",
                  why));
#endif
}

}  // namespace

int main(int argc, char** argv) { return canopy::cli::run_tool(kProgram, argc, argv, run); }
