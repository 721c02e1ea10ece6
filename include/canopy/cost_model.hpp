// CostModel: the planner's only source of timing estimates.
#pragma once

#include <string>

#include "canopy/arch.hpp"
#include "canopy/kernel_spec.hpp"
#include "canopy/spec.hpp"

namespace canopy {

/// Per-GPU coefficients. Defaults are H100 SXM datasheet values, derated to
/// what decode kernels reach; the tuning database (canopy-tune) replaces them.
struct GpuCoefficients {
  std::string name = "H100-SXM (datasheet defaults)";
  int num_sms = kSm90.default_num_sms();  ///< 132
  Arch arch = kSm90;
  double hbm_bytes_per_us = 3.0e6;     ///< 3.0 TB/s streaming read
  double tensor_flops_per_us = 6.0e8;  ///< 600 TFLOP/s fp16 mma.sync, dense
  double item_overhead_us = 1.5;       ///< per work item: block start, Q load, epilogue
  double launch_overhead_us = 3.0;     ///< per kernel launch
  double merge_bytes_per_us = 2.5e6;   ///< merge kernel streaming rate
  int max_smem_per_block = kSm90.max_smem_per_block();  ///< bytes, opt-in maximum (227 KiB)
  bool operator==(const GpuCoefficients&) const = default;
};

/// t(item) = overhead + max(t_mem, t_math), per SM, where with rows padded to
/// whole tiles (R' = ceil(rows / tile_q) * tile_q) and tiles = R' / tile_q:
///   t_mem  = tiles * tokens * 2 * head_dim * kv_bytes / (hbm_bytes_per_us / num_sms)
///   t_math = 4 * R' * tokens * head_dim / (tensor_flops_per_us / num_sms)
/// docs/cost-model.md derives these.
class CostModel {
 public:
  CostModel() = default;
  explicit CostModel(GpuCoefficients coefficients) : c_(std::move(coefficients)) {}
  const GpuCoefficients& coefficients() const { return c_; }

  /// One work item on one SM while every SM is busy.
  double item_us(const AttentionSpec& spec, const KernelConfig& tile, int rows, int tokens) const;
  /// Merging `partials` states of one output row.
  double merge_row_us(const AttentionSpec& spec, int partials) const;
  double launch_us() const { return c_.launch_overhead_us; }
  /// Shared memory one thread block of this config needs (bytes).
  static int smem_bytes(const AttentionSpec& spec, const KernelConfig& tile);
  bool fits(const AttentionSpec& spec, const KernelConfig& tile) const;

 private:
  GpuCoefficients c_;
};

}  // namespace canopy
