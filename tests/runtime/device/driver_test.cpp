// The driver loader without a GPU: missing library, missing symbols, the
// toolkit's stub libcuda (cuInit fails), and gpu_available never throwing.
#include "runtime/device/driver.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include "canopy/runtime.hpp"
#include "tests/runtime/device/gpu_test_util.hpp"
#include "tests/test_data.hpp"

namespace canopy::test {
namespace {

TEST(Driver, MissingLibraryIsNoDevice) {
  EXPECT_EQ(expect_error([] { (void)driver::Api::load("/nonexistent/dir/libcuda.so.1"); },
                         ErrorKind::kNoDevice,
                         {"cannot load the CUDA driver library", "/nonexistent/dir/libcuda.so.1"}),
            "");
}

TEST(Driver, LibraryWithoutDriverSymbolsIsNoDevice) {
  // libm is always there and exports none of the driver API.
  EXPECT_EQ(expect_error([] { (void)driver::Api::load("libm.so.6"); }, ErrorKind::kNoDevice,
                         {"libm.so.6 has no symbol cuGetErrorName"}),
            "");
}

TEST(Driver, StubLibraryResolvesEverySymbolThenFailsCuInit) {
  // The toolkit's stub exports the whole API of its CUDA version (so every
  // versioned name in the table resolves) but cuInit always fails.
  if (gpu_present()) GTEST_SKIP() << "a real driver is loaded; the stub test runs without a GPU";
  std::string stub;
  for (const char* p : {"/usr/local/cuda/lib64/stubs/libcuda.so",
                        "/usr/local/cuda/targets/x86_64-linux/lib/stubs/libcuda.so"}) {
    if (std::filesystem::exists(p)) {
      stub = p;
      break;
    }
  }
  if (stub.empty()) GTEST_SKIP() << "no CUDA toolkit stub libcuda.so found";
  EXPECT_EQ(expect_error([&] { (void)driver::Api::load(stub); }, ErrorKind::kNoDevice,
                         {"cuInit(0)", "failed", "CUDA_ERROR_STUB_LIBRARY"}),
            "");
}

TEST(Driver, GpuAvailableAgreesWithRuntime) {
  std::string why;
  bool available = true;
  EXPECT_NO_THROW(available = gpu_available(&why));
  EXPECT_FALSE(why.empty());
  EXPECT_NO_THROW((void)gpu_available(nullptr));
  if (available) {
    EXPECT_NE(why.find("device(s)"), std::string::npos) << why;
  } else {
    // The Runtime refuses with the same reason, as kNoDevice.
    EXPECT_EQ(expect_error([] { Runtime rt; }, ErrorKind::kNoDevice, {why}), "");
    EXPECT_EQ(expect_error([] { (void)driver::api(); }, ErrorKind::kNoDevice, {why}), "");
  }
}

}  // namespace
}  // namespace canopy::test
