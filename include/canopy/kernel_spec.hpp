// KernelConfig (a kernel's tile shape) and KernelSpec: exactly the fields that
// change generated kernel code.
#pragma once

#include <cstdint>
#include <string>

#include "canopy/arch.hpp"
#include "canopy/spec.hpp"

namespace canopy {

/// Families of generated kernels. Each has one registry row
/// (families/kernel_families.hpp): templates, entry point, launch shape,
/// shared-memory layout and what it can implement.
enum class KernelFamily : std::uint8_t {
  kFmaAttention,    ///< partial attention, FP32 FMA reference (sm_80+)
  kMmaAttention,    ///< partial attention on tensor cores, mma.sync m16n8k16 (sm_80+)
  kMergeStates,     ///< partial states -> output rows (log-sum-exp merge)
  kWgmmaAttention,  ///< partial attention on Hopper warpgroup MMA (wgmma, sm_90a)
};

const char* to_string(KernelFamily family) noexcept;  ///< "fma", "mma", "merge", "wgmma"
KernelFamily kernel_family_from_string(const std::string& name);

/// One compiled partial-attention kernel: its family and tile shape. A
/// thread block processes one work item of up to `tile_q` query rows against
/// `tile_kv` KV tokens per pipeline step. The mma family runs items of any
/// row tile 16, 32, .. tile_q in one kernel (WorkItem::row_tile picks how the
/// warps are arranged); the FMA family runs row tile tile_q only.
struct KernelConfig {
  KernelFamily family = KernelFamily::kMmaAttention;
  int tile_q = 64;   ///< query rows per thread block, at most
  int tile_kv = 64;  ///< KV tokens per pipeline step
  int warps = 4;
  int stages = 3;                 ///< KV pipeline depth
  std::string to_string() const;  ///< "mma_q64_kv64_w4_s3"
  /// Parses to_string()'s form; throws Error(kInvalidArgument) naming the bad part.
  static KernelConfig parse(const std::string& text);
  bool operator==(const KernelConfig&) const = default;
};
/// Batch size, lengths and tree shape stay out: they are run-time data.
/// `family` says which kernel (families/kernel_families.hpp); partial
/// attention families (kFmaAttention, kMmaAttention, kWgmmaAttention) read `tile` (whose
/// family equals this one). For kMergeStates, `merge_fan_in`
/// (1..kMaxUnrolledFanIn) makes the number of partials a compile-time constant
/// (the tree depth bounds it); 0 is the general loop used for deeper trees.
/// Tile fields are ignored for merges. `persistent` picks the kernel's entry
/// form: a plain kernel runs one work item per block (items[item_begin +
/// blockIdx.x]); a persistent one walks a queue of items per block and runs
/// the fused merge (Plan::fused_merge). They are separate kernels because the
/// item loop costs the plain launches registers and instructions (perf-notes
/// v2.3, v2.4); only the families that fuse the merge have the second form.
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
  Arch arch = kSm90;        ///< the GPU target: sm_80, sm_86, sm_89, sm_90, sm_90a, ...
  bool persistent = false;  ///< the queue-walking, merge-fusing form (partial kernels)

  bool is_merge() const { return family == KernelFamily::kMergeStates; }
  /// Every field, e.g. "mma_hd128_q-fp16_kv-fp16_o-fp32_nhd_q64_kv64_w4_s3_cap0_lse0_fan0_sm90"
  /// (an `a` target ends in "_sm90a"; a persistent kernel adds "_persistent").
  std::string to_string() const;
  std::string kernel_name() const;  ///< the extern "C" symbol in the cubin
  std::uint64_t hash() const;
  bool operator==(const KernelSpec&) const = default;
};

inline constexpr int kMaxUnrolledFanIn = 16;

/// The partial-attention spec for one of a plan's configs, and its merge spec,
/// for a device of arch `arch`: the spec's arch is the target a kernel of its
/// family compiles for there (the device's, or its arch-specific `a` target
/// for a family that needs one, e.g. sm_90 -> sm_90a). `persistent`: the
/// form a plan with a fused merge launches (Plan::fused_merge).
KernelSpec partial_kernel_spec(const AttentionSpec& spec, const KernelConfig& tile, Arch arch,
                               bool persistent = false);
KernelSpec merge_kernel_spec(const AttentionSpec& spec, int max_fan_in, Arch arch);

}  // namespace canopy
