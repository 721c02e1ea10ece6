// KernelConfig and KernelSpec: canonical strings, symbol name, hash, and the
// specs a plan needs.
#include "canopy/kernel_spec.hpp"

#include <fmt/format.h>

#include <cstdio>

#include "canopy/error.hpp"
#include "canopy/plan.hpp"
#include "families/kernel_families.hpp"

namespace canopy {

const char* to_string(KernelFamily family) noexcept {
  switch (family) {
    case KernelFamily::kFmaAttention:
      return "fma";
    case KernelFamily::kMmaAttention:
      return "mma";
    case KernelFamily::kMergeStates:
      return "merge";
    case KernelFamily::kWgmmaAttention:
      return "wgmma";
  }
  return "unknown";
}

KernelFamily kernel_family_from_string(const std::string& name) {
  for (KernelFamily f : {KernelFamily::kFmaAttention, KernelFamily::kMmaAttention,
                         KernelFamily::kMergeStates, KernelFamily::kWgmmaAttention}) {
    if (name == to_string(f)) return f;
  }
  throw Error(ErrorKind::kInvalidArgument,
              fmt::format("unknown kernel family '{}' (expected fma, mma, wgmma or merge)", name));
}

std::string KernelConfig::to_string() const {
  return fmt::format("{}_q{}_kv{}_w{}_s{}", canopy::to_string(family), tile_q, tile_kv, warps,
                     stages);
}

KernelConfig KernelConfig::parse(const std::string& text) {
  // "<family>_q<rows>_kv<tokens>_w<warps>_s<stages>"
  const std::size_t sep = text.find('_');
  KernelConfig c;
  int consumed = 0;
  const bool ok = sep != std::string::npos &&
                  std::sscanf(text.c_str() + sep, "_q%d_kv%d_w%d_s%d%n", &c.tile_q, &c.tile_kv,
                              &c.warps, &c.stages, &consumed) == 4 &&
                  sep + consumed == text.size();
  check(ok, ErrorKind::kInvalidArgument,
        fmt::format("kernel config '{}' is not of the form <family>_q<rows>_kv<tokens>_w<warps>_"
                    "s<stages>, e.g. mma_q64_kv64_w4_s3",
                    text));
  c.family = kernel_family_from_string(text.substr(0, sep));
  // Attention tiles need positive sizes; the merge kernel has no tile (all zero).
  const bool merge = c.family == KernelFamily::kMergeStates;
  const bool sizes_ok = merge ? (c.tile_q == 0 && c.tile_kv == 0 && c.warps == 0 && c.stages == 0)
                              : (c.tile_q > 0 && c.tile_kv > 0 && c.warps > 0 && c.stages > 0);
  check(sizes_ok, ErrorKind::kInvalidArgument,
        fmt::format("kernel config '{}': {}", text,
                    merge ? "the merge family has no tile; write merge_q0_kv0_w0_s0"
                          : "rows, tokens, warps and stages must be positive"));
  // Only the canonical spelling (no signs, spaces or leading zeros).
  check(
      c.to_string() == text, ErrorKind::kInvalidArgument,
      fmt::format("kernel config '{}' is not canonical; did you mean '{}'?", text, c.to_string()));
  return c;
}

std::string KernelSpec::to_string() const {
  return fmt::format("{}_hd{}_q-{}_kv-{}_o-{}_{}_q{}_kv{}_w{}_s{}_cap{}_lse{}_fan{}_sm{}",
                     canopy::to_string(family), head_dim, canopy::to_string(q_dtype),
                     canopy::to_string(kv_dtype), canopy::to_string(o_dtype),
                     canopy::to_string(kv_layout), tile.tile_q, tile.tile_kv, tile.warps,
                     tile.stages, soft_cap ? 1 : 0, with_lse ? 1 : 0, merge_fan_in, arch.id()) +
         (persistent ? "_persistent" : "");
}

std::string KernelSpec::kernel_name() const {
  // A C identifier: the spec string with '-' turned into '_'.
  std::string name = "canopy_" + to_string();
  for (char& c : name) {
    if (c == '-') c = '_';
  }
  return name;
}

std::uint64_t KernelSpec::hash() const {
  // FNV-1a 64 over the canonical string: stable across runs and builds.
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : to_string()) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

KernelSpec partial_kernel_spec(const AttentionSpec& spec, const KernelConfig& tile, Arch arch,
                               bool persistent) {
  // Fields the partial kernel ignores are normalised so equal code has one spec:
  // it writes float32 partial states, and direct items' output rows in the
  // dtype the launch passes at run time (PartialParams::out_dtype).
  KernelSpec k;
  k.family = tile.family;
  k.head_dim = spec.head_dim;
  k.q_dtype = spec.q_dtype;
  k.kv_dtype = spec.kv_dtype;
  k.o_dtype = DType::kF32;
  k.kv_layout = spec.kv_layout;
  k.tile = tile;
  k.soft_cap = spec.logits_soft_cap > 0;
  k.with_lse = false;
  k.merge_fan_in = 0;
  k.arch = families::kernel_arch(tile.family, arch);
  k.persistent = persistent;
  return k;
}

namespace {

// Unrolled merge kernels exist for fan-ins 1, 2, 4, 8, 16; others round up.
int fan_in_bucket(int max_fan_in) {
  if (max_fan_in <= 0 || max_fan_in > kMaxUnrolledFanIn) return 0;
  int bucket = 1;
  while (bucket < max_fan_in) bucket *= 2;
  return bucket;
}

}  // namespace

KernelSpec merge_kernel_spec(const AttentionSpec& spec, int max_fan_in, Arch arch) {
  // The merge reads float32 partials (q/kv dtype fp32) and ignores tile and layout.
  KernelSpec k;
  k.family = KernelFamily::kMergeStates;
  k.head_dim = spec.head_dim;
  k.q_dtype = DType::kF32;
  k.kv_dtype = DType::kF32;
  k.o_dtype = spec.o_dtype;
  k.kv_layout = KvLayout::kNHD;
  k.tile = KernelConfig{KernelFamily::kMergeStates, 0, 0, 0, 0};
  k.soft_cap = false;
  k.with_lse = spec.with_lse;
  k.merge_fan_in = fan_in_bucket(max_fan_in);
  k.arch = families::kernel_arch(KernelFamily::kMergeStates, arch);
  return k;
}

std::vector<KernelSpec> plan_kernel_specs(const Plan& plan, Arch arch) {
  std::vector<KernelSpec> specs;
  for (const KernelConfig& c : plan.configs)
    specs.push_back(partial_kernel_spec(plan.spec, c, arch, plan.fused_merge));
  if (!plan.merge_requests.empty() && !plan.fused_merge) {
    specs.push_back(merge_kernel_spec(plan.spec, plan.max_merge_fan_in, arch));
  }
  return specs;
}

}  // namespace canopy
