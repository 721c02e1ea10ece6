#include "runtime/device/driver.hpp"

#include <dlfcn.h>
#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

namespace canopy::driver {
namespace {

#define CANOPY_STRINGIFY_(x) #x
#define CANOPY_STRINGIFY(x) CANOPY_STRINGIFY_(x)

[[noreturn]] void no_device(const std::string& why) { throw Error(ErrorKind::kNoDevice, why); }

// dlsym returns an object pointer; copy its bits into the function pointer
// (converting directly is only conditionally supported).
template <typename Fn>
void resolve(void* handle, const char* symbol, const std::string& library, Fn& out) {
  void* p = dlsym(handle, symbol);
  if (p == nullptr) {
    no_device(fmt::format("{} has no symbol {} (driver too old for CUDA {}.{}?)", library, symbol,
                          CUDA_VERSION / 1000, CUDA_VERSION % 1000 / 10));
  }
  static_assert(sizeof(Fn) == sizeof(void*));
  std::memcpy(&out, &p, sizeof(p));
}

// Names for the codes cuInit reports, for drivers (and the toolkit's stub)
// whose cuGetErrorName cannot answer before initialisation.
const char* fallback_name(CUresult r, const char** text) {
  switch (r) {
    case CUDA_ERROR_NO_DEVICE:
      *text = "no CUDA-capable device is detected";
      return "CUDA_ERROR_NO_DEVICE";
    case CUDA_ERROR_STUB_LIBRARY:
      *text = "the CUDA driver is a stub library";
      return "CUDA_ERROR_STUB_LIBRARY";
    case CUDA_ERROR_DEVICE_UNAVAILABLE:
      *text = "the device is unavailable";
      return "CUDA_ERROR_DEVICE_UNAVAILABLE";
    case CUDA_ERROR_SYSTEM_DRIVER_MISMATCH:
      *text = "the kernel driver and libcuda versions differ";
      return "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH";
    case CUDA_ERROR_NOT_INITIALIZED:
      *text = "the driver is not initialized";
      return "CUDA_ERROR_NOT_INITIALIZED";
    case CUDA_ERROR_OPERATING_SYSTEM:
      *text = "an OS call failed";
      return "CUDA_ERROR_OPERATING_SYSTEM";
    case CUDA_ERROR_UNKNOWN:
      *text = "unknown error";
      return "CUDA_ERROR_UNKNOWN";
    default:
      return nullptr;
  }
}

std::string raw_error_text(const Api& a, CUresult result) {
  const char* name = nullptr;
  const char* text = nullptr;
  if (a.get_error_name == nullptr || a.get_error_name(result, &name) != CUDA_SUCCESS) {
    name = nullptr;
  }
  if (a.get_error_string == nullptr || a.get_error_string(result, &text) != CUDA_SUCCESS) {
    text = nullptr;
  }
  if (name == nullptr) {
    const char* fallback_text = nullptr;
    name = fallback_name(result, &fallback_text);
    if (text == nullptr) text = fallback_text;
  }
  return fmt::format("{} ({})", name != nullptr ? name : fmt::format("CUresult {}", int(result)),
                     text != nullptr ? text : "no description");
}

}  // namespace

std::unique_ptr<Api> Api::load(const std::string& library) {
  dlerror();
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = dlerror();
    no_device(
        fmt::format("cannot load the CUDA driver library {}: {} (is the NVIDIA driver "
                    "installed?)",
                    library, err != nullptr ? err : "unknown dlopen error"));
  }
  // The handle is never closed: function pointers and modules outlive any Api.
  auto a = std::make_unique<Api>();
  a->library = library;
#define CANOPY_DRIVER_RESOLVE(field, fn) resolve(handle, CANOPY_STRINGIFY(fn), library, a->field);
  CANOPY_DRIVER_FUNCTIONS(CANOPY_DRIVER_RESOLVE)
#undef CANOPY_DRIVER_RESOLVE

  CUresult r = a->init(0);
  if (r != CUDA_SUCCESS) {
    no_device(fmt::format("cuInit(0) from {} failed: {}", library, raw_error_text(*a, r)));
  }
  r = a->driver_get_version(&a->driver_version);
  if (r != CUDA_SUCCESS) {
    no_device(fmt::format("cuDriverGetVersion failed: {}", raw_error_text(*a, r)));
  }
  r = a->device_get_count(&a->device_count);
  if (r != CUDA_SUCCESS) {
    no_device(fmt::format("cuDeviceGetCount failed: {}", raw_error_text(*a, r)));
  }
  if (a->device_count <= 0) no_device("the CUDA driver reports no devices");
  return a;
}

const Api& api() {
  struct Loaded {
    std::unique_ptr<Api> api;
    std::string error;
  };
  static const Loaded loaded = [] {
    Loaded l;
    const char* env = std::getenv("CANOPY_LIBCUDA");
    try {
      l.api = Api::load(env != nullptr && *env != '\0' ? env : "libcuda.so.1");
    } catch (const Error& e) {
      l.error = e.what();
    }
    return l;
  }();
  if (!loaded.api) no_device(loaded.error);
  return *loaded.api;
}

std::string error_text(const Api& a, CUresult result) { return raw_error_text(a, result); }

void check(CUresult result, const std::string& what) {
  if (result == CUDA_SUCCESS) return;
  throw Error(ErrorKind::kDriver, fmt::format("{} failed: {}", what, error_text(api(), result)));
}

ScopedContext::ScopedContext(CUcontext ctx) {
  const Api& a = api();
  CUcontext current = nullptr;
  check(a.ctx_get_current(&current), "cuCtxGetCurrent");
  if (current != ctx) {
    check(a.ctx_push_current(ctx), "cuCtxPushCurrent");
    pushed_ = true;
  }
}

ScopedContext::~ScopedContext() {
  if (pushed_) {
    CUcontext popped = nullptr;
    api().ctx_pop_current(&popped);  // cannot throw from a destructor; nothing to undo on error
  }
}

const DeviceContext& device_context(int ordinal) {
  static std::mutex mutex;
  static std::map<int, std::unique_ptr<DeviceContext>>* contexts =
      new std::map<int, std::unique_ptr<DeviceContext>>();  // never destroyed: see header
  const Api& a = api();
  std::lock_guard lock(mutex);
  if (auto it = contexts->find(ordinal); it != contexts->end()) return *it->second;
  if (ordinal < 0 || ordinal >= a.device_count) {
    no_device(fmt::format("CUDA device {} requested but the driver reports {} device(s)", ordinal,
                          a.device_count));
  }
  auto d = std::make_unique<DeviceContext>();
  d->ordinal = ordinal;
  check(a.device_get(&d->device, ordinal), fmt::format("cuDeviceGet({})", ordinal));
  char name[256] = {};
  check(a.device_get_name(name, sizeof(name) - 1, d->device), "cuDeviceGetName");
  d->name = name;
  auto attribute = [&](CUdevice_attribute attr, const char* attr_name) {
    int v = 0;
    check(a.device_get_attribute(&v, attr, d->device),
          fmt::format("cuDeviceGetAttribute({}, device {})", attr_name, ordinal));
    return v;
  };
  d->num_sms = attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "MULTIPROCESSOR_COUNT");
  d->cc_major = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, "COMPUTE_CAPABILITY_MAJOR");
  d->cc_minor = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, "COMPUTE_CAPABILITY_MINOR");
  d->max_smem_optin = attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                                "MAX_SHARED_MEMORY_PER_BLOCK_OPTIN");
  d->memory_clock_khz = attribute(CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE, "MEMORY_CLOCK_RATE");
  d->memory_bus_bits =
      attribute(CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH, "GLOBAL_MEMORY_BUS_WIDTH");
  d->l2_bytes = attribute(CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, "L2_CACHE_SIZE");
  check(a.device_total_mem(&d->total_mem, d->device), "cuDeviceTotalMem");
  check(a.primary_ctx_retain(&d->context, d->device),
        fmt::format("cuDevicePrimaryCtxRetain(device {})", ordinal));
  auto [it, inserted] = contexts->emplace(ordinal, std::move(d));
  (void)inserted;
  return *it->second;
}

Counters& counters() {
  static Counters c;
  return c;
}

}  // namespace canopy::driver
