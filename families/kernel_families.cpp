// The registry rows. Shared-memory sizes and register caps come from
// templates/common/kernel_layouts.cuh, the same constexpr functions the
// kernels carve their memory with and the generator's __launch_bounds__ use.
#include "families/kernel_families.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <string>
#include <string_view>

#include "canopy/error.hpp"
#include "templates/common/kernel_abi.cuh"
#include "templates/common/kernel_layouts.cuh"

namespace canopy::families {
namespace {

bool is_half(DType t) { return t == DType::kF16 || t == DType::kBF16; }
bool is_pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }

int block_threads(const KernelSpec& s) { return s.tile.warps * 32; }

// ---- FMA reference ----------------------------------------------------------

int fma_smem(const KernelSpec& s) {
  return canopy_abi::fma_smem_layout(s.head_dim, s.tile.tile_q, s.tile.tile_kv, s.tile.stages)
      .total;
}

Verdict fma_can_implement(const KernelSpec& s, Arch arch) noexcept {
  const KernelConfig& t = s.tile;
  if (t.tile_q % 8 != 0 || t.tile_q > 128) {
    return {Support::kTileShape, "tile_q", t.tile_q, "a multiple of 8 up to 128"};
  }
  if (t.tile_kv % 32 != 0 || t.tile_kv > 256) {
    return {Support::kTileShape, "tile_kv", t.tile_kv, "a multiple of 32 up to 256"};
  }
  if (t.warps > 16) return {Support::kTileShape, "warps", t.warps, "at most 16"};
  if (t.stages > 4) return {Support::kTileShape, "stages", t.stages, "1..4"};
  if (fma_smem(s) > arch.max_smem_per_block()) {
    return {Support::kSharedMemory, "shared memory bytes", fma_smem(s), "within the arch limit"};
  }
  return {};
}

std::vector<int> fma_row_tiles(int, const KernelConfig& c) { return {c.tile_q}; }

int no_head_pack(const AttentionSpec&, const KernelConfig&, int) { return 1; }

int fma_registers(const KernelSpec& s) { return canopy_abi::fma_max_registers(s.head_dim); }

std::vector<KernelConfig> fma_configs(const AttentionSpec& spec) {
  // The reference: a narrow and a wide tile, chosen per task by the cost model.
  const int tile_kv = spec.head_dim > 128 ? 32 : 64;
  return {{KernelFamily::kFmaAttention, 16, tile_kv, 4, 2},
          {KernelFamily::kFmaAttention, 64, tile_kv, 4, 2}};
}

// ---- mma.sync tensor cores --------------------------------------------------

int mma_smem(const KernelSpec& s) {
  const KernelConfig& t = s.tile;
  return canopy_abi::mma_smem_layout(s.head_dim, t.tile_q, t.tile_kv, t.warps, t.stages).total;
}

std::vector<int> mma_row_tiles(int head_dim, const KernelConfig& c) {
  // 16 * row_warps rows; the other warps split each KV tile's tokens, and a
  // warp's slice must be a whole number of 16-token k-steps. With Q room for
  // 32 rows per warp (tile_q = 32 * warps, head dim <= 128: the registers
  // hold two m16 tiles of O), every warp along rows may own two m16 tiles.
  std::vector<int> tiles;
  for (int row_warps = 1; row_warps <= c.warps; row_warps *= 2) {
    if (c.warps % row_warps != 0) continue;
    const int kv_warps = c.warps / row_warps;
    if (c.tile_kv % (16 * kv_warps) == 0) tiles.push_back(16 * row_warps);
  }
  if (c.tile_q == 32 * c.warps && head_dim <= 128 && c.tile_kv % 16 == 0) {
    tiles.push_back(32 * c.warps);
  }
  return tiles;
}

Verdict mma_can_implement(const KernelSpec& s, Arch arch) noexcept {
  const KernelConfig& t = s.tile;
  if (!is_pow2(t.warps) || t.warps > 8) {
    return {Support::kTileShape, "warps", t.warps, "1, 2, 4 or 8"};
  }
  if (t.tile_q != 16 * t.warps && !(t.tile_q == 32 * t.warps && s.head_dim <= 128)) {
    return {Support::kTileShape, "tile_q", t.tile_q,
            "16 * warps, or 32 * warps at head dim <= 128 (rows per warp)"};
  }
  if (t.tile_kv % 16 != 0 || t.tile_kv > 256) {
    return {Support::kTileShape, "tile_kv", t.tile_kv, "a multiple of 16 up to 256"};
  }
  if (t.stages < 2 || t.stages > 4) return {Support::kTileShape, "stages", t.stages, "2..4"};
  // The cp.async gather covers a tile in whole passes of 16-byte chunks.
  const int chunks = s.head_dim / 8;
  const int threads = block_threads(s);
  if (threads % chunks != 0 || t.tile_kv % (threads / chunks) != 0) {
    return {Support::kTileShape, "tile_kv", t.tile_kv,
            "a multiple of the tokens one pass of the block copies (threads / (head_dim / 8))"};
  }
  if (!canopy_abi::mma_combine_fits(s.head_dim, t.tile_kv, t.warps, t.stages)) {
    return {Support::kTileShape, "stages", t.stages,
            "enough K/V stage bytes to combine the warps' states (16 * warps <= stages * tile_kv)"};
  }
  if (mma_row_tiles(s.head_dim, t).empty()) {
    return {Support::kTileShape, "tile_kv", t.tile_kv, "at least 16 tokens per warp"};
  }
  if (mma_smem(s) > arch.max_smem_per_block()) {
    return {Support::kSharedMemory, "shared memory bytes", mma_smem(s), "within the arch limit"};
  }
  return {};
}

int mma_head_pack(const AttentionSpec& spec, const KernelConfig& c, int row_tile) {
  // The 1 x warps arrangement (row tile 16) gives each warp one KV head
  // (MmaTraits::kHeadPacks: head dims up to 128).
  const std::vector<int> tiles = mma_row_tiles(spec.head_dim, c);
  const bool narrow = row_tile == 16 && !tiles.empty() && tiles.front() == 16;
  return narrow && spec.head_dim <= 128 ? c.warps : 1;
}

int mma_registers(const KernelSpec& s) { return canopy_abi::mma_max_registers(s.head_dim); }

std::vector<KernelConfig> mma_configs(const AttentionSpec& spec) {
  // The general kernel: four warps, rows 16 (and head packs) / 32 / 64 by
  // arrangement, two blocks per SM (D <= 128). The wide kernel: 128 rows of
  // a shared prefix per block (two m16 tiles per warp: every K/V fragment
  // feeds twice the math), 32-token stages so two blocks still fit per SM.
  if (spec.head_dim > 128) return {{KernelFamily::kMmaAttention, 64, 64, 4, 2}};
  return {{KernelFamily::kMmaAttention, 64, 64, 4, 3},
          {KernelFamily::kMmaAttention, 128, 32, 4, 3}};
}

// ---- wgmma (Hopper warpgroup MMA) -------------------------------------------

// A producer warpgroup and tile_q / 64 consumer warpgroups of 64 rows.
int wgmma_threads(const KernelSpec& s) { return 128 * (s.tile.tile_q / 64 + 1); }

int wgmma_smem(const KernelSpec& s) {
  const KernelConfig& t = s.tile;
  return canopy_abi::wgmma_smem_layout(s.head_dim, t.tile_q, t.tile_kv, t.stages).total;
}

Verdict wgmma_can_implement(const KernelSpec& s, Arch arch) noexcept {
  const KernelConfig& t = s.tile;
  if (t.tile_q != 64 && t.tile_q != 128) {
    return {Support::kTileShape, "tile_q", t.tile_q, "64 or 128 (one or two consumer warpgroups)"};
  }
  // Two consumers at D = 256 would need more than their 224 registers each
  // (O alone is 128): ptxas spills.
  if (s.head_dim > 128 && t.tile_q != 64) {
    return {Support::kTileShape, "tile_q", t.tile_q, "64 at head dim 256 (registers)"};
  }
  if (t.tile_kv != 64 && t.tile_kv != 128) {
    return {Support::kTileShape, "tile_kv", t.tile_kv, "64 or 128 (wgmma n64 / n128 score tiles)"};
  }
  if (t.warps != 4 * (t.tile_q / 64 + 1)) {
    return {Support::kTileShape, "warps", t.warps,
            "4 per warpgroup: a producer and tile_q / 64 consumers (8 or 12)"};
  }
  if (t.stages < 2 || t.stages > 4) return {Support::kTileShape, "stages", t.stages, "2..4"};
  if (wgmma_smem(s) > arch.max_smem_per_block()) {
    return {Support::kSharedMemory, "shared memory bytes", wgmma_smem(s), "within the arch limit"};
  }
  return {};
}

// A block is shaped for tile_q rows; an item of fewer rows leaves a consumer idle.
std::vector<int> wgmma_row_tiles(int, const KernelConfig& c) { return {c.tile_q}; }

int wgmma_registers(const KernelSpec& s) {
  return canopy_abi::wgmma_max_registers(wgmma_threads(s));
}

std::vector<KernelConfig> wgmma_configs(const AttentionSpec& spec) {
  // 128 rows of a shared prefix per block (two consumers) and 64 rows (one),
  // 128-token tiles in two stages (64-token ones in two at D = 256: 160 KB).
  if (spec.head_dim > 128) return {{KernelFamily::kWgmmaAttention, 64, 64, 8, 2}};
  return {{KernelFamily::kWgmmaAttention, 128, 128, 12, 2},
          {KernelFamily::kWgmmaAttention, 64, 128, 8, 2}};
}

// ---- merge ------------------------------------------------------------------

constexpr int kMergeThreads = 128;  // 4 warps, one output row each

int merge_threads(const KernelSpec&) { return kMergeThreads; }
int merge_registers(const KernelSpec& s) { return canopy_abi::merge_max_registers(s.head_dim); }
int no_smem(const KernelSpec&) { return 0; }

Verdict merge_can_implement(const KernelSpec& s, Arch) noexcept {
  if (s.merge_fan_in < 0 || s.merge_fan_in > kMaxUnrolledFanIn) {
    return {Support::kTileShape, "merge_fan_in", s.merge_fan_in, "0..16"};
  }
  return {};
}

std::vector<int> no_row_tiles(int, const KernelConfig&) { return {}; }
std::vector<KernelConfig> no_configs(const AttentionSpec&) { return {}; }

// ---- the table --------------------------------------------------------------

constexpr std::string_view kFmaTemplates[] = {"common/kernel_layouts.cuh", "common/paged_kv.cuh",
                                              "sm80/attention_fma.cuh"};
constexpr std::string_view kMmaTemplates[] = {
    "common/kernel_layouts.cuh",   "common/paged_kv.cuh",   "common/merge_states.cuh",
    "common/register_softmax.cuh", "common/item_queue.cuh", "sm80/tensor_core.cuh",
    "sm80/attention_mma.cuh"};
constexpr std::string_view kWgmmaTemplates[] = {
    "common/kernel_layouts.cuh",   "common/paged_kv.cuh",      "common/merge_states.cuh",
    "common/register_softmax.cuh", "common/item_queue.cuh",    "sm90a/hopper_sync.cuh",
    "sm90a/wgmma_ops.cuh",         "sm90a/attention_wgmma.cuh"};
constexpr std::string_view kMergeTemplates[] = {"common/kernel_layouts.cuh", "common/paged_kv.cuh",
                                                "common/merge_states.cuh"};

const std::array<FamilyInfo, 4> kFamilies = {{
    {.family = KernelFamily::kFmaAttention,
     .name = "fma",
     .min_arch = kSm80,  // cp.async, bf16 conversions
     .needs_arch_specific = false,
     .instruction = Instruction::kFma,
     .params = ParamsBlock::kPartial,
     .fused_merge = false,
     .templates = kFmaTemplates,
     .device_entry = "canopy_dev::partial_attention_fma",
     .threads = block_threads,
     .smem_bytes = fma_smem,
     .max_registers = fma_registers,
     .can_implement = fma_can_implement,
     .row_tiles = fma_row_tiles,
     .shipped_configs = fma_configs,
     .head_pack = no_head_pack},
    {.family = KernelFamily::kMmaAttention,
     .name = "mma",
     .min_arch = kSm80,  // cp.async, ldmatrix, mma.sync m16n8k16 with bf16
     .needs_arch_specific = false,
     .instruction = Instruction::kMmaSync,
     .params = ParamsBlock::kPartial,
     .fused_merge = true,
     .templates = kMmaTemplates,
     .device_entry = "canopy_dev::partial_attention_mma",
     .threads = block_threads,
     .smem_bytes = mma_smem,
     .max_registers = mma_registers,
     .can_implement = mma_can_implement,
     .row_tiles = mma_row_tiles,
     .shipped_configs = mma_configs,
     .head_pack = mma_head_pack},
    {.family = KernelFamily::kWgmmaAttention,
     .name = "wgmma",
     .min_arch = kSm90a,  // wgmma.mma_async, setmaxnreg, mbarrier try_wait
     .needs_arch_specific = true,
     .instruction = Instruction::kWgmma,
     .params = ParamsBlock::kPartial,
     .fused_merge = true,
     .templates = kWgmmaTemplates,
     .device_entry = "canopy_dev::partial_attention_wgmma",
     .threads = wgmma_threads,
     .smem_bytes = wgmma_smem,
     .max_registers = wgmma_registers,
     .can_implement = wgmma_can_implement,
     .row_tiles = wgmma_row_tiles,
     .shipped_configs = wgmma_configs,
     .head_pack = no_head_pack},
    {.family = KernelFamily::kMergeStates,
     .name = "merge",
     .min_arch = kSm80,  // bf16 conversions
     .needs_arch_specific = false,
     .instruction = Instruction::kNone,
     .params = ParamsBlock::kMerge,
     .fused_merge = false,
     .templates = kMergeTemplates,
     .device_entry = "canopy_dev::merge_states",
     .threads = merge_threads,
     .smem_bytes = no_smem,
     .max_registers = merge_registers,
     .can_implement = merge_can_implement,
     .row_tiles = no_row_tiles,
     .shipped_configs = no_configs,
     .head_pack = no_head_pack},
}};

const FamilyInfo* find_family(KernelFamily family) noexcept {
  for (const FamilyInfo& f : kFamilies) {
    if (f.family == family) return &f;
  }
  return nullptr;
}

}  // namespace

const char* to_string(Support s) noexcept {
  switch (s) {
    case Support::kOk:
      return "ok";
    case Support::kArchTooOld:
      return "arch too old";
    case Support::kHeadDim:
      return "head_dim not generated";
    case Support::kDtype:
      return "unsupported dtype";
    case Support::kTileShape:
      return "tile shape out of range";
    case Support::kSharedMemory:
      return "shared memory over the per-block limit";
    case Support::kWrongFamily:
      return "tile of another family";
    case Support::kNoPersistent:
      return "no persistent form";
  }
  return "unknown";
}

const char* to_string(Instruction i) noexcept {
  switch (i) {
    case Instruction::kNone:
      return "none";
    case Instruction::kFma:
      return "fma";
    case Instruction::kMmaSync:
      return "mma.sync";
    case Instruction::kWgmma:
      return "wgmma";
  }
  return "unknown";
}

bool has_instruction(Arch arch, Instruction i) noexcept {
  switch (i) {
    case Instruction::kNone:
    case Instruction::kFma:
      return true;
    case Instruction::kMmaSync:
      return arch.has_mma();
    case Instruction::kWgmma:
      return arch.has_wgmma();
  }
  return false;
}

const FamilyInfo& family_info(KernelFamily family) {
  if (const FamilyInfo* f = find_family(family)) return *f;
  throw Error(ErrorKind::kInvalidArgument,
              fmt::format("unknown kernel family {}", static_cast<int>(family)));
}

std::span<const FamilyInfo> all_families() { return kFamilies; }

bool is_partial_family(KernelFamily f) { return family_info(f).params == ParamsBlock::kPartial; }

Arch kernel_arch(const FamilyInfo& f, Arch device) noexcept {
  return f.needs_arch_specific && device.same_sm(f.min_arch) ? device.specific() : device;
}

Arch kernel_arch(KernelFamily family, Arch device) noexcept {
  const FamilyInfo* f = find_family(family);
  return f != nullptr ? kernel_arch(*f, device) : device;
}

Verdict check_arch(const FamilyInfo& f, Arch arch) noexcept {
  const int sm = arch.major * 10 + arch.minor;
  if (!arch.at_least(f.min_arch)) {
    return {Support::kArchTooOld, "arch", sm,
            "at least the family's minimum arch (FamilyInfo::min_arch)"};
  }
  if (f.needs_arch_specific && !(arch.arch_specific && arch.same_sm(f.min_arch))) {
    return {Support::kArchTooOld, "arch", sm,
            "the arch-specific (`a`) target of the family's min_arch, e.g. sm_90a: its "
            "instructions run on no other arch"};
  }
  if (!has_instruction(arch, f.instruction)) {
    return {Support::kArchTooOld, "arch", sm,
            "an arch with the family's instructions (FamilyInfo::instruction)"};
  }
  return {};
}

Verdict can_implement(const KernelSpec& spec, Arch arch) noexcept {
  const FamilyInfo* f = find_family(spec.family);
  if (f == nullptr) {
    return {Support::kWrongFamily, "family", static_cast<int>(spec.family), "a registered family"};
  }
  // The row's requirements, as data.
  if (const Verdict v = check_arch(*f, arch); !v.ok()) return v;
  if (!is_supported_head_dim(spec.head_dim)) {
    return {Support::kHeadDim, "head_dim", spec.head_dim, "64, 128 or 256"};
  }
  // Only a family that fuses the merge has the queue-walking form.
  if (spec.persistent && !f->fused_merge) {
    return {Support::kNoPersistent, "persistent", 1, "false (the family cannot fuse the merge)"};
  }
  if (f->params == ParamsBlock::kPartial) {
    const KernelConfig& t = spec.tile;
    if (t.family != spec.family) {
      return {Support::kWrongFamily, "tile family", static_cast<int>(t.family),
              "the spec's family"};
    }
    if (!is_half(spec.q_dtype)) {
      return {Support::kDtype, "q_dtype", static_cast<int>(spec.q_dtype), "fp16 or bf16"};
    }
    if (!is_half(spec.kv_dtype)) {
      return {Support::kDtype, "kv_dtype", static_cast<int>(spec.kv_dtype), "fp16 or bf16"};
    }
    if (t.tile_q <= 0 || t.tile_kv <= 0 || t.warps <= 0 || t.stages <= 0) {
      return {Support::kTileShape, "tile", 0, "positive fields"};
    }
  }
  return f->can_implement(spec, arch);
}

Verdict can_implement(const KernelSpec& spec) noexcept { return can_implement(spec, spec.arch); }

std::string arch_requirement(const FamilyInfo& f) {
  if (f.needs_arch_specific) {
    return fmt::format("{} (the arch-specific target: {} runs on no other arch)",
                       f.min_arch.specific().to_string(), to_string(f.instruction));
  }
  return f.min_arch.to_string() + " or newer";
}

void validate_kernel_spec(const KernelSpec& s) {
  const Verdict v = can_implement(s, s.arch);
  if (v.ok()) return;
  // Non-positive tile fields are malformed input; everything else is a
  // well-formed spec that no kernel is generated for.
  if (v.support == Support::kTileShape && std::string_view(v.field) == "tile") {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("kernel spec {}: tile fields must be positive, got {}", s.to_string(),
                            s.tile.to_string()));
  }
  std::string value = std::to_string(v.value);
  std::string rule = v.rule;
  if (v.support == Support::kDtype) {
    value = to_string(std::string_view(v.field) == "q_dtype" ? s.q_dtype : s.kv_dtype);
  } else if (v.support == Support::kArchTooOld) {
    value = s.arch.to_string();
    rule = arch_requirement(family_info(s.family));
  }
  throw Error(ErrorKind::kNotSupported,
              fmt::format("kernel spec {}: {} ({}) must be {} ({} family: {})", s.to_string(),
                          v.field, value, rule, family_info(s.family).name, to_string(v.support)));
}

int kernel_threads(const KernelSpec& s) { return family_info(s.family).threads(s); }

int kernel_smem_bytes(const KernelSpec& s) { return family_info(s.family).smem_bytes(s); }

int kernel_max_registers(const KernelSpec& s) { return family_info(s.family).max_registers(s); }

int min_blocks_per_sm(const KernelSpec& s) {
  return std::max(1, canopy_abi::blocks_by_registers(kernel_max_registers(s), kernel_threads(s)));
}

int merge_rows_per_block(const KernelSpec& s) {
  // One warp per merge entry; a partial kernel's block runs one work item.
  return family_info(s.family).params == ParamsBlock::kMerge ? kernel_threads(s) / 32 : 1;
}

int dtype_code(DType t) {
  switch (t) {
    case DType::kF16:
      return canopy_abi::kDtF16;
    case DType::kBF16:
      return canopy_abi::kDtBF16;
    case DType::kF32:
      return canopy_abi::kDtF32;
  }
  return -1;
}

}  // namespace canopy::families
