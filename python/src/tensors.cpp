#include "tensors.hpp"

#include <fmt/format.h>

#include "canopy/error.hpp"

namespace nb = nanobind;

namespace canopy::python {
namespace {

constexpr int kDlCpu = 1;
constexpr int kDlCuda = 2;
constexpr int kDlCudaHost = 3;  // pinned host memory: the CPU executor reads it fine

std::string shape_text(const nb::ndarray<>& a) {
  std::string s = "[";
  for (std::size_t i = 0; i < a.ndim(); ++i) s += fmt::format("{}{}", i ? ", " : "", a.shape(i));
  return s + "]";
}

std::string dims_text(const std::vector<Dim>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) {
    s += fmt::format("{}{}{}{}", i ? ", " : "", dims[i].name, dims[i].at_least ? ">=" : "=",
                     dims[i].value);
  }
  return s + "]";
}

std::string array_placement(const nb::ndarray<>& a) {
  switch (a.device_type()) {
    case kDlCpu:
      return "cpu";
    case kDlCuda:
      return fmt::format("cuda:{}", a.device_id());
    case kDlCudaHost:
      return "cuda_host (pinned host memory)";
    default:
      return fmt::format("DLPack device type {} (id {})", a.device_type(), a.device_id());
  }
}

bool placed(const nb::ndarray<>& a, const Placement& where) {
  if (!where.cuda) return a.device_type() == kDlCpu || a.device_type() == kDlCudaHost;
  return a.device_type() == kDlCuda && a.device_id() == where.device;
}

}  // namespace

nb::dlpack::dtype dlpack_dtype(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return nb::dlpack::dtype{static_cast<std::uint8_t>(nb::dlpack::dtype_code::Float), 16, 1};
    case DType::kBF16:
      return nb::dlpack::dtype{static_cast<std::uint8_t>(nb::dlpack::dtype_code::Bfloat), 16, 1};
    case DType::kF32:
      return nb::dtype<float>();
  }
  return nb::dtype<float>();
}

nb::dlpack::dtype float64_dtype() { return nb::dtype<double>(); }

std::string dtype_name(nb::dlpack::dtype d) {
  using Code = nb::dlpack::dtype_code;
  const char* kind = nullptr;
  switch (static_cast<Code>(d.code)) {
    case Code::Int:
      kind = "int";
      break;
    case Code::UInt:
      kind = "uint";
      break;
    case Code::Float:
      kind = "float";
      break;
    case Code::Bfloat:
      kind = "bfloat";
      break;
    case Code::Bool:
      return "bool";
    default:
      return fmt::format("DLPack dtype code {} ({} bits)", d.code, d.bits);
  }
  return d.lanes == 1 ? fmt::format("{}{}", kind, d.bits)
                      : fmt::format("{}{}x{}", kind, d.bits, d.lanes);
}

std::string placement_name(const Placement& p) {
  return p.cuda ? fmt::format("cuda:{}", p.device) : std::string("cpu");
}

void check_array(const nb::ndarray<>& a, const char* name, const std::vector<Dim>& dims,
                 nb::dlpack::dtype dtype, const char* dtype_source, const Placement& where) {
  CANOPY_CHECK(placed(a, where), ErrorKind::kInvalidArgument, "{} is on {} but this run is on {}{}",
               name, array_placement(a), placement_name(where),
               where.cuda ? "" : " (the CPU executor takes host arrays, e.g. NumPy)");
  CANOPY_CHECK(a.dtype() == dtype, ErrorKind::kInvalidArgument,
               "{}: expected dtype {} ({}), got {}", name, dtype_name(dtype), dtype_source,
               dtype_name(a.dtype()));
  bool shape_ok = a.ndim() == dims.size();
  for (std::size_t i = 0; shape_ok && i < dims.size(); ++i) {
    const auto n = static_cast<std::int64_t>(a.shape(i));
    shape_ok = dims[i].at_least ? n >= dims[i].value : n == dims[i].value;
  }
  CANOPY_CHECK(shape_ok, ErrorKind::kInvalidArgument, "{}: expected shape {}, got {}", name,
               dims_text(dims), shape_text(a));
  // Row-major with no gaps; dims of extent 1 may carry any stride.
  std::int64_t expected = 1;
  for (std::size_t i = a.ndim(); i-- > 0;) {
    const auto n = static_cast<std::int64_t>(a.shape(i));
    if (n != 1) {
      CANOPY_CHECK(a.stride(i) == expected, ErrorKind::kInvalidArgument,
                   "{} must be C-contiguous (row-major, no gaps): dim {} has stride {} elements, "
                   "expected {} (shape {}); pass a contiguous copy",
                   name, i, a.stride(i), expected, shape_text(a));
    }
    expected *= n;
  }
}

std::vector<Dim> kv_cache_dims(const AttentionSpec& spec, std::int64_t num_pages) {
  const Dim pages{"num_pages", num_pages, true};
  const Dim slots{"page_size", spec.page_size};
  const Dim heads{"num_kv_heads", spec.num_kv_heads};
  const Dim dim{"head_dim", spec.head_dim};
  if (spec.kv_layout == KvLayout::kNHD) return {pages, slots, heads, dim};
  return {pages, heads, slots, dim};
}

}  // namespace canopy::python
