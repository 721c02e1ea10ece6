// canopy._canopy: converts Python arguments and forwards to the canopy library.
// The public API is the canopy package (python/canopy), which wraps this module.
#include <nanobind/nanobind.h>

#include "bindings.hpp"

NB_MODULE(_canopy, m) {
  m.doc() =
      "Canopy's native module: prefix-aware decode attention (the C++ library, bound with "
      "nanobind). Use it through the `canopy` package.";
  m.attr("__version__") = CANOPY_PYTHON_VERSION;
  canopy::python::bind_errors(m);
  canopy::python::bind_spec(m);
  canopy::python::bind_options(m);
  canopy::python::bind_tables(m);
  canopy::python::bind_plan(m);
  canopy::python::bind_incremental(m);
  canopy::python::bind_device(m);
  canopy::python::bind_kernels(m);
}
