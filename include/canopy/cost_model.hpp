// CostModel: the planner's only source of timing estimates.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "canopy/arch.hpp"
#include "canopy/kernel_spec.hpp"
#include "canopy/spec.hpp"

namespace canopy {

/// What one kernel (a family, or one config of it) reaches on a GPU. These
/// are the numbers canopy-tune measures; the defaults are estimates.
struct KernelCoefficients {
  double item_overhead_us = 1.0;  ///< per work item: block start, Q load, pipeline fill, epilogue
  double flops_per_us = 0;        ///< whole-GPU math rate (0: GpuCoefficients::tensor_flops_per_us)
  double bandwidth_fraction = 1.0;  ///< of hbm_bytes_per_us, streamed when every SM runs such items
  bool operator==(const KernelCoefficients&) const = default;
};

/// The built-in estimates per family ("fma", "mma"): the FMA reference's are
/// its measured v0 rates (docs/perf-notes.md), the tensor-core family's a
/// prior until a tuning run replaces it.
std::map<std::string, KernelCoefficients> default_kernel_coefficients();

/// Per-GPU coefficients. Defaults are H100 SXM datasheet values, derated to
/// what decode kernels reach; Runtime fills in the device's SMs, arch, shared
/// memory and bandwidth; the tuning database (canopy-tune) replaces the rest.
struct GpuCoefficients {
  std::string name = "H100-SXM (datasheet defaults)";
  int num_sms = kSm90.default_num_sms();  ///< 132
  Arch arch = kSm90;
  double hbm_bytes_per_us = 3.0e6;     ///< 3.0 TB/s streaming read
  double l2_bytes_per_us = 7.0e6;      ///< KV re-read by sibling row tiles, served by L2
  double tensor_flops_per_us = 6.0e8;  ///< 600 TFLOP/s fp16 mma.sync, dense
  double launch_overhead_us = 3.0;     ///< per kernel launch
  double merge_bytes_per_us = 2.5e6;   ///< merge kernel streaming rate
  int max_smem_per_block = kSm90.max_smem_per_block();  ///< bytes, opt-in maximum (227 KiB)
  /// Keyed by KernelConfig::to_string() ("mma_q64_kv64_w4_s3") or by family
  /// name ("mma"); kernel() looks up the exact config, then its family.
  std::map<std::string, KernelCoefficients> kernels = default_kernel_coefficients();

  const KernelCoefficients& kernel(const KernelConfig& config) const;
  std::string to_json(int indent = 2) const;
  /// Throws Error(kInvalidArgument) naming the bad field.
  static GpuCoefficients from_json(const std::string& text);
  bool operator==(const GpuCoefficients&) const = default;
};

// clang-format off
/// t(item) = overhead + max(t_mem, t_math) + t_out per SM, where with
/// tiles = ceil(rows / row_tile) thread blocks over the same KV and
/// bytes = tokens * 2 * D * kv_bytes:
///   t_mem  = bytes / (B_k / S) + (tiles - 1) * bytes / (L2 / S)
///   t_math = 4 * tiles * row_tile * tokens * D / (F_k / S)
/// and a step costs its busiest block slot plus the merge plus one launch
/// overhead per launch. docs/cost-model.md derives these.
// clang-format on
class CostModel {
 public:
  CostModel() = default;
  explicit CostModel(GpuCoefficients coefficients) : c_(std::move(coefficients)) {}
  const GpuCoefficients& coefficients() const { return c_; }

  /// `rows` query rows over `tokens` KV tokens of one KV head, by kernel
  /// `config` with blocks of `row_tile` rows, while every SM is busy (SM-us).
  /// `heads` > 1: a head pack, the same rows of that many KV heads in one
  /// block (one row tile each).
  double item_us(const AttentionSpec& spec, const KernelConfig& config, int row_tile, int rows,
                 int tokens, int heads = 1) const;
  /// The same with the config's coefficients already looked up
  /// (coefficients().kernel(config)): the planner asks thousands of times.
  double item_us(const AttentionSpec& spec, const KernelCoefficients& kernel, int row_tile,
                 int rows, int tokens, int heads = 1) const;
  /// Merging `partials` states of one output row. This and step_us are the
  /// step-level formulas, answered by the planner's StepPricer
  /// (autotune/step_pricing.hpp), which also places items on block slots.
  double merge_row_us(const AttentionSpec& spec, int partials) const;
  double launch_us() const { return c_.launch_overhead_us; }
  /// A whole step: the busiest SM's load, the merge of `merged_partials`
  /// partial states (spread over every SM) and `launches` kernel launches.
  double step_us(const AttentionSpec& spec, double busiest_sm_us, std::int64_t merged_partials,
                 int launches) const;
  /// Shared memory one thread block of this config needs (bytes).
  static int smem_bytes(const AttentionSpec& spec, const KernelConfig& tile);
  bool fits(const AttentionSpec& spec, const KernelConfig& tile) const;

 private:
  GpuCoefficients c_;
};

}  // namespace canopy
