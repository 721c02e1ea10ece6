// canopy::Error: the one exception type Canopy throws, with a kind and context.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace canopy {

/// What went wrong, so callers (and the autotuner) can react without parsing text.
enum class ErrorKind {
  kInvalidArgument,  ///< bad spec, bad batch, bad tree: the caller's input is wrong
  kNotSupported,     ///< valid input that this build or device cannot run (e.g. head_dim 96)
  kCompile,          ///< NVRTC rejected generated source (message carries log and options)
  kDriver,           ///< a CUDA driver call failed (message carries cuGetErrorName/String)
  kNoDevice,         ///< no libcuda.so.1, no driver, or no GPU
  kCache,            ///< the cubin cache could not be used
  kIo,               ///< a file could not be read or written
};

const char* to_string(ErrorKind kind) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

/// Throws Error(kind, fmt::format(...)) when `condition` is false; the message
/// is only formatted on failure, so this is cheap inside loops.
#define CANOPY_CHECK(condition, kind, ...)                                       \
  do {                                                                           \
    if (!(condition)) throw ::canopy::Error((kind), ::fmt::format(__VA_ARGS__)); \
  } while (0)

/// Throws Error(kind, message) when `condition` is false (message built eagerly:
/// prefer CANOPY_CHECK in loops). The message should say
/// what was expected and what was found, naming the request, node or field.
inline void check(bool condition, ErrorKind kind, const std::string& message) {
  if (!condition) throw Error(kind, message);
}

}  // namespace canopy
