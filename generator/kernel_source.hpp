// Generator: KernelSpec -> one self-contained CUDA C++17 translation unit.
// The launch facts the host needs for it (threads, shared memory, grid) come
// from the family registry (families/kernel_families.hpp), which this reads.
#pragma once

#include <string>

#include "canopy/kernel_spec.hpp"

namespace canopy::generator {

/// The full source: a provenance comment, the spec's constants, the inlined
/// templates and one extern "C" __global__ kernel named spec.kernel_name().
/// Byte-identical for equal specs. Validates the spec first
/// (families::validate_kernel_spec).
std::string generate_kernel_source(const KernelSpec& spec);

}  // namespace canopy::generator
