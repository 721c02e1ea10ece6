#include "runtime/device/device_buffer.hpp"

#include <fmt/format.h>

#include <utility>

namespace canopy::driver {

DeviceBuffer::DeviceBuffer(CUcontext ctx, std::size_t bytes, const std::string& what)
    : ctx_(ctx), bytes_(bytes) {
  if (bytes == 0) return;
  ScopedContext scope(ctx);
  check(api().mem_alloc(&ptr_, bytes), fmt::format("cuMemAlloc({} bytes for {})", bytes, what));
}

DeviceBuffer::~DeviceBuffer() { reset(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ctx_(std::exchange(other.ctx_, nullptr)),
      ptr_(std::exchange(other.ptr_, 0)),
      bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    ctx_ = std::exchange(other.ctx_, nullptr);
    ptr_ = std::exchange(other.ptr_, 0);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void DeviceBuffer::reset() noexcept {
  if (ptr_ != 0) {
    try {
      ScopedContext scope(ctx_);
      api().mem_free(ptr_);  // errors here (e.g. a sticky kernel fault) leave nothing to undo
    } catch (...) {
    }
  }
  ptr_ = 0;
  bytes_ = 0;
}

void DeviceBuffer::upload(const void* host, std::size_t bytes, std::size_t offset) {
  canopy::check(
      offset + bytes <= bytes_, ErrorKind::kInvalidArgument,
      fmt::format("DeviceBuffer::upload of {} bytes at offset {} overruns the {}-byte buffer",
                  bytes, offset, bytes_));
  if (bytes == 0) return;
  ScopedContext scope(ctx_);
  driver::check(api().memcpy_htod(ptr_ + offset, host, bytes),
                fmt::format("cuMemcpyHtoD({} bytes)", bytes));
}

void DeviceBuffer::download(void* host, std::size_t bytes, std::size_t offset) const {
  canopy::check(
      offset + bytes <= bytes_, ErrorKind::kInvalidArgument,
      fmt::format("DeviceBuffer::download of {} bytes at offset {} overruns the {}-byte buffer",
                  bytes, offset, bytes_));
  if (bytes == 0) return;
  ScopedContext scope(ctx_);
  driver::check(api().memcpy_dtoh(host, ptr_ + offset, bytes),
                fmt::format("cuMemcpyDtoH({} bytes)", bytes));
}

}  // namespace canopy::driver
