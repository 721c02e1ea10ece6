// What `canopy-inspect kernel` shows for one KernelSpec: the generated source,
// its PTX, or a summary of the compiled cubin. No GPU needed.
#pragma once

#include <string>

#include "canopy/kernel_spec.hpp"

namespace canopy {

enum class KernelArtifact {
  kSource,   ///< the generated CUDA C++ translation unit
  kPtx,      ///< NVRTC's PTX for compute_<arch>
  kSummary,  ///< spec, launch shape, shared memory vs the arch limit, cubin size, symbols
};

/// Throws Error(kInvalidArgument) for a name other than source|ptx|summary.
KernelArtifact kernel_artifact_from_string(const std::string& name);

/// Compiles when needed (NVRTC only); throws what the generator/NVRTC throw.
std::string inspect_kernel(const KernelSpec& spec, KernelArtifact what);

}  // namespace canopy
