// The cost model's formulas; docs/cost-model.md explains each term.
#include "canopy/cost_model.hpp"

#include <algorithm>

namespace canopy {

double CostModel::item_us(const AttentionSpec& spec, const KernelConfig& tile, int rows,
                          int tokens) const {
  const double sms = c_.num_sms;
  const int tiles = (rows + tile.tile_q - 1) / tile.tile_q;
  const double padded_rows = static_cast<double>(tiles) * tile.tile_q;
  // Each tile is its own thread block and streams the KV range once.
  const double kv_bytes =
      static_cast<double>(tiles) * tokens * 2.0 * spec.head_dim * dtype_bytes(spec.kv_dtype);
  const double t_mem = kv_bytes / (c_.hbm_bytes_per_us / sms);
  // QK^T and PV: 2 GEMMs of 2 * rows * tokens * head_dim flops each.
  const double t_math = 4.0 * padded_rows * tokens * spec.head_dim / (c_.tensor_flops_per_us / sms);
  // Partial states written (float32 output row + lse) and read back by the merge.
  const double t_out = 2.0 * rows * (spec.head_dim + 1) * 4.0 / (c_.hbm_bytes_per_us / sms);
  return tiles * c_.item_overhead_us + std::max(t_mem, t_math) + t_out;
}

double CostModel::merge_row_us(const AttentionSpec& spec, int partials) const {
  const double bytes = partials * (spec.head_dim + 1) * 4.0 +
                       spec.head_dim * static_cast<double>(dtype_bytes(spec.o_dtype));
  return bytes / (c_.merge_bytes_per_us / c_.num_sms);
}

bool CostModel::fits(const AttentionSpec& spec, const KernelConfig& tile) const {
  return smem_bytes(spec, tile) <= c_.max_smem_per_block;
}

}  // namespace canopy
