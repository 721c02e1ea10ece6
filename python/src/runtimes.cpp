#include "runtimes.hpp"

#include <fmt/format.h>

#include <map>
#include <mutex>
#include <string>

#include "canopy/error.hpp"

namespace canopy::python {

Runtime& runtime_for(int device) {
  static std::mutex mutex;
  // Never destroyed: Python may free plans after static destructors ran, and
  // the driver's primary contexts live until exit anyway.
  static auto* runtimes = new std::map<int, Runtime*>();
  std::lock_guard lock(mutex);
  if (auto it = runtimes->find(device); it != runtimes->end()) return *it->second;
  std::string why;
  if (!gpu_available(&why)) {
    throw Error(ErrorKind::kNoDevice,
                fmt::format("no GPU was found ({}); canopy.plan(..., device='cpu') plans for the "
                            "CPU executor (float64, NumPy arrays)",
                            why));
  }
  CANOPY_CHECK(device >= 0, ErrorKind::kInvalidArgument, "CUDA device ordinal {} is negative",
               device);
  RuntimeOptions options;
  options.device = device;
  auto* runtime = new Runtime(options);
  runtimes->emplace(device, runtime);
  return *runtime;
}

}  // namespace canopy::python
