// What a compiled kernel uses, read from its cubin without the CUDA driver:
// registers, stack frame, static shared memory, parameter bank, code size.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace canopy {

struct KernelResources {
  std::string name;               ///< the kernel's symbol
  int registers = -1;             ///< per thread; -1 when the cubin does not say
  std::uint64_t code_bytes = 0;   ///< SASS in .text.<kernel>
  std::uint64_t static_smem = 0;  ///< .nv.shared.<kernel>, bytes per block
  std::uint64_t param_bank = 0;   ///< .nv.constant0.<kernel>, bytes
  std::int64_t frame_bytes = -1;  ///< stack frame per thread; -1 when the cubin does not say
  std::int64_t min_stack = -1;
  std::int64_t max_stack = -1;
};

/// One entry per global function of `cubin`, from the per-function records of
/// its .nv.info section (EIATTR_REGCOUNT, EIATTR_FRAME_SIZE,
/// EIATTR_MIN/MAX_STACK_SIZE; older toolkits also keep the register count in
/// the top byte of the .text section's sh_info), the static shared memory
/// (.nv.shared.<kernel>) and the parameter constant bank
/// (.nv.constant0.<kernel>). Throws Error(kInvalidArgument) for malformed data.
std::vector<KernelResources> cubin_resources(const std::vector<char>& cubin);

}  // namespace canopy
