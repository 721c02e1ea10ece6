// Every NVRTC call is checked; failures carry enough context to reproduce.
#include "runtime/jit/nvrtc_compiler.hpp"

#include <fmt/format.h>
#include <nvrtc.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "canopy/error.hpp"

namespace canopy {

namespace {

void check_nvrtc(nvrtcResult result, const char* call) {
  if (result != NVRTC_SUCCESS) {
    throw Error(ErrorKind::kCompile,
                fmt::format("{} failed: {} ({})", call, nvrtcGetErrorString(result),
                            static_cast<int>(result)));
  }
}

/// Owns an nvrtcProgram so every exit path destroys it.
class Program {
 public:
  Program(const std::string& source, const std::string& name) {
    check_nvrtc(
        nvrtcCreateProgram(&prog_, source.c_str(), (name + ".cu").c_str(), 0, nullptr, nullptr),
        "nvrtcCreateProgram");
  }
  ~Program() {
    if (prog_ != nullptr) nvrtcDestroyProgram(&prog_);
  }
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;
  nvrtcProgram get() const { return prog_; }

 private:
  nvrtcProgram prog_ = nullptr;
};

std::string program_log(nvrtcProgram prog) {
  std::size_t size = 0;
  check_nvrtc(nvrtcGetProgramLogSize(prog, &size), "nvrtcGetProgramLogSize");
  std::string log(size, '\0');
  if (size > 0) check_nvrtc(nvrtcGetProgramLog(prog, log.data()), "nvrtcGetProgramLog");
  while (!log.empty() && (log.back() == '\0' || log.back() == '\n')) log.pop_back();
  return log;
}

/// Writes the failing source where a person can open it; returns the path or
/// a note saying why it could not be written.
std::string save_failed_source(const std::string& source, const std::string& name,
                               const std::string& failure_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path dir = failure_dir.empty() || failure_dir == "off"
                     ? fs::temp_directory_path(ec) / "canopy-failed-kernels"
                     : fs::path(failure_dir);
  fs::create_directories(dir, ec);
  const fs::path path = dir / fmt::format("{}.{}.cu", name, static_cast<long>(getpid()));
  std::ofstream out(path, std::ios::binary);
  out << source;
  out.close();
  if (!out) return fmt::format("(could not write the source under {})", dir.string());
  return path.string();
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : " ") + s;
  return out;
}

}  // namespace

std::vector<std::string> nvrtc_options(Arch arch, NvrtcOutput output) {
  const std::string target = output == NvrtcOutput::kCubin ? arch.to_string() : arch.virtual_name();
  return {"--gpu-architecture=" + target, "-std=c++17"};
}

std::string nvrtc_version() {
  int major = 0;
  int minor = 0;
  check_nvrtc(nvrtcVersion(&major, &minor), "nvrtcVersion");
  return fmt::format("{}.{}", major, minor);
}

NvrtcResult nvrtc_compile(const std::string& source, const std::string& program_name,
                          const std::string& spec_string, Arch arch, NvrtcOutput output,
                          const std::string& failure_dir) {
  NvrtcResult result;
  result.options = nvrtc_options(arch, output);
  std::vector<const char*> argv;
  for (const std::string& o : result.options) argv.push_back(o.c_str());

  Program prog(source, program_name);
  const auto start = std::chrono::steady_clock::now();
  const nvrtcResult compiled =
      nvrtcCompileProgram(prog.get(), static_cast<int>(argv.size()), argv.data());
  result.compile_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  result.log = program_log(prog.get());
  if (compiled != NVRTC_SUCCESS) {
    throw Error(
        ErrorKind::kCompile,
        fmt::format("NVRTC could not compile kernel {} ({})\n  spec: {}\n  options: {}\n"
                    "  source: {}\n  log:\n{}",
                    program_name, nvrtcGetErrorString(compiled), spec_string, join(result.options),
                    save_failed_source(source, program_name, failure_dir), result.log));
  }

  std::size_t size = 0;
  if (output == NvrtcOutput::kCubin) {
    check_nvrtc(nvrtcGetCUBINSize(prog.get(), &size), "nvrtcGetCUBINSize");
    result.binary.resize(size);
    check_nvrtc(nvrtcGetCUBIN(prog.get(), result.binary.data()), "nvrtcGetCUBIN");
  } else {
    check_nvrtc(nvrtcGetPTXSize(prog.get(), &size), "nvrtcGetPTXSize");
    result.binary.resize(size);
    check_nvrtc(nvrtcGetPTX(prog.get(), result.binary.data()), "nvrtcGetPTX");
    while (!result.binary.empty() && result.binary.back() == '\0') result.binary.pop_back();
  }
  check(!result.binary.empty(), ErrorKind::kCompile,
        fmt::format("NVRTC returned an empty {} for kernel {} (spec {})",
                    output == NvrtcOutput::kCubin ? "cubin" : "PTX", program_name, spec_string));
  return result;
}

}  // namespace canopy
