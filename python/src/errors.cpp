// canopy::Error -> one Python exception class per ErrorKind (canopy/_errors.py),
// with the C++ message unchanged.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <exception>
#include <string>

#include "bindings.hpp"
#include "canopy/error.hpp"

namespace nb = nanobind;

namespace canopy::python {
namespace {

/// The class in canopy/_errors.py for each kind. No default: a new ErrorKind
/// fails the build (-Wswitch -Werror) until it has its class.
const char* error_class_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument:
      return "InvalidArgumentError";
    case ErrorKind::kNotSupported:
      return "NotSupportedError";
    case ErrorKind::kCompile:
      return "CompileError";
    case ErrorKind::kDriver:
      return "DriverError";
    case ErrorKind::kNoDevice:
      return "NoDeviceError";
    case ErrorKind::kCache:
      return "CacheError";
    case ErrorKind::kIo:
      return "IoError";
  }
  return "Error";
}

// Runs with the GIL held (nanobind translates after the call returns). The
// classes live in Python so they can derive from ValueError etc. and carry
// docstrings; they are looked up when an error is raised, never at import.
void translate_canopy_error(const std::exception_ptr& p, void*) {
  try {
    std::rethrow_exception(p);
  } catch (const Error& e) {
    nb::object cls;
    try {
      cls = nb::module_::import_("canopy._errors").attr(error_class_name(e.kind()));
    } catch (const std::exception&) {
      const std::string text =
          std::string("canopy._errors could not be imported to raise: ") + e.what();
      PyErr_SetString(PyExc_RuntimeError, text.c_str());
      return;
    }
    PyErr_SetString(cls.ptr(), e.what());
  }
}

}  // namespace

void bind_errors(nb::module_& m) {
  nb::enum_<ErrorKind>(m, "ErrorKind", "What went wrong (canopy::ErrorKind, one to one).")
      .value("INVALID_ARGUMENT", ErrorKind::kInvalidArgument,
             "bad spec, batch, tables or tensors: the caller's input is wrong")
      .value("NOT_SUPPORTED", ErrorKind::kNotSupported,
             "valid input this build or device cannot run (e.g. head_dim 96)")
      .value("COMPILE", ErrorKind::kCompile, "NVRTC rejected generated source")
      .value("DRIVER", ErrorKind::kDriver, "a CUDA driver call failed")
      .value("NO_DEVICE", ErrorKind::kNoDevice, "no libcuda.so.1, no driver, or no GPU")
      .value("CACHE", ErrorKind::kCache, "the cubin cache could not be used")
      .value("IO", ErrorKind::kIo, "a file could not be read or written");
  nb::register_exception_translator(translate_canopy_error);

  m.def("_error_class_name", &error_class_name, nb::arg("kind"),
        "The canopy exception class raised for `kind` (for tests).");
  m.def(
      "_raise_error",
      [](ErrorKind kind, const std::string& message) { throw Error(kind, message); },
      nb::arg("kind"), nb::arg("message"),
      "Throws canopy::Error(kind, message) in C++ (tests the translation of every kind).");
}

}  // namespace canopy::python
