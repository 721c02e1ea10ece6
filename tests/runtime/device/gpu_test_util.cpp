#include "tests/runtime/device/gpu_test_util.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <thread>

namespace canopy::test {

bool gpu_present(std::string* why) {
  static std::string reason;
  static const bool present = gpu_available(&reason);
  if (why != nullptr) *why = reason;
  return present;
}

Runtime& shared_runtime() {
  static std::unique_ptr<Runtime> runtime = std::make_unique<Runtime>(RuntimeOptions{});
  return *runtime;
}

namespace {

CUcontext device_ctx() { return driver::device_context(0).context; }

driver::DeviceBuffer upload_values(const std::vector<double>& values, DType dtype,
                                   const char* what) {
  const std::vector<std::uint8_t> bytes = encode(values, dtype);
  driver::DeviceBuffer buffer(device_ctx(), bytes.size(), what);
  buffer.upload(bytes.data(), bytes.size());
  return buffer;
}

}  // namespace

DeviceTensors DeviceProblem::tensors(bool with_lse) const {
  DeviceTensors t;
  t.q = q.get();
  t.k_cache = k.get();
  t.v_cache = v.get();
  t.out = out.get();
  t.lse = with_lse ? lse.get() : 0;
  return t;
}

DeviceProblem upload(const HostProblem& problem) {
  const AttentionSpec& spec = problem.spec;
  DeviceProblem d;
  d.q = upload_values(problem.q, spec.q_dtype, "test q");
  d.k = upload_values(problem.k, spec.kv_dtype, "test k cache");
  d.v = upload_values(problem.v, spec.kv_dtype, "test v cache");
  d.out = driver::DeviceBuffer(
      device_ctx(), static_cast<std::size_t>(problem.out_elems() * dtype_bytes(spec.o_dtype)),
      "test out");
  d.lse = driver::DeviceBuffer(device_ctx(), static_cast<std::size_t>(problem.lse_elems() * 4),
                               "test lse");
  return d;
}

void poison_f32(CUdeviceptr ptr, std::size_t bytes) {
  if (bytes == 0) return;
  driver::ScopedContext scope(device_ctx());
  driver::check(driver::api().memset_d32(ptr, 0x7fc00000u, bytes / 4), "cuMemsetD32(NaN)");
}

void poison_outputs(const DeviceProblem& d, const AttentionSpec& spec) {
  driver::ScopedContext scope(device_ctx());
  const driver::Api& a = driver::api();
  const std::size_t n = d.out.size() / static_cast<std::size_t>(dtype_bytes(spec.o_dtype));
  switch (spec.o_dtype) {
    case DType::kF16:
      driver::check(a.memset_d16(d.out.get(), 0x7e00, n), "cuMemsetD16(out, fp16 NaN)");
      break;
    case DType::kBF16:
      driver::check(a.memset_d16(d.out.get(), 0x7fc0, n), "cuMemsetD16(out, bf16 NaN)");
      break;
    case DType::kF32:
      driver::check(a.memset_d32(d.out.get(), 0x7fc00000u, n), "cuMemsetD32(out, NaN)");
      break;
  }
  poison_f32(d.lse.get(), d.lse.size());
}

HostResult download(const DeviceProblem& d, const HostProblem& problem, bool with_lse) {
  driver::ScopedContext scope(device_ctx());
  driver::check(driver::api().ctx_synchronize(), "cuCtxSynchronize (after the attention kernels)");
  HostResult r;
  std::vector<std::uint8_t> bytes(d.out.size());
  d.out.download(bytes.data(), bytes.size());
  r.out = decode(bytes.data(), static_cast<std::size_t>(problem.out_elems()), problem.spec.o_dtype);
  if (with_lse) {
    std::vector<float> lse(static_cast<std::size_t>(problem.lse_elems()));
    d.lse.download(lse.data(), lse.size() * 4);
    r.lse.assign(lse.begin(), lse.end());
  }
  return r;
}

HostResult reference(const HostProblem& problem, bool with_lse) {
  return run_reference(problem, with_lse);
}

double tolerance(DType o_dtype) { return o_dtype == DType::kBF16 ? 1e-2 : 2e-3; }

Comparison compare(const HostResult& gpu, const HostResult& ref, const AttentionSpec& spec) {
  Comparison c;
  c.limit = tolerance(spec.o_dtype);
  for (double x : gpu.out) c.non_finite += std::isfinite(x) ? 0 : 1;
  for (double x : gpu.lse) c.non_finite += std::isfinite(x) ? 0 : 1;
  c.out_error = gpu.out.size() == ref.out.size() ? relative_l2(gpu.out, ref.out) : INFINITY;
  if (!ref.lse.empty() || !gpu.lse.empty()) {
    c.lse_error = gpu.lse.size() == ref.lse.size() ? relative_l2(gpu.lse, ref.lse) : INFINITY;
  }
  if (!std::isfinite(c.out_error)) c.out_error = INFINITY;
  if (!std::isfinite(c.lse_error)) c.lse_error = INFINITY;
  return c;
}

std::string shape_text(const AttentionSpec& spec, int batch) {
  return fmt::format("b{} hq{} hk{} d{} {}/{} {} p{}{}{}", batch, spec.num_qo_heads,
                     spec.num_kv_heads, spec.head_dim, to_string(spec.q_dtype),
                     to_string(spec.kv_dtype), to_string(spec.kv_layout), spec.page_size,
                     spec.logits_soft_cap > 0 ? " cap" : "", spec.with_lse ? " lse" : "");
}

CheckResult check_problem(const HostProblem& problem, const CheckOptions& options) {
  const AttentionSpec& spec = problem.spec;
  Runtime& rt = shared_runtime();
  CheckResult result;

  driver::DeviceBuffer workspace;
  PreparedPlan prepared;
  if (options.caller_workspace) {
    // Plan once to learn the size, then prepare with a NaN-poisoned workspace.
    PreparedPlan sizing = rt.plan(spec, problem.tables, options.planner);
    workspace = driver::DeviceBuffer(
        device_ctx(), static_cast<std::size_t>(sizing.workspace_bytes()), "test workspace");
    poison_f32(workspace.get(), workspace.size());
    prepared = rt.prepare(sizing.plan(), workspace.get());
  } else {
    prepared = rt.plan(spec, problem.tables, options.planner);
  }
  result.items = static_cast<int>(prepared.plan().items.size());
  result.launches = prepared.plan().device_launches();

  DeviceProblem d = upload(problem);
  poison_outputs(d, spec);
  rt.run(prepared, d.tensors(spec.with_lse));
  const HostResult gpu = download(d, problem, spec.with_lse);

  const auto t0 = std::chrono::steady_clock::now();
  const HostResult ref = reference(problem, spec.with_lse);
  result.ref_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  result.cmp = compare(gpu, ref, spec);
  return result;
}

// ---------------------------------------------------------------------------
// The report: collected during the run, printed by a gtest environment at the end.

namespace {

std::mutex report_mutex;
std::vector<ReportRow>& report_rows() {
  static std::vector<ReportRow> rows;
  return rows;
}

class ReportEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    std::lock_guard lock(report_mutex);
    const auto& rows = report_rows();
    if (rows.empty()) return;
    std::string text = fmt::format(
        "\n{:<10} {:<36} {:<44} {:>9} {:>6} {:>10} {:>10} {:>6} {:>7} {}\n", "suite", "case",
        "shape", "scaled", "items", "out_rel_l2", "lse_rel_l2", "nonfin", "ref_s", "result");
    for (const ReportRow& r : rows) {
      text +=
          fmt::format("{:<10} {:<36} {:<44} {:>9} {:>6} {:>10.3e} {:>10.3e} {:>6} {:>7.2f} {}\n",
                      r.suite, r.name, r.shape, r.scaled, r.items, r.out_error, r.lse_error,
                      r.non_finite, r.ref_seconds, r.ok ? "PASS" : "FAIL");
    }
    std::fputs(text.c_str(), stdout);
    std::fflush(stdout);
    if (const char* path = std::getenv("CANOPY_GPU_REPORT"); path != nullptr && *path != '\0') {
      std::ofstream f(path);
      f << "suite\tcase\tshape\tscaled\titems\tlaunches\tout_rel_l2\tlse_rel_l2\tnon_finite\tref_"
           "s\t"
           "result\n";
      for (const ReportRow& r : rows) {
        f << fmt::format("{}\t{}\t{}\t{}\t{}\t{}\t{:.3e}\t{:.3e}\t{}\t{:.2f}\t{}\n", r.suite,
                         r.name, r.shape, r.scaled, r.items, r.launches, r.out_error, r.lse_error,
                         r.non_finite, r.ref_seconds, r.ok ? "PASS" : "FAIL");
      }
    }
  }
};

[[maybe_unused]] ::testing::Environment* const report_env =
    ::testing::AddGlobalTestEnvironment(new ReportEnvironment);

}  // namespace

void add_report_row(const ReportRow& row) {
  std::lock_guard lock(report_mutex);
  report_rows().push_back(row);
}

}  // namespace canopy::test
