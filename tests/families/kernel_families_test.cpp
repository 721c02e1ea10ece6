// The kernel family registry: one row per family with its requirements as
// data, can_implement verdicts naming the field, the arch a kernel compiles
// for, row tiles and head packs per config, launch facts.
#include "families/kernel_families.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "canopy/cost_model.hpp"
#include "canopy/error.hpp"
#include "canopy/planner.hpp"
#include "generator/embedded_templates.hpp"

namespace canopy::families {
namespace {

const KernelConfig kGeneral = KernelConfig::parse("mma_q64_kv64_w4_s3");
const KernelConfig kWide = KernelConfig::parse("mma_q128_kv32_w4_s3");

AttentionSpec spec_with_head_dim(int head_dim) {
  AttentionSpec a;
  a.head_dim = head_dim;
  return a;
}

KernelSpec mma_spec(int head_dim, int tile_q, int tile_kv, int warps, int stages) {
  return partial_kernel_spec(spec_with_head_dim(head_dim),
                             {KernelFamily::kMmaAttention, tile_q, tile_kv, warps, stages}, kSm90);
}

/// "" when `v` is `support` naming `field`; otherwise what it was instead.
std::string expect_verdict(const Verdict& v, Support support, const std::string& field) {
  if (v.support == support && field == v.field) return "";
  return std::string("got ") + to_string(v.support) + " on field '" + v.field +
         "' (rule: " + v.rule + ")";
}

TEST(KernelFamilies, EveryFamilyHasOneRow) {
  const KernelFamily families[] = {KernelFamily::kFmaAttention, KernelFamily::kMmaAttention,
                                   KernelFamily::kMergeStates, KernelFamily::kWgmmaAttention};
  ASSERT_EQ(all_families().size(), std::size(families));
  for (KernelFamily f : families) {
    const FamilyInfo& info = family_info(f);
    EXPECT_EQ(info.family, f);
    EXPECT_STREQ(info.name, to_string(f));
    EXPECT_FALSE(info.templates.empty()) << info.name;
    for (std::string_view t : info.templates) EXPECT_TRUE(generator::has_template(t)) << t;
    for (std::string_view t : kCommonTemplates) EXPECT_TRUE(generator::has_template(t)) << t;
    EXPECT_NE(std::string(info.device_entry).find("canopy_dev::"), std::string::npos);
    // A row's requirements are coherent: its own minimum arch (with the `a`
    // when it needs one) has its instruction and passes the arch checks.
    const Arch oldest = kernel_arch(info, info.min_arch);
    EXPECT_TRUE(has_instruction(oldest, info.instruction)) << info.name;
    EXPECT_TRUE(check_arch(info, oldest).ok()) << info.name;
    EXPECT_EQ(is_partial_family(f), info.params == ParamsBlock::kPartial) << info.name;
  }
  // Partial-attention rows come first, the merge last.
  EXPECT_TRUE(is_partial_family(all_families().front().family));
  EXPECT_EQ(all_families().back().family, KernelFamily::kMergeStates);
  EXPECT_THROW(family_info(static_cast<KernelFamily>(7)), Error);
}

TEST(KernelFamilies, RequirementsAsData) {
  const FamilyInfo& fma = family_info(KernelFamily::kFmaAttention);
  const FamilyInfo& mma = family_info(KernelFamily::kMmaAttention);
  const FamilyInfo& merge = family_info(KernelFamily::kMergeStates);
  for (const FamilyInfo* f : {&fma, &mma, &merge}) {
    EXPECT_EQ(f->min_arch, kSm80) << f->name;
    EXPECT_FALSE(f->needs_arch_specific) << f->name;
  }
  EXPECT_EQ(fma.instruction, Instruction::kFma);
  EXPECT_EQ(mma.instruction, Instruction::kMmaSync);
  EXPECT_EQ(merge.instruction, Instruction::kNone);
  EXPECT_EQ(fma.params, ParamsBlock::kPartial);
  EXPECT_EQ(mma.params, ParamsBlock::kPartial);
  EXPECT_EQ(merge.params, ParamsBlock::kMerge);
  EXPECT_STREQ(to_string(Instruction::kMmaSync), "mma.sync");
  EXPECT_STREQ(to_string(Instruction::kWgmma), "wgmma");
  EXPECT_EQ(arch_requirement(mma), "sm_80 or newer");
  // Plain families compile for the device's arch, `a` or not.
  for (const Arch device : {kSm80, kSm86, kSm90, kSm90a}) {
    EXPECT_EQ(kernel_arch(KernelFamily::kMmaAttention, device), device);
    EXPECT_EQ(kernel_arch(KernelFamily::kMergeStates, device), device);
  }
}

TEST(KernelFamilies, ArchSpecificFamiliesCompileForTheATarget) {
  // A row like the Hopper family's: wgmma needs sm_90a itself.
  FamilyInfo hopper = family_info(KernelFamily::kMmaAttention);
  hopper.min_arch = kSm90;
  hopper.needs_arch_specific = true;
  hopper.instruction = Instruction::kWgmma;
  EXPECT_EQ(kernel_arch(hopper, kSm90), kSm90a);  // an sm_90 device: the sm_90a target
  EXPECT_EQ(kernel_arch(hopper, kSm90a), kSm90a);
  EXPECT_EQ(kernel_arch(hopper, kSm80), kSm80);  // cannot run there: can_implement says so
  EXPECT_TRUE(check_arch(hopper, kSm90a).ok());
  for (const Arch a : {kSm90, kSm80, kSm89, Arch{10, 0, true}, Arch{10, 0}}) {
    const Verdict v = check_arch(hopper, a);
    EXPECT_EQ(expect_verdict(v, Support::kArchTooOld, "arch"), "") << a.to_string();
    EXPECT_EQ(v.value, a.major * 10 + a.minor);
  }
  // On sm_90 (no `a`) and sm_100a the rule names the arch-specific target.
  EXPECT_NE(std::string(check_arch(hopper, kSm90).rule).find("arch-specific"), std::string::npos);
  EXPECT_NE(std::string(check_arch(hopper, Arch{10, 0, true}).rule).find("arch-specific"),
            std::string::npos);
  EXPECT_EQ(arch_requirement(hopper),
            "sm_90a (the arch-specific target: wgmma runs on no other arch)");
  // The instruction alone also decides: wgmma is missing before sm_90a.
  FamilyInfo plain_wgmma = hopper;
  plain_wgmma.needs_arch_specific = false;
  EXPECT_EQ(expect_verdict(check_arch(plain_wgmma, kSm90), Support::kArchTooOld, "arch"), "");
}

// The filter the planner, canopy-tune's grid and Python's prewarm share: on
// an sm_90 device the wgmma configs run (compiled for sm_90a), on sm_80 and
// sm_89 they do not; sm_89 also drops the configs past its 99 KB of shared
// memory per block.
TEST(KernelFamilies, RunnableConfigsCheckTheTargetEachCompilesFor) {
  const AttentionSpec a = spec_with_head_dim(128);
  const std::vector<KernelConfig> shipped = shipped_kernel_configs(a);
  auto wgmma = [](const std::vector<KernelConfig>& configs) {
    return std::count_if(configs.begin(), configs.end(), [](const KernelConfig& c) {
      return c.family == KernelFamily::kWgmmaAttention;
    });
  };
  ASSERT_GT(wgmma(shipped), 0);
  EXPECT_EQ(runnable_kernel_configs(a, shipped, kSm90), shipped);
  EXPECT_EQ(runnable_kernel_configs(a, shipped, kSm90a), shipped);
  const std::vector<KernelConfig> sm80 = runnable_kernel_configs(a, shipped, kSm80);
  EXPECT_EQ(wgmma(sm80), 0);
  EXPECT_EQ(sm80.size() + static_cast<std::size_t>(wgmma(shipped)), shipped.size());
  const Arch sm89 = Arch::parse("89");
  const std::vector<KernelConfig> ada = runnable_kernel_configs(a, shipped, sm89);
  EXPECT_EQ(wgmma(ada), 0);
  EXPECT_LT(ada.size(), sm80.size());
  for (const KernelConfig& c : shipped) {
    const bool kept = std::find(ada.begin(), ada.end(), c) != ada.end();
    EXPECT_EQ(kept, can_implement(partial_kernel_spec(a, c, sm89)).ok()) << c.to_string();
  }
}

TEST(KernelFamilies, ShippedConfigsCanBeImplementedOnSm90) {
  for (int head_dim : {64, 128, 256}) {
    for (DType dtype : {DType::kF16, DType::kBF16}) {
      AttentionSpec a = spec_with_head_dim(head_dim);
      a.q_dtype = a.kv_dtype = dtype;
      const std::vector<KernelConfig> configs = shipped_kernel_configs(a);
      EXPECT_FALSE(configs.empty());
      for (const KernelConfig& c : configs) {
        // On its own target: sm_90a for the wgmma family (kernel_arch).
        const Verdict v = can_implement(partial_kernel_spec(a, c, kSm90));
        EXPECT_TRUE(v.ok()) << c.to_string() << " hd" << head_dim << ": " << v.field;
      }
    }
  }
  // The defaults are the tensor-core kernels: both configs up to D = 128.
  EXPECT_EQ(default_kernel_configs(spec_with_head_dim(128)),
            (std::vector<KernelConfig>{kGeneral, kWide}));
  EXPECT_EQ(default_kernel_configs(spec_with_head_dim(256)),
            (std::vector<KernelConfig>{KernelConfig::parse("mma_q64_kv64_w4_s2")}));
  // The Hopper candidates: the defaults first (the general one is weighed
  // alone), then the wgmma ones.
  EXPECT_EQ(
      hopper_kernel_configs(spec_with_head_dim(128)),
      (std::vector<KernelConfig>{kGeneral, kWide, KernelConfig::parse("wgmma_q128_kv128_w12_s2"),
                                 KernelConfig::parse("wgmma_q64_kv128_w8_s2")}));
  EXPECT_EQ(hopper_kernel_configs(spec_with_head_dim(256)),
            (std::vector<KernelConfig>{KernelConfig::parse("mma_q64_kv64_w4_s2"),
                                       KernelConfig::parse("wgmma_q64_kv64_w8_s2")}));
}

TEST(KernelFamilies, MmaTileQIs16Or32RowsPerWarp) {
  EXPECT_TRUE(can_implement(mma_spec(128, 64, 64, 4, 3), kSm90).ok());   // 16 * warps
  EXPECT_TRUE(can_implement(mma_spec(256, 64, 64, 4, 2), kSm90).ok());   // 16 * warps
  EXPECT_TRUE(can_implement(mma_spec(128, 128, 32, 4, 3), kSm90).ok());  // 32 * warps
  EXPECT_TRUE(can_implement(mma_spec(64, 128, 32, 4, 3), kSm90).ok());   // 32 * warps
  // 32 rows per warp only where O of two m16 tiles fits the registers.
  EXPECT_EQ(expect_verdict(can_implement(mma_spec(256, 128, 32, 4, 3), kSm90), Support::kTileShape,
                           "tile_q"),
            "");
  EXPECT_EQ(expect_verdict(can_implement(mma_spec(128, 48, 64, 4, 3), kSm90), Support::kTileShape,
                           "tile_q"),
            "");
  EXPECT_EQ(expect_verdict(can_implement(mma_spec(128, 256, 64, 4, 3), kSm90), Support::kTileShape,
                           "tile_q"),
            "");
}

TEST(KernelFamilies, BadTileFieldsNameTheField) {
  EXPECT_EQ(expect_verdict(can_implement(mma_spec(128, 48, 64, 3, 3), kSm90), Support::kTileShape,
                           "warps"),
            "");
  EXPECT_EQ(expect_verdict(can_implement(mma_spec(128, 256, 64, 16, 3), kSm90), Support::kTileShape,
                           "warps"),
            "");
  EXPECT_EQ(expect_verdict(can_implement(mma_spec(128, 64, 64, 4, 1), kSm90), Support::kTileShape,
                           "stages"),
            "");
  EXPECT_EQ(expect_verdict(can_implement(mma_spec(128, 64, 64, 4, 5), kSm90), Support::kTileShape,
                           "stages"),
            "");
  EXPECT_EQ(expect_verdict(can_implement(mma_spec(128, 64, 40, 4, 3), kSm90), Support::kTileShape,
                           "tile_kv"),
            "");
  EXPECT_EQ(expect_verdict(can_implement(mma_spec(128, 64, 512, 4, 3), kSm90), Support::kTileShape,
                           "tile_kv"),
            "");
  EXPECT_EQ(
      expect_verdict(can_implement(mma_spec(128, 64, 0, 4, 3), kSm90), Support::kTileShape, "tile"),
      "");
  // The FMA reference has its own ranges.
  const KernelSpec fma = partial_kernel_spec(spec_with_head_dim(128),
                                             {KernelFamily::kFmaAttention, 16, 48, 4, 2}, kSm90);
  EXPECT_EQ(expect_verdict(can_implement(fma, kSm90), Support::kTileShape, "tile_kv"), "");
  // A tile naming another family than the spec's.
  KernelSpec mixed = mma_spec(128, 64, 64, 4, 3);
  mixed.tile.family = KernelFamily::kFmaAttention;
  EXPECT_EQ(expect_verdict(can_implement(mixed, kSm90), Support::kWrongFamily, "tile family"), "");
}

TEST(KernelFamilies, OnlyFamiliesThatFuseTheMergeHaveAPersistentForm) {
  KernelSpec mma = mma_spec(128, 64, 64, 4, 3);
  mma.persistent = true;
  EXPECT_TRUE(can_implement(mma, kSm90).ok());
  KernelSpec fma = partial_kernel_spec(spec_with_head_dim(128),
                                       {KernelFamily::kFmaAttention, 16, 64, 4, 2}, kSm90, true);
  EXPECT_EQ(expect_verdict(can_implement(fma, kSm90), Support::kNoPersistent, "persistent"), "");
  KernelSpec merge = merge_kernel_spec(spec_with_head_dim(128), 4, kSm90);
  merge.persistent = true;
  EXPECT_EQ(expect_verdict(can_implement(merge, kSm90), Support::kNoPersistent, "persistent"), "");
  try {
    validate_kernel_spec(fma);
    ADD_FAILURE() << "a persistent FMA spec was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotSupported);
    EXPECT_NE(std::string(e.what()).find("persistent"), std::string::npos) << e.what();
  }
}

TEST(KernelFamilies, ArchAndSharedMemoryLimits) {
  const Verdict old = can_implement(mma_spec(128, 64, 64, 4, 3), Arch{7, 5});
  EXPECT_EQ(expect_verdict(old, Support::kArchTooOld, "arch"), "");
  EXPECT_EQ(old.value, 75);
  KernelSpec sm75 = mma_spec(128, 64, 64, 4, 3);
  sm75.arch = Arch{7, 5};
  EXPECT_EQ(expect_verdict(can_implement(sm75), Support::kArchTooOld, "arch"), "");
  try {
    validate_kernel_spec(sm75);
    ADD_FAILURE() << "accepted sm_75";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotSupported);
    EXPECT_NE(std::string(e.what()).find("arch (sm_75) must be sm_80 or newer (mma family: arch "
                                         "too old)"),
              std::string::npos)
        << e.what();
  }
  // D = 256 with four 64-token stages: 32 KiB of Q + 256 KiB of K/V.
  const Verdict big = can_implement(mma_spec(256, 64, 64, 4, 4), kSm90);
  EXPECT_EQ(expect_verdict(big, Support::kSharedMemory, "shared memory bytes"), "");
  EXPECT_GT(big.value, kSm90.max_smem_per_block());
  // The general kernel (115,200 bytes at D = 128) fits sm_90 and sm_80, not sm_86's 99 KiB.
  EXPECT_TRUE(can_implement(mma_spec(128, 64, 64, 4, 3), kSm80).ok());
  EXPECT_EQ(expect_verdict(can_implement(mma_spec(128, 64, 64, 4, 3), kSm86),
                           Support::kSharedMemory, "shared memory bytes"),
            "");
  EXPECT_EQ(expect_verdict(can_implement(mma_spec(96, 64, 64, 4, 3), kSm90), Support::kHeadDim,
                           "head_dim"),
            "");
}

TEST(KernelFamilies, MmaRowTilesPerConfig) {
  const FamilyInfo& mma = family_info(KernelFamily::kMmaAttention);
  for (int head_dim : {64, 128, 256}) {
    EXPECT_EQ(mma.row_tiles(head_dim, kGeneral), (std::vector<int>{16, 32, 64})) << head_dim;
  }
  // The wide config: 2x2 and 4x1 arrangements (32-token stages leave no 16
  // tokens per warp for 1x4), plus two m16 tiles per warp up to D = 128.
  EXPECT_EQ(mma.row_tiles(64, kWide), (std::vector<int>{32, 64, 128}));
  EXPECT_EQ(mma.row_tiles(128, kWide), (std::vector<int>{32, 64, 128}));
  EXPECT_EQ(mma.row_tiles(256, kWide), (std::vector<int>{32, 64}));
  // The FMA reference runs its tile_q only.
  const KernelConfig fma{KernelFamily::kFmaAttention, 16, 64, 4, 2};
  EXPECT_EQ(family_info(KernelFamily::kFmaAttention).row_tiles(128, fma), std::vector<int>{16});
}

TEST(KernelFamilies, HeadPacksOnlyForTheNarrowArrangement) {
  const FamilyInfo& mma = family_info(KernelFamily::kMmaAttention);
  const AttentionSpec d128 = spec_with_head_dim(128);
  EXPECT_EQ(mma.head_pack(d128, kGeneral, 16), 4);  // one KV head per warp
  EXPECT_EQ(mma.head_pack(d128, kGeneral, 32), 1);
  EXPECT_EQ(mma.head_pack(d128, kGeneral, 64), 1);
  EXPECT_EQ(mma.head_pack(spec_with_head_dim(64), kGeneral, 16), 4);
  EXPECT_EQ(mma.head_pack(spec_with_head_dim(256), kGeneral, 16), 1);  // no packs at D = 256
  for (int row_tile : {16, 32, 64, 128}) EXPECT_EQ(mma.head_pack(d128, kWide, row_tile), 1);
  const KernelConfig fma{KernelFamily::kFmaAttention, 16, 64, 4, 2};
  EXPECT_EQ(family_info(KernelFamily::kFmaAttention).head_pack(d128, fma, 16), 1);
}

TEST(KernelFamilies, LaunchShape) {
  const KernelSpec mma = mma_spec(128, 64, 64, 4, 3);
  const KernelSpec fma = partial_kernel_spec(spec_with_head_dim(128),
                                             {KernelFamily::kFmaAttention, 16, 64, 4, 2}, kSm90);
  const KernelSpec merge = merge_kernel_spec(spec_with_head_dim(128), 4, kSm90);
  EXPECT_EQ(kernel_threads(mma), 128);
  EXPECT_EQ(kernel_threads(merge), 128);
  EXPECT_EQ(merge_rows_per_block(merge), 4);
  EXPECT_EQ(merge_rows_per_block(mma), 1);
  EXPECT_EQ(kernel_smem_bytes(merge), 0);
  // FMA hd128, q16, kv64, 2 stages: Q 4 KiB + O 8 KiB + m,l,alpha 192 B + scores 4 KiB + K,V 64
  // KiB.
  EXPECT_EQ(kernel_smem_bytes(fma), 4096 + 8192 + 192 + 4096 + 65536);
  // mma hd128, q64, kv64, 4 warps, 3 stages: Q 16 KiB + K,V 96 KiB + (m, l) of 64 rows.
  EXPECT_EQ(kernel_smem_bytes(mma), 16384 + 98304 + 512);
  // Register caps and the launch bounds they give (kernel_layouts.cuh).
  EXPECT_EQ(kernel_max_registers(mma), 255);
  EXPECT_EQ(min_blocks_per_sm(mma), 2);
  EXPECT_EQ(kernel_max_registers(mma_spec(64, 64, 64, 4, 3)), 168);
  EXPECT_EQ(min_blocks_per_sm(mma_spec(64, 64, 64, 4, 3)), 3);
  EXPECT_EQ(kernel_max_registers(fma), 128);
  EXPECT_EQ(min_blocks_per_sm(fma), 4);
  EXPECT_EQ(kernel_max_registers(merge), 96);
  EXPECT_EQ(min_blocks_per_sm(merge), 5);
  // dtype codes are the ABI's (kernel_abi.cuh).
  EXPECT_EQ(dtype_code(DType::kF16), 0);
  EXPECT_EQ(dtype_code(DType::kBF16), 1);
  EXPECT_EQ(dtype_code(DType::kF32), 2);
}

TEST(KernelFamilies, CostModelSharedMemoryIsTheRegistrysAndDefaultsFitSm90) {
  for (int head_dim : {64, 128, 256}) {
    AttentionSpec a;
    a.head_dim = head_dim;
    for (const KernelConfig& c : shipped_kernel_configs(a)) {
      const int bytes = kernel_smem_bytes(partial_kernel_spec(a, c, kSm90));
      EXPECT_EQ(CostModel::smem_bytes(a, c), bytes);
      EXPECT_LE(bytes, kSm90.max_smem_per_block()) << head_dim << " " << c.to_string();
      // sm_80 (163 KiB) takes every shipped config but FMA hd256 x q64, which the planner drops.
      if (!(head_dim == 256 && c.family == KernelFamily::kFmaAttention && c.tile_q == 64)) {
        EXPECT_LE(bytes, kSm80.max_smem_per_block()) << head_dim << " " << c.to_string();
      }
    }
  }
}

}  // namespace
}  // namespace canopy::families
