// Checks of DLPack arrays against a spec and a plan: shape, dtype, device and
// contiguity, each failure an Error(kInvalidArgument) naming the tensor, what
// was expected and what was found.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <string>
#include <vector>

#include "canopy/spec.hpp"

namespace canopy::python {

/// One expected dimension: `name=value`, or `name>=value` when at_least.
struct Dim {
  const char* name;
  std::int64_t value;
  bool at_least = false;
};

/// Where run() expects its arrays: the host (CPU executor) or one CUDA device.
struct Placement {
  bool cuda = false;
  int device = 0;  ///< CUDA ordinal when cuda
};

/// The DLPack dtype of a Canopy dtype, and of float64 (the CPU executor's).
nanobind::dlpack::dtype dlpack_dtype(DType dtype);
nanobind::dlpack::dtype float64_dtype();

std::string dtype_name(nanobind::dlpack::dtype dtype);
std::string placement_name(const Placement& p);

/// Throws unless `a` is on `where`, has `dtype` and `dims`, and is C-contiguous.
/// `dtype_source` says where the expected dtype comes from ("spec.q_dtype").
void check_array(const nanobind::ndarray<>& a, const char* name, const std::vector<Dim>& dims,
                 nanobind::dlpack::dtype dtype, const char* dtype_source, const Placement& where);
template <typename... Flags>
void check_array(const nanobind::ndarray<Flags...>& a, const char* name,
                 const std::vector<Dim>& dims, nanobind::dlpack::dtype dtype,
                 const char* dtype_source, const Placement& where) {
  check_array(nanobind::ndarray<>(a), name, dims, dtype, dtype_source, where);
}

/// The expected dims of the paged K or V cache for `spec`, with at least `num_pages` pages.
std::vector<Dim> kv_cache_dims(const AttentionSpec& spec, std::int64_t num_pages);

}  // namespace canopy::python
