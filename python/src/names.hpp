// Python spellings of Canopy's enums: dtype and layout arguments accept the
// names people already use (strings, torch and NumPy dtypes).
#pragma once

#include <nanobind/nanobind.h>

#include <string>

#include "canopy/spec.hpp"

namespace canopy::python {

/// "fp16"/"float16"/"half"/torch.float16/numpy float16, "bf16"/"bfloat16"/
/// torch.bfloat16, "fp32"/"float32"/torch.float32. Throws
/// Error(kInvalidArgument) naming `field` and the value otherwise.
DType dtype_arg(nanobind::handle value, const char* field);
/// "NHD"/"nhd" or "HND"/"hnd".
KvLayout layout_arg(nanobind::handle value, const char* field);
/// The spelling properties return: "NHD" / "HND".
const char* layout_name(KvLayout layout);

}  // namespace canopy::python
