// Occupancy by limit: registers (per warp, in units of 256), shared memory
// (plus the 1 KiB reserved per block), threads and the arch's block limit.
#include "families/occupancy.hpp"

#include <algorithm>

#include "families/kernel_families.hpp"

namespace canopy::families {

Occupancy occupancy(Arch arch, int threads, int registers, std::int64_t dynamic_smem,
                    std::int64_t static_smem) {
  Occupancy o;
  o.threads = std::max(threads, 1);
  o.registers = std::max(registers, 1);
  o.smem_per_block =
      dynamic_smem + std::max<std::int64_t>(static_smem, arch.reserved_smem_per_block());
  const int warps = (o.threads + 31) / 32;
  const int regs_per_warp = (o.registers + 7) / 8 * 8 * 32;
  o.by_registers = arch.registers_per_sm() / (regs_per_warp * warps);
  o.by_smem = static_cast<int>(arch.max_smem_per_sm() / o.smem_per_block);
  o.by_threads = arch.max_threads_per_sm() / (warps * 32);
  o.by_block_limit = arch.max_blocks_per_sm();
  const int least = std::min({o.by_registers, o.by_smem, o.by_threads, o.by_block_limit});
  o.limiter = least == o.by_smem        ? "shared memory"
              : least == o.by_registers ? "registers"
              : least == o.by_threads   ? "threads"
                                        : "blocks per SM";
  o.blocks = std::max(1, least);
  return o;
}

Occupancy occupancy(const KernelSpec& spec, Arch arch) {
  return occupancy(arch, kernel_threads(spec), kernel_max_registers(spec), kernel_smem_bytes(spec));
}

int blocks_per_sm(const KernelSpec& spec, Arch arch) { return occupancy(spec, arch).blocks; }

}  // namespace canopy::families
