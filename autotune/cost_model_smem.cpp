// CostModel::smem_bytes asks the family registry, so the planner and the
// kernels share one definition of a config's shared memory.
#include "canopy/cost_model.hpp"
#include "canopy/kernel_spec.hpp"
#include "families/kernel_families.hpp"

namespace canopy {

int CostModel::smem_bytes(const AttentionSpec& spec, const KernelConfig& tile) {
  // The layout does not depend on the arch; any arch gives the same bytes.
  return families::kernel_smem_bytes(partial_kernel_spec(spec, tile, kSm90));
}

}  // namespace canopy
