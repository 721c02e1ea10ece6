// The cost model's formulas; docs/cost-model.md explains each term.
#include "canopy/cost_model.hpp"

#include <algorithm>
#include <cstdint>

#include "autotune/step_pricing.hpp"
#include "core/ceil_div.hpp"

namespace canopy {

std::map<std::string, KernelCoefficients> default_kernel_coefficients() {
  return {
      // v0 measured on an H100: 7.8 TFLOP/s on math-bound steps, 41% of HBM
      // bandwidth on flat ones, about 1.5 us per item.
      {"fma", {1.5, 8.0e6, 0.4}},
      // mma.sync on the H200 (perf notes, v1): the general kernel (16 rows
      // per warp) reached 200-220 TFLOP/s on wide shared prefixes and streams
      // at 0.87-0.91 of the roofline.
      {"mma", {1.0, 2.2e8, 0.9}},
      // The wide kernel (two m16 tiles per warp, each K/V fragment used
      // twice): 280 TFLOP/s on long prefixes; its 32-token stages keep half
      // the bytes in flight, and a 128-row block costs more to start and end.
      {"mma_q128_kv32_w4_s3", {3.0, 2.8e8, 0.6}},
      // wgmma on Hopper (sm_90a), a prior until measured (perf notes, v2):
      // warpgroup MMA from shared memory at about 60% of the dense rate with
      // two consumer warpgroups, the producer's 2-stage ring streaming like
      // the mma kernels; a block owns its SM, so an item costs more to start.
      {"wgmma", {2.0, 4.5e8, 0.85}},
      // One consumer warpgroup: half the math in flight per SM.
      {"wgmma_q64_kv128_w8_s2", {2.0, 3.0e8, 0.8}},
      {"wgmma_q64_kv64_w8_s2", {2.0, 3.0e8, 0.8}},
  };
}

const KernelCoefficients& GpuCoefficients::kernel(const KernelConfig& config) const {
  if (auto it = kernels.find(config.to_string()); it != kernels.end()) return it->second;
  if (auto it = kernels.find(to_string(config.family)); it != kernels.end()) return it->second;
  static const KernelCoefficients kFallback;
  return kFallback;
}

double CostModel::item_us(const AttentionSpec& spec, const KernelConfig& config, int row_tile,
                          int rows, int tokens, int heads) const {
  return item_us(spec, c_.kernel(config), row_tile, rows, tokens, heads);
}

double CostModel::item_us(const AttentionSpec& spec, const KernelCoefficients& k, int row_tile,
                          int rows, int tokens, int heads) const {
  const double sms = c_.num_sms;
  const auto tiles = static_cast<int>(ceil_div(rows, row_tile));
  // The first block over a KV range streams it from HBM; its siblings (other
  // row tiles of the same range, issued right after it) mostly hit L2.
  const double bytes =
      static_cast<double>(tokens) * 2.0 * spec.head_dim * dtype_bytes(spec.kv_dtype);
  const double t_mem = bytes / (c_.hbm_bytes_per_us * k.bandwidth_fraction / sms) +
                       (tiles - 1) * bytes / (c_.l2_bytes_per_us / sms);
  // QK^T and PV on whole row tiles: 2 GEMMs of 2 * rows * tokens * head_dim flops each.
  const double flops = k.flops_per_us > 0 ? k.flops_per_us : c_.tensor_flops_per_us;
  const double t_math =
      4.0 * tiles * row_tile * static_cast<double>(tokens) * spec.head_dim / (flops / sms);
  // Partial states written (float32 output row + lse) and read back by the merge.
  const double t_out = 2.0 * rows * (spec.head_dim + 1) * 4.0 / (c_.hbm_bytes_per_us / sms);
  // A head pack streams and computes `heads` times as much for one block start.
  return tiles * k.item_overhead_us + heads * (std::max(t_mem, t_math) + t_out);
}

// The step-level formulas live in StepPricer (autotune/step_pricing.hpp);
// these keep the public CostModel able to answer them. The slots per SM do
// not enter either answer.
double CostModel::merge_row_us(const AttentionSpec& spec, int partials) const {
  return autotune::StepPricer(spec, c_, 1).merge_row_us(partials);
}

double CostModel::step_us(const AttentionSpec& spec, double busiest_sm_us,
                          std::int64_t merged_partials, int launches) const {
  return autotune::StepPricer(spec, c_, 1).step_us(busiest_sm_us, merged_partials, launches);
}

bool CostModel::fits(const AttentionSpec& spec, const KernelConfig& tile) const {
  return smem_bytes(spec, tile) <= c_.max_smem_per_block;
}

}  // namespace canopy
