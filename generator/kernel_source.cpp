// Specializes the embedded templates for one KernelSpec.
#include "generator/kernel_source.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <string_view>
#include <vector>

#include "canopy/error.hpp"
#include "families/kernel_families.hpp"
#include "generator/embedded_templates.hpp"

namespace canopy::generator {
namespace {

using families::family_info;
using families::FamilyInfo;
using families::kernel_max_registers;
using families::kernel_smem_bytes;
using families::kernel_threads;
using families::min_blocks_per_sm;

/// The C++ type of a parameter block (templates/common/kernel_abi.cuh).
const char* params_type(families::ParamsBlock block) {
  switch (block) {
    case families::ParamsBlock::kPartial:
      return "canopy_abi::PartialParams";
    case families::ParamsBlock::kMerge:
      return "canopy_abi::MergeParams";
  }
  throw Error(ErrorKind::kInvalidArgument,
              fmt::format("unknown parameter block {}", static_cast<int>(block)));
}

/// The embedded name `target` means when template `from` includes it: a
/// path relative to `from`'s folder ("sm80/attention_mma.cuh" including
/// "../common/paged_kv.cuh" means "common/paged_kv.cuh"), as a compiler
/// would resolve it next to the file.
std::string resolve_include(std::string_view from, std::string_view target) {
  std::vector<std::string_view> parts;
  auto push_path = [&parts](std::string_view path) {
    std::size_t pos = 0;
    while (pos <= path.size()) {
      std::size_t end = path.find('/', pos);
      if (end == std::string_view::npos) end = path.size();
      const std::string_view part = path.substr(pos, end - pos);
      pos = end + 1;
      if (part.empty() || part == ".") continue;
      if (part == ".." && !parts.empty() && parts.back() != "..") {
        parts.pop_back();
      } else {
        parts.push_back(part);
      }
    }
  };
  const std::size_t slash = from.rfind('/');
  if (slash != std::string_view::npos) push_path(from.substr(0, slash));
  push_path(target);
  std::string out;
  for (std::string_view part : parts) {
    if (!out.empty()) out.push_back('/');
    out.append(part);
  }
  return out;
}

/// A template's text without `#pragma once` and without its quoted includes
/// of other templates, which the generator inlines itself in the family's
/// order: each must be one of `inlined` (the templates before it). Any other
/// include is a bug in the template (NVRTC gets no include paths).
std::string strip_template(std::string_view name, const std::vector<std::string_view>& inlined) {
  std::string_view text = template_text(name);
  std::string out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.starts_with("#pragma once")) continue;
    if (line.starts_with("#include")) {
      const std::size_t open = line.find('"');
      const std::size_t close = line.rfind('"');
      if (open != std::string_view::npos && close > open) {
        const std::string target = resolve_include(name, line.substr(open + 1, close - open - 1));
        if (std::find(inlined.begin(), inlined.end(), target) != inlined.end()) continue;
        if (has_template(target)) {
          throw Error(ErrorKind::kNotSupported,
                      fmt::format("template {} includes {}, which its family's template list "
                                  "(families/kernel_families.cpp) does not put before it",
                                  name, target));
        }
      }
      throw Error(
          ErrorKind::kNotSupported,
          fmt::format("template {} includes a file the generator cannot inline: {}", name, line));
    }
    out.append(line);
    out.push_back('\n');
  }
  return out;
}

std::string constants_struct(const KernelSpec& s) {
  const bool partial = !s.is_merge();
  return fmt::format(
      "// The specialization: every value the templates read at compile time.\n"
      "struct CanopySpec {{\n"
      "  static constexpr int kHeadDim = {};\n"
      "  static constexpr int kTileQ = {};\n"
      "  static constexpr int kTileKV = {};\n"
      "  static constexpr int kWarps = {};\n"
      "  static constexpr int kStages = {};\n"
      "  static constexpr int kThreads = {};\n"
      "  static constexpr int kQDtype = {};   // {}\n"
      "  static constexpr int kKvDtype = {};  // {}\n"
      "  static constexpr int kODtype = {};   // {}\n"
      "  static constexpr bool kKvLayoutHnd = {};  // {}\n"
      "  static constexpr bool kSoftCap = {};\n"
      "  static constexpr bool kWithLse = {};\n"
      "  static constexpr int kMergeFanIn = {};\n"
      "  static constexpr int kSmemBytes = {};\n"
      "  static constexpr int kMaxRegisters = {};\n"
      "  static constexpr int kMinBlocksPerSm = {};\n"
      "  static constexpr bool kPersistent = {};  // a queue of items per block, fused merge\n"
      "}};\n",
      s.head_dim, partial ? s.tile.tile_q : 0, partial ? s.tile.tile_kv : 0, kernel_threads(s) / 32,
      partial ? s.tile.stages : 0, kernel_threads(s), families::dtype_code(s.q_dtype),
      to_string(s.q_dtype), families::dtype_code(s.kv_dtype), to_string(s.kv_dtype),
      families::dtype_code(s.o_dtype), to_string(s.o_dtype), s.kv_layout == KvLayout::kHND,
      to_string(s.kv_layout), s.soft_cap, s.with_lse, s.merge_fan_in, kernel_smem_bytes(s),
      kernel_max_registers(s), min_blocks_per_sm(s), s.persistent);
}

}  // namespace

std::string generate_kernel_source(const KernelSpec& s) {
  families::validate_kernel_spec(s);
  const FamilyInfo& family = family_info(s.family);
  std::string src = fmt::format("// {}: generated by Canopy, do not edit.\n", s.to_string());
  src += fmt::format(
      "// Kernel {}: {} threads, {} bytes of dynamic shared memory, at most {} registers per "
      "thread ({} blocks per SM).\n\n",
      s.kernel_name(), kernel_threads(s), kernel_smem_bytes(s), kernel_max_registers(s),
      min_blocks_per_sm(s));
  src += constants_struct(s);
  std::vector<std::string_view> templates(families::kCommonTemplates.begin(),
                                          families::kCommonTemplates.end());
  templates.insert(templates.end(), family.templates.begin(), family.templates.end());
  for (std::size_t i = 0; i < templates.size(); ++i) {
    src += fmt::format("\n// ---- templates/{} ----\n", templates[i]);
    src += strip_template(templates[i], {templates.begin(), templates.begin() + i});
  }
  src += "\n// ---- the specialized entry point ----\n";
  // __launch_bounds__(threads, min blocks): ptxas keeps the registers within
  // what that many blocks leave per thread, the count occupancy() plans with.
  // Families that fuse the merge take FusedParams too: a persistent kernel
  // as its second parameter (the launch's queues and merge groups), a plain
  // one as an empty constant, so the plain kernel's parameter block stays
  // v1's (kernel_abi.cuh says why that matters).
  std::string params = fmt::format("{} params", params_type(family.params));
  std::string args = "params";
  if (family.fused_merge) {
    if (s.persistent) params += ", canopy_abi::FusedParams fused";
    args += s.persistent ? ", fused" : ", canopy_abi::FusedParams{}";
  }
  src += fmt::format(
      "extern \"C\" __global__ void __launch_bounds__({}, {}) {}({}) {{\n  "
      "{}<CanopySpec>({});\n}}\n",
      kernel_threads(s), min_blocks_per_sm(s), s.kernel_name(), params, family.device_entry, args);
  return src;
}

}  // namespace canopy::generator
