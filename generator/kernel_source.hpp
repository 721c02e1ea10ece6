// Generator: KernelSpec -> one self-contained CUDA C++17 translation unit,
// plus the launch facts (threads, shared memory) the host needs for it.
#pragma once

#include <string>

#include "canopy/kernel_spec.hpp"

namespace canopy::generator {

/// Throws Error(kInvalidArgument) for malformed fields, Error(kNotSupported)
/// for values no kernel is generated for, naming the field and its value.
void validate_kernel_spec(const KernelSpec& spec);

/// The full source: a provenance comment, the spec's constants, the inlined
/// templates and one extern "C" __global__ kernel named spec.kernel_name().
/// Byte-identical for equal specs. Validates the spec first.
std::string generate_kernel_source(const KernelSpec& spec);

/// Threads per block the kernel was compiled for (its __launch_bounds__).
int kernel_threads(const KernelSpec& spec);

/// Dynamic shared memory per block in bytes (0 for merges). Launches need
/// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES set to this when > 48 KiB.
int kernel_smem_bytes(const KernelSpec& spec);

/// Grid size for a launch: one block per work item for partial attention,
/// one block per merge_rows_per_block() merge entries for merges.
int merge_rows_per_block(const KernelSpec& spec);

/// The code of `dtype` in generated kernels (canopy_dev::DTypeCode).
int dtype_code(DType dtype);
}  // namespace canopy::generator
