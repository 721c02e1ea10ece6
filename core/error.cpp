// ErrorKind names, for messages and tools' exit reports.
#include "canopy/error.hpp"

namespace canopy {

const char* to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::kInvalidArgument:
      return "invalid argument";
    case ErrorKind::kNotSupported:
      return "not supported";
    case ErrorKind::kCompile:
      return "compile error";
    case ErrorKind::kDriver:
      return "driver error";
    case ErrorKind::kNoDevice:
      return "no device";
    case ErrorKind::kCache:
      return "cache error";
    case ErrorKind::kIo:
      return "I/O error";
  }
  return "unknown error";
}

}  // namespace canopy
