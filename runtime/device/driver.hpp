// The CUDA driver API, loaded at run time: libcuda.so.1 is dlopen'ed, never
// linked, and every entry point Canopy uses is resolved once into one table.
// cuda.h (from the toolkit) supplies the types and the versioned symbol names.
#pragma once

#include <cuda.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "canopy/arch.hpp"
#include "canopy/error.hpp"

namespace canopy::driver {

// X(field, api): `api` is the cuda.h name; its macro expansion (e.g.
// cuMemAlloc -> cuMemAlloc_v2) is the symbol looked up in libcuda, and the
// field has the type of that function.
#define CANOPY_DRIVER_FUNCTIONS(X)                                            \
  X(get_error_name, cuGetErrorName)                                           \
  X(get_error_string, cuGetErrorString)                                       \
  X(init, cuInit)                                                             \
  X(driver_get_version, cuDriverGetVersion)                                   \
  X(device_get_count, cuDeviceGetCount)                                       \
  X(device_get, cuDeviceGet)                                                  \
  X(device_get_name, cuDeviceGetName)                                         \
  X(device_get_attribute, cuDeviceGetAttribute)                               \
  X(device_total_mem, cuDeviceTotalMem)                                       \
  X(primary_ctx_retain, cuDevicePrimaryCtxRetain)                             \
  X(primary_ctx_release, cuDevicePrimaryCtxRelease)                           \
  X(ctx_get_current, cuCtxGetCurrent)                                         \
  X(ctx_push_current, cuCtxPushCurrent)                                       \
  X(ctx_pop_current, cuCtxPopCurrent)                                         \
  X(ctx_synchronize, cuCtxSynchronize)                                        \
  X(module_load_data, cuModuleLoadData)                                       \
  X(module_unload, cuModuleUnload)                                            \
  X(module_get_function, cuModuleGetFunction)                                 \
  X(func_set_attribute, cuFuncSetAttribute)                                   \
  X(func_get_attribute, cuFuncGetAttribute)                                   \
  X(launch_kernel, cuLaunchKernel)                                            \
  X(launch_kernel_ex, cuLaunchKernelEx)                                       \
  X(occupancy_max_active_blocks, cuOccupancyMaxActiveBlocksPerMultiprocessor) \
  X(tensor_map_encode_tiled, cuTensorMapEncodeTiled)                          \
  X(mem_alloc, cuMemAlloc)                                                    \
  X(mem_free, cuMemFree)                                                      \
  X(mem_get_address_range, cuMemGetAddressRange)                              \
  X(mem_get_info, cuMemGetInfo)                                               \
  X(memcpy_htod, cuMemcpyHtoD)                                                \
  X(memcpy_dtoh, cuMemcpyDtoH)                                                \
  X(memcpy_htod_async, cuMemcpyHtoDAsync)                                     \
  X(memcpy_dtoh_async, cuMemcpyDtoHAsync)                                     \
  X(memset_d8, cuMemsetD8)                                                    \
  X(memset_d16, cuMemsetD16)                                                  \
  X(memset_d32, cuMemsetD32)                                                  \
  X(memset_d32_async, cuMemsetD32Async)                                       \
  X(pointer_get_attribute, cuPointerGetAttribute)                             \
  X(stream_create, cuStreamCreate)                                            \
  X(stream_destroy, cuStreamDestroy)                                          \
  X(stream_synchronize, cuStreamSynchronize)                                  \
  X(stream_begin_capture, cuStreamBeginCapture)                               \
  X(stream_end_capture, cuStreamEndCapture)                                   \
  X(stream_is_capturing, cuStreamIsCapturing)                                 \
  X(event_create, cuEventCreate)                                              \
  X(event_destroy, cuEventDestroy)                                            \
  X(event_record, cuEventRecord)                                              \
  X(event_synchronize, cuEventSynchronize)                                    \
  X(event_elapsed_time, cuEventElapsedTime)                                   \
  X(graph_instantiate, cuGraphInstantiate)                                    \
  X(graph_launch, cuGraphLaunch)                                              \
  X(graph_exec_destroy, cuGraphExecDestroy)                                   \
  X(graph_destroy, cuGraphDestroy)

/// The function table. Obtain it with api(); every pointer is non-null.
struct Api {
#define CANOPY_DRIVER_FIELD(field, fn) decltype(&fn) field = nullptr;
  CANOPY_DRIVER_FUNCTIONS(CANOPY_DRIVER_FIELD)
#undef CANOPY_DRIVER_FIELD
  int driver_version = 0;  ///< cuDriverGetVersion, e.g. 13000
  int device_count = 0;    ///< at load time
  std::string library;     ///< the path that was opened

  /// Opens `library` (dlopen), resolves every entry point, calls cuInit(0) and
  /// counts the devices. Throws Error(kNoDevice) saying which step failed
  /// (library missing, symbol missing, cuInit error, no devices). The library
  /// stays loaded for the life of the process.
  static std::unique_ptr<Api> load(const std::string& library = "libcuda.so.1");
};

/// The process-wide table, loaded on first use from libcuda.so.1 (or
/// $CANOPY_LIBCUDA when set). Throws Error(kNoDevice) (the same reason every
/// time) when that failed.
const Api& api();

/// "CUDA_ERROR_OUT_OF_MEMORY (out of memory)" for `result`.
std::string error_text(const Api& api, CUresult result);

/// Throws Error(kDriver, "<what> failed: <name> (<description>)") unless
/// `result` is CUDA_SUCCESS.
void check(CUresult result, const std::string& what);
inline void check(CUresult result, const char* what) {
  if (result != CUDA_SUCCESS) check(result, std::string(what));
}

/// Makes `ctx` current for the scope (push/pop), unless it already is.
class ScopedContext {
 public:
  explicit ScopedContext(CUcontext ctx);
  ~ScopedContext();
  ScopedContext(const ScopedContext&) = delete;
  ScopedContext& operator=(const ScopedContext&) = delete;

 private:
  bool pushed_ = false;
};

/// Per-device process state: the retained primary context and the device's
/// properties. Created on first use and kept for the life of the process (the
/// primary context is never released, so modules and allocations tied to it
/// stay valid regardless of Runtime lifetimes).
struct DeviceContext {
  int ordinal = 0;
  CUdevice device = 0;
  CUcontext context = nullptr;
  std::string name;
  int num_sms = 0;
  int cc_major = 0;
  int cc_minor = 0;
  int max_smem_optin = 0;    ///< bytes per block with opt-in
  int memory_clock_khz = 0;  ///< peak memory clock
  int memory_bus_bits = 0;
  int l2_bytes = 0;
  std::size_t total_mem = 0;
  /// Peak DRAM bandwidth from the clock and bus width (double data rate), bytes/us.
  double peak_dram_bytes_per_us() const {
    return 2.0 * memory_clock_khz * 1e3 * (memory_bus_bits / 8.0) / 1e6;
  }
  /// The plain target of the device (sm_90, never sm_90a: kernels use no `a` features).
  Arch arch() const { return Arch{cc_major, cc_minor, false}; }
};

/// Throws Error(kNoDevice) for a bad ordinal, Error(kDriver) on driver errors.
const DeviceContext& device_context(int ordinal);

/// Process-wide instrumentation, read by tests (e.g. "run() compiles nothing").
struct Counters {
  std::atomic<std::int64_t> cubin_requests{0};  ///< kernels fetched from the CubinCache
  std::atomic<std::int64_t> modules_loaded{0};  ///< cuModuleLoadData calls
  std::atomic<std::int64_t> launches{0};        ///< cuLaunchKernel calls
};
Counters& counters();

}  // namespace canopy::driver

namespace canopy {
class Runtime;
struct CubinCacheStats;
namespace detail {
/// The statistics of a Runtime's cubin cache, for tests (defined in runtime.cpp).
CubinCacheStats cubin_cache_stats(const Runtime& runtime);
}  // namespace detail
}  // namespace canopy
