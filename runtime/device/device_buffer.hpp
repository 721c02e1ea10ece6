// DeviceBuffer: one cuMemAlloc'ed block, freed (with its context current) on destruction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/device/driver.hpp"

namespace canopy::driver {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  /// Allocates `bytes` (none when 0) in `ctx`. `what` names the buffer in errors.
  DeviceBuffer(CUcontext ctx, std::size_t bytes, const std::string& what);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  CUdeviceptr get() const { return ptr_; }
  std::size_t size() const { return bytes_; }
  CUcontext context() const { return ctx_; }

  /// Synchronous copies of `bytes` at byte `offset`; bounds are checked.
  void upload(const void* host, std::size_t bytes, std::size_t offset = 0);
  void download(void* host, std::size_t bytes, std::size_t offset = 0) const;

  /// Frees now (no-op when empty).
  void reset() noexcept;

 private:
  CUcontext ctx_ = nullptr;
  CUdeviceptr ptr_ = 0;
  std::size_t bytes_ = 0;
};

}  // namespace canopy::driver
