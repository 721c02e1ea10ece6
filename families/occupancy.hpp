// Occupancy: how many thread blocks of a kernel one SM holds, limit by limit.
// One computation for the registry's prediction (before anything compiles:
// the planner's block slots) and for a compiled kernel's real resources
// (canopy-inspect, the register test).
#pragma once

#include <cstdint>

#include "canopy/arch.hpp"
#include "canopy/kernel_spec.hpp"

namespace canopy::families {

struct Occupancy {
  int blocks = 0;          ///< resident blocks per SM: the least limit below, at least 1
  int by_registers = 0;    ///< registers per SM / registers per block (allocated per warp)
  int by_smem = 0;         ///< shared memory per SM / smem_per_block
  int by_threads = 0;      ///< threads per SM / threads per block
  int by_block_limit = 0;  ///< the arch's resident-block limit
  /// The limit that sets `blocks`: "shared memory", "registers", "threads"
  /// or "blocks per SM" (in that order when several tie).
  const char* limiter = "";
  int threads = 0;                  ///< per block
  int registers = 0;                ///< per thread, as counted
  std::int64_t smem_per_block = 0;  ///< dynamic + max(static, reserved), bytes
  int warps() const { return blocks * ((threads + 31) / 32); }  ///< resident warps per SM
};

/// The occupancy of blocks of `threads` threads using `registers` registers
/// each, `dynamic_smem` bytes of dynamic shared memory and `static_smem` in
/// the cubin's .nv.shared section, on one SM of `arch`. Registers are
/// allocated per warp in units of 256; a block takes its dynamic shared
/// memory plus the arch.reserved_smem_per_block() (1 KiB) the system keeps
/// per block, which NVRTC's sm_90 cubins record as their 1 KiB .nv.shared
/// section (so that counts once: max(static, reserved)).
Occupancy occupancy(Arch arch, int threads, int registers, std::int64_t dynamic_smem,
                    std::int64_t static_smem = 0);

/// The registry's prediction for `spec` on `arch`: threads, dynamic shared
/// memory and the family's register cap (kernel_max_registers, which the
/// generated __launch_bounds__ holds ptxas to), so a compiled kernel reaches
/// at least this many blocks by registers.
Occupancy occupancy(const KernelSpec& spec, Arch arch);

/// occupancy(spec, arch).blocks: the block slots per SM the planner places
/// items on.
int blocks_per_sm(const KernelSpec& spec, Arch arch);

}  // namespace canopy::families
