// The kernel family registry: one row per KernelFamily saying what its kernels
// need (arch, instructions), how they are generated (templates, entry point,
// parameter block), launched (threads, shared memory, registers) and which
// specs they implement, and the launch facts derived from it. Shared
// vocabulary below the planner: the planner, the cost model, the generator,
// the JIT, the runtime, the CI compile test and canopy-inspect all read this
// table (and include nothing of each other's to do so), so a new family (a
// Hopper wgmma/TMA one, a persistent one) is one new row.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "canopy/arch.hpp"
#include "canopy/kernel_spec.hpp"
#include "canopy/spec.hpp"

namespace canopy::families {

/// Why a family cannot implement a spec (CUTLASS-style status, for the
/// planner and the autotuner: no exception, no message formatting).
enum class Support : std::uint8_t {
  kOk,
  kArchTooOld,    ///< the family's instructions are missing on this arch (or its `a` target)
  kHeadDim,       ///< head_dim not generated
  kDtype,         ///< element types not supported
  kTileShape,     ///< tile fields out of the family's range
  kSharedMemory,  ///< the layout exceeds the arch's per-block limit
  kWrongFamily,   ///< the spec's tile names another family
  kNoPersistent,  ///< a persistent spec of a family without that form (no fused merge)
};
const char* to_string(Support s) noexcept;

/// can_implement's answer: on failure, the field, its value and the rule it
/// breaks (static strings, so answering allocates nothing).
struct Verdict {
  Support support = Support::kOk;
  const char* field = "";
  int value = 0;
  const char* rule = "";
  bool ok() const { return support == Support::kOk; }
};

/// The math instructions a family's main loop is built on.
enum class Instruction : std::uint8_t {
  kNone,     ///< no matrix math (the merge: loads, exponentials, FMAs per row)
  kFma,      ///< float32 FMA on CUDA cores
  kMmaSync,  ///< warp-level mma.sync m16n8k16 (sm_80+)
  kWgmma,    ///< warpgroup wgmma.mma_async (sm_90a only)
};
const char* to_string(Instruction i) noexcept;  ///< "none", "fma", "mma.sync", "wgmma"
/// Whether `arch` has the instruction (Arch::has_mma, Arch::has_wgmma).
bool has_instruction(Arch arch, Instruction i) noexcept;

/// The parameter block a family's kernel takes by value
/// (templates/common/kernel_abi.cuh): the generator writes the kernel's
/// signature from it and the runtime fills that struct per launch.
enum class ParamsBlock : std::uint8_t {
  kPartial,  ///< canopy_abi::PartialParams: work items -> partial states or output rows
  kMerge,    ///< canopy_abi::MergeParams: partial states -> output rows
};

/// One family, as data (like a CUTLASS operation description). Requirements
/// first: can_implement's shared checks read them, so a row states what it
/// needs instead of coding it.
struct FamilyInfo {
  KernelFamily family;
  const char* name;  ///< as in KernelSpec strings
  /// The oldest arch with the family's instructions (cp.async, bf16
  /// conversions and mma.sync all came with sm_80).
  Arch min_arch;
  /// The family's code uses instructions only min_arch's arch-specific
  /// target has (wgmma, setmaxnreg on sm_90a): it compiles for that `a`
  /// target (kernel_arch) and runs on no other SM.
  bool needs_arch_specific;
  Instruction instruction;
  ParamsBlock params;
  /// Partial families: the kernel walks a queue of items per block (a
  /// persistent launch) and merges the rows its items complete in place
  /// (templates/common/item_queue.cuh), so a step needs no merge launch.
  /// That form is its own kernel (KernelSpec::persistent).
  bool fused_merge;
  /// Paths under templates/ ("sm80/attention_mma.cuh"), inlined in this
  /// order after kCommonTemplates.
  std::span<const std::string_view> templates;
  const char* device_entry;                   ///< device function the kernel calls
  int (*threads)(const KernelSpec& spec);     ///< block size (__launch_bounds__' first argument)
  int (*smem_bytes)(const KernelSpec& spec);  ///< dynamic shared memory: the layout's total
  /// Registers per thread the kernel may use (templates/common/kernel_layouts.cuh):
  /// the generated __launch_bounds__ holds ptxas to it (min_blocks_per_sm)
  /// and occupancy() counts with it.
  int (*max_registers)(const KernelSpec& spec);
  /// The family's own checks, after the shared ones (can_implement below).
  Verdict (*can_implement)(const KernelSpec& spec, Arch arch) noexcept;
  /// Partial families: the per-item row tiles a kernel of this config runs
  /// at this head dim.
  std::vector<int> (*row_tiles)(int head_dim, const KernelConfig& config);
  /// Partial families: the configs shipped (compiled in CI, offered to the planner).
  std::vector<KernelConfig> (*shipped_configs)(const AttentionSpec& spec);
  /// Partial families: how many KV heads one item of `row_tile` rows may pack
  /// (1: no head packs).
  int (*head_pack)(const AttentionSpec& spec, const KernelConfig& config, int row_tile);
};

/// The templates every kernel starts with (the ABI and the device helpers),
/// before its family's own; names are paths under templates/.
inline constexpr std::array<std::string_view, 2> kCommonTemplates = {"common/kernel_abi.cuh",
                                                                     "common/device_common.cuh"};

/// The row of `family`; every KernelFamily has one.
const FamilyInfo& family_info(KernelFamily family);
/// Every row, partial-attention families first.
std::span<const FamilyInfo> all_families();

/// True for families that turn work items into partial states (their
/// parameter block is PartialParams).
bool is_partial_family(KernelFamily f);

/// The arch a kernel of `family` compiles for on a device of arch `device`:
/// the device's SM with `a` for a family that needs_arch_specific (sm_90 ->
/// sm_90a), the device arch itself otherwise (also when the family cannot
/// run there, or is unknown: can_implement says why). partial_kernel_spec
/// and merge_kernel_spec apply it, so the runtime, the planner, the tools
/// and the CI compile test name the same target.
Arch kernel_arch(KernelFamily family, Arch device) noexcept;
Arch kernel_arch(const FamilyInfo& family, Arch device) noexcept;

/// The arch checks of can_implement, from the row's requirement fields
/// alone: `arch` at least min_arch (kArchTooOld), the min_arch's `a` target
/// itself when needs_arch_specific (kArchTooOld, also for sm_90 or sm_100a),
/// the instruction present on `arch` (has_instruction).
Verdict check_arch(const FamilyInfo& family, Arch arch) noexcept;

/// The checks every family shares, read from its row (arch >= min_arch, the
/// `a` target when needs_arch_specific, the instruction on the arch; head dim;
/// for partial families dtypes and positive tile fields, the tile naming the
/// spec's family), then the row's own can_implement(spec, arch).
Verdict can_implement(const KernelSpec& spec, Arch arch) noexcept;
/// can_implement(spec, spec.arch): the arch the spec compiles for.
Verdict can_implement(const KernelSpec& spec) noexcept;

/// What a family needs of the arch, in words: "sm_80 or newer", or
/// "sm_90a (the arch-specific target: wgmma runs on no other arch)".
std::string arch_requirement(const FamilyInfo& family);

/// Throws Error(kInvalidArgument) for malformed fields, Error(kNotSupported)
/// for values no kernel is generated for, naming the field and its value:
/// can_implement(spec, spec.arch) as an exception.
void validate_kernel_spec(const KernelSpec& spec);

/// Threads per block the kernel is compiled for (its __launch_bounds__).
int kernel_threads(const KernelSpec& spec);

/// Dynamic shared memory per block in bytes (0 for merges). Launches need
/// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES set to this when > 48 KiB.
int kernel_smem_bytes(const KernelSpec& spec);

/// Registers per thread the kernel may use (the row's max_registers).
int kernel_max_registers(const KernelSpec& spec);

/// The generated kernel's __launch_bounds__(threads, min_blocks_per_sm):
/// the blocks of kernel_threads(spec) that kernel_max_registers(spec) leave
/// room for (canopy_abi::blocks_by_registers), so ptxas keeps the kernel's
/// registers within that and occupancy() can count on it.
int min_blocks_per_sm(const KernelSpec& spec);

/// Grid size for a launch: one block per work item for partial attention,
/// one block per merge_rows_per_block() merge entries for merges (one warp
/// each).
int merge_rows_per_block(const KernelSpec& spec);

/// The code of `dtype` in generated kernels (canopy_abi::DTypeCode).
int dtype_code(DType dtype);

}  // namespace canopy::families
