// KernelSpec: exactly the fields that change generated kernel code.
#pragma once

#include <cstdint>
#include <string>

#include "canopy/plan.hpp"
#include "canopy/spec.hpp"

namespace canopy {

/// Batch size, lengths and tree shape stay out: they are run-time data.
/// `family` says which kernel (generator/kernel_families.hpp); partial
/// attention families (kFmaAttention, kMmaAttention) read `tile` (whose
/// family equals this one). For kMergeStates, `merge_fan_in`
/// (1..kMaxUnrolledFanIn) makes the number of partials a compile-time constant
/// (the tree depth bounds it); 0 is the general loop used for deeper trees.
/// Tile fields are ignored for merges.
struct KernelSpec {
  KernelFamily family = KernelFamily::kMmaAttention;
  int head_dim = 128;
  DType q_dtype = DType::kF16;
  DType kv_dtype = DType::kF16;
  DType o_dtype = DType::kF16;
  KvLayout kv_layout = KvLayout::kNHD;
  KernelConfig tile;
  bool soft_cap = false;
  bool with_lse = false;
  int merge_fan_in = 0;
  int arch = 90;  ///< compute capability major*10+minor: 80, 86, 89, 90

  bool is_merge() const { return family == KernelFamily::kMergeStates; }
  /// Every field, e.g. "mma_hd128_q-fp16_kv-fp16_o-fp32_nhd_q64_kv64_w4_s3_cap0_lse0_fan0_sm90".
  std::string to_string() const;
  std::string kernel_name() const;  ///< the extern "C" symbol in the cubin
  std::uint64_t hash() const;
  bool operator==(const KernelSpec&) const = default;
};

inline constexpr int kMaxUnrolledFanIn = 16;

/// The partial-attention spec for one of a plan's configs, and its merge spec.
KernelSpec partial_kernel_spec(const AttentionSpec& spec, const KernelConfig& tile, int arch);
KernelSpec merge_kernel_spec(const AttentionSpec& spec, int max_fan_in, int arch);

}  // namespace canopy
