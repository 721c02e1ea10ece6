// Specializes the embedded templates for one KernelSpec.
#include "generator/kernel_source.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <string_view>

#include "canopy/error.hpp"
#include "generator/embedded_templates.hpp"

namespace canopy::generator {

namespace {

constexpr int kMergeThreads = 128;  // 4 warps, one output row each

bool is_half(DType t) { return t == DType::kF16 || t == DType::kBF16; }

int dtype_code(DType t) {
  // Matches canopy_dev::kDtF16 / kDtBF16 / kDtF32 in templates/device_common.cuh.
  switch (t) {
    case DType::kF16:
      return 0;
    case DType::kBF16:
      return 1;
    case DType::kF32:
      return 2;
  }
  return -1;
}

void require(bool ok, ErrorKind kind, const KernelSpec& spec, const std::string& what) {
  if (!ok) throw Error(kind, fmt::format("kernel spec {}: {}", spec.to_string(), what));
}

void validate_partial(const KernelSpec& s) {
  const KernelConfig& t = s.tile;
  require(is_half(s.q_dtype), ErrorKind::kNotSupported, s,
          fmt::format("q_dtype ({}) must be fp16 or bf16", to_string(s.q_dtype)));
  require(is_half(s.kv_dtype), ErrorKind::kNotSupported, s,
          fmt::format("kv_dtype ({}) must be fp16 or bf16", to_string(s.kv_dtype)));
  require(t.tile_q > 0 && t.tile_kv > 0 && t.warps > 0 && t.stages > 0, ErrorKind::kInvalidArgument,
          s,
          fmt::format("tile fields must be positive, got q{}_kv{}_w{}_s{}", t.tile_q, t.tile_kv,
                      t.warps, t.stages));
  require(t.tile_q % 8 == 0 && t.tile_q <= 128, ErrorKind::kNotSupported, s,
          fmt::format("tile_q ({}) must be a multiple of 8 up to 128", t.tile_q));
  require(t.tile_kv % 32 == 0 && t.tile_kv <= 256, ErrorKind::kNotSupported, s,
          fmt::format("tile_kv ({}) must be a multiple of 32 up to 256", t.tile_kv));
  require(t.warps <= 16, ErrorKind::kNotSupported, s,
          fmt::format("warps ({}) must be at most 16", t.warps));
  require(t.stages <= 4, ErrorKind::kNotSupported, s,
          fmt::format("stages ({}) must be 1..4", t.stages));
}

void validate_merge(const KernelSpec& s) {
  require(s.merge_fan_in >= 0 && s.merge_fan_in <= kMaxUnrolledFanIn, ErrorKind::kNotSupported, s,
          fmt::format("merge_fan_in ({}) must be 0..{}", s.merge_fan_in, kMaxUnrolledFanIn));
}

/// A template's text without `#pragma once` and without the quoted includes
/// the generator inlines itself; any other include is a bug in the template.
std::string strip_template(std::string_view name) {
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
      if (line.find("\"kernel_abi.cuh\"") != std::string_view::npos ||
          line.find("\"device_common.cuh\"") != std::string_view::npos) {
        continue;
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
  const bool partial = s.kind == KernelKind::kPartialAttention;
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
      "}};\n",
      s.head_dim, partial ? s.tile.tile_q : 0, partial ? s.tile.tile_kv : 0,
      partial ? s.tile.warps : kMergeThreads / 32, partial ? s.tile.stages : 0, kernel_threads(s),
      dtype_code(s.q_dtype), to_string(s.q_dtype), dtype_code(s.kv_dtype), to_string(s.kv_dtype),
      dtype_code(s.o_dtype), to_string(s.o_dtype), s.kv_layout == KvLayout::kHND,
      to_string(s.kv_layout), s.soft_cap, s.with_lse, s.merge_fan_in, kernel_smem_bytes(s));
}

}  // namespace

void validate_kernel_spec(const KernelSpec& s) {
  require(s.kind == KernelKind::kPartialAttention || s.kind == KernelKind::kMergeStates,
          ErrorKind::kInvalidArgument, s, "unknown kernel kind");
  require(is_supported_head_dim(s.head_dim), ErrorKind::kNotSupported, s,
          fmt::format("head_dim ({}) must be one of {}", s.head_dim,
                      fmt::join(kSupportedHeadDims, ", ")));
  require(s.arch.has_cp_async() && s.arch.has_mma(), ErrorKind::kNotSupported, s,
          fmt::format("arch ({}) must be sm_80 or newer (kernels use cp.async and bf16 mma)",
                      s.arch.to_string()));
  if (s.kind == KernelKind::kPartialAttention) {
    validate_partial(s);
  } else {
    validate_merge(s);
  }
}

int kernel_threads(const KernelSpec& s) {
  return s.kind == KernelKind::kPartialAttention ? s.tile.warps * 32 : kMergeThreads;
}

int kernel_smem_bytes(const KernelSpec& s) {
  if (s.kind != KernelKind::kPartialAttention) return 0;
  // Mirrors canopy_dev::PartialSmem in templates/partial_attention.cuh.
  const int d = s.head_dim;
  const int q = s.tile.tile_q;
  const int kv = s.tile.tile_kv;
  const int q_tile = q * d * 2;
  const int o_acc = q * d * 4;
  const int row_state = 3 * q * 4;  // m, l, alpha
  const int scores = q * kv * 4;
  const int kv_stages = 2 * s.tile.stages * kv * d * 2;
  return q_tile + o_acc + row_state + scores + kv_stages;
}

int merge_rows_per_block(const KernelSpec& s) {
  return s.kind == KernelKind::kMergeStates ? kMergeThreads / 32 : 1;
}

std::string generate_kernel_source(const KernelSpec& s) {
  validate_kernel_spec(s);
  const bool partial = s.kind == KernelKind::kPartialAttention;
  std::string src = fmt::format("// {}: generated by Canopy, do not edit.\n", s.to_string());
  src += fmt::format("// Kernel {}: {} threads, {} bytes of dynamic shared memory.\n\n",
                     s.kernel_name(), kernel_threads(s), kernel_smem_bytes(s));
  src += constants_struct(s);
  for (std::string_view name : {"kernel_abi.cuh", "device_common.cuh",
                                partial ? "partial_attention.cuh" : "merge_states.cuh"}) {
    src += fmt::format("\n// ---- templates/{} ----\n", name);
    src += strip_template(name);
  }
  src += "\n// ---- the specialized entry point ----\n";
  if (partial) {
    src += fmt::format(
        "extern \"C\" __global__ void __launch_bounds__({}) {}(canopy_abi::PartialParams params) "
        "{{\n  canopy_dev::partial_attention<CanopySpec>(params);\n}}\n",
        kernel_threads(s), s.kernel_name());
  } else {
    src += fmt::format(
        "extern \"C\" __global__ void __launch_bounds__({}) {}(canopy_abi::MergeParams params) "
        "{{\n  canopy_dev::merge_states<CanopySpec>(params);\n}}\n",
        kernel_threads(s), s.kernel_name());
  }
  return src;
}

}  // namespace canopy::generator
