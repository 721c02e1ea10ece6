// Helpers for the GPU suites (Gpu*): skip when there is no GPU, device copies
// of a HostProblem, NaN poisoning, download and comparison with the float64
// reference, and a per-case report printed at the end of the run.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "canopy/runtime.hpp"
#include "runtime/device/device_buffer.hpp"
#include "runtime/device/driver.hpp"
#include "tests/test_data.hpp"

namespace canopy::test {

/// gpu_available(), asked once per process; `why` gets the reason either way.
bool gpu_present(std::string* why = nullptr);

/// The Runtime all GPU tests share (device 0, cache dir from the environment),
/// created on first use. Only call after gpu_present() returned true.
Runtime& shared_runtime();

/// Skips the current test, visibly, when there is no GPU.
#define CANOPY_REQUIRE_GPU()                                                                   \
  do {                                                                                         \
    std::string canopy_why_;                                                                   \
    if (!::canopy::test::gpu_present(&canopy_why_)) GTEST_SKIP() << "no GPU: " << canopy_why_; \
  } while (0)

/// A HostProblem's tensors on the device, plus out/lse buffers.
struct DeviceProblem {
  driver::DeviceBuffer q, k, v, out, lse;
  DeviceTensors tensors(bool with_lse) const;
};
DeviceProblem upload(const HostProblem& problem);

/// Fills out (and lse) with quiet NaNs of their dtype: 0x7e00 for fp16, 0x7fc0
/// for bf16, 0x7fc00000 for float32 (cuMemsetD16/D32 on the legacy stream).
void poison_outputs(const DeviceProblem& d, const AttentionSpec& spec);
/// Fills `bytes` at `ptr` with float32 NaNs (bytes a multiple of 4).
void poison_f32(CUdeviceptr ptr, std::size_t bytes);

/// Copies out (decoded to double) and, with `with_lse`, lse back. Synchronizes.
HostResult download(const DeviceProblem& d, const HostProblem& problem, bool with_lse);

/// The float64 reference of a problem (multithreaded over requests).
HostResult reference(const HostProblem& problem, bool with_lse);

/// Relative-L2 limit for an output dtype: 2e-3 for fp16, 1e-2 for bf16.
double tolerance(DType o_dtype);

/// Comparison of one GPU result with its reference.
struct Comparison {
  double out_error = 0;         ///< relative L2
  double lse_error = 0;         ///< relative L2 (0 without lse)
  std::int64_t non_finite = 0;  ///< NaN/inf elements in out and lse
  double limit = 0;
  bool ok() const { return non_finite == 0 && out_error < limit && lse_error < limit; }
};
Comparison compare(const HostResult& gpu, const HostResult& ref, const AttentionSpec& spec);

/// One row of the report printed after all tests (and written to
/// $CANOPY_GPU_REPORT when set, as tab-separated lines).
struct ReportRow {
  std::string suite;
  std::string name;
  std::string shape;   ///< e.g. "b64 hq32 hk8 d128 fp16 nhd p16"
  std::string scaled;  ///< "full" or the scale factor applied for the CPU reference
  int items = 0;
  int launches = 0;
  double out_error = 0;
  double lse_error = 0;
  std::int64_t non_finite = 0;
  double ref_seconds = 0;
  bool ok = false;
};
void add_report_row(const ReportRow& row);

/// Upload, poison, plan, run, download and compare one problem: the whole
/// correctness check used by the suites. `caller_workspace` uses a
/// NaN-poisoned workspace owned by the test instead of the plan's own.
struct CheckOptions {
  bool caller_workspace = true;
  PlannerOptions planner;
};
struct CheckResult {
  Comparison cmp;
  int items = 0;
  int launches = 0;
  double ref_seconds = 0;
};
CheckResult check_problem(const HostProblem& problem, const CheckOptions& options = {});

/// Short description of a spec and batch for reports.
std::string shape_text(const AttentionSpec& spec, int batch);

}  // namespace canopy::test
