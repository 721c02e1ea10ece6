// canopy-tune's GPU side: times one grid point on the device (header-only:
// CMake builds each tool from exactly tools/<name>.cpp).
//
// An item point becomes a single-config plan of identical items (one
// request per KV head per item, nothing shared, no split, no merge) with
// enough items to fill every block slot; the planner and Runtime make and
// run it as they would any plan. It is timed at two sizes (waves_low and
// waves_high items per slot): the difference divided by the extra items per
// SM is the item's SM time with every SM busy, free of launch and tail.
// A merge point launches the merge kernel alone on synthetic partial states.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "autotune/step_pricing.hpp"
#include "autotune/tuning_grid.hpp"
#include "canopy/error.hpp"
#include "canopy/planner.hpp"
#include "canopy/runtime.hpp"
#include "families/kernel_families.hpp"
#include "runtime/device/device_buffer.hpp"
#include "runtime/device/driver.hpp"
#include "runtime/jit/cubin_cache.hpp"
#include "templates/common/kernel_abi.cuh"

namespace canopy::tune {

/// Median microseconds of `launch` over `iters` runs after `warmup`, each
/// between two CUDA events on the legacy stream, with `before` (untimed: an
/// L2 flush) ahead of each run.
template <class Launch, class Before = void (*)()>
double median_us(
    int warmup, int iters, Launch&& launch, Before&& before = [] {}) {
  const driver::Api& a = driver::api();
  CUevent start = nullptr, stop = nullptr;
  driver::check(a.event_create(&start, CU_EVENT_DEFAULT), "cuEventCreate");
  driver::check(a.event_create(&stop, CU_EVENT_DEFAULT), "cuEventCreate");
  std::vector<double> times;
  try {
    for (int i = 0; i < warmup; ++i) launch();
    for (int i = 0; i < iters; ++i) {
      before();
      driver::check(a.event_record(start, nullptr), "cuEventRecord");
      launch();
      driver::check(a.event_record(stop, nullptr), "cuEventRecord");
      driver::check(a.event_synchronize(stop), "cuEventSynchronize");
      float ms = 0;
      driver::check(a.event_elapsed_time(&ms, start, stop), "cuEventElapsedTime");
      times.push_back(ms * 1000.0);
    }
  } catch (...) {
    a.event_destroy(start);
    a.event_destroy(stop);
    throw;
  }
  a.event_destroy(start);
  a.event_destroy(stop);
  std::sort(times.begin(), times.end());
  return times.empty() ? 0 : times[times.size() / 2];
}

class GpuMeasurer {
 public:
  GpuMeasurer(Runtime& rt, int ordinal, const autotune::GridOptions& options,
              const std::string& cache_dir)
      : rt_(rt), dev_(driver::device_context(ordinal)), o_(options), cache_(cache_dir) {}

  /// SM-us per item of `p` (a task of point_tiles items) with every SM busy.
  double item_us(const autotune::ItemPoint& p) {
    const AttentionSpec spec = autotune::point_spec(p);
    const Arch arch = dev_.arch();
    const int slots = dev_.num_sms * autotune::StepPricer::blocks_per_sm(spec, p.config, arch);
    const PlannerOptions options = autotune::point_options(p, rt_.cost_model());
    auto requests_of = [&](int waves) {
      return (waves * slots + autotune::kPointKvHeads - 1) / autotune::kPointKvHeads;
    };
    // K and V for the longer plan; the shorter one reads a prefix of its pages.
    const BlockTables high = autotune::point_tables(p, requests_of(o_.waves_high));
    const std::size_t e = dtype_bytes(spec.kv_dtype);
    const std::size_t kv_bytes = static_cast<std::size_t>(high.num_pages) * spec.page_size *
                                 spec.num_kv_heads * spec.head_dim * e;
    const std::size_t q_bytes =
        static_cast<std::size_t>(high.batch_size()) * spec.num_qo_heads * spec.head_dim * e;
    driver::ScopedContext scope(dev_.context);
    driver::DeviceBuffer k(dev_.context, kv_bytes, "tuning K cache");
    driver::DeviceBuffer v(dev_.context, kv_bytes, "tuning V cache");
    driver::DeviceBuffer q(dev_.context, q_bytes, "tuning q");
    driver::DeviceBuffer out(dev_.context, q_bytes, "tuning out");
    for (const driver::DeviceBuffer* b : {&k, &v, &q, &out}) {
      driver::check(driver::api().memset_d8(b->get(), 0, b->size()), "cuMemsetD8");
    }
    const DeviceTensors tensors{q.get(), k.get(), v.get(), out.get(), 0};
    double t[2] = {0, 0};
    int items[2] = {0, 0};
    for (int i = 0; i < 2; ++i) {
      const int requests = requests_of(i == 0 ? o_.waves_low : o_.waves_high);
      BlockTables tables = autotune::point_tables(p, requests);
      tables.num_pages = high.num_pages;
      const Plan plan = make_plan(spec, tables, options);
      autotune::check_point_plan(plan, p, requests);
      const PreparedPlan prepared = rt_.prepare(plan);
      items[i] = static_cast<int>(plan.items.size());
      t[i] = median_us(o_.warmup, o_.iters, [&] { rt_.run(prepared, tensors); });
    }
    // Each SM ran (items / S) items more in the longer plan; a point's time is
    // its task's, point_tiles items.
    return (t[1] - t[0]) * dev_.num_sms / (items[1] - items[0]) * autotune::point_tiles(p);
  }

  /// Microseconds of one decode step of `tables` (every launch of its plan
  /// under `options`) on zeroed tensors, L2 flushed before each run as the
  /// benchmark does (a warm L2 holds a small batch's whole cache and ranks
  /// plans differently): what `--workloads` compares between the planner's
  /// alternatives.
  double step_us(const AttentionSpec& spec, const BlockTables& tables,
                 const PlannerOptions& options) {
    const std::size_t e = dtype_bytes(spec.kv_dtype);
    const std::size_t kv_bytes = static_cast<std::size_t>(tables.num_pages) * spec.page_size *
                                 spec.num_kv_heads * spec.head_dim * e;
    const std::size_t rows = static_cast<std::size_t>(tables.batch_size()) * spec.num_qo_heads;
    driver::ScopedContext scope(dev_.context);
    driver::DeviceBuffer k(dev_.context, kv_bytes, "workload K cache");
    driver::DeviceBuffer v(dev_.context, kv_bytes, "workload V cache");
    driver::DeviceBuffer q(dev_.context, rows * spec.head_dim * dtype_bytes(spec.q_dtype), "q");
    driver::DeviceBuffer out(dev_.context, rows * spec.head_dim * dtype_bytes(spec.o_dtype), "out");
    driver::DeviceBuffer lse(dev_.context, spec.with_lse ? rows * 4 : 0, "lse");
    for (const driver::DeviceBuffer* b : {&k, &v, &q, &out, &lse}) {
      if (b->size() > 0) {
        driver::check(driver::api().memset_d8(b->get(), 0, b->size()), "cuMemsetD8");
      }
    }
    const DeviceTensors tensors{q.get(), k.get(), v.get(), out.get(), lse.get()};
    const PreparedPlan prepared = rt_.plan(spec, tables, options);
    if (!l2_flush_) {
      // Four times the L2 (at least 256 MiB), written over before each run.
      const std::size_t bytes = std::max<std::size_t>(std::size_t{256} << 20,
                                                      std::size_t{4} * std::max(dev_.l2_bytes, 0));
      l2_flush_ = std::make_unique<driver::DeviceBuffer>(dev_.context, bytes, "L2 flush");
    }
    return median_us(
        o_.warmup, o_.iters, [&] { rt_.run(prepared, tensors); },
        [&] {
          driver::check(driver::api().memset_d8(l2_flush_->get(), 1, l2_flush_->size()),
                        "cuMemsetD8(L2 flush)");
        });
  }

  /// Microseconds of one merge launch of `p`, the launch included.
  double merge_us(const autotune::MergePoint& p) {
    constexpr int kQoHeads = 32, kGroup = 4;
    AttentionSpec spec = p.spec;
    spec.num_qo_heads = kQoHeads;
    spec.num_kv_heads = kQoHeads / kGroup;
    const KernelSpec ks = merge_kernel_spec(spec, p.fan_in, dev_.arch());
    const CompiledKernel& compiled = cache_.get(ks);
    const std::string name = compiled.name.empty() ? ks.kernel_name() : compiled.name;
    const int threads = compiled.threads > 0 ? compiled.threads : families::kernel_threads(ks);
    const int rows_per_block = families::merge_rows_per_block(ks);
    const driver::Api& a = driver::api();
    driver::ScopedContext scope(dev_.context);
    CUmodule module = nullptr;
    driver::check(a.module_load_data(&module, compiled.cubin.data()), "cuModuleLoadData(merge)");
    try {
      CUfunction fn = nullptr;
      driver::check(a.module_get_function(&fn, module, name.c_str()), "cuModuleGetFunction");
      const std::int64_t requests = std::max<std::int64_t>(1, p.rows / kQoHeads);
      const std::int64_t slots = requests * p.fan_in * kQoHeads;
      std::vector<int> merge_requests(static_cast<std::size_t>(requests)), indptr{0};
      std::vector<canopy_abi::DeviceMergePart> parts;
      for (std::int64_t r = 0; r < requests; ++r) {
        merge_requests[static_cast<std::size_t>(r)] = static_cast<int>(r);
        for (int j = 0; j < p.fan_in; ++j) {
          parts.push_back({static_cast<int>((r * p.fan_in + j) * kQoHeads), kGroup});
        }
        indptr.push_back(static_cast<int>(parts.size()));
      }
      driver::DeviceBuffer po(dev_.context, slots * spec.head_dim * 4, "partial o");
      driver::DeviceBuffer plse(dev_.context, slots * 4, "partial lse");
      driver::DeviceBuffer mr(dev_.context, merge_requests.size() * 4, "merge requests");
      driver::DeviceBuffer mi(dev_.context, indptr.size() * 4, "merge indptr");
      driver::DeviceBuffer mp(dev_.context, parts.size() * sizeof(parts[0]), "merge parts");
      driver::DeviceBuffer out(dev_.context,
                               requests * kQoHeads * spec.head_dim * dtype_bytes(spec.o_dtype),
                               "merge out");
      driver::check(a.memset_d8(po.get(), 0, po.size()), "cuMemsetD8");
      driver::check(a.memset_d8(plse.get(), 0, plse.size()), "cuMemsetD8");
      mr.upload(merge_requests.data(), mr.size());
      mi.upload(indptr.data(), mi.size());
      mp.upload(parts.data(), mp.size());
      canopy_abi::MergeParams m{};
      m.partial_o = reinterpret_cast<const float*>(po.get());
      m.partial_lse = reinterpret_cast<const float*>(plse.get());
      m.merge_requests = reinterpret_cast<const int*>(mr.get());
      m.merge_indptr = reinterpret_cast<const int*>(mi.get());
      m.merge_parts = reinterpret_cast<const canopy_abi::DeviceMergePart*>(mp.get());
      m.out = reinterpret_cast<void*>(out.get());
      m.num_rows = static_cast<int>(requests * kQoHeads);
      m.num_qo_heads = kQoHeads;
      m.group = kGroup;
      void* args[1] = {&m};
      const auto grid = static_cast<unsigned>((m.num_rows + rows_per_block - 1) / rows_per_block);
      const double us = median_us(o_.warmup, o_.iters, [&] {
        driver::check(
            a.launch_kernel(fn, grid, 1, 1, static_cast<unsigned>(threads), 1, 1,
                            static_cast<unsigned>(compiled.smem_bytes), nullptr, args, nullptr),
            "cuLaunchKernel(merge)");
      });
      a.module_unload(module);
      return us;
    } catch (...) {
      a.module_unload(module);
      throw;
    }
  }

 private:
  Runtime& rt_;
  const driver::DeviceContext& dev_;
  autotune::GridOptions o_;
  CubinCache cache_;
  std::unique_ptr<driver::DeviceBuffer> l2_flush_;  ///< step_us's, made on first use
};

}  // namespace canopy::tune
