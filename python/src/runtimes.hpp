// One canopy::Runtime per CUDA device ordinal, created on first use and kept
// for the life of the process (plans and loaded kernels refer to its device).
#pragma once

#include "canopy/runtime.hpp"

namespace canopy::python {

/// Throws Error(kNoDevice) saying why when there is no GPU, and
/// Error(kInvalidArgument) for an ordinal the driver does not have.
Runtime& runtime_for(int device);

}  // namespace canopy::python
