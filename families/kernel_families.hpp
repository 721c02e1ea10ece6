// The kernel family registry: one row per KernelFamily saying how its kernels
// are generated (templates, entry point, parameter block), launched (threads,
// shared memory) and which specs and arches they implement, and the launch
// facts derived from it. Shared vocabulary below the planner: the planner, the
// cost model, the generator, the JIT, the runtime, the CI compile test and
// canopy-inspect all read this table (and include nothing of each other's to
// do so), so a new family (a Hopper wgmma/TMA one, a persistent one) is one
// new row.
#pragma once

#include <array>
#include <span>
#include <string_view>
#include <vector>

#include "canopy/arch.hpp"
#include "canopy/kernel_spec.hpp"
#include "canopy/plan.hpp"
#include "canopy/spec.hpp"

namespace canopy::families {

/// Why a family cannot implement a spec (CUTLASS-style status, for the
/// planner and the autotuner: no exception, no message formatting).
enum class Support : std::uint8_t {
  kOk,
  kArchTooOld,    ///< the family's instructions are missing on this arch
  kHeadDim,       ///< head_dim not generated
  kDtype,         ///< element types not supported
  kTileShape,     ///< tile fields out of the family's range
  kSharedMemory,  ///< the layout exceeds the arch's per-block limit
  kWrongFamily,   ///< the spec's tile names another family
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

struct FamilyInfo {
  KernelFamily family;
  const char* name;  ///< as in KernelSpec strings
  /// Paths under templates/ ("sm80/attention_mma.cuh"), inlined in this
  /// order after kCommonTemplates.
  std::span<const std::string_view> templates;
  const char* device_entry;                   ///< device function the kernel calls
  const char* params_type;                    ///< its parameter block (kernel_abi.cuh)
  int (*threads)(const KernelSpec& spec);     ///< block size (== __launch_bounds__)
  int (*smem_bytes)(const KernelSpec& spec);  ///< dynamic shared memory per block
  Verdict (*can_implement)(const KernelSpec& spec, Arch arch) noexcept;
  /// Partial families: the per-item row tiles a kernel of this config runs
  /// at this head dim.
  std::vector<int> (*row_tiles)(int head_dim, const KernelConfig& config);
  /// Partial families: the configs shipped (compiled in CI, offered to the planner).
  std::vector<KernelConfig> (*shipped_configs)(const AttentionSpec& spec);
  /// Partial families: how many KV heads one item of `row_tile` rows may pack
  /// (1: no head packs).
  int (*head_pack)(const AttentionSpec& spec, const KernelConfig& config, int row_tile);
  /// Registers per thread the compiled kernel uses, as measured with ptxas
  /// (docs/perf-notes.md); an estimate for occupancy before anything compiles.
  int (*registers)(const KernelSpec& spec);
};

/// The templates every kernel starts with (the ABI and the device helpers),
/// before its family's own; names are paths under templates/.
inline constexpr std::array<std::string_view, 2> kCommonTemplates = {"common/kernel_abi.cuh",
                                                                     "common/device_common.cuh"};

/// Thread blocks of `spec` resident on one SM of `arch`: the least of what
/// shared memory, registers (the family's estimate), threads and the block
/// limit allow; at least 1 for a kernel that launches at all.
int blocks_per_sm(const KernelSpec& spec, Arch arch);

/// The row of `family`; every KernelFamily has one.
const FamilyInfo& family_info(KernelFamily family);
/// Every row, partial-attention families first.
std::span<const FamilyInfo> all_families();

/// True for families that turn work items into partial states.
constexpr bool is_partial_family(KernelFamily f) { return f != KernelFamily::kMergeStates; }

/// The checks every family shares (arch >= sm_80, head dim, positive tile
/// fields), then family_info(spec.family).can_implement(spec, arch).
Verdict can_implement(const KernelSpec& spec, Arch arch) noexcept;

/// Throws Error(kInvalidArgument) for malformed fields, Error(kNotSupported)
/// for values no kernel is generated for, naming the field and its value:
/// can_implement(spec, spec.arch) as an exception.
void validate_kernel_spec(const KernelSpec& spec);

/// Threads per block the kernel is compiled for (its __launch_bounds__).
int kernel_threads(const KernelSpec& spec);

/// Dynamic shared memory per block in bytes (0 for merges). Launches need
/// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES set to this when > 48 KiB.
int kernel_smem_bytes(const KernelSpec& spec);

/// Grid size for a launch: one block per work item for partial attention,
/// one block per merge_rows_per_block() merge entries for merges.
int merge_rows_per_block(const KernelSpec& spec);

/// The code of `dtype` in generated kernels (canopy_dev::DTypeCode).
int dtype_code(DType dtype);

}  // namespace canopy::families
