// canopy_bench_capi: the C API of bench/gpu/canopy_capi.h over Canopy's public
// C++ API, so that the Python benchmark (run_bench.py) drives Canopy with
// torch's tensors and streams. Every entry point catches everything and turns
// it into a status code plus a thread-local message.
#include "bench/gpu/canopy_capi.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "canopy/error.hpp"
#include "canopy/kernel_spec.hpp"
#include "canopy/plan.hpp"
#include "canopy/planner.hpp"
#include "canopy/runtime.hpp"
#include "runtime/jit/cubin_cache.hpp"  // the only private header: prewarm compiles without a GPU
#include "workloads/workload.hpp"

namespace {

using nlohmann::json;

thread_local std::string last_error;
thread_local std::string thread_string;  // results of calls without a handle

int status_of(canopy::ErrorKind kind) {
  switch (kind) {
    case canopy::ErrorKind::kInvalidArgument:
      return CANOPY_BENCH_INVALID_ARGUMENT;
    case canopy::ErrorKind::kNotSupported:
      return CANOPY_BENCH_NOT_SUPPORTED;
    case canopy::ErrorKind::kCompile:
      return CANOPY_BENCH_COMPILE;
    case canopy::ErrorKind::kDriver:
      return CANOPY_BENCH_DRIVER;
    case canopy::ErrorKind::kNoDevice:
      return CANOPY_BENCH_NO_DEVICE;
    case canopy::ErrorKind::kCache:
      return CANOPY_BENCH_CACHE;
    case canopy::ErrorKind::kIo:
      return CANOPY_BENCH_IO;
  }
  return CANOPY_BENCH_OTHER;
}

/// Runs `body`, mapping exceptions to status codes and last_error.
template <typename Body>
int guarded(const char* function, Body&& body) noexcept {
  try {
    body();
    last_error.clear();
    return CANOPY_BENCH_OK;
  } catch (const canopy::Error& e) {
    last_error = fmt::format("{}: {} error: {}", function, canopy::to_string(e.kind()), e.what());
    return status_of(e.kind());
  } catch (const std::exception& e) {
    last_error = fmt::format("{}: {}", function, e.what());
    return CANOPY_BENCH_OTHER;
  } catch (...) {
    last_error = fmt::format("{}: unknown exception", function);
    return CANOPY_BENCH_OTHER;
  }
}

void require(bool condition, const std::string& message) {
  canopy::check(condition, canopy::ErrorKind::kInvalidArgument, message);
}

std::string text_or(const char* s, const std::string& fallback) {
  return s != nullptr && *s != '\0' ? std::string(s) : fallback;
}

json parse_object(const char* text, const char* what) {
  if (text == nullptr || *text == '\0') return json::object();
  json j;
  try {
    j = json::parse(text);
  } catch (const std::exception& e) {
    throw canopy::Error(canopy::ErrorKind::kInvalidArgument,
                        fmt::format("{} is not valid JSON ({}): {}", what, e.what(), text));
  }
  require(j.is_object(), fmt::format("{} must be a JSON object, got: {}", what, text));
  return j;
}

/// Reads j[key] into `out` when present; throws naming the key on a wrong type.
template <typename T>
void read_field(const json& j, const char* key, T& out, const char* what) {
  const auto it = j.find(key);
  if (it == j.end()) return;
  try {
    out = it->get<T>();
  } catch (const std::exception& e) {
    throw canopy::Error(canopy::ErrorKind::kInvalidArgument,
                        fmt::format("{}: field '{}' = {} has the wrong type ({})", what, key,
                                    it->dump(), e.what()));
  }
}

void reject_unknown(const json& j, std::initializer_list<const char*> known, const char* what) {
  for (const auto& [key, value] : j.items()) {
    const bool ok =
        std::any_of(known.begin(), known.end(), [&](const char* k) { return key == k; });
    std::string names;
    for (const char* k : known) names += fmt::format("{}'{}'", names.empty() ? "" : ", ", k);
    require(ok, fmt::format("{}: unknown field '{}' (known: {})", what, key, names));
  }
}

/// Kernel launches one Runtime::run makes for `plan`: every non-empty step of
/// its launch schedule (partial launches, then the merge when there is one).
/// Mirrors Runtime::run.
int kernel_launches(const canopy::Plan& plan) { return plan.device_launches(); }

/// The kernels Runtime::prepare compiles for `plan`, by spec string.
std::map<std::string, canopy::KernelSpec> plan_kernels(const canopy::Plan& plan,
                                                       canopy::Arch arch) {
  std::map<std::string, canopy::KernelSpec> specs;
  for (const canopy::KernelSpec& k : canopy::plan_kernel_specs(plan, arch)) {
    specs.emplace(k.to_string(), k);
  }
  return specs;
}

struct RuntimeHandle {
  std::unique_ptr<canopy::Runtime> runtime;
  std::string info;
};

struct WorkloadHandle {
  canopy::workload::Workload w;
  std::string info;
};

struct PlanHandle {
  std::optional<canopy::PreparedPlan> prepared;  ///< set when made with a runtime
  canopy::Plan host;                             ///< set when made without one
  const RuntimeHandle* runtime = nullptr;
  canopy::Arch arch = canopy::kSm90;
  double plan_ms = 0;
  json options;
  std::string info, plan_json;

  const canopy::Plan& plan() const { return prepared ? prepared->plan() : host; }
};

struct PrewarmHandle {
  std::string cache_dir;
  std::map<std::string, canopy::KernelSpec> specs;
  std::string result;
};

template <typename T>
T& handle(void* p, const char* what) {
  require(p != nullptr, fmt::format("{} handle is null", what));
  return *static_cast<T*>(p);
}

/// The described device's coefficients on top of `base`.
canopy::GpuCoefficients device_coefficients(const json& d, canopy::GpuCoefficients base) {
  reject_unknown(d, {"name", "arch", "num_sms", "max_smem_per_block"}, "device description");
  read_field(d, "name", base.name, "device description");
  std::string arch = base.arch.id();  // "90", "90a"
  if (d.contains("arch"))
    arch = d.at("arch").is_string() ? d.at("arch").get<std::string>()
                                    : std::to_string(d.at("arch").get<int>());
  base.arch = canopy::Arch::parse(arch);
  read_field(d, "num_sms", base.num_sms, "device description");
  read_field(d, "max_smem_per_block", base.max_smem_per_block, "device description");
  require(base.arch.has_mma() && base.num_sms > 0 && base.max_smem_per_block > 0,
          fmt::format("device description: arch {} num_sms {} max_smem_per_block {} are not valid",
                      base.arch.to_string(), base.num_sms, base.max_smem_per_block));
  return base;
}

canopy::GpuCoefficients h200_description() {
  canopy::GpuCoefficients c;
  c.name = "H200 (described: sm_90, 132 SMs, 227 KB shared memory)";
  c.arch = canopy::kSm90;
  c.num_sms = 132;
  c.max_smem_per_block = 227 * 1024;
  return c;
}

json workload_json(const canopy::workload::Workload& w) {
  const canopy::AttentionSpec& s = w.spec;
  return json{{"name", w.name},
              {"tree", w.tree},
              {"model", w.model},
              {"num_qo_heads", s.num_qo_heads},
              {"num_kv_heads", s.num_kv_heads},
              {"head_dim", s.head_dim},
              {"q_dtype", canopy::to_string(s.q_dtype)},
              {"kv_dtype", canopy::to_string(s.kv_dtype)},
              {"o_dtype", canopy::to_string(s.o_dtype)},
              {"kv_layout", canopy::to_string(s.kv_layout)},
              {"page_size", s.page_size},
              {"sm_scale", s.effective_sm_scale()},
              {"logits_soft_cap", s.logits_soft_cap},
              {"with_lse", s.with_lse},
              {"batch_size", w.tables.batch_size()},
              {"num_indices", w.tables.indices.size()},
              {"num_pages", w.tables.num_pages}};
}

json plan_summary(const PlanHandle& h) {
  const canopy::Plan& p = h.plan();
  json configs = json::array();
  for (const canopy::KernelConfig& c : p.configs) configs.push_back(c.to_string());
  json launch_configs = json::array();  // the schedule: one entry per launch step
  for (const canopy::LaunchStep& step : p.launches) {
    const bool merge = step.family == canopy::KernelFamily::kMergeStates;
    const std::string name = merge ? std::string("merge")
                             : step.config >= 0 && std::size_t(step.config) < p.configs.size()
                                 ? p.configs[std::size_t(step.config)].to_string()
                                 : fmt::format("config#{}", step.config);
    launch_configs.push_back(json{{"family", canopy::to_string(step.family)},
                                  {"config", name},
                                  {merge ? "merge_entries" : "items", step.end - step.begin}});
  }
  std::int64_t direct = 0;
  for (const canopy::WorkItem& item : p.items) direct += item.direct ? 1 : 0;
  json kernels = json::array();
  for (const auto& [name, spec] : plan_kernels(p, h.arch)) kernels.push_back(spec.kernel_name());
  return json{{"prepared", h.prepared.has_value()},
              {"arch", h.arch.id()},
              {"num_sms", p.num_sms},
              {"kernel_launches", kernel_launches(p)},
              {"launch_steps", p.launches.size()},
              {"fused_merge", p.fused_merge},
              {"items", p.items.size()},
              {"direct_items", direct},
              {"merge_rows", p.merge_entries()},
              {"configs", configs},
              {"launch_configs", launch_configs},
              {"kernels", kernels},
              {"predicted_us", p.predicted_us},
              {"workspace_bytes", p.workspace_bytes()},
              {"batch_size", p.batch_size},
              {"tree_depth", p.tree_depth},
              {"num_partial_slots", p.num_partial_slots},
              {"max_merge_fan_in", p.max_merge_fan_in},
              {"plan_ms", h.plan_ms},
              {"options", h.options}};
}

}  // namespace

extern "C" {

int canopy_bench_abi_version(void) { return CANOPY_BENCH_ABI_VERSION; }

const char* canopy_bench_last_error(void) { return last_error.c_str(); }

int canopy_bench_gpu_available(int* available, const char** why) {
  return guarded(__func__, [&] {
    require(available != nullptr, "available is null");
    *available = canopy::gpu_available(&thread_string) ? 1 : 0;
    if (why != nullptr) *why = thread_string.c_str();
  });
}

int canopy_bench_runtime_create(int device, const char* cache_dir, const char* tuning_db,
                                void** runtime) {
  return guarded(__func__, [&] {
    require(runtime != nullptr, "runtime (out) is null");
    *runtime = nullptr;
    canopy::RuntimeOptions options;
    options.device = device;
    options.cache_dir = text_or(cache_dir, "");
    options.tuning_db = text_or(tuning_db, "");
    auto h = std::make_unique<RuntimeHandle>();
    h->runtime = std::make_unique<canopy::Runtime>(options);
    *runtime = h.release();
  });
}

int canopy_bench_runtime_destroy(void* runtime) {
  return guarded(__func__, [&] { delete static_cast<RuntimeHandle*>(runtime); });
}

int canopy_bench_runtime_info(void* runtime, const char** json_out) {
  return guarded(__func__, [&] {
    RuntimeHandle& h = handle<RuntimeHandle>(runtime, "runtime");
    require(json_out != nullptr, "json (out) is null");
    const canopy::GpuCoefficients& c = h.runtime->cost_model().coefficients();
    h.info = json{{"device_name", h.runtime->device_name()},
                  {"arch", h.runtime->arch().id()},
                  {"num_sms", c.num_sms},
                  {"max_smem_per_block", c.max_smem_per_block},
                  {"tuned", h.runtime->tuning_status().tuned},
                  {"tuning_db", h.runtime->tuning_status().database},
                  {"tuning_message", h.runtime->tuning_status().message}}
                 .dump();
    *json_out = h.info.c_str();
  });
}

int canopy_bench_suite_names(const char* suite_path, const char** json_out) {
  return guarded(__func__, [&] {
    require(json_out != nullptr, "json (out) is null");
    json names = json::array();
    for (const auto& w :
         canopy::workload::load_suite(text_or(suite_path, canopy::workload::default_suite_path())))
      names.push_back(w.name);
    thread_string = names.dump();
    *json_out = thread_string.c_str();
  });
}

int canopy_bench_workload_from_suite(const char* name, const char* suite_path, void** workload) {
  return guarded(__func__, [&] {
    require(workload != nullptr, "workload (out) is null");
    *workload = nullptr;
    require(name != nullptr && *name != '\0', "workload name is empty");
    auto h = std::make_unique<WorkloadHandle>();
    h->w = canopy::workload::find_workload(
        name, text_or(suite_path, canopy::workload::default_suite_path()));
    *workload = h.release();
  });
}

int canopy_bench_workload_from_tree(const char* tree, const char* model, const char* dtype,
                                    int page_size, void** workload) {
  return guarded(__func__, [&] {
    require(workload != nullptr, "workload (out) is null");
    *workload = nullptr;
    require(tree != nullptr && *tree != '\0', "tree string is empty");
    auto h = std::make_unique<WorkloadHandle>();
    h->w = canopy::workload::workload_from_tree(tree, text_or(model, "llama3-8b"),
                                                canopy::dtype_from_string(text_or(dtype, "fp16")),
                                                page_size > 0 ? page_size : 16);
    *workload = h.release();
  });
}

int canopy_bench_workload_from_batch(const char* path, void** workload) {
  return guarded(__func__, [&] {
    require(workload != nullptr, "workload (out) is null");
    *workload = nullptr;
    require(path != nullptr && *path != '\0', "batch file path is empty");
    auto h = std::make_unique<WorkloadHandle>();
    h->w = canopy::workload::load_batch_file(path);
    *workload = h.release();
  });
}

int canopy_bench_workload_destroy(void* workload) {
  return guarded(__func__, [&] { delete static_cast<WorkloadHandle*>(workload); });
}

int canopy_bench_workload_info(void* workload, const char** json_out) {
  return guarded(__func__, [&] {
    WorkloadHandle& h = handle<WorkloadHandle>(workload, "workload");
    require(json_out != nullptr, "json (out) is null");
    h.info = workload_json(h.w).dump();
    *json_out = h.info.c_str();
  });
}

int canopy_bench_workload_sizes(void* workload, int64_t* batch_size, int64_t* num_indices,
                                int64_t* num_pages) {
  return guarded(__func__, [&] {
    const WorkloadHandle& h = handle<WorkloadHandle>(workload, "workload");
    if (batch_size != nullptr) *batch_size = h.w.tables.batch_size();
    if (num_indices != nullptr) *num_indices = static_cast<int64_t>(h.w.tables.indices.size());
    if (num_pages != nullptr) *num_pages = h.w.tables.num_pages;
  });
}

int canopy_bench_workload_tables(void* workload, int32_t* indptr, int32_t* indices,
                                 int32_t* seq_lens) {
  return guarded(__func__, [&] {
    const WorkloadHandle& h = handle<WorkloadHandle>(workload, "workload");
    const canopy::BlockTables& t = h.w.tables;
    require(indptr != nullptr && seq_lens != nullptr && (indices != nullptr || t.indices.empty()),
            "workload tables: an output array is null");
    std::copy(t.indptr.begin(), t.indptr.end(), indptr);
    std::copy(t.indices.begin(), t.indices.end(), indices);
    std::copy(t.seq_lens.begin(), t.seq_lens.end(), seq_lens);
  });
}

int canopy_bench_plan_create(void* runtime, void* workload, const char* options_json,
                             const char* device_json, void** plan) {
  return guarded(__func__, [&] {
    require(plan != nullptr, "plan (out) is null");
    *plan = nullptr;
    const WorkloadHandle& w = handle<WorkloadHandle>(workload, "workload");
    auto h = std::make_unique<PlanHandle>();
    // The library's one options parser (canopy-planner-options/1), unchanged.
    canopy::PlannerOptions options = canopy::planner_options_from_json(text_or(options_json, "{}"));
    h->options = json::parse(canopy::planner_options_to_json(options));
    // Coefficients in the options replace the runtime's (or the H200
    // description's); a device description then applies on top of them.
    const bool own_coefficients = options.cost_model.coefficients() != canopy::GpuCoefficients{};
    const json device = parse_object(device_json, "device description");
    const auto t0 = std::chrono::steady_clock::now();
    if (runtime != nullptr) {
      RuntimeHandle& rt = handle<RuntimeHandle>(runtime, "runtime");
      h->runtime = &rt;
      h->arch = rt.runtime->arch();
      // Without a description the runtime plans for its own device (or with
      // the options' coefficients: Runtime::plan keeps those).
      if (!device.empty()) {
        const canopy::GpuCoefficients c =
            device_coefficients(device, own_coefficients ? options.cost_model.coefficients()
                                                         : rt.runtime->cost_model().coefficients());
        h->arch = c.arch;
        options.cost_model = canopy::CostModel(c);
      }
      h->prepared = rt.runtime->plan(w.w.spec, w.w.tables, options);
    } else {
      const canopy::GpuCoefficients c = device_coefficients(
          device, own_coefficients ? options.cost_model.coefficients() : h200_description());
      h->arch = c.arch;
      options.cost_model = canopy::CostModel(c);
      h->host = canopy::make_plan(w.w.spec, w.w.tables, options);
    }
    h->plan_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    *plan = h.release();
  });
}

int canopy_bench_plan_destroy(void* plan) {
  return guarded(__func__, [&] { delete static_cast<PlanHandle*>(plan); });
}

int canopy_bench_plan_info(void* plan, const char** json_out) {
  return guarded(__func__, [&] {
    PlanHandle& h = handle<PlanHandle>(plan, "plan");
    require(json_out != nullptr, "json (out) is null");
    h.info = plan_summary(h).dump();
    *json_out = h.info.c_str();
  });
}

int canopy_bench_plan_json(void* plan, const char** json_out) {
  return guarded(__func__, [&] {
    PlanHandle& h = handle<PlanHandle>(plan, "plan");
    require(json_out != nullptr, "json (out) is null");
    h.plan_json = canopy::plan_to_json(h.plan(), -1);
    *json_out = h.plan_json.c_str();
  });
}

int canopy_bench_plan_launches(void* plan, int* launches) {
  return guarded(__func__, [&] {
    const PlanHandle& h = handle<PlanHandle>(plan, "plan");
    require(launches != nullptr, "launches (out) is null");
    *launches = kernel_launches(h.plan());
  });
}

int canopy_bench_run(void* runtime, void* plan, uint64_t q, uint64_t k_cache, uint64_t v_cache,
                     uint64_t out, uint64_t lse, void* stream) {
  return guarded(__func__, [&] {
    const RuntimeHandle& rt = handle<RuntimeHandle>(runtime, "runtime");
    const PlanHandle& h = handle<PlanHandle>(plan, "plan");
    require(h.prepared.has_value(),
            "canopy_bench_run: the plan was made without a runtime (a host plan cannot run)");
    require(h.runtime == &rt, "canopy_bench_run: the plan was prepared by another runtime");
    rt.runtime->run(*h.prepared, canopy::DeviceTensors{q, k_cache, v_cache, out, lse}, stream);
  });
}

int canopy_bench_prewarm_create(const char* cache_dir, void** prewarm) {
  return guarded(__func__, [&] {
    require(prewarm != nullptr, "prewarm (out) is null");
    auto h = std::make_unique<PrewarmHandle>();
    h->cache_dir = text_or(cache_dir, "");
    *prewarm = h.release();
  });
}

int canopy_bench_prewarm_add(void* prewarm, void* plan) {
  return guarded(__func__, [&] {
    PrewarmHandle& pw = handle<PrewarmHandle>(prewarm, "prewarm");
    const PlanHandle& h = handle<PlanHandle>(plan, "plan");
    for (auto& [name, spec] : plan_kernels(h.plan(), h.arch)) pw.specs.emplace(name, spec);
  });
}

int canopy_bench_prewarm_compile(void* prewarm, int threads, const char** json_out) {
  return guarded(__func__, [&] {
    PrewarmHandle& pw = handle<PrewarmHandle>(prewarm, "prewarm");
    std::vector<canopy::KernelSpec> list;
    json names = json::array();
    for (const auto& [name, spec] : pw.specs) {
      list.push_back(spec);
      names.push_back(name);
    }
    canopy::CubinCache cache(pw.cache_dir);
    const canopy::CubinCache::BatchResult r =
        cache.compile_all(list, threads > 0 ? static_cast<unsigned>(threads) : 0);
    const canopy::CubinCacheStats st = cache.stats();
    pw.result = json{{"kernels", list.size()},       {"compiled", st.compiles},
                     {"disk_hits", st.disk_hits},    {"failures", r.failures},
                     {"first_error", r.first_error}, {"seconds", r.seconds},
                     {"dir", cache.dir()},           {"specs", names}}
                    .dump();
    if (json_out != nullptr) *json_out = pw.result.c_str();
    canopy::check(r.failures == 0, canopy::ErrorKind::kCompile,
                  fmt::format("prewarm: {} of {} kernels failed; first: {}", r.failures,
                              list.size(), r.first_error));
  });
}

int canopy_bench_prewarm_destroy(void* prewarm) {
  return guarded(__func__, [&] { delete static_cast<PrewarmHandle*>(prewarm); });
}

}  // extern "C"
