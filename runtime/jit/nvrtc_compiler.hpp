// NVRTC: generated source -> CUBIN for one exact GPU arch (or PTX to inspect).
#pragma once

#include <string>
#include <vector>

#include "canopy/arch.hpp"

namespace canopy {

enum class NvrtcOutput { kCubin, kPtx };

struct NvrtcResult {
  std::vector<char> binary;          ///< the cubin (ELF) or the PTX text
  std::string log;                   ///< NVRTC's program log (warnings), may be empty
  std::vector<std::string> options;  ///< exactly what was passed to nvrtcCompileProgram
  double compile_ms = 0;             ///< wall time of nvrtcCompileProgram
};

/// The options used for `arch`: the real target (sm_90, sm_90a) for cubins so
/// the driver never JIT-compiles PTX, the virtual one (compute_90a) for PTX.
std::vector<std::string> nvrtc_options(Arch arch, NvrtcOutput output = NvrtcOutput::kCubin);

/// "13.0": the NVRTC library version (part of the cubin cache key).
std::string nvrtc_version();

/// Compiles `source` (program name `program_name`, usually the kernel name).
/// On failure throws Error(kCompile) carrying the NVRTC log, the options, the
/// spec string and the path where the source was written for inspection
/// (`failure_dir`, or a temp directory when empty).
NvrtcResult nvrtc_compile(const std::string& source, const std::string& program_name,
                          const std::string& spec_string, Arch arch,
                          NvrtcOutput output = NvrtcOutput::kCubin,
                          const std::string& failure_dir = "");

}  // namespace canopy
