// KernelConfig (a kernel's tile shape) and KernelSpec: exactly the fields that
// change generated kernel code.
#pragma once

#include <cstdint>
#include <string>

#include "canopy/arch.hpp"
#include "canopy/spec.hpp"

namespace canopy {

/// The tile shape of a partial-attention kernel: one thread block processes
/// up to `tile_q` query rows against `tile_kv` KV tokens per step.
struct KernelConfig {
  int tile_q = 16;   ///< query rows per thread block (multiple of 16 for tensor cores)
  int tile_kv = 64;  ///< KV tokens per pipeline step
  int warps = 4;
  int stages = 2;                 ///< KV pipeline depth
  std::string to_string() const;  ///< "q16_kv64_w4_s2"
  bool operator==(const KernelConfig&) const = default;
};

enum class KernelKind : std::uint8_t {
  kPartialAttention,  ///< a LaunchGroup's work items -> partial states
  kMergeStates,       ///< partial states -> out (and lse)
};

/// Batch size, lengths and tree shape stay out: they are run-time data.
/// For kMergeStates, `merge_fan_in` (1..kMaxUnrolledFanIn) makes the number
/// of partials a compile-time constant (the tree depth bounds it); 0 is the
/// general loop used for deeper trees. Tile fields are ignored for merges.
struct KernelSpec {
  KernelKind kind = KernelKind::kPartialAttention;
  int head_dim = 128;
  DType q_dtype = DType::kF16;
  DType kv_dtype = DType::kF16;
  DType o_dtype = DType::kF16;
  KvLayout kv_layout = KvLayout::kNHD;
  KernelConfig tile;
  bool soft_cap = false;
  bool with_lse = false;
  int merge_fan_in = 0;
  Arch arch = kSm90;  ///< the GPU target: sm_80, sm_86, sm_89, sm_90, sm_90a, ...

  /// Every field, e.g. "partial_hd128_q-fp16_kv-fp16_o-fp16_nhd_q16_kv64_w4_s2_cap0_lse0_fan0_sm90"
  /// (an `a` target ends in "_sm90a").
  std::string to_string() const;
  std::string kernel_name() const;  ///< the extern "C" symbol in the cubin
  std::uint64_t hash() const;
  bool operator==(const KernelSpec&) const = default;
};

inline constexpr int kMaxUnrolledFanIn = 16;

/// The partial-attention spec for one of a plan's configs, and its merge spec.
KernelSpec partial_kernel_spec(const AttentionSpec& spec, const KernelConfig& tile, Arch arch);
KernelSpec merge_kernel_spec(const AttentionSpec& spec, int max_fan_in, Arch arch);

}  // namespace canopy
