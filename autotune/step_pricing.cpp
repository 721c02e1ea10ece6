// StepPricer: block slots, the merge, launches and the step time
// (docs/cost-model.md).
#include "autotune/step_pricing.hpp"

#include <algorithm>

#include "families/occupancy.hpp"

namespace canopy::autotune {

StepPricer::StepPricer(const AttentionSpec& spec, const GpuCoefficients& gpu,
                       std::span<const KernelConfig> configs) {
  init(spec, gpu, blocks_per_sm(spec, configs, gpu.arch));
}

StepPricer::StepPricer(const AttentionSpec& spec, const GpuCoefficients& gpu, int per_sm) {
  init(spec, gpu, per_sm);
}

void StepPricer::init(const AttentionSpec& spec, const GpuCoefficients& gpu, int per_sm) {
  per_sm_ = per_sm;
  slot_scale_ = per_sm;
  slots_ = gpu.num_sms * per_sm;
  num_sms_ = gpu.num_sms;
  num_qo_heads_ = spec.num_qo_heads;
  num_kv_heads_ = spec.num_kv_heads;
  head_dim_ = spec.head_dim;
  o_bytes_ = dtype_bytes(spec.o_dtype);
  merge_bytes_per_us_ = gpu.merge_bytes_per_us;
  launch_overhead_us_ = gpu.launch_overhead_us;
  merge_row1_ = merge_row_us(1);
}

int StepPricer::blocks_per_sm(const AttentionSpec& spec, const KernelConfig& config, Arch arch) {
  return families::blocks_per_sm(partial_kernel_spec(spec, config, arch), arch);
}

int StepPricer::blocks_per_sm(const AttentionSpec& spec, std::span<const KernelConfig> configs,
                              Arch arch) {
  if (configs.empty()) return arch.max_blocks_per_sm();
  int per_sm = 1;
  for (const KernelConfig& c : configs) per_sm = std::max(per_sm, blocks_per_sm(spec, c, arch));
  return per_sm;
}

double StepPricer::merge_row_us(int partials) const {
  // Each partial state is a float32 output row and its lse; the result is
  // one output row.
  const double bytes = partials * (head_dim_ + 1) * 4.0 + head_dim_ * static_cast<double>(o_bytes_);
  return bytes / (merge_bytes_per_us_ / num_sms_);
}

}  // namespace canopy::autotune
