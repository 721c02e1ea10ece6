// Inspection helpers: everything is recomputed from the spec, nothing cached.
#include "runtime/jit/kernel_inspect.hpp"

#include <fmt/format.h>

#include "canopy/error.hpp"
#include "families/kernel_families.hpp"
#include "generator/kernel_source.hpp"
#include "runtime/jit/elf_reader.hpp"
#include "runtime/jit/nvrtc_compiler.hpp"

namespace canopy {

KernelArtifact kernel_artifact_from_string(const std::string& name) {
  if (name == "source" || name == "cu") return KernelArtifact::kSource;
  if (name == "ptx") return KernelArtifact::kPtx;
  if (name == "summary") return KernelArtifact::kSummary;
  throw Error(ErrorKind::kInvalidArgument,
              fmt::format("--emit '{}' is unknown; expected source, ptx or summary", name));
}

std::string inspect_kernel(const KernelSpec& spec, KernelArtifact what) {
  const std::string source = generator::generate_kernel_source(spec);
  if (what == KernelArtifact::kSource) return source;
  if (what == KernelArtifact::kPtx) {
    const NvrtcResult ptx =
        nvrtc_compile(source, spec.kernel_name(), spec.to_string(), spec.arch, NvrtcOutput::kPtx);
    return std::string(ptx.binary.begin(), ptx.binary.end());
  }
  const NvrtcResult cubin = nvrtc_compile(source, spec.kernel_name(), spec.to_string(), spec.arch);
  const int smem = families::kernel_smem_bytes(spec);
  const int limit = spec.arch.max_smem_per_block();
  std::string out = fmt::format(
      "spec        {}\nkernel      {}\nthreads     {}\nsmem_bytes  {} ({} allows {}: {})\n"
      "source      {} bytes\ncubin       {} bytes, compiled in {:.0f} ms by NVRTC {}\n"
      "options     ",
      spec.to_string(), spec.kernel_name(), families::kernel_threads(spec), smem,
      spec.arch.to_string(), limit, smem <= limit ? "fits" : "TOO BIG", source.size(),
      cubin.binary.size(), cubin.compile_ms, nvrtc_version());
  for (const std::string& o : cubin.options) out += o + " ";
  out += "\nfunctions  ";
  for (const std::string& name : elf_function_names(cubin.binary)) out += " " + name;
  out += "\n";
  if (!cubin.log.empty()) out += "nvrtc log:\n" + cubin.log + "\n";
  return out;
}

}  // namespace canopy
