#include "names.hpp"

#include <fmt/format.h>
#include <nanobind/stl/string.h>

#include "canopy/error.hpp"

namespace nb = nanobind;

namespace canopy::python {
namespace {

/// A value's name: a str as is, a type by its __name__ (numpy.float16), any
/// other object by str() ("torch.float16", numpy dtype "float16").
std::string name_of(nb::handle value) {
  if (nb::isinstance<nb::str>(value)) return nb::cast<std::string>(value);
  if (PyType_Check(value.ptr()) && nb::hasattr(value, "__name__")) {
    return nb::cast<std::string>(value.attr("__name__"));
  }
  return nb::cast<std::string>(nb::str(value));
}

}  // namespace

DType dtype_arg(nb::handle value, const char* field) {
  std::string name = name_of(value);
  if (name.rfind("torch.", 0) == 0) name = name.substr(6);
  if (name == "fp16" || name == "f16" || name == "float16" || name == "half") return DType::kF16;
  if (name == "bf16" || name == "bfloat16") return DType::kBF16;
  if (name == "fp32" || name == "f32" || name == "float32" || name == "float") return DType::kF32;
  throw Error(ErrorKind::kInvalidArgument,
              fmt::format("{}: dtype '{}' is unknown; expected 'fp16', 'bf16' or 'fp32' (or "
                          "float16, bfloat16, float32 as strings, torch or NumPy dtypes)",
                          field, name_of(value)));
}

KvLayout layout_arg(nb::handle value, const char* field) {
  const std::string name = name_of(value);
  if (name == "NHD" || name == "nhd") return KvLayout::kNHD;
  if (name == "HND" || name == "hnd") return KvLayout::kHND;
  throw Error(ErrorKind::kInvalidArgument,
              fmt::format("{}: kv layout '{}' is unknown; expected 'NHD' "
                          "([pages, page_size, kv_heads, head_dim]) or 'HND' "
                          "([pages, kv_heads, page_size, head_dim])",
                          field, name));
}

const char* layout_name(KvLayout layout) { return layout == KvLayout::kNHD ? "NHD" : "HND"; }

}  // namespace canopy::python
