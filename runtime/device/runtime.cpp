// canopy::Runtime and PreparedPlan: plans on the host, kernels through NVRTC
// (CubinCache), launches through the CUDA driver API (runtime/device/driver.hpp).
#include "canopy/runtime.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "canopy/error.hpp"
#include "canopy/kernel_spec.hpp"
#include "families/kernel_families.hpp"
#include "families/occupancy.hpp"
#include "runtime/device/device_buffer.hpp"
#include "runtime/device/driver.hpp"
#include "runtime/jit/cubin_cache.hpp"
#include "runtime/plan/persistent_schedule.hpp"
#include "templates/common/kernel_abi.cuh"

namespace canopy {
namespace {

using driver::api;
using driver::DeviceBuffer;
using driver::ScopedContext;

constexpr int kDefaultSmemLimit = 48 * 1024;  // dynamic smem above this needs the opt-in attribute

/// A kernel loaded into one device's primary context.
struct LoadedKernel {
  CUfunction function = nullptr;
  families::ParamsBlock params = families::ParamsBlock::kPartial;  ///< what a launch passes
  int threads = 0;
  int smem_bytes = 0;
  int rows_per_block = 1;  ///< grid units (items, merge entries) per thread block
  std::string name;
};

/// Modules loaded per (device, kernel spec), for the life of the process (the
/// primary context they live in is never released; see driver.hpp).
class ModuleRegistry {
 public:
  static ModuleRegistry& instance() {
    static ModuleRegistry* r = new ModuleRegistry();  // never destroyed
    return *r;
  }

  LoadedKernel get(const driver::DeviceContext& dev, const KernelSpec& spec, CubinCache& cache) {
    const std::string key = fmt::format("{}:{}", dev.ordinal, spec.to_string());
    {
      std::lock_guard lock(mutex_);
      if (auto it = loaded_.find(key); it != loaded_.end()) return it->second;
    }
    // Compile (or read from the disk cache) outside the lock: NVRTC is slow.
    driver::counters().cubin_requests.fetch_add(1);
    const CompiledKernel& compiled = cache.get(spec);
    LoadedKernel k;
    k.name = compiled.name.empty() ? spec.kernel_name() : compiled.name;
    k.threads = compiled.threads > 0 ? compiled.threads : families::kernel_threads(spec);
    k.smem_bytes = compiled.smem_bytes;
    k.params = families::family_info(spec.family).params;
    k.rows_per_block = families::merge_rows_per_block(spec);
    check(k.smem_bytes <= dev.max_smem_optin, ErrorKind::kNotSupported,
          fmt::format("kernel {} needs {} bytes of shared memory per block; {} allows {}", k.name,
                      k.smem_bytes, dev.name, dev.max_smem_optin));
    std::lock_guard lock(mutex_);
    if (auto it = loaded_.find(key); it != loaded_.end()) return it->second;  // raced
    ScopedContext scope(dev.context);
    const driver::Api& a = api();
    CUmodule module = nullptr;
    driver::check(a.module_load_data(&module, compiled.cubin.data()),
                  fmt::format("cuModuleLoadData({})", k.name));
    CUresult r = a.module_get_function(&k.function, module, k.name.c_str());
    if (r != CUDA_SUCCESS) {
      a.module_unload(module);
      driver::check(r, fmt::format("cuModuleGetFunction({})", k.name));
    }
    if (k.smem_bytes > kDefaultSmemLimit) {
      r = a.func_set_attribute(k.function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                               k.smem_bytes);
      if (r != CUDA_SUCCESS) {
        a.module_unload(module);
        driver::check(r, fmt::format("cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES={}, {})",
                                     k.smem_bytes, k.name));
      }
    }
    driver::counters().modules_loaded.fetch_add(1);
    loaded_.emplace(key, k);
    return k;
  }

 private:
  std::mutex mutex_;
  std::map<std::string, LoadedKernel> loaded_;
};

// Each Runtime's cubin cache, for detail::cubin_cache_stats (the member is private).
std::mutex runtime_caches_mutex;
std::map<const Runtime*, const CubinCache*>& runtime_caches() {
  static std::map<const Runtime*, const CubinCache*> m;
  return m;
}

std::string pointer_name(int i) {
  static const char* names[] = {"q", "k_cache", "v_cache", "out", "lse"};
  return names[i];
}

}  // namespace

// ---------------------------------------------------------------------------

struct PreparedPlan::State {
  Plan plan;
  PlanLayout layout;
  const driver::DeviceContext* dev = nullptr;
  std::vector<LoadedKernel> partial;  ///< per plan.configs entry
  LoadedKernel merge;                 ///< loaded when the plan has a merge launch
  DeviceBuffer metadata;
  /// Plan::fused_merge: the persistent launches and the fused merge's groups
  /// (runtime/plan/persistent_schedule.hpp), uploaded into `schedule`.
  PersistentSchedule persistent;
  DeviceBuffer schedule;
  std::int64_t queue_at = 0, indptr_at = 0, touches_at = 0, touch_indptr_at = 0;
  DeviceBuffer owned_workspace;
  CUdeviceptr workspace = 0;
  std::int64_t workspace_bytes = 0;
  float sm_scale = 0;
  float soft_cap = 0;
  int page_shift = -1;
  CUdeviceptr metadata_at(std::int64_t offset) const { return metadata.get() + offset; }
};

PreparedPlan::PreparedPlan() = default;
PreparedPlan::~PreparedPlan() = default;  // DeviceBuffers free with their context current
PreparedPlan::PreparedPlan(PreparedPlan&&) noexcept = default;
PreparedPlan& PreparedPlan::operator=(PreparedPlan&&) noexcept = default;

const Plan& PreparedPlan::plan() const {
  check(state_ != nullptr, ErrorKind::kInvalidArgument,
        "PreparedPlan::plan() on an empty (default-constructed or moved-from) PreparedPlan");
  return state_->plan;
}

std::int64_t PreparedPlan::workspace_bytes() const {
  return state_ != nullptr ? state_->workspace_bytes : 0;
}

// ---------------------------------------------------------------------------

struct Runtime::Impl {
  RuntimeOptions options;
  const driver::DeviceContext* dev = nullptr;
  CostModel cost_model;
  /// The built-in defaults for this device, and the head dims the tuning
  /// database measured: a database's coefficients are per kernel config,
  /// fitted on its head dims only, so a spec of another head dim plans with
  /// the defaults (the H100 database, fitted at D = 128, made two-level-d64
  /// 8% slower than the defaults).
  CostModel untuned_model;
  std::set<int> tuned_head_dims;
  TuningStatus tuning;
  std::map<std::string, ShapeWinner> winners;  ///< the database's, by shape class
  std::unique_ptr<CubinCache> cache;

  const CostModel& model_for(const AttentionSpec& spec) const;
  PlannerOptions device_options(const AttentionSpec& spec, const PlannerOptions& requested) const;
  Plan make_device_plan(const AttentionSpec& spec, const PrefixTree& tree,
                        const PlannerOptions& requested) const;
};

namespace {

DeviceKey key_of(const driver::DeviceContext& dev) {
  return {dev.name,    dev.cc_major,         dev.cc_minor,
          dev.num_sms, dev.memory_clock_khz, static_cast<std::int64_t>(dev.total_mem >> 20)};
}

// A refused database is said once per process on stderr (and always in
// Runtime::tuning_status): never silently, never once per Runtime.
void report_refusal(const TuningStatus& status) {
  if (status.refused.empty()) return;
  static std::mutex mutex;
  static std::set<std::string> said;
  std::lock_guard lock(mutex);
  if (said.insert(status.message).second) std::cerr << "canopy: " << status.message << "\n";
}

}  // namespace

Runtime::Runtime(RuntimeOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->dev = &driver::device_context(impl_->options.device);
  const driver::DeviceContext& dev = *impl_->dev;
  GpuCoefficients c;
  c.name = dev.name;
  c.num_sms = dev.num_sms;
  c.arch = dev.arch();
  c.max_smem_per_block = dev.max_smem_optin;
  // Streaming reads reach about 92% of the DRAM peak (measured on the H100
  // and H200: 3.0-3.1 of 3.35 and 4.5 of 4.9 TB/s); canopy-tune measures it.
  if (dev.peak_dram_bytes_per_us() > 0) c.hbm_bytes_per_us = 0.92 * dev.peak_dram_bytes_per_us();
  impl_->untuned_model = CostModel(c);
  // The device's tuning database, when one matches, replaces every coefficient.
  TuningSelection tuned = select_tuning_db(key_of(dev), impl_->options.tuning_db);
  if (tuned.db) {
    impl_->tuned_head_dims = tuned.db->measured_head_dims();
    tuned.status.message += fmt::format(
        "; head dims measured: {} (others plan with the built-in "
        "coefficients)",
        fmt::join(impl_->tuned_head_dims, ", "));
    const GpuCoefficients& fitted = tuned.db->coefficients;
    c.hbm_bytes_per_us = fitted.hbm_bytes_per_us;
    c.l2_bytes_per_us = fitted.l2_bytes_per_us;
    c.tensor_flops_per_us = fitted.tensor_flops_per_us;
    c.launch_overhead_us = fitted.launch_overhead_us;
    c.merge_bytes_per_us = fitted.merge_bytes_per_us;
    c.kernels = fitted.kernels;
    c.name = fmt::format("{} (tuned: {})", dev.name, tuned.status.database);
    impl_->winners = std::move(tuned.db->winners);
  }
  impl_->tuning = std::move(tuned.status);
  report_refusal(impl_->tuning);
  impl_->cost_model = CostModel(c);
  impl_->cache = std::make_unique<CubinCache>(impl_->options.cache_dir);
  std::lock_guard lock(runtime_caches_mutex);
  runtime_caches()[this] = impl_->cache.get();
}

Runtime::~Runtime() {
  std::lock_guard lock(runtime_caches_mutex);
  runtime_caches().erase(this);
}

const CostModel& Runtime::cost_model() const { return impl_->cost_model; }
const CostModel& Runtime::cost_model(const AttentionSpec& spec) const {
  return impl_->model_for(spec);
}
const TuningStatus& Runtime::tuning_status() const { return impl_->tuning; }
DeviceKey Runtime::device_key() const { return key_of(*impl_->dev); }
std::string Runtime::device_name() const { return impl_->dev->name; }
Arch Runtime::arch() const { return impl_->dev->arch(); }

const CostModel& Runtime::Impl::model_for(const AttentionSpec& spec) const {
  return TuningDb::prices_head_dim(tuned_head_dims, spec.head_dim) ? cost_model : untuned_model;
}

// Plan for this device unless the caller brought its own coefficients.
PlannerOptions Runtime::Impl::device_options(const AttentionSpec& spec,
                                             const PlannerOptions& requested) const {
  PlannerOptions o = requested;
  if (o.cost_model.coefficients() == GpuCoefficients{}) o.cost_model = model_for(spec);
  return o;
}

// A recorded winner for the batch's shape class replaces default options (a
// caller's own options always win), priced with the database's coefficients
// or, when the built-in defaults won the class, with the built-in ones; if
// its options cannot plan this batch, the defaults do.
Plan Runtime::Impl::make_device_plan(const AttentionSpec& spec, const PrefixTree& tree,
                                     const PlannerOptions& requested) const {
  if (!winners.empty() && requested == PlannerOptions{}) {
    if (auto it = winners.find(shape_class(spec, tree)); it != winners.end()) {
      try {
        PlannerOptions o = planner_options_from_json(it->second.options_json);
        o.cost_model = it->second.builtin_coefficients ? untuned_model : model_for(spec);
        return make_plan(spec, tree, o);
      } catch (const Error&) {
      }
    }
  }
  return make_plan(spec, tree, device_options(spec, requested));
}

PreparedPlan Runtime::plan(const AttentionSpec& spec, const BlockTables& tables,
                           const PlannerOptions& options, std::uint64_t workspace) {
  if (impl_->winners.empty()) {
    return prepare(make_plan(spec, tables, impl_->device_options(spec, options)), workspace);
  }
  return prepare(
      impl_->make_device_plan(spec, discover_prefix_tree(tables, spec.page_size), options),
      workspace);
}

PreparedPlan Runtime::plan(const AttentionSpec& spec, const PrefixTree& tree,
                           const PlannerOptions& options, std::uint64_t workspace) {
  return prepare(impl_->make_device_plan(spec, tree, options), workspace);
}

namespace {

// Plan::fused_merge: each partial launch gets one block per block slot of the
// GPU (SMs x resident blocks of its kernel), walking a queue of items, and
// the items count their rows into the fused merge's groups. The queues and
// groups go up in one buffer; the groups' counters (in the workspace) start
// at 0 and every launch leaves them at 0.
void prepare_persistent(const Plan& plan, Arch arch, PreparedPlan::State& s) {
  const driver::DeviceContext& dev = *s.dev;
  std::vector<int> slots(plan.launches.size(), 0);
  for (std::size_t k = 0; k < plan.launches.size(); ++k) {
    const LaunchStep& step = plan.launches[k];
    if (step.family == KernelFamily::kMergeStates) continue;
    const KernelSpec spec =
        partial_kernel_spec(plan.spec, plan.configs[static_cast<std::size_t>(step.config)], arch,
                            /*persistent=*/true);
    check(families::family_info(spec.family).fused_merge, ErrorKind::kInvalidArgument,
          fmt::format("plan: fused_merge is set but kernel {} cannot fuse the merge",
                      spec.to_string()));
    slots[k] = families::blocks_per_sm(spec, arch) * dev.num_sms;
  }
  s.persistent = make_persistent_schedule(plan, slots);
  const PersistentSchedule& ps = s.persistent;
  std::int64_t at = 0;
  auto section = [&](std::int64_t bytes) {
    const std::int64_t offset = at;
    at += (std::max<std::int64_t>(bytes, 1) + 255) / 256 * 256;
    return offset;
  };
  s.queue_at = section(static_cast<std::int64_t>(ps.queue.size()) * 4);
  s.indptr_at = section(static_cast<std::int64_t>(ps.queue_indptr.size()) * 4);
  s.touches_at = section(static_cast<std::int64_t>(ps.touches.size()) * 16);
  s.touch_indptr_at = section(static_cast<std::int64_t>(ps.item_touch_indptr.size()) * 4);
  std::vector<unsigned char> host(static_cast<std::size_t>(at), 0);
  auto copy = [&](std::int64_t offset, const auto& v) {
    if (!v.empty()) std::memcpy(host.data() + offset, v.data(), v.size() * sizeof(v[0]));
  };
  copy(s.queue_at, ps.queue);
  copy(s.indptr_at, ps.queue_indptr);
  auto* touches = reinterpret_cast<canopy_abi::DeviceMergeTouch*>(host.data() + s.touches_at);
  for (std::size_t i = 0; i < ps.touches.size(); ++i) {
    const MergeTouch& t = ps.touches[i];
    touches[i] = {t.entry, t.kv_head, t.rows, t.target};
  }
  copy(s.touch_indptr_at, ps.item_touch_indptr);
  s.schedule = DeviceBuffer(dev.context, host.size(), "persistent schedule");
  s.schedule.upload(host.data(), host.size());
  if (ps.counters > 0) {
    driver::check(api().memset_d32(s.workspace + s.layout.merge_counters, 0,
                                   static_cast<std::size_t>(ps.counters)),
                  "cuMemsetD32(merge counters)");
  }
}

}  // namespace

PreparedPlan Runtime::prepare(Plan plan, std::uint64_t workspace) {
  plan.validate();
  const driver::DeviceContext& dev = *impl_->dev;
  const driver::Api& a = api();
  ScopedContext scope(dev.context);

  auto s = std::make_unique<PreparedPlan::State>();
  s->dev = &dev;
  s->sm_scale = static_cast<float>(plan.spec.effective_sm_scale());
  s->soft_cap = static_cast<float>(plan.spec.logits_soft_cap);

  // Kernels: one partial kernel per config (the persistent form when the
  // merge is fused into them), and the merge if the plan merges outside them.
  const Arch arch = dev.arch();
  for (const KernelConfig& config : plan.configs) {
    s->partial.push_back(ModuleRegistry::instance().get(
        dev, partial_kernel_spec(plan.spec, config, arch, plan.fused_merge), *impl_->cache));
  }
  if (!plan.merge_requests.empty() && !plan.fused_merge) {
    s->merge = ModuleRegistry::instance().get(
        dev, merge_kernel_spec(plan.spec, plan.max_merge_fan_in, arch), *impl_->cache);
  }
  // Power-of-two pages (the usual case) are addressed with a shift, not a division.
  const int page_size = plan.spec.page_size;
  if ((page_size & (page_size - 1)) == 0) {
    s->page_shift = 0;
    while ((1 << s->page_shift) < page_size) ++s->page_shift;
  }

  // Metadata: one upload, sections where plan.layout() says.
  s->layout = plan.layout();
  const PlanLayout& L = s->layout;
  std::vector<unsigned char> host(static_cast<std::size_t>(L.metadata_bytes), 0);
  auto* items = reinterpret_cast<canopy_abi::DeviceWorkItem*>(host.data() + L.items);
  for (std::size_t i = 0; i < plan.items.size(); ++i) {
    const WorkItem& w = plan.items[i];
    const int flags =
        (w.direct ? canopy_abi::kItemDirectOutput : 0) | (w.kv_heads << canopy_abi::kItemHeadShift);
    items[i] = canopy_abi::DeviceWorkItem{w.kv_page_offset, w.token_begin, w.token_end,
                                          w.kv_head,        w.row_begin,   w.row_count,
                                          w.row_tile,       flags,         w.task_row_begin};
  }
  auto copy = [&](std::int64_t offset, const std::vector<std::int32_t>& v) {
    if (!v.empty()) std::memcpy(host.data() + offset, v.data(), v.size() * sizeof(v[0]));
  };
  copy(L.task_rows, plan.task_rows);
  copy(L.kv_pages, plan.kv_pages);
  copy(L.merge_requests, plan.merge_requests);
  copy(L.merge_indptr, plan.merge_indptr);
  auto* parts = reinterpret_cast<canopy_abi::DeviceMergePart*>(host.data() + L.merge_parts);
  for (std::size_t i = 0; i < plan.merge_parts.size(); ++i) {
    parts[i] = {plan.merge_parts[i].slot, plan.merge_parts[i].head_stride};
  }
  s->metadata = DeviceBuffer(dev.context, host.size(), "plan metadata");
  s->metadata.upload(host.data(), host.size());

  // Workspace: partial outputs and log-sum-exps.
  s->workspace_bytes = plan.workspace_bytes();
  if (workspace != 0) {
    CUdeviceptr base = 0;
    std::size_t size = 0;
    driver::check(a.mem_get_address_range(&base, &size, workspace),
                  fmt::format("cuMemGetAddressRange(workspace 0x{:x})", workspace));
    check(workspace + s->workspace_bytes <= base + size, ErrorKind::kInvalidArgument,
          fmt::format("workspace 0x{:x} has {} bytes left in its allocation; the plan needs {}",
                      workspace, base + size - workspace, s->workspace_bytes));
    check(workspace % 256 == 0, ErrorKind::kInvalidArgument,
          fmt::format("workspace 0x{:x} must be 256-byte aligned", workspace));
    s->workspace = workspace;
  } else {
    s->owned_workspace =
        DeviceBuffer(dev.context, static_cast<std::size_t>(s->workspace_bytes), "workspace");
    s->workspace = s->owned_workspace.get();
  }
  if (plan.fused_merge) prepare_persistent(plan, arch, *s);
  s->plan = std::move(plan);

  PreparedPlan prepared;
  prepared.state_ = std::move(s);
  return prepared;
}

void Runtime::run(const PreparedPlan& prepared, const DeviceTensors& t, void* stream) const {
  const PreparedPlan::State* s = prepared.state_.get();
  check(s != nullptr, ErrorKind::kInvalidArgument,
        "Runtime::run: the PreparedPlan is empty (default-constructed or moved-from)");
  check(
      s->dev == impl_->dev, ErrorKind::kInvalidArgument,
      fmt::format("Runtime::run: the plan was prepared for device {}, this runtime uses device {}",
                  s->dev->ordinal, impl_->dev->ordinal));
  const Plan& plan = s->plan;
  const AttentionSpec& spec = plan.spec;
  const driver::Api& a = api();
  ScopedContext scope(s->dev->context);

  // Pointers: non-null, lse iff with_lse, and device memory of this GPU.
  const std::uint64_t ptrs[] = {t.q, t.k_cache, t.v_cache, t.out, t.lse};
  for (int i = 0; i < 5; ++i) {
    const bool wanted = i < 4 || spec.with_lse;
    if (!wanted) {
      check(ptrs[i] == 0, ErrorKind::kInvalidArgument,
            "Runtime::run: tensors.lse is set but the spec has with_lse = false");
      continue;
    }
    check(ptrs[i] != 0, ErrorKind::kInvalidArgument,
          fmt::format("Runtime::run: tensors.{} is null{}", pointer_name(i),
                      i == 4 ? " (the spec has with_lse = true)" : ""));
    int ordinal = -1;
    CUresult r = a.pointer_get_attribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, ptrs[i]);
    check(r == CUDA_SUCCESS && ordinal == s->dev->ordinal, ErrorKind::kInvalidArgument,
          r != CUDA_SUCCESS
              ? fmt::format("Runtime::run: tensors.{} = 0x{:x} is not CUDA device memory ({})",
                            pointer_name(i), ptrs[i], driver::error_text(a, r))
              : fmt::format("Runtime::run: tensors.{} = 0x{:x} is memory of device {}, not {}",
                            pointer_name(i), ptrs[i], ordinal, s->dev->ordinal));
  }

  CUstream st = static_cast<CUstream>(stream);
  const PlanLayout& L = s->layout;
  float* partial_o = reinterpret_cast<float*>(s->workspace + L.partial_o);
  float* partial_lse = reinterpret_cast<float*>(s->workspace + L.partial_lse);

  // The schedule, in order: partial launches, then the merge if any (fused
  // into the partial launches when the plan says so: one block per slot,
  // each walking its queue).
  const PersistentSchedule::Launch* persistent = s->persistent.launches.data();
  for (const LaunchStep& step : plan.launches) {
    const int grid_items = step.end - step.begin;
    if (grid_items <= 0) continue;
    const bool merge = step.family == KernelFamily::kMergeStates;
    if (merge && plan.fused_merge) continue;
    const LoadedKernel& k = merge ? s->merge : s->partial[static_cast<std::size_t>(step.config)];
    // The parameter block is the kernel's family's (the registry row; the
    // generator wrote the kernel's signature from the same field).
    canopy_abi::PartialParams p{};
    canopy_abi::FusedParams f{};  // a persistent kernel's second parameter
    canopy_abi::MergeParams m{};
    void* args[2] = {nullptr, nullptr};
    switch (k.params) {
      case families::ParamsBlock::kPartial:
        p.q = reinterpret_cast<const void*>(t.q);
        p.k_cache = reinterpret_cast<const void*>(t.k_cache);
        p.v_cache = reinterpret_cast<const void*>(t.v_cache);
        p.partial_o = partial_o;
        p.partial_lse = partial_lse;
        p.items = reinterpret_cast<const canopy_abi::DeviceWorkItem*>(s->metadata_at(L.items));
        p.task_rows = reinterpret_cast<const int*>(s->metadata_at(L.task_rows));
        p.kv_pages = reinterpret_cast<const int*>(s->metadata_at(L.kv_pages));
        p.out = reinterpret_cast<void*>(t.out);
        p.lse = reinterpret_cast<float*>(t.lse);
        p.item_begin = step.begin;
        p.num_qo_heads = spec.num_qo_heads;
        p.num_kv_heads = spec.num_kv_heads;
        p.group = spec.num_qo_heads / spec.num_kv_heads;
        p.page_size = spec.page_size;
        p.page_shift = s->page_shift;
        p.out_dtype = families::dtype_code(spec.o_dtype);
        p.sm_scale = s->sm_scale;
        p.soft_cap = s->soft_cap;
        if (plan.fused_merge) {
          const CUdeviceptr sched = s->schedule.get();
          f.queue = reinterpret_cast<const int*>(sched + s->queue_at);
          // Block b of this launch runs queue first_queue + b.
          f.queue_indptr =
              reinterpret_cast<const int*>(sched + s->indptr_at) + persistent->first_queue;
          if (!plan.merge_requests.empty()) {
            f.merge_touches =
                reinterpret_cast<const canopy_abi::DeviceMergeTouch*>(sched + s->touches_at);
            f.item_touch_indptr = reinterpret_cast<const int*>(sched + s->touch_indptr_at);
            f.merge_counters = reinterpret_cast<int*>(s->workspace + L.merge_counters);
            f.merge_requests = reinterpret_cast<const int*>(s->metadata_at(L.merge_requests));
            f.merge_indptr = reinterpret_cast<const int*>(s->metadata_at(L.merge_indptr));
            f.merge_parts =
                reinterpret_cast<const canopy_abi::DeviceMergePart*>(s->metadata_at(L.merge_parts));
          }
          args[1] = &f;  // the persistent kernels (prepare loaded them) take it
        }
        args[0] = &p;
        break;
      case families::ParamsBlock::kMerge:
        m.partial_o = partial_o;
        m.partial_lse = partial_lse;
        m.merge_requests = reinterpret_cast<const int*>(s->metadata_at(L.merge_requests));
        m.merge_indptr = reinterpret_cast<const int*>(s->metadata_at(L.merge_indptr));
        m.merge_parts =
            reinterpret_cast<const canopy_abi::DeviceMergePart*>(s->metadata_at(L.merge_parts));
        m.out = reinterpret_cast<void*>(t.out);
        m.lse = reinterpret_cast<float*>(t.lse);
        m.num_rows = grid_items;
        m.num_qo_heads = spec.num_qo_heads;
        m.group = spec.num_qo_heads / spec.num_kv_heads;
        args[0] = &m;
        break;
    }
    check(args[0] != nullptr, ErrorKind::kInvalidArgument,
          fmt::format("kernel {}: unknown parameter block {}", k.name, static_cast<int>(k.params)));
    // Work items one per block (a persistent launch: one per queue); merge
    // entries merge_rows_per_block per block.
    const unsigned grid =
        plan.fused_merge && !merge
            ? static_cast<unsigned>((persistent++)->blocks)
            : static_cast<unsigned>((grid_items + k.rows_per_block - 1) / k.rows_per_block);
    driver::check(a.launch_kernel(k.function, grid, 1, 1, static_cast<unsigned>(k.threads), 1, 1,
                                  static_cast<unsigned>(k.smem_bytes), st, args, nullptr),
                  fmt::format("cuLaunchKernel({}, grid {}, block {}, smem {})", k.name, grid,
                              k.threads, k.smem_bytes));
    driver::counters().launches.fetch_add(1, std::memory_order_relaxed);
  }
}

namespace detail {
CubinCacheStats cubin_cache_stats(const Runtime& rt) {
  std::lock_guard lock(runtime_caches_mutex);
  const auto it = runtime_caches().find(&rt);
  check(it != runtime_caches().end(), ErrorKind::kInvalidArgument, "unknown Runtime");
  return it->second->stats();
}
}  // namespace detail

bool gpu_available(std::string* why) {
  try {
    const driver::Api& a = driver::api();
    if (why != nullptr) {
      *why = fmt::format("{} device(s), driver CUDA {}.{}", a.device_count, a.driver_version / 1000,
                         a.driver_version % 1000 / 10);
    }
    return true;
  } catch (const std::exception& e) {
    if (why != nullptr) *why = e.what();
    return false;
  } catch (...) {
    if (why != nullptr) *why = "unknown error while loading the CUDA driver";
    return false;
  }
}

}  // namespace canopy
