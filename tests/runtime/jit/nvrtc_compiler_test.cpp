// NVRTC wrapper: options, PTX output, and failures that carry their context.
#include "runtime/jit/nvrtc_compiler.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "canopy/error.hpp"
#include "canopy/kernel_spec.hpp"
#include "generator/kernel_source.hpp"

namespace canopy {
namespace {

TEST(NvrtcCompiler, OptionsTargetTheExactArch) {
  const std::vector<std::string> cubin = nvrtc_options(kSm80);
  EXPECT_EQ(cubin.front(), "--gpu-architecture=sm_80");
  EXPECT_NE(std::find(cubin.begin(), cubin.end(), "-std=c++17"), cubin.end());
  EXPECT_EQ(nvrtc_options(kSm90, NvrtcOutput::kPtx).front(), "--gpu-architecture=compute_90");
  EXPECT_EQ(nvrtc_options(kSm90a).front(), "--gpu-architecture=sm_90a");
  EXPECT_EQ(nvrtc_options(kSm90a, NvrtcOutput::kPtx).front(), "--gpu-architecture=compute_90a");
  EXPECT_FALSE(nvrtc_version().empty());
}

TEST(NvrtcCompiler, CompilesCubinAndPtx) {
  AttentionSpec a;
  const KernelSpec k = merge_kernel_spec(a, 1, kSm90);
  const std::string src = generator::generate_kernel_source(k);
  const NvrtcResult cubin = nvrtc_compile(src, k.kernel_name(), k.to_string(), kSm90);
  ASSERT_GE(cubin.binary.size(), 4u);
  EXPECT_EQ(std::string(cubin.binary.data(), 4),
            "\x7f"
            "ELF");
  EXPECT_GT(cubin.compile_ms, 0);
  const NvrtcResult ptx =
      nvrtc_compile(src, k.kernel_name(), k.to_string(), kSm90, NvrtcOutput::kPtx);
  const std::string text(ptx.binary.begin(), ptx.binary.end());
  EXPECT_NE(text.find(".entry " + k.kernel_name()), std::string::npos);
  EXPECT_NE(text.find(".target sm_90"), std::string::npos);
}

TEST(NvrtcCompiler, FailureCarriesLogOptionsSpecAndSourcePath) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / "canopy-nvrtc-test-failures").string();
  std::filesystem::remove_all(dir);
  // A generated kernel with one line broken, as a template bug would do.
  AttentionSpec a;
  const KernelSpec k = merge_kernel_spec(a, 1, kSm90);
  std::string src = generator::generate_kernel_source(k);
  src += "\n__device__ int broken() { return undeclared_identifier_xyz; }\n";
  try {
    nvrtc_compile(src, k.kernel_name(), k.to_string(), kSm90, NvrtcOutput::kCubin, dir);
    FAIL() << "a broken source compiled";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.kind(), ErrorKind::kCompile);
    EXPECT_NE(msg.find("undeclared_identifier_xyz"), std::string::npos) << msg;  // the log
    EXPECT_NE(msg.find("--gpu-architecture=sm_90"), std::string::npos) << msg;
    EXPECT_NE(msg.find(k.to_string()), std::string::npos) << msg;
    EXPECT_NE(msg.find(dir), std::string::npos) << msg;
    bool saved = false;
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      saved = saved || entry.path().extension() == ".cu";
    }
    EXPECT_TRUE(saved);
  }
  std::filesystem::remove_all(dir);
}

TEST(NvrtcCompiler, UnknownArchIsACompileError) {
  try {
    nvrtc_compile("extern \"C\" __global__ void k() {}", "k", "test", Arch{1, 2});
    FAIL() << "sm_12 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kCompile);
    EXPECT_NE(std::string(e.what()).find("sm_12"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace canopy
