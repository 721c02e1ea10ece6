// canopy::Runtime: plan on the host, run on the GPU through the CUDA driver API.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "canopy/arch.hpp"
#include "canopy/batch.hpp"
#include "canopy/plan.hpp"
#include "canopy/planner.hpp"
#include "canopy/spec.hpp"
#include "canopy/tree.hpp"
#include "canopy/tuning.hpp"

namespace canopy {

/// Device pointers (CUdeviceptr values) of one layer's tensors; shapes in AttentionSpec.
struct DeviceTensors {
  std::uint64_t q = 0;
  std::uint64_t k_cache = 0;
  std::uint64_t v_cache = 0;
  std::uint64_t out = 0;
  std::uint64_t lse = 0;  ///< required iff spec.with_lse
};

struct RuntimeOptions {
  int device = 0;         ///< CUDA device ordinal
  std::string cache_dir;  ///< empty: $CANOPY_CACHE_DIR, $XDG_CACHE_HOME/canopy, ~/.cache/canopy;
                          ///< "off" disables
  /// The tuning database (docs/tuning.md): a file or folder searched first,
  /// then $CANOPY_TUNING_DB, the user's config folder and the shipped ones;
  /// "off": the built-in default coefficients.
  std::string tuning_db{};
};

class Runtime;

/// A plan with its kernels loaded and its metadata on the device. Built by
/// Runtime::plan; reusable for every layer of the step. Move-only.
class PreparedPlan {
 public:
  PreparedPlan();
  ~PreparedPlan();
  PreparedPlan(PreparedPlan&&) noexcept;
  PreparedPlan& operator=(PreparedPlan&&) noexcept;
  const Plan& plan() const;
  std::int64_t workspace_bytes() const;

  struct State;  // defined in runtime/device/runtime.cpp, opaque here

 private:
  friend class Runtime;
  std::unique_ptr<State> state_;
};

/// Thread safety: one Runtime may be used from several threads at once.
/// plan() and prepare() may run concurrently (the cubin cache and the loaded
/// modules are shared under locks; planning has no shared state), and run()
/// may launch on different streams from different threads. What is not
/// shared safely is a PreparedPlan's workspace: its launches write partial
/// states there, so two runs of one PreparedPlan must not overlap on the GPU
/// (order them on one stream, or give each stream its own PreparedPlan or
/// caller workspace). Tests: ConcurrentPlanning, GpuThreads.
class Runtime {
 public:
  /// Loads libcuda.so.1, picks the device, retains its primary context.
  /// Throws Error(kNoDevice) saying why when there is no driver or GPU.
  explicit Runtime(RuntimeOptions options = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  /// The device's cost model: its tuning database's coefficients, or the
  /// defaults with the device's SM count, arch and bandwidth folded in.
  const CostModel& cost_model() const;
  /// The cost model a plan of `spec` uses: cost_model(), or the defaults when
  /// the tuning database measured no kernel at spec.head_dim (its fitted
  /// coefficients describe the head dims it measured; docs/tuning.md).
  const CostModel& cost_model(const AttentionSpec& spec) const;
  /// Which tuning database cost_model() came from, or why the defaults.
  const TuningStatus& tuning_status() const;
  /// The device's key, as tuning databases record it.
  DeviceKey device_key() const;
  std::string device_name() const;
  Arch arch() const;  ///< e.g. sm_90

  /// Discovers the tree, plans (with the planner options the tuning database
  /// measured fastest for the batch's shape class, when it has some and
  /// `options` are the defaults), compiles and loads every kernel the plan needs,
  /// and uploads the plan's metadata. `workspace` (device pointer of at least
  /// plan.workspace_bytes() bytes) may be given by the caller; 0 lets the
  /// prepared plan own it. May synchronize; never called inside capture.
  PreparedPlan plan(const AttentionSpec& spec, const BlockTables& tables,
                    const PlannerOptions& options = {}, std::uint64_t workspace = 0);
  PreparedPlan plan(const AttentionSpec& spec, const PrefixTree& tree,
                    const PlannerOptions& options = {}, std::uint64_t workspace = 0);
  PreparedPlan prepare(Plan plan, std::uint64_t workspace = 0);

  /// Launches the plan's kernels on `stream` (a CUstream, null: the legacy
  /// stream). No allocation, no synchronization, no compilation: capturable
  /// into a CUDA graph.
  void run(const PreparedPlan& plan, const DeviceTensors& tensors, void* stream = nullptr) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

/// True when libcuda.so.1 loads and reports at least one device; otherwise
/// false with the reason in `why`. Never throws.
bool gpu_available(std::string* why = nullptr);

}  // namespace canopy
